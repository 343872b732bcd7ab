//! Sysctls through procfs: no sysctl(8).
//!
//! /proc/sys/net shows the network namespace of the task that opens the file, so a
//! write here changes the calling thread's namespace's setting.

use std::path::PathBuf;

use crate::error::{NetdevError, Result};

/// Writes `value` to the sysctl `key` (`net.ipv4.ip_forward`). Interface names may contain
/// dots, which sysctl(8) would read as separators: name those keys by path segments with
/// [`write_path`] instead.
pub fn write(key: &str, value: &str) -> Result<()> {
    write_path(&key.split('.').collect::<Vec<_>>(), value)
}

/// Makes the sysctl `key` hold `value`, writing only when it holds something else: a
/// container that is not privileged sees /proc/sys read-only, and a value set before (by
/// the DaemonSet's privileged init container) needs no write.
pub fn ensure(key: &str, value: &str) -> Result<()> {
    let segments: Vec<&str> = key.split('.').collect();
    let path = sysctl_path(&segments);
    let now = std::fs::read_to_string(&path).map_err(|source| NetdevError::Sysctl {
        path: path.clone(),
        source,
    })?;
    if now.trim() == value {
        return Ok(());
    }
    write_path(&segments, value)
}

fn sysctl_path(segments: &[&str]) -> PathBuf {
    std::iter::once("/proc/sys")
        .chain(segments.iter().copied())
        .collect()
}

/// Writes `value` to `/proc/sys/<segments joined by '/'>`.
pub fn write_path(segments: &[&str], value: &str) -> Result<()> {
    let path = sysctl_path(segments);
    std::fs::write(&path, value).map_err(|source| NetdevError::Sysctl { path, source })
}
