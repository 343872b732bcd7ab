//! What can go wrong talking to the kernel, each case naming what was asked.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// Opening, configuring, or reading/writing the rtnetlink socket itself.
    #[error("rtnetlink socket: {step}: {source}")]
    Socket {
        step: &'static str,
        source: io::Error,
    },
    /// The kernel refused a request: `request` says what was asked, `source` the errno,
    /// `detail` the kernel's extended ACK message when it sent one.
    #[error("{request}: {source}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Kernel {
        request: String,
        source: io::Error,
        detail: Option<String>,
    },
    /// The kernel did not answer within the socket's timeout.
    #[error("{request}: no answer from the kernel within {timeout_ms} ms")]
    Timeout { request: String, timeout_ms: u64 },
    /// A dump the kernel marked inconsistent; [`crate::Netlink`] starts it again.
    #[error("the dump was interrupted by a change")]
    DumpInterrupted,
    /// An answer that does not parse as what was asked for.
    #[error("{request}: unexpected answer from the kernel: {why}")]
    Decode { request: String, why: String },
    #[error("interface {0:?} does not exist in this network namespace")]
    NoSuchInterface(String),
    #[error("{0:?} is not a valid interface name (1 to 15 bytes, no '/', ':', whitespace or NUL)")]
    InvalidName(String),
    #[error("network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("ethtool {request} on {dev}: {source}")]
    Ethtool {
        request: &'static str,
        dev: String,
        source: io::Error,
    },
    #[error("writing {path}: {source}")]
    Sysctl { path: PathBuf, source: io::Error },
}

impl NetdevError {
    /// The errno of a kernel refusal, for callers that treat one as an answer (ENODEV:
    /// "absent", EEXIST: "already there").
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetdevError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetdevError>;
