//! What can go wrong talking to a runtime: no runtime there, a call it refused (with the
//! gRPC code and the runtime's message, which for RunPodSandbox carries the CNI plugin's
//! error), or a call that did not finish in time.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot start the CRI client's runtime: {source}")]
    Runtime { source: std::io::Error },
    #[error("no CRI runtime answers at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("no CRI runtime answered at {} within {timeout:?}", socket.display())]
    ConnectTimeout { socket: PathBuf, timeout: Duration },
    #[error("{method}: {code:?}: {message}")]
    Call {
        method: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{method} did not answer within {timeout:?}")]
    Timeout {
        method: &'static str,
        timeout: Duration,
    },
    #[error("{method}: the answer has no {missing}")]
    Incomplete {
        method: &'static str,
        missing: &'static str,
    },
}

impl CriError {
    /// The runtime's message of a refused call ("" for other errors).
    pub fn message(&self) -> &str {
        match self {
            CriError::Call { message, .. } => message,
            _ => "",
        }
    }
}
