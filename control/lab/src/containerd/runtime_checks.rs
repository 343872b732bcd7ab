//! Checks only the containerd runtime has: what containerd does with kxdp-cni and the agent
//! that the lab's own runtime never did. Each makes a throwaway pod where it needs one and
//! removes it again; each ends by sending traffic to the lab's pods.
//!
//! containerd (1.6, and 2.x alike) never runs CNI CHECK: the CRI plugin's sandbox code calls
//! only ADD (RunPodSandbox) and DEL (StopPodSandbox, RemovePodSandbox, and the cleanup of a
//! failed RunPodSandbox), so these checks cover ADD and DEL; CHECK stays with kxdp-cni's own
//! tests.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::super::Lab;
use super::super::agents as lab_agents;
use super::super::error::LabError;
use super::super::layout::{
    NAMESPACE, NODE1, NODE2, NodePlan, POD_CLIENT, POD_WEB1, POD_WEB2, PodPlan,
};
use super::super::manifests::{self, PlacedPod};
use super::pods::{self, run_sandbox, run_sandbox_observed, sandbox_network};
use super::{NodeRuntime, agents, cri_error, daemon};
use model::translate::pod_port_name;

/// Sends the lab's usual request from one lab pod to another; (passed, what it measured).
pub type Traffic<'a> = &'a dyn Fn(&PodPlan, &PodPlan) -> (bool, String);

/// A pod only these checks make.
const fn scratch(name: &'static str, node: NodePlan) -> PodPlan {
    PodPlan {
        name,
        node,
        labels: &[("app", "scratch")],
        http_host_port: None,
    }
}

const KNOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a throwaway sandbox got.
struct Scratch {
    id: String,
    ip: Ipv4Addr,
    netns: String,
    port: String,
}

fn make_scratch(lab: &Lab, pod: &PodPlan) -> Result<(cri::Client, Scratch), LabError> {
    let client = super::client(&NodeRuntime::of(lab, pod.node))?;
    let config = pods::pod_sandbox_config(lab, pod);
    let run = run_sandbox(&client, pod.node, &config, pods::RUN_RETRY_TIMEOUT)?;
    let (ip, netns) = sandbox_network(&client, pod.node, &run.id)?;
    Ok((
        client,
        Scratch {
            id: run.id,
            ip,
            netns,
            port: pod_port_name(NAMESPACE, pod.name),
        },
    ))
}

/// Whether host-local still holds a lease for `ip` on the node (a file named by the
/// address in its data directory, one subdirectory per network).
fn leased(lab: &Lab, node: NodePlan, ip: Ipv4Addr) -> bool {
    let dir = lab.node_dir(node).join("ipam");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|net| net.path().join(ip.to_string()).exists())
}

/// Whether the agent has the pod's port open.
fn port_open(lab: &Lab, node: NodePlan, port: &str) -> Result<bool, LabError> {
    Ok(lab_agents::status(lab, node)?
        .ports
        .iter()
        .any(|p| p == port))
}

/// What is left of a removed scratch pod: its namespace, lease and port must all be gone.
fn leftovers(lab: &Lab, node: NodePlan, s: &Scratch) -> Result<Vec<String>, LabError> {
    let mut left = Vec::new();
    if Path::new(&s.netns).exists() {
        left.push(format!("netns {}", s.netns));
    }
    if leased(lab, node, s.ip) {
        left.push(format!("host-local lease of {}", s.ip));
    }
    if port_open(lab, node, &s.port)? {
        left.push(format!("agent port {}", s.port));
    }
    Ok(left)
}

fn verdict(r: Result<(bool, String), LabError>) -> (bool, String) {
    r.unwrap_or_else(|e| (false, e.to_string()))
}

/// The kubelet's removal: StopPodSandbox (containerd runs DEL with the netns), then
/// RemovePodSandbox (DEL again, with no netns path). Both must succeed and leave nothing.
pub fn del_twice(lab: &Lab, traffic: Traffic<'_>) -> (bool, String) {
    verdict((|| {
        let pod = scratch("scratch-del", NODE1);
        let (client, s) = make_scratch(lab, &pod)?;
        let opened = port_open(lab, pod.node, &s.port)?;
        let lease = leased(lab, pod.node, s.ip);
        client
            .stop_pod_sandbox(&s.id)
            .map_err(cri_error(pod.node))?;
        let after_stop = leftovers(lab, pod.node, &s)?;
        client
            .remove_pod_sandbox(&s.id)
            .map_err(cri_error(pod.node))?;
        let after_remove = leftovers(lab, pod.node, &s)?;
        let (ok, measured) = traffic(&POD_CLIENT, &POD_WEB1);
        Ok((
            opened && lease && after_stop.is_empty() && after_remove.is_empty() && ok,
            format!(
                "ADD gave {} (port open {opened}, leased {lease}); after StopPodSandbox left \
                 {after_stop:?}, after RemovePodSandbox {after_remove:?}; client->web-1: {measured}",
                s.ip
            ),
        ))
    })())
}

/// A sandbox whose network namespace vanished (unmounted and removed behind containerd's
/// back): containerd runs DEL with an empty CNI_NETNS, which must succeed and release all.
pub fn netns_gone(lab: &Lab, traffic: Traffic<'_>) -> (bool, String) {
    verdict((|| {
        let pod = scratch("scratch-gone", NODE2);
        let (client, s) = make_scratch(lab, &pod)?;
        super::mounts::unmount_under(Path::new(&s.netns))?;
        std::fs::remove_file(&s.netns).map_err(|e| LabError::io(&s.netns, e))?;
        pods::remove_sandbox(&client, pod.node, &s.id)?;
        let left = leftovers(lab, pod.node, &s)?;
        let (ok, measured) = traffic(&POD_WEB2, &POD_CLIENT);
        Ok((
            left.is_empty() && ok,
            format!(
                "sandbox {} ({}) removed after its netns went; left {left:?}; web-2->client: {measured}",
                &s.id[..12.min(s.id.len())],
                s.ip
            ),
        ))
    })())
}

/// containerd stopped (SIGTERM) and started again with the pods running: the shims keep the
/// containers, the restarted containerd finds its sandboxes ready, and traffic flows.
pub fn containerd_restart(lab: &Lab, traffic: Traffic<'_>) -> (bool, String) {
    verdict((|| {
        let node = NODE1;
        let rt = NodeRuntime::of(lab, node);
        let started = Instant::now();
        daemon::stop(lab, &rt)?;
        let during = traffic(&POD_CLIENT, &POD_WEB1);
        daemon::launch(lab, &rt)?;
        let took = started.elapsed();
        let client = super::client(&rt)?;
        let sandboxes = client.list_pod_sandboxes().map_err(cri_error(node))?;
        let ready = sandboxes
            .iter()
            .filter(|s| s.state == cri::api::PodSandboxState::SandboxReady as i32)
            .count();
        let after = traffic(&POD_CLIENT, &POD_WEB1);
        // Three ready sandboxes on node1: the agent's, client's and web-1's.
        Ok((
            during.0 && after.0 && ready == 3 && sandboxes.len() == 3,
            format!(
                "restarted in {:.1} s; {ready}/{} sandboxes ready after; client->web-1 while \
                 stopped: {}; after: {}",
                took.as_secs_f64(),
                sandboxes.len(),
                during.1,
                after.1
            ),
        ))
    })())
}

/// What the checks that restart an agent container need: the lab's pods (which the agent
/// must know again) with traffic between them.
#[derive(Clone, Copy)]
pub struct Restarts<'a> {
    pub lab: &'a Lab,
    pub traffic: Traffic<'a>,
    pub placed: &'a [PlacedPod],
}

impl std::fmt::Debug for Restarts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restarts")
            .field("lab", &self.lab.dir)
            .field("pods", &self.placed.len())
            .finish_non_exhaustive()
    }
}

/// The agent container stopped, removed, and its next attempt started, as the kubelet
/// restarts a container: the pods it serves answer again.
pub fn agent_restart(r: &Restarts<'_>) -> (bool, String) {
    let (lab, traffic, placed) = (r.lab, r.traffic, r.placed);
    verdict((|| {
        let node = NODE2;
        let started = Instant::now();
        agents::stop_agent(lab, node)?;
        let pod = agents::start_next_attempt(lab, node)?;
        lab_agents::wait_for_pods(lab, &[node], placed, KNOWN_TIMEOUT)?;
        let took = started.elapsed();
        let (ok, measured) = traffic(&POD_CLIENT, &POD_WEB2);
        Ok((
            ok,
            format!(
                "attempt {} ready and serving in {:.1} s; client->web-2: {measured}",
                pod.attempt,
                took.as_secs_f64()
            ),
        ))
    })())
}

/// A pod created while its node's agent is restarting: kxdp-cni answers ADD with 11 (try
/// again later), containerd fails RunPodSandbox (and DELs), the kubelet (the lab) retries,
/// and once the agent is back the sandbox is made.
pub fn sandbox_during_agent_restart(r: &Restarts<'_>) -> (bool, String) {
    let (lab, traffic, placed) = (r.lab, r.traffic, r.placed);
    verdict((|| {
        let node = NODE1;
        let pod = scratch("scratch-retry", node);
        agents::stop_agent(lab, node)?;
        let (first_failure_tx, first_failure) = mpsc::channel::<String>();
        let lab_for_thread = lab.clone();
        let kubelet =
            std::thread::spawn(move || -> Result<(pods::SandboxRun, Ipv4Addr), LabError> {
                let client = super::client(&NodeRuntime::of(&lab_for_thread, node))?;
                let config = pods::pod_sandbox_config(&lab_for_thread, &pod);
                let run = run_sandbox_observed(
                    &client,
                    node,
                    &config,
                    pods::RUN_RETRY_TIMEOUT,
                    &mut |msg| {
                        let _ = first_failure_tx.send(msg.to_string());
                    },
                )?;
                let (ip, _) = sandbox_network(&client, node, &run.id)?;
                Ok((run, ip))
            });
        // The agent comes back only after a RunPodSandbox has failed for want of it.
        let first = first_failure
            .recv_timeout(pods::RUN_RETRY_TIMEOUT)
            .map_err(|_| {
                LabError::Setup("RunPodSandbox never failed while the agent was stopped".into())
            });
        let restarted = agents::start_next_attempt(lab, node);
        let joined = kubelet
            .join()
            .map_err(|_| LabError::Setup("the kubelet thread panicked".into()))?;
        let first = first?;
        restarted?;
        let (run, ip) = joined?;
        lab_agents::wait_for_pods(lab, &[node], placed, KNOWN_TIMEOUT)?;
        let (ok, measured) = traffic(&POD_CLIENT, &POD_WEB1);
        let client = super::client(&NodeRuntime::of(lab, node))?;
        pods::remove_sandbox(&client, node, &run.id)?;
        // kxdp-cni's two "try again later" (11) messages: no agent answering, or one that
        // answers it cannot serve yet.
        let try_again = run.failures.iter().all(|f| {
            f.contains("the kxdp agent is not answering")
                || f.contains("the kxdp agent cannot serve requests now")
        });
        Ok((
            !run.failures.is_empty() && try_again && ok,
            format!(
                "{} RunPodSandbox failure(s) retried, then {ip}; first: {first:?}; \
                 client->web-1 after: {measured}",
                run.failures.len()
            ),
        ))
    })())
}

/// The pods [`pod_creation`] makes, one after another, alternating nodes.
const LATENCY_PODS: [&str; 20] = [
    "lat-01", "lat-02", "lat-03", "lat-04", "lat-05", "lat-06", "lat-07", "lat-08", "lat-09",
    "lat-10", "lat-11", "lat-12", "lat-13", "lat-14", "lat-15", "lat-16", "lat-17", "lat-18",
    "lat-19", "lat-20",
];
/// How long one pod may take to answer before the measurement gives up on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const ANSWER_POLL: Duration = Duration::from_millis(20);

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Pod creation through containerd, measured as a user waits for it: from RunPodSandbox to
/// the pod's server answering TCP from another pod. In between, as in a cluster: containerd
/// runs the chain (ADD), the kubelet (the lab) reports the pod's address (the workloads
/// manifest, which the agents watch), the probe container starts. `answers(ip)` sends one
/// request. Passes when every pod answered; prints min/p50/p99/max and where the time went.
pub fn pod_creation(
    lab: &Lab,
    placed: &[PlacedPod],
    answers: &dyn Fn(Ipv4Addr) -> bool,
) -> (bool, String) {
    verdict((|| {
        // Per pod: RunPodSandbox returned, the probe container serves, the pod answered.
        let mut sandbox = Vec::new();
        let mut serving = Vec::new();
        let mut answered = Vec::new();
        for (i, name) in LATENCY_PODS.iter().enumerate() {
            let node = if i % 2 == 0 { NODE1 } else { NODE2 };
            let pod = scratch(name, node);
            let client = super::client(&NodeRuntime::of(lab, node))?;
            let config = pods::pod_sandbox_config(lab, &pod);
            let started = Instant::now();
            let id = client
                .run_pod_sandbox(config.clone())
                .map_err(cri_error(node))?;
            sandbox.push(started.elapsed());
            let (ip, _) = sandbox_network(&client, node, &id)?;
            let mut with_it = placed.to_vec();
            with_it.push(PlacedPod { plan: pod, ip });
            manifests::write_workloads(&lab.state_dir(), &with_it)?;
            pods::start_probe(&client, node, &id, &config, pod.name)?;
            serving.push(started.elapsed());
            let deadline = started + ANSWER_TIMEOUT;
            while !answers(ip) {
                if Instant::now() >= deadline {
                    return Err(LabError::Timeout {
                        what: format!("{name} ({ip}) on {} to answer", node.name()),
                        detail: format!("after {} pods", answered.len()),
                    });
                }
                std::thread::sleep(ANSWER_POLL);
            }
            answered.push(started.elapsed());
            pods::remove_sandbox(&client, node, &id)?;
            manifests::write_workloads(&lab.state_dir(), placed)?;
        }
        for t in [&mut sandbox, &mut serving, &mut answered] {
            t.sort();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p50 = |t: &[Duration]| ms(percentile(t, 50.0));
        Ok((
            answered.len() == LATENCY_PODS.len(),
            format!(
                "{} pods, RunPodSandbox -> answering: min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, \
                 max {:.0} ms (p50 of the steps from RunPodSandbox: sandbox made {:.0} ms, \
                 probe container serving {:.0} ms)",
                answered.len(),
                ms(answered[0]),
                p50(&answered),
                ms(percentile(&answered, 99.0)),
                ms(answered[answered.len() - 1]),
                p50(&sandbox),
                p50(&serving),
            ),
        ))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&d, 99.0), Duration::from_millis(20));
        assert_eq!(percentile(&d, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
