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

/// Writes `value` to `/proc/sys/<segments joined by '/'>`.
pub fn write_path(segments: &[&str], value: &str) -> Result<()> {
    let path: PathBuf = std::iter::once("/proc/sys")
        .chain(segments.iter().copied())
        .collect();
    std::fs::write(&path, value).map_err(|source| NetdevError::Sysctl { path, source })
}
