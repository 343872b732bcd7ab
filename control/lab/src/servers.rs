//! `kxdp-lab probe serve` in every pod (and on the kernel VTEP): what the checks talk to.

use std::time::Duration;

use super::Lab;
use super::error::LabError;
use super::layout::{ADMIN_PORT, ECHO_PORT, HTTP_PORT, PodPlan};
use super::procs;
use crate::probe::READY_PREFIX;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// The server name the kernel VTEP answers with.
pub const VTEP_SERVER: &str = "node3-vtep";

pub fn label(name: &str) -> String {
    format!("probe-{name}")
}

/// `kxdp-lab probe serve` as every pod runs it, answering as `name`.
pub fn serve_args(name: &str) -> Vec<String> {
    let mut args = vec![
        "probe".to_string(),
        "serve".into(),
        "--name".into(),
        name.into(),
    ];
    for port in [HTTP_PORT, ADMIN_PORT] {
        args.extend(["--tcp".to_string(), port.to_string()]);
    }
    args.extend(["--udp".to_string(), ECHO_PORT.to_string()]);
    args
}

/// A probe server named `name` in `netns`, recorded with the lab's processes.
pub fn start(lab: &Lab, name: &str, netns: &str) -> Result<(), LabError> {
    let logs = lab.dir.join("probes");
    std::fs::create_dir_all(&logs).map_err(|e| LabError::io(&logs, e))?;
    let rec = procs::spawn(
        &lab.procs_dir(),
        &label(name),
        netns,
        &lab.tools_binary()?,
        &serve_args(name),
        &logs.join(format!("{name}.out")),
        &logs.join(format!("{name}.err")),
    )?;
    procs::wait_for_line(&rec, READY_PREFIX, READY_TIMEOUT)?;
    Ok(())
}

/// A server in the pod's namespace, answering as the pod's name.
pub fn start_in_pod(lab: &Lab, pod: &PodPlan) -> Result<(), LabError> {
    start(lab, pod.name, &lab.names().pod(pod))
}

/// A server on the kernel VTEP (node3's gateway address).
pub fn start_on_vtep(lab: &Lab) -> Result<(), LabError> {
    start(lab, VTEP_SERVER, &lab.names().vtep())
}
