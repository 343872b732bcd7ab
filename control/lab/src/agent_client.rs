//! The lab as a client of its agents' local API (the `agent-api` crate): status to know
//! when an agent's tables hold its pods, stats for the flood checks and for diagnostics.

use std::path::Path;
use std::time::Duration;

use agent_api::{AgentStats, AgentStatus, Request, Response, call};

use super::error::LabError;

fn ask(node: &str, socket: &Path, req: &Request, timeout: Duration) -> Result<Response, LabError> {
    let err = |detail: String| LabError::Agent {
        node: node.to_string(),
        detail,
    };
    call(socket, req, timeout)
        .map_err(|e| err(e.to_string()))?
        .accepted()
        .map_err(|refused| err(format!("{req:?} answered: {refused}")))
}

/// `{"op":"status"}`
pub fn status(node: &str, socket: &Path, timeout: Duration) -> Result<AgentStatus, LabError> {
    ask(node, socket, &Request::Status, timeout)?
        .status
        .ok_or_else(|| LabError::Agent {
            node: node.to_string(),
            detail: "status answer without a status".into(),
        })
}

/// `{"op":"stats"}`
pub fn stats(node: &str, socket: &Path, timeout: Duration) -> Result<AgentStats, LabError> {
    ask(node, socket, &Request::Stats, timeout)?
        .stats
        .ok_or_else(|| LabError::Agent {
            node: node.to_string(),
            detail: "stats answer without stats".into(),
        })
}
