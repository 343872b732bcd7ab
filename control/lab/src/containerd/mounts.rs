//! The mounts a lab node's containerd needs and leaves: shared mount points for what its
//! containers mount with propagation (the DaemonSet's bpffs is Bidirectional, its netns
//! directory HostToContainer, and containerd refuses those unless the source is a shared
//! mount), and the sweep that unmounts everything under a node's directory on the way down.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::super::error::LabError;

fn c_path(p: &Path) -> Result<CString, LabError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| LabError::Setup(format!("{}: a NUL in the path", p.display())))
}

fn check(rc: libc::c_int, what: &str, p: &Path) -> Result<(), LabError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(LabError::io(
            p,
            io::Error::other(format!("{what}: {}", io::Error::last_os_error())),
        ))
    }
}

/// Whether `p` is a mount point (listed in this process's mountinfo).
fn is_mount_point(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

/// Makes `dir` a mount point of its own (bind onto itself) with shared propagation.
pub fn shared_bind(dir: &Path) -> Result<(), LabError> {
    let c = c_path(dir)?;
    if !is_mount_point(dir) {
        // SAFETY: both paths are valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c.as_ptr(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        check(rc, "bind mount", dir)?;
    }
    make_shared(&c, dir)
}

/// Mounts a bpf filesystem at `dir` (a node's /sys/fs/bpf), shared.
pub fn shared_bpffs(dir: &Path) -> Result<(), LabError> {
    if !is_mount_point(dir) {
        mount_fs("bpf", dir, "")?;
    }
    make_shared(&c_path(dir)?, dir)
}

/// `mount -t FSTYPE -o OPTIONS FSTYPE TARGET`.
pub fn mount_fs(fstype: &str, target: &Path, options: &str) -> Result<(), LabError> {
    let c_target = c_path(target)?;
    let c_type =
        CString::new(fstype).map_err(|_| LabError::Setup(format!("filesystem type {fstype:?}")))?;
    let c_options =
        CString::new(options).map_err(|_| LabError::Setup(format!("mount options {options:?}")))?;
    // SAFETY: valid NUL-terminated strings; the options are the filesystem's text data.
    let rc = unsafe {
        libc::mount(
            c_type.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            0,
            c_options.as_ptr().cast(),
        )
    };
    check(rc, &format!("mount -t {fstype} -o {options:?}"), target)
}

/// Unmounts `target` (detached); one that is not mounted any more is fine.
pub fn unmount(target: &Path) -> Result<(), LabError> {
    let c = c_path(target)?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
            return Err(LabError::io(
                target,
                io::Error::other(format!("umount: {e}")),
            ));
        }
    }
    Ok(())
}

fn make_shared(c: &CString, dir: &Path) -> Result<(), LabError> {
    // SAFETY: valid NUL-terminated target; a propagation change takes no source or data.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_SHARED,
            std::ptr::null(),
        )
    };
    check(rc, "make shared", dir)
}

/// Every mount point of this process, in mountinfo order (field 5, octal escapes decoded).
fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts every mount point under `dir` (and `dir` itself), deepest and latest first,
/// detached (MNT_DETACH), so a busy one still leaves the tree. Repeats until none is left,
/// since a directory can carry several stacked mounts.
pub fn unmount_under(dir: &Path) -> Result<(), LabError> {
    for _ in 0..8 {
        let mut under: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(dir))
            .collect();
        if under.is_empty() {
            return Ok(());
        }
        // Latest first within a depth: reverse mountinfo order, then deepest first.
        under.reverse();
        under.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in &under {
            unmount(m)?;
        }
    }
    Err(LabError::Setup(format!(
        "mounts under {} keep coming back",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/short\04"), r"/short\04");
    }
}
