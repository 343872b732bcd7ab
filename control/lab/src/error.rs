//! Why a lab step failed. Every message names the step and carries what the failing tool said.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command ran and failed (or could not be started).
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A condition did not come true before its deadline.
    #[error("timed out waiting for {what}{}", detail_suffix(detail))]
    Timeout { what: String, detail: String },
    /// The CNI plugin answered ADD/DEL with an error.
    #[error("kxdp-cni {command} for pod {pod}: {detail}")]
    Cni {
        command: String,
        pod: String,
        detail: String,
    },
    /// The agent's local API failed or answered an error.
    #[error("agent {node}: {detail}")]
    Agent { node: String, detail: String },
    /// A node's container runtime refused a CRI call or did not answer.
    #[error("containerd on {node}: {source}")]
    Cri {
        node: String,
        #[source]
        source: cri::CriError,
    },
    /// An image for the lab's containerd mode could not be written.
    #[error(transparent)]
    Image(#[from] crate::oci_image::OciError),
    /// Anything else the lab cannot proceed without (a missing binary, a bad argument).
    #[error("{0}")]
    Setup(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl LabError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> LabError {
        LabError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A teardown that does every step whatever fails: each failure is reported on stderr as
/// it happens, and the first is what the teardown returns.
#[derive(Debug, Default)]
pub struct Teardown {
    first: Option<LabError>,
}

impl Teardown {
    pub fn note(&mut self, step: Result<(), LabError>) {
        if let Err(e) = step {
            eprintln!("kxdp-lab: down: {e}");
            self.first.get_or_insert(e);
        }
    }

    pub fn finish(self) -> Result<(), LabError> {
        self.first.map_or(Ok(()), Err)
    }
}
