//! Pods through CRI, as a kubelet makes them: RunPodSandbox (containerd creates the network
//! namespace under its state directory and runs the CNI chain from the node's conf dir),
//! then the pod's container (the probe server, from the probe image), started and waited
//! for until it says it serves. Removal is the kubelet's: StopPodSandbox, then
//! RemovePodSandbox, each of which makes containerd run the chain's DEL.
//!
//! The kubelet retries a RunPodSandbox that failed (containerd has then already DELeted
//! what ADD made); so does [`run_sandbox`], which reports the failures it retried.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri::api;

use super::super::Lab;
use super::super::error::LabError;
use super::super::layout::{HTTP_PORT, NAMESPACE, NodePlan, PodPlan};
use super::super::pods::{self as lab_pods, PodRecord, SandboxRecord};
use super::super::probe::READY_PREFIX;
use super::super::servers;
use super::{NodeRuntime, cri_error, images, logs};

/// How long the kubelet (the lab) keeps retrying a sandbox whose CNI ADD fails.
pub const RUN_RETRY_TIMEOUT: Duration = Duration::from_secs(90);
/// Between attempts: the kubelet backs off from 10 s; the lab is in a hurry.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// What StopContainer gives a container before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
const PROBE_CONTAINER: &str = "probe";

/// A pod's UID as the lab's kubelet makes it up: stable per lab and name.
pub fn pod_uid(lab: &Lab, name: &str) -> String {
    format!("{}-{name}-uid", lab.prefix)
}

/// Where the node's kubelet keeps pod logs (a real one: /var/log/pods).
fn pod_logs_dir(lab: &Lab, node: NodePlan) -> PathBuf {
    lab.node_dir(node).join("pod-logs")
}

/// A sandbox configuration: `namespace/name` on `node`, its own network namespace unless
/// `host_network`.
pub fn sandbox_config(
    lab: &Lab,
    node: NodePlan,
    namespace: &str,
    name: &str,
    host_network: bool,
) -> api::PodSandboxConfig {
    let uid = pod_uid(lab, name);
    let network = if host_network {
        api::NamespaceMode::Node
    } else {
        api::NamespaceMode::Pod
    };
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: uid.clone(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        // The kubelet names only pods with their own network (and UTS) namespace; runc
        // refuses a hostname for one that shares the node's.
        hostname: if host_network {
            String::new()
        } else {
            name.into()
        },
        log_directory: pod_logs_dir(lab, node)
            .join(format!("{namespace}_{name}_{uid}"))
            .display()
            .to_string(),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                namespace.to_string(),
            ),
            ("io.kubernetes.pod.uid".to_string(), uid),
        ]),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: NodeRuntime::of(lab, node).cgroup_parent,
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(network)),
                privileged: host_network,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn namespaces(network: api::NamespaceMode) -> api::NamespaceOption {
    api::NamespaceOption {
        network: network as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A lab pod's sandbox: its labels and `hostPort`s as the kubelet passes them (containerd
/// hands the port mappings to the chain's portmap as `runtimeConfig.portMappings`).
pub fn pod_sandbox_config(lab: &Lab, pod: &PodPlan) -> api::PodSandboxConfig {
    let mut config = sandbox_config(lab, pod.node, NAMESPACE, pod.name, false);
    config.labels.extend(
        pod.labels
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string())),
    );
    config.port_mappings = pod
        .http_host_port
        .map(|h| api::PortMapping {
            protocol: api::Protocol::Tcp as i32,
            container_port: i32::from(HTTP_PORT),
            host_port: i32::from(h),
            host_ip: String::new(),
        })
        .into_iter()
        .collect();
    config
}

/// What RunPodSandbox took: the sandbox and the failures retried on the way.
#[derive(Debug)]
pub struct SandboxRun {
    pub id: String,
    pub failures: Vec<String>,
}

/// RunPodSandbox, retried (as the kubelet does) until it succeeds or `timeout` passes.
pub fn run_sandbox(
    client: &cri::Client,
    node: NodePlan,
    config: &api::PodSandboxConfig,
    timeout: Duration,
) -> Result<SandboxRun, LabError> {
    run_sandbox_observed(client, node, config, timeout, &mut |_| {})
}

/// [`run_sandbox`], telling `on_failure` each failure before it retries.
pub fn run_sandbox_observed(
    client: &cri::Client,
    node: NodePlan,
    config: &api::PodSandboxConfig,
    timeout: Duration,
    on_failure: &mut dyn FnMut(&str),
) -> Result<SandboxRun, LabError> {
    let deadline = Instant::now() + timeout;
    let mut failures = Vec::new();
    let mut config = config.clone();
    loop {
        match client.run_pod_sandbox(config.clone()) {
            Ok(id) => return Ok(SandboxRun { id, failures }),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(node = %node.name(), "RunPodSandbox failed, retrying: {e}");
                failures.push(e.message().to_string());
                on_failure(e.message());
                // The kubelet's next sandbox for the pod is its next attempt: a failed one
                // whose cleanup failed too keeps its name reserved (containerd marks it
                // unknown), and `down` removes it with the rest.
                if let Some(m) = config.metadata.as_mut() {
                    m.attempt += 1;
                }
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(e) => return Err(cri_error(node)(e)),
        }
    }
}

/// The sandbox's address and network namespace path, from its status.
pub fn sandbox_network(
    client: &cri::Client,
    node: NodePlan,
    id: &str,
) -> Result<(Ipv4Addr, String), LabError> {
    let status = client.pod_sandbox_status(id).map_err(cri_error(node))?;
    let ip = status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .and_then(|n| n.ip.parse().ok())
        .ok_or_else(|| {
            LabError::Setup(format!(
                "sandbox {id} on {}: no IPv4 address in its status",
                node.name()
            ))
        })?;
    let netns = cri::netns_path(&status).ok_or_else(|| {
        LabError::Setup(format!(
            "sandbox {id} on {}: containerd names no network namespace",
            node.name()
        ))
    })?;
    Ok((ip, netns))
}

/// Creates and starts a container in a sandbox; waits for `ready` on its stdout (or, with
/// `ready` None, for it to exit 0: an init container). Returns its ID.
pub fn start_container(
    client: &cri::Client,
    node: NodePlan,
    sandbox_id: &str,
    sandbox: &api::PodSandboxConfig,
    config: api::ContainerConfig,
    ready: Option<&str>,
) -> Result<String, LabError> {
    let name = config
        .metadata
        .as_ref()
        .map_or(String::new(), |m| m.name.clone());
    let log = Path::new(&sandbox.log_directory).join(&config.log_path);
    let id = client
        .create_container(sandbox_id, config, sandbox.clone())
        .map_err(cri_error(node))?;
    client.start_container(&id).map_err(cri_error(node))?;
    let what = format!("container {name} on {}", node.name());
    let exited = || -> Option<(i32, String)> {
        let s = client.container_status(&id).ok()?;
        (s.state == api::ContainerState::ContainerExited as i32)
            .then(|| (s.exit_code, s.reason.clone()))
    };
    match ready {
        Some(prefix) => {
            let gone = || exited().map(|(code, reason)| format!("exit code {code}, {reason}"));
            logs::wait_for_line(&log, prefix, READY_TIMEOUT, &what, &gone)?;
        }
        None => {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                match exited() {
                    Some((0, _)) => break,
                    Some((code, reason)) => {
                        return Err(LabError::Setup(format!(
                            "{what} exited with {code} ({reason}); its log ends with:\n{}",
                            logs::tail(&log, 20)
                        )));
                    }
                    None if Instant::now() >= deadline => {
                        return Err(LabError::Timeout {
                            what: format!("{what} to finish"),
                            detail: logs::tail(&log, 20),
                        });
                    }
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
    Ok(id)
}

/// The probe server of a pod, from the probe image: the same `kxdp-lab probe serve` the
/// namespace runtime starts with nsenter, here started by the runtime.
fn probe_container(pod_name: &str) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: PROBE_CONTAINER.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: images::probe_image(),
            ..Default::default()
        }),
        args: servers::serve_args(pod_name),
        log_path: format!("{PROBE_CONTAINER}_0.log"),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(api::NamespaceMode::Pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts the pod's probe server in its sandbox and waits until it serves.
pub fn start_probe(
    client: &cri::Client,
    node: NodePlan,
    sandbox_id: &str,
    sandbox: &api::PodSandboxConfig,
    pod_name: &str,
) -> Result<String, LabError> {
    start_container(
        client,
        node,
        sandbox_id,
        sandbox,
        probe_container(pod_name),
        Some(READY_PREFIX),
    )
}

/// Makes the pod through the node's containerd and starts its probe server; records it
/// (before RunPodSandbox too, so `down` removes whatever got made). Returns the record and
/// the RunPodSandbox failures retried.
pub fn add(lab: &Lab, pod: &PodPlan) -> Result<(PodRecord, SandboxRun), LabError> {
    let rt = NodeRuntime::of(lab, pod.node);
    let client = super::client(&rt)?;
    let config = pod_sandbox_config(lab, pod);
    let mut rec = PodRecord {
        name: pod.name.to_string(),
        node: pod.node.index,
        netns: String::new(),
        container_id: String::new(),
        ip: None,
        conflist: None,
        result: None,
        port_mappings: Vec::new(),
        sandbox: Some(SandboxRecord::default()),
    };
    lab_pods::save(lab, &rec)?;
    let run = run_sandbox(&client, pod.node, &config, RUN_RETRY_TIMEOUT)?;
    rec.container_id = run.id.clone();
    lab_pods::save(lab, &rec)?;
    let (ip, netns) = sandbox_network(&client, pod.node, &run.id)?;
    rec.ip = Some(ip);
    rec.netns = netns;
    lab_pods::save(lab, &rec)?;
    let probe = start_probe(&client, pod.node, &run.id, &config, pod.name)?;
    rec.sandbox = Some(SandboxRecord {
        containers: vec![probe],
    });
    lab_pods::save(lab, &rec)?;
    Ok((rec, run))
}

/// The kubelet's removal: StopPodSandbox (containers stopped, CNI DEL, netns removed), then
/// RemovePodSandbox (which stops it again: a second DEL, with no netns path). A sandbox
/// containerd no longer knows is already gone. The record goes once both succeeded.
pub fn remove(lab: &Lab, rec: &PodRecord) -> Result<(), LabError> {
    let node = lab_pods::node_of(rec)?;
    if !rec.container_id.is_empty() {
        let client = super::client(&NodeRuntime::of(lab, node))?;
        remove_sandbox(&client, node, &rec.container_id)?;
    }
    lab_pods::forget(lab, rec);
    Ok(())
}

/// StopPodSandbox + RemovePodSandbox; NotFound is success (it is gone).
pub fn remove_sandbox(client: &cri::Client, node: NodePlan, id: &str) -> Result<(), LabError> {
    let gone = |e: &cri::CriError| matches!(e, cri::CriError::Call { code: tonic_code, .. } if *tonic_code == cri::Code::NotFound);
    for step in [
        cri::Client::stop_pod_sandbox,
        cri::Client::remove_pod_sandbox,
    ] {
        match step(client, id) {
            Ok(()) => {}
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(cri_error(node)(e)),
        }
    }
    Ok(())
}
