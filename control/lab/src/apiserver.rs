//! `--source api`: the agents take the cluster state from `kxdp-lab apiserver-double` (a test
//! double of the API server's list/watch protocol, not an API server) instead of reading
//! DIR/state themselves.
//!
//! The double runs in `<p>-fabric` on the bridge's address (layout::API_SERVER_IP), so
//! both agents reach it over their uplinks, as nodes reach a real API endpoint, and no
//! packet leaves the lab's namespaces. It serves the objects the lab writes to DIR/state
//! and follows that directory: when the lab writes the Pods after CNI ADD, the double
//! applies the difference and the agents' watches see it. The agents still get
//! `--state DIR/state`, for its kxdp.yaml only (as a mounted ConfigMap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Lab;
use super::error::LabError;
use super::layout::{API_SERVER_IP, API_SERVER_PORT};
use super::procs::{self, ProcRecord};
use crate::apiserver_double::READY_PREFIX;

pub const LABEL: &str = "apiserver-double";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The double ends at once on SIGTERM (it has nothing to undo).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn dir(lab: &Lab) -> PathBuf {
    lab.dir.join("apiserver")
}

/// The kubeconfig the double writes and the agents read.
pub fn kubeconfig(lab: &Lab) -> PathBuf {
    dir(lab).join("kubeconfig")
}

pub fn log(lab: &Lab) -> PathBuf {
    dir(lab).join("apiserver.log")
}

pub fn address() -> SocketAddr {
    SocketAddr::from((API_SERVER_IP, API_SERVER_PORT))
}

/// Starts the double in the fabric namespace and waits for its ready line (it has read
/// DIR/state, listens, and has written the kubeconfig).
pub fn start(lab: &Lab) -> Result<ProcRecord, LabError> {
    let d = dir(lab);
    std::fs::create_dir_all(&d).map_err(|e| LabError::io(&d, e))?;
    let args: Vec<String> = vec![
        "apiserver-double".into(),
        "--manifests".into(),
        lab.state_dir().display().to_string(),
        "--listen".into(),
        address().to_string(),
        "--kubeconfig-out".into(),
        kubeconfig(lab).display().to_string(),
    ];
    let rec = procs::spawn(
        &lab.procs_dir(),
        LABEL,
        &lab.names().fabric(),
        &lab.tools_binary()?,
        &args,
        &d.join("apiserver.out"),
        &log(lab),
    )?;
    procs::wait_for_line(&rec, READY_PREFIX, READY_TIMEOUT)?;
    Ok(rec)
}
