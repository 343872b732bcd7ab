//! One `kxdp agent` per node, started in the node's namespace as the contract says
//! (agent-contract: `kxdp agent --node ... --uplink ... --state ... --workers ... --cpus ...
//! --api-socket ...`; with `--source api` also `--kubeconfig`, apiserver.rs), waited for
//! until it prints its ready line.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::agent_client;
use super::error::LabError;
use super::layout::{NAMESPACE, NodePlan};
use super::manifests::PlacedPod;
use super::procs::{self, ProcRecord};
use super::{Lab, StateSource};
use agent_api::{AgentStats, AgentStatus};
use model::translate::pod_port_name;

/// The line the agent prints on stdout once its datapath runs.
pub const READY_PREFIX: &str = "kxdp agent ready";
/// Loading XDP programs and opening sockets on a busy 2-vCPU machine takes a while.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent gets to detach and exit after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
const API_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

pub fn label(node: NodePlan) -> String {
    format!("agent-{}", node.name())
}

/// The CPUs of the node's workers: worker i of node N gets CPU ((N-1)*W + i) mod ncpu, so
/// the two nodes' workers spread over the machine.
pub fn cpu_list(node: NodePlan, workers: u32, ncpu: usize) -> String {
    let ncpu = ncpu.max(1);
    (0..workers as usize)
        .map(|i| ((usize::from(node.index) - 1) * workers as usize + i) % ncpu)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts the node's agent and waits for its ready line.
pub fn start(lab: &Lab, node: NodePlan) -> Result<ProcRecord, LabError> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    start_on_cpus(lab, node, &cpu_list(node, lab.workers, ncpu))
}

/// [`start`] with the workers pinned to `cpus` (a comma-separated list, one per worker).
pub fn start_on_cpus(lab: &Lab, node: NodePlan, cpus: &str) -> Result<ProcRecord, LabError> {
    let dir = lab.node_dir(node);
    std::fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
    let state_dir = lab.state_dir().display().to_string();
    // --source api: the objects come from the API server double, reached as on a node
    // without kube-proxy (in-cluster, the service account, --api-server; see apiserver.rs);
    // DIR/state is then read for its kxdp.yaml only.
    let api_server = super::apiserver::address().to_string();
    let account = super::apiserver::service_account_dir(lab)
        .display()
        .to_string();
    let source: &[&str] = match lab.source {
        StateSource::Dir => &["--state", &state_dir],
        StateSource::Api => &[
            "--in-cluster",
            "--api-server",
            &api_server,
            "--service-account",
            &account,
            "--state",
            &state_dir,
        ],
    };
    let cni_path = std::env::join_paths(lab.cni_path())
        .map_err(|e| LabError::Setup(format!("CNI_PATH: {e}")))?
        .to_string_lossy()
        .into_owned();
    // No --uplink: the agent finds it (the interface holding the Node's InternalIP).
    let mut args: Vec<String> = ["agent", "--node", &node.name()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(source.iter().map(|s| s.to_string()));
    args.extend(
        [
            "--workers",
            &lab.workers.to_string(),
            "--cpus",
            cpus,
            "--api-socket",
            &lab.agent_socket(node).display().to_string(),
            // Where this node's kxdp-cni keeps its records (pods.rs), as a DaemonSet would
            // mount /var/lib/kxdp-cni: a restarted agent re-opens the pods from there.
            "--cni-state-dir",
            &dir.join("cni").display().to_string(),
            // The agent installs the node's CNI configuration there once ready, naming
            // host-local's lease directory (the lab's nodes share one filesystem) and the
            // versions the plugins on the lab runtime's CNI_PATH speak.
            "--cni-conf-dir",
            &lab.cni_conf_dir(node).display().to_string(),
            "--cni-ipam-data-dir",
            &dir.join("ipam").display().to_string(),
            "--cni-path",
            &cni_path,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let out = dir.join("agent.out");
    let log = lab.agent_log(node);
    let files = procs::Output {
        stdout: &out,
        stderr: &log,
    };
    let rec = procs::spawn_with_env(
        &lab.procs_dir(),
        &label(node),
        &lab.names().node(node),
        &lab.kxdp_binary()?,
        &args,
        &files,
        &in_cluster_env(),
    )?;
    procs::wait_for_line(&rec, READY_PREFIX, READY_TIMEOUT)?;
    Ok(rec)
}

/// What the kubelet puts in every pod's environment: the `kubernetes` Service's ClusterIP,
/// which nothing routes on a node without kube-proxy until kxdp does. The agents must not
/// depend on it (they take `--api-server`).
pub fn in_cluster_env() -> [(&'static str, &'static str); 2] {
    [
        (
            "KUBERNETES_SERVICE_HOST",
            super::layout::KUBERNETES_SERVICE_IP,
        ),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ]
}

/// The agent's status.
pub fn status(lab: &Lab, node: NodePlan) -> Result<AgentStatus, LabError> {
    agent_client::status(&node.name(), &lab.agent_socket(node), API_TIMEOUT)
}

/// The agent's workers' counters.
pub fn stats(lab: &Lab, node: NodePlan) -> Result<AgentStats, LabError> {
    agent_client::stats(&node.name(), &lab.agent_socket(node), API_TIMEOUT)
}

/// Waits until every agent's tables know its local pods (`table_ports`): the agent has
/// read the workloads file and published a generation with them and their endpoints.
pub fn wait_for_pods(
    lab: &Lab,
    nodes: &[NodePlan],
    pods: &[PlacedPod],
    timeout: Duration,
) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    for &node in nodes {
        let want: BTreeSet<String> = pods
            .iter()
            .filter(|p| p.plan.node == node)
            .map(|p| pod_port_name(NAMESPACE, p.plan.name))
            .collect();
        loop {
            let last = match status(lab, node) {
                Ok(s) => {
                    let have: BTreeSet<String> = s.table_ports.iter().cloned().collect();
                    if want.is_subset(&have) {
                        break;
                    }
                    format!("last status: {s:?}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "{}'s tables to know {}",
                        node.name(),
                        want.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    detail: last,
                });
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{NODE1, NODE2};

    #[test]
    fn workers_spread_over_cpus() {
        assert_eq!(cpu_list(NODE1, 1, 2), "0");
        assert_eq!(cpu_list(NODE2, 1, 2), "1");
        assert_eq!(cpu_list(NODE2, 2, 2), "0,1");
        assert_eq!(cpu_list(NODE2, 2, 8), "2,3");
        assert_eq!(cpu_list(NODE1, 1, 0), "0");
    }
}
