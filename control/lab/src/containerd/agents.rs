//! The node's agent from the kxdp image, run the way deploy/kxdp.yaml's DaemonSet runs it:
//! the lab reads that DaemonSet (compiled in, so the file users apply is what is tested) and
//! makes its pod through CRI: a host-network sandbox, the init container (installs
//! kxdp-cni, host-local and portmap into the node's /opt/cni/bin), then the agent container,
//! privileged, with the DaemonSet's command, arguments, environment and volume mounts.
//!
//! What a lab node cannot take verbatim is translated, each for a stated reason:
//! - hostPath volumes point at the node's directories under DIR (two nodes share one
//!   machine): [`host_path`] says where each of the DaemonSet's goes, and fails for one it
//!   does not know, so a new mount in the DaemonSet cannot go untested unnoticed;
//! - a mount at its own host path that the arguments name (/run/kxdp, /var/lib/kxdp-cni:
//!   the agent hands those paths to kxdp-cni, which runs on the host) is mounted at the lab
//!   node's path instead, and the arguments say that path;
//! - `--source api`: `--in-cluster` stays, as on a node without kube-proxy: the lab's
//!   service account (token, CA) is mounted where the kubelet mounts one,
//!   KUBERNETES_SERVICE_HOST is the `kubernetes` ClusterIP (routed by nothing), and the lab
//!   adds `--api-server` (the double behind its TLS front); `--source dir`: `--in-cluster`
//!   goes, the state directory mounted where the ConfigMap goes is the source;
//! - the lab adds `--workers`, `--cpus` and host-local's per-node `--cni-ipam-data-dir`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri::api;
use serde::Deserialize;
use serde_yaml::Value;

use super::super::agents::{READY_PREFIX, cpu_list};
use super::super::error::LabError;
use super::super::layout::NodePlan;
use super::super::{Lab, StateSource, apiserver};
use super::pods::{remove_sandbox, sandbox_config, start_container};
use super::{NodeRuntime, cri_error};

/// deploy/kxdp.yaml, as users apply it.
const DEPLOY_MANIFEST: &str = include_str!("../../../../deploy/kxdp.yaml");
/// The DaemonSet's pod, as the lab names its sandbox.
pub const AGENT_NAMESPACE: &str = "kube-system";
const AGENT_POD_PREFIX: &str = "kxdp-";
/// Where the kubelet mounts a pod's service account (the agent's default --service-account).
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the kubelet has a runtime mask in every container that is not privileged
/// (k8s.io/kubernetes pkg/securitycontext, the default procMount): CRI leaves a container
/// without them when its client sends none, so the lab sends them as the kubelet does.
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// ... and what it has mounted read-only there: /proc/sys among them, which is why the
/// agent writes no sysctl itself.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A container of the DaemonSet's pod template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateContainer {
    pub name: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Name and value, `valueFrom` resolved for a lab node.
    pub env: Vec<(String, EnvValue)>,
    pub privileged: bool,
    /// `securityContext.capabilities`: as the kubelet hands them to CRI (names without
    /// `CAP_`, `ALL` for every one; the runtime resolves them).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `securityContext.allowPrivilegeEscalation: false`: CRI's no_new_privs.
    pub no_new_privs: bool,
    pub mounts: Vec<TemplateMount>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    Value(String),
    NodeName,
    ConfigMapKey(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateMount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
    pub propagation: api::MountPropagation,
}

/// The DaemonSet's pod template, as far as running it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub host_network: bool,
    pub init: Vec<TemplateContainer>,
    pub containers: Vec<TemplateContainer>,
    /// Volume name to its source: `Some(hostPath)`, or None for a ConfigMap.
    pub volumes: HashMap<String, Option<String>>,
    /// The ConfigMap's data (kxdp.yaml).
    pub config: HashMap<String, String>,
}

fn bad(detail: impl std::fmt::Display) -> LabError {
    LabError::Setup(format!("deploy/kxdp.yaml: {detail}"))
}

/// Reads the DaemonSet and its ConfigMap out of deploy/kxdp.yaml.
pub fn template() -> Result<Template, LabError> {
    parse(DEPLOY_MANIFEST)
}

fn parse(text: &str) -> Result<Template, LabError> {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
        .map(Value::deserialize)
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let kind = |d: &&Value| d["kind"].as_str().map(str::to_string);
    let ds = docs
        .iter()
        .find(|d| kind(d).as_deref() == Some("DaemonSet"))
        .ok_or_else(|| bad("no DaemonSet"))?;
    let config: HashMap<String, String> = docs
        .iter()
        .find(|d| kind(d).as_deref() == Some("ConfigMap"))
        .and_then(|d| d["data"].as_mapping())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let spec = &ds["spec"]["template"]["spec"];
    let containers = |key: &str| -> Result<Vec<TemplateContainer>, LabError> {
        spec[key]
            .as_sequence()
            .map(|s| s.iter().map(container).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    };
    let volumes = spec["volumes"]
        .as_sequence()
        .ok_or_else(|| bad("the DaemonSet has no volumes"))?
        .iter()
        .map(|v| {
            let name = v["name"]
                .as_str()
                .ok_or_else(|| bad("a volume without a name"))?;
            Ok((
                name.to_string(),
                v["hostPath"]["path"].as_str().map(str::to_string),
            ))
        })
        .collect::<Result<_, LabError>>()?;
    Ok(Template {
        host_network: spec["hostNetwork"].as_bool().unwrap_or(false),
        init: containers("initContainers")?,
        containers: containers("containers")?,
        volumes,
        config,
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn container(c: &Value) -> Result<TemplateContainer, LabError> {
    let name = c["name"]
        .as_str()
        .ok_or_else(|| bad("a container without a name"))?
        .to_string();
    let env = c["env"]
        .as_sequence()
        .map(|s| s.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let key = e["name"].as_str().unwrap_or_default().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                EnvValue::Value(v.to_string())
            } else if e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("spec.nodeName") {
                EnvValue::NodeName
            } else if let Some(k) = e["valueFrom"]["configMapKeyRef"]["key"].as_str() {
                EnvValue::ConfigMapKey(k.to_string())
            } else {
                return Err(bad(format!(
                    "{name}: env {key}: a source the lab cannot give"
                )));
            };
            Ok((key, value))
        })
        .collect::<Result<_, LabError>>()?;
    let mounts = c["volumeMounts"]
        .as_sequence()
        .map(|s| s.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let propagation = match m["mountPropagation"].as_str() {
                None | Some("None") => api::MountPropagation::PropagationPrivate,
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
                Some(other) => return Err(bad(format!("{name}: mountPropagation {other}"))),
            };
            Ok(TemplateMount {
                volume: m["name"].as_str().unwrap_or_default().to_string(),
                path: m["mountPath"].as_str().unwrap_or_default().to_string(),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                propagation,
            })
        })
        .collect::<Result<_, LabError>>()?;
    Ok(TemplateContainer {
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env,
        privileged: c["securityContext"]["privileged"]
            .as_bool()
            .unwrap_or(false),
        cap_add: strings(&c["securityContext"]["capabilities"]["add"]),
        cap_drop: strings(&c["securityContext"]["capabilities"]["drop"]),
        no_new_privs: c["securityContext"]["allowPrivilegeEscalation"].as_bool() == Some(false),
        mounts,
        name,
    })
}

/// Where a DaemonSet hostPath is on a lab node; None for one the lab does not know.
pub fn host_path(lab: &Lab, node: NodePlan, path: &str) -> Option<PathBuf> {
    let rt = NodeRuntime::of(lab, node);
    let dir = lab.node_dir(node);
    Some(match path {
        "/sys/fs/bpf" => rt.bpffs(),
        "/run/netns" => rt.netns_dir(),
        "/run/kxdp" => dir.join("run-kxdp"),
        "/var/lib/kxdp-cni" => dir.join("cni"),
        "/opt/cni/bin" => super::cni_bin_dir(lab, node),
        "/etc/cni/net.d" => lab.cni_conf_dir(node),
        "/lib/modules" => PathBuf::from("/lib/modules"),
        _ => return None,
    })
}

/// The agent's API socket on a lab node (the DaemonSet's /run/kxdp/agent.sock).
pub fn agent_socket(lab: &Lab, node: NodePlan) -> PathBuf {
    lab.node_dir(node).join("run-kxdp").join("agent.sock")
}

/// One container of the template as CRI wants it for `node`.
pub fn container_config(
    lab: &Lab,
    node: NodePlan,
    t: &Template,
    c: &TemplateContainer,
    image: &str,
    attempt: u32,
) -> Result<api::ContainerConfig, LabError> {
    let env: Vec<(String, String)> = c
        .env
        .iter()
        .map(|(k, v)| {
            let value = match v {
                EnvValue::Value(s) => s.clone(),
                EnvValue::NodeName => node.name(),
                EnvValue::ConfigMapKey(key) => t.config.get(key).cloned().unwrap_or_default(),
            };
            (k.clone(), value)
        })
        .collect();
    let expand = |arg: &str| {
        env.iter().fold(arg.to_string(), |a, (k, v)| {
            a.replace(&format!("$({k})"), v)
        })
    };
    let mut args: Vec<String> = c.args.iter().map(|a| expand(a)).collect();
    let mut mounts = Vec::new();
    for m in &c.mounts {
        let source = t
            .volumes
            .get(&m.volume)
            .ok_or_else(|| bad(format!("{}: no volume {}", c.name, m.volume)))?;
        let host = match source {
            Some(hp) => host_path(lab, node, hp).ok_or_else(|| {
                bad(format!(
                    "hostPath {hp} (volume {}) has no place on a lab node: add it to \
                     lab::containerd::agents::host_path",
                    m.volume
                ))
            })?,
            // The ConfigMap (kxdp.yaml): the lab's state directory, which has it (and, with
            // --source dir, the manifests the agent reads instead of an API server).
            None => lab.state_dir(),
        };
        let named_in_args = args.iter().any(|a| a.starts_with(&m.path));
        let container_path = if source.as_deref() == Some(m.path.as_str()) && named_in_args {
            let lab_path = host.display().to_string();
            for a in &mut args {
                if let Some(rest) = a.strip_prefix(&m.path) {
                    *a = format!("{lab_path}{rest}");
                }
            }
            lab_path
        } else {
            m.path.clone()
        };
        std::fs::create_dir_all(&host).map_err(|e| LabError::io(&host, e))?;
        mounts.push(api::Mount {
            container_path,
            host_path: host.display().to_string(),
            readonly: m.read_only,
            propagation: m.propagation as i32,
            ..Default::default()
        });
    }
    let mut env = env;
    if c.args.first().map(String::as_str) == Some("agent") {
        agent_args(lab, node, &mut args, &mut mounts);
        if lab.source == StateSource::Api {
            // As the kubelet sets them for every pod.
            env.extend(
                super::super::agents::in_cluster_env().map(|(k, v)| (k.to_string(), v.to_string())),
            );
        }
    }
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(api::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: c.command.clone(),
        args,
        envs: env
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect(),
        mounts,
        log_path: format!("{}_{attempt}.log", c.name),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                privileged: c.privileged,
                // A container that is not privileged runs with the runtime's default set
                // changed by these, as the kubelet asks for it; privileged ones get all.
                capabilities: (!c.privileged).then(|| api::Capability {
                    add_capabilities: c.cap_add.clone(),
                    drop_capabilities: c.cap_drop.clone(),
                    ..Default::default()
                }),
                no_new_privs: c.no_new_privs,
                masked_paths: paths(c.privileged, &MASKED_PATHS),
                readonly_paths: paths(c.privileged, &READONLY_PATHS),
                namespace_options: Some(api::NamespaceOption {
                    network: api::NamespaceMode::Node as i32,
                    pid: api::NamespaceMode::Container as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `defaults` for a container that is not privileged, none for a privileged one.
fn paths(privileged: bool, defaults: &[&str]) -> Vec<String> {
    if privileged {
        Vec::new()
    } else {
        defaults.iter().map(|p| p.to_string()).collect()
    }
}

/// The agent's arguments on a lab node: with `--source api`, `--in-cluster` as the
/// DaemonSet has it, reaching the API server double through `--api-server` with the lab's
/// service account mounted where the kubelet mounts a pod's (no kube-proxy on a lab node:
/// KUBERNETES_SERVICE_HOST routes nowhere); with `--source dir`, the state directory
/// instead. Then its worker layout and host-local's per-node lease directory.
fn agent_args(lab: &Lab, node: NodePlan, args: &mut Vec<String>, mounts: &mut Vec<api::Mount>) {
    if lab.source == StateSource::Api {
        args.extend(["--api-server".to_string(), apiserver::address().to_string()]);
        mounts.push(api::Mount {
            container_path: SERVICE_ACCOUNT.into(),
            host_path: apiserver::service_account_dir(lab).display().to_string(),
            readonly: true,
            ..Default::default()
        });
    } else {
        args.retain(|a| a != "--in-cluster");
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    args.extend([
        "--workers".to_string(),
        lab.workers.to_string(),
        "--cpus".into(),
        cpu_list(node, lab.workers, ncpu),
        "--cni-ipam-data-dir".into(),
        lab.node_dir(node).join("ipam").display().to_string(),
    ]);
}

/// The agent's pod on a node: sandbox, init containers, the agent; waits for its ready line.
/// Records the sandbox and the agent container.
pub fn start(lab: &Lab, node: NodePlan, image: &str) -> Result<AgentPod, LabError> {
    let t = template()?;
    let rt = NodeRuntime::of(lab, node);
    let client = super::client(&rt)?;
    let name = format!("{AGENT_POD_PREFIX}{}", node.name());
    let sandbox = sandbox_config(lab, node, AGENT_NAMESPACE, &name, t.host_network);
    let id = client
        .run_pod_sandbox(sandbox.clone())
        .map_err(cri_error(node))?;
    let mut pod = AgentPod {
        sandbox_id: id,
        agent_container: String::new(),
        attempt: 0,
        image: image.to_string(),
    };
    save(lab, node, &pod)?;
    for c in &t.init {
        let config = container_config(lab, node, &t, c, image, 0)?;
        start_container(&client, node, &pod.sandbox_id, &sandbox, config, None)?;
    }
    pod.agent_container = start_agent(lab, node, &t, &client, &pod.sandbox_id, image, 0)?;
    save(lab, node, &pod)?;
    Ok(pod)
}

fn start_agent(
    lab: &Lab,
    node: NodePlan,
    t: &Template,
    client: &cri::Client,
    sandbox_id: &str,
    image: &str,
    attempt: u32,
) -> Result<String, LabError> {
    let agent = t
        .containers
        .first()
        .ok_or_else(|| bad("the DaemonSet has no container"))?;
    let sandbox = sandbox_config(
        lab,
        node,
        AGENT_NAMESPACE,
        &format!("{AGENT_POD_PREFIX}{}", node.name()),
        t.host_network,
    );
    let config = container_config(lab, node, t, agent, image, attempt)?;
    start_container(
        client,
        node,
        sandbox_id,
        &sandbox,
        config,
        Some(READY_PREFIX),
    )
}

/// The agent's pod as the lab recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentPod {
    pub sandbox_id: String,
    pub agent_container: String,
    pub attempt: u32,
    /// The kxdp image it runs: the next attempt runs the same.
    pub image: String,
}

fn record_path(lab: &Lab, node: NodePlan) -> PathBuf {
    lab.node_dir(node).join("agent-pod.json")
}

fn save(lab: &Lab, node: NodePlan, pod: &AgentPod) -> Result<(), LabError> {
    let path = record_path(lab, node);
    let text = serde_json::to_vec_pretty(pod).map_err(|e| LabError::Setup(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| LabError::io(&path, e))
}

pub fn record(lab: &Lab, node: NodePlan) -> Option<AgentPod> {
    serde_json::from_slice(&std::fs::read(record_path(lab, node)).ok()?).ok()
}

/// Stops the agent container (SIGTERM: it detaches and exits) and removes it, as the
/// kubelet does before it starts the next attempt.
pub fn stop_agent(lab: &Lab, node: NodePlan) -> Result<AgentPod, LabError> {
    let pod = record(lab, node)
        .ok_or_else(|| LabError::Setup(format!("no agent pod recorded on {}", node.name())))?;
    let client = super::client(&NodeRuntime::of(lab, node))?;
    client
        .stop_container(&pod.agent_container, super::super::agents::STOP_GRACE)
        .map_err(cri_error(node))?;
    client
        .remove_container(&pod.agent_container)
        .map_err(cri_error(node))?;
    Ok(pod)
}

/// Starts the next attempt of the agent container in the recorded sandbox, from the
/// recorded image; waits for ready.
pub fn start_next_attempt(lab: &Lab, node: NodePlan) -> Result<AgentPod, LabError> {
    let mut pod = record(lab, node)
        .ok_or_else(|| LabError::Setup(format!("no agent pod recorded on {}", node.name())))?;
    let t = template()?;
    let client = super::client(&NodeRuntime::of(lab, node))?;
    pod.attempt += 1;
    pod.agent_container = start_agent(
        lab,
        node,
        &t,
        &client,
        &pod.sandbox_id,
        &pod.image,
        pod.attempt,
    )?;
    save(lab, node, &pod)?;
    Ok(pod)
}

/// Removes the agent's pod (the agent detaches on SIGTERM); a no-op when none is recorded.
pub fn remove(lab: &Lab, node: NodePlan) -> Result<(), LabError> {
    let Some(pod) = record(lab, node) else {
        return Ok(());
    };
    let client = super::client(&NodeRuntime::of(lab, node))?;
    remove_sandbox(&client, node, &pod.sandbox_id)?;
    let _ = std::fs::remove_file(record_path(lab, node));
    Ok(())
}

/// The log of the agent container's current attempt.
pub fn log_path(lab: &Lab, node: NodePlan) -> Option<PathBuf> {
    let pod = record(lab, node)?;
    let t = template().ok()?;
    let name = &t.containers.first()?.name;
    let sandbox = sandbox_config(
        lab,
        node,
        AGENT_NAMESPACE,
        &format!("{AGENT_POD_PREFIX}{}", node.name()),
        true,
    );
    Some(Path::new(&sandbox.log_directory).join(format!("{name}_{}.log", pod.attempt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonset_is_read() {
        let t = template().unwrap();
        assert!(t.host_network);
        assert_eq!(t.init.len(), 2);
        assert!(
            t.init
                .iter()
                .any(|c| c.name == "node-sysctls" && c.privileged)
        );
        assert_eq!(t.containers.len(), 1);
        let agent = &t.containers[0];
        assert!(!agent.privileged);
        assert!(agent.no_new_privs);
        assert_eq!(agent.cap_drop, ["ALL"]);
        assert!(agent.cap_add.iter().any(|c| c == "NET_ADMIN"));
        assert_eq!(agent.args.first().map(String::as_str), Some("agent"));
        assert!(agent.args.iter().any(|a| a == "--in-cluster"));
        assert!(t.config.contains_key("kxdp.yaml"));
    }

    #[test]
    fn every_daemonset_host_path_has_a_place_on_a_lab_node() {
        let lab = Lab {
            dir: PathBuf::from("/run/kxdp-lab-test"),
            prefix: "kxl".into(),
            workers: 1,
            source: StateSource::Dir,
            runtime: super::super::super::Runtime::Containerd,
            image: None,
            bin_dir: PathBuf::from("/nowhere"),
        };
        let t = template().unwrap();
        for hp in t.volumes.values().flatten() {
            assert!(
                host_path(&lab, super::super::super::layout::NODE1, hp).is_some(),
                "{hp}"
            );
        }
    }
}
