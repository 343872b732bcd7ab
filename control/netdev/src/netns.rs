//! Entering a network namespace without `nsenter`: setns(2) on a thread of our own.
//!
//! setns moves only the calling thread, so the work runs on a short-lived thread that
//! enters the namespace, does it (typically: opens a socket, which stays bound to that
//! namespace after the thread is gone) and ends. No thread of the caller's ever runs in
//! the wrong namespace, and there is no "switch back" that could fail.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{NetdevError, Result};

/// Runs `f` on a thread inside the network namespace at `path` and returns its result.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let netns = open(path)?;
    let failed = |source| NetdevError::Netns {
        path: path.to_path_buf(),
        source,
    };
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name("netdev-setns".into())
            .spawn_scoped(s, || {
                // SAFETY: a namespace file we hold open; setns changes only this thread.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(failed(std::io::Error::last_os_error()));
                }
                f()
            })
            .map_err(failed)?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The namespace file at `path`, for setns or for moving a link there (IFLA_NET_NS_FD).
pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| NetdevError::Netns {
        path: path.to_path_buf(),
        source,
    })
}
