//! Pods as a container runtime makes them: an empty network namespace, then the CNI chain's
//! ADD (run in the node's namespace, as a kubelet's runtime on that node would) with the
//! configuration list the node's agent installed, whose result says the pod's address; DEL
//! on the way down.
//!
//! The lab is the runtime here, so it does what containerd's CNI library does: it takes the
//! first configuration file of the node's conf dir in lexical order, settles the version
//! (the highest of the list's `cniVersions` it speaks, CNI 1.1), runs the plugins in order
//! for ADD (each gets the previous one's result as `prevResult`, and `runtimeConfig` for the
//! capabilities it declares: the pod's `hostPort`s as `portMappings`) and in reverse for DEL,
//! and caches the list and the result with the pod for DEL.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Lab;
use super::cmd;
use super::error::LabError;
use super::layout::{HTTP_PORT, NAMESPACE, NodePlan, PODS, PodPlan};
use super::topology;
use agent_api::conflist::{is_config_file_name, negotiated_version, plugin_config};

/// The CNI plugin binary, looked for next to `kxdp`.
pub const CNI_BINARY: &str = "kxdp-cni";
/// Where Debian's containernetworking-plugins (host-local, portmap) live.
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";
/// The CNI versions the lab, as a runtime, speaks: a CNI 1.1 runtime.
pub const RUNTIME_CNI_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const POD_IFNAME: &str = "eth0";

/// A pod the lab created (or began to): enough to DEL it later from another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub name: String,
    pub node: u8,
    pub netns: String,
    pub container_id: String,
    /// None until ADD succeeded.
    pub ip: Option<Ipv4Addr>,
    /// The configuration list ADD ran with: DEL runs the same chain, as runtimes cache it.
    #[serde(default)]
    pub conflist: Option<Value>,
    /// The chain's ADD result, DEL's `prevResult`.
    #[serde(default)]
    pub result: Option<Value>,
    /// `runtimeConfig.portMappings`: the pod's `hostPort`s.
    #[serde(default)]
    pub port_mappings: Vec<Value>,
    /// Made through containerd (`--runtime containerd`): then `container_id` is the CRI
    /// sandbox's ID, `netns` the path of its network namespace, and the chain ran there.
    #[serde(default)]
    pub sandbox: Option<SandboxRecord>,
}

/// The CRI side of a pod containerd made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Its containers' IDs (the probe server).
    pub containers: Vec<String>,
}

/// What a node's conf dir holds before its agent starts: what a node moving to kxdp from
/// another CNI may carry. An older kxdp's list (the agent removes it) and Flannel's (it stays;
/// kxdp's sorts first). `check` looks at what the agent made of them.
pub const LEFTOVER_KXDP_CONFIG: &str = "10-kxdp.conflist";
pub const LEFTOVER_FOREIGN_CONFIG: &str = "10-flannel.conflist";

pub fn seed_leftover_configs(lab: &Lab, node: NodePlan) -> Result<(), LabError> {
    let dir = lab.cni_conf_dir(node);
    fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
    let old_kxdp = json!({"cniVersion": "1.0.0", "name": "kxdp", "plugins": [{
        "type": CNI_BINARY, "agentSocket": "/run/kxdp/agent.sock"}]});
    let flannel = json!({"cniVersion": "0.3.1", "name": "cbr0", "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    for (name, list) in [
        (LEFTOVER_KXDP_CONFIG, old_kxdp),
        (LEFTOVER_FOREIGN_CONFIG, flannel),
    ] {
        let path = dir.join(name);
        fs::write(&path, list.to_string()).map_err(|e| LabError::io(&path, e))?;
    }
    Ok(())
}

/// The configuration files of `dir` in the order runtimes consider them.
pub fn config_files(dir: &Path) -> Result<Vec<String>, LabError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| LabError::io(dir, e))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_config_file_name(n))
        .collect();
    names.sort();
    Ok(names)
}

/// The list a runtime on `node` would use: its conf dir's first file (a single-plugin
/// `.conf` read as a list of one).
pub fn runtime_conflist(lab: &Lab, node: NodePlan) -> Result<(String, Value), LabError> {
    let dir = lab.cni_conf_dir(node);
    let first = config_files(&dir)?.into_iter().next().ok_or_else(|| {
        LabError::Setup(format!(
            "no CNI configuration in {} (the agent writes it once ready)",
            dir.display()
        ))
    })?;
    let path = dir.join(&first);
    let text = fs::read_to_string(&path).map_err(|e| LabError::io(&path, e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| LabError::Setup(format!("{}: {e}", path.display())))?;
    let list = if value.get("plugins").is_some() {
        value
    } else {
        json!({"cniVersion": value["cniVersion"], "name": value["name"], "plugins": [value]})
    };
    Ok((first, list))
}

fn record_path(lab: &Lab, name: &str) -> PathBuf {
    lab.pods_dir().join(format!("{name}.json"))
}

pub fn save(lab: &Lab, rec: &PodRecord) -> Result<(), LabError> {
    let dir = lab.pods_dir();
    fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
    let path = record_path(lab, &rec.name);
    let text = serde_json::to_vec_pretty(rec).map_err(|e| LabError::Setup(e.to_string()))?;
    fs::write(&path, text).map_err(|e| LabError::io(&path, e))
}

/// Every pod record in DIR/pods, in the lab's pod order.
pub fn records(lab: &Lab) -> Vec<PodRecord> {
    PODS.iter()
        .filter_map(|p| fs::read(record_path(lab, p.name)).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The pod's `hostPort`s as the kubelet hands them to the runtime.
fn port_mappings(pod: &PodPlan) -> Vec<Value> {
    pod.http_host_port
        .map(|h| json!({"hostPort": h, "containerPort": HTTP_PORT, "protocol": "tcp"}))
        .into_iter()
        .collect()
}

/// Creates the pod's namespace and runs the CNI chain's ADD for it; returns its address.
pub fn add(lab: &Lab, pod: &PodPlan) -> Result<Ipv4Addr, LabError> {
    let (_, list) = runtime_conflist(lab, pod.node)?;
    let mut rec = PodRecord {
        name: pod.name.to_string(),
        node: pod.node.index,
        netns: lab.names().pod(pod),
        container_id: format!("{}-{}", lab.prefix, pod.name),
        ip: None,
        conflist: Some(list),
        result: None,
        port_mappings: port_mappings(pod),
        sandbox: None,
    };
    // Recorded before ADD: a runtime DELs after a failed ADD, and so does `down`.
    save(lab, &rec)?;
    topology::add_netns(&rec.netns)?;
    let result = run_chain(lab, "ADD", &rec, pod.node)?;
    let ip = first_ipv4(&result).ok_or_else(|| LabError::Cni {
        command: "ADD".into(),
        pod: pod.name.into(),
        detail: format!("the result has no IPv4 address: {result}"),
    })?;
    rec.ip = Some(ip);
    rec.result = Some(result);
    save(lab, &rec)?;
    Ok(ip)
}

/// CNI DEL (the plugins and the agent must take it twice), then the record goes.
pub fn del(lab: &Lab, rec: &PodRecord) -> Result<(), LabError> {
    let node = node_of(rec)?;
    let result = if rec.conflist.is_none() {
        // ADD never ran: no configuration was there to run it with.
        Ok(())
    } else if cmd::netns_exists(&lab.names().node(node)) {
        run_chain(lab, "DEL", rec, node).map(|_| ())
    } else {
        // Nothing to run DEL in (the node is gone): its veths went with it.
        Ok(())
    };
    if result.is_ok() {
        forget(lab, rec);
    }
    result
}

/// The node a record's pod is on.
pub fn node_of(rec: &PodRecord) -> Result<NodePlan, LabError> {
    super::layout::NODES
        .iter()
        .copied()
        .find(|n| n.index == rec.node)
        .ok_or_else(|| LabError::Setup(format!("pod {}: no node {}", rec.name, rec.node)))
}

/// Drops the pod's record (it is gone).
pub fn forget(lab: &Lab, rec: &PodRecord) {
    let _ = fs::remove_file(record_path(lab, &rec.name));
}

/// Runs `command` over the record's chain: ADD in order, each plugin given the previous
/// result; DEL in reverse, each given the cached ADD result. Ok(the last result).
fn run_chain(lab: &Lab, command: &str, rec: &PodRecord, node: NodePlan) -> Result<Value, LabError> {
    let cni_err = |detail: String| LabError::Cni {
        command: command.into(),
        pod: rec.name.clone(),
        detail,
    };
    let list = rec
        .conflist
        .as_ref()
        .ok_or_else(|| cni_err("no configuration list recorded".into()))?;
    let count = list["plugins"].as_array().map_or(0, Vec::len);
    let order: Vec<usize> = if command == "DEL" {
        (0..count).rev().collect()
    } else {
        (0..count).collect()
    };
    let mut prev = if command == "DEL" {
        rec.result.clone()
    } else {
        None
    };
    let mut last = Value::Null;
    for i in order {
        let mut config = plugin_config(list, i, &RUNTIME_CNI_VERSIONS)
            .ok_or_else(|| cni_err(format!("plugin {i} of {list}")))?;
        if let Some(p) = &prev {
            config["prevResult"] = p.clone();
        }
        if config["capabilities"]["portMappings"] == true && !rec.port_mappings.is_empty() {
            config["runtimeConfig"] = json!({"portMappings": rec.port_mappings});
        }
        let plugin = config["type"].as_str().unwrap_or_default().to_string();
        let out = invoke(lab, &plugin, command, rec, node, &config)?;
        if command == "ADD" {
            prev = Some(out.clone());
        }
        last = out;
    }
    Ok(last)
}

/// The version the lab settles on for `list`.
pub fn chain_version(list: &Value) -> Option<String> {
    negotiated_version(list, &RUNTIME_CNI_VERSIONS)
}

/// Runs one plugin in the node's namespace with the CNI environment; Ok(stdout JSON).
fn invoke(
    lab: &Lab,
    plugin: &str,
    command: &str,
    rec: &PodRecord,
    node: NodePlan,
    config: &Value,
) -> Result<Value, LabError> {
    let cni_err = |detail: String| LabError::Cni {
        command: format!("{command} ({plugin})"),
        pod: rec.name.clone(),
        detail,
    };
    let cni_path = lab.cni_path();
    let binary = cni_path
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| cni_err(format!("no {plugin} in {cni_path:?}")))?;
    let stdin = serde_json::to_vec(config).map_err(|e| cni_err(e.to_string()))?;
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
        rec.name, rec.container_id
    );
    let path_var = std::env::join_paths(&cni_path).map_err(|e| cni_err(e.to_string()))?;
    let mut c: Command = cmd::in_netns(&lab.names().node(node), &binary);
    c.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rec.container_id)
        .env("CNI_NETNS", cmd::netns_path(&rec.netns))
        .env("CNI_IFNAME", POD_IFNAME)
        .env("CNI_PATH", path_var)
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| cni_err(format!("cannot start {}: {e}", binary.display())))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(&stdin)
            .map_err(|e| cni_err(format!("writing the config: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| cni_err(format!("waiting: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // CNI errors are a JSON object on stdout ({code, msg, details}); show it all.
        return Err(cni_err(format!(
            "{}: {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|e| cni_err(format!("result {stdout:?}: {e}")))
}

/// The first IPv4 address of a CNI result (`ips[].address`, "a.b.c.d/len").
fn first_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let addr = ip["address"].as_str()?;
        addr.split('/').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_address_is_read() {
        let r = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "fd00::5/64"}, {"address": "10.244.1.2/24", "gateway": "10.244.1.1"}
        ]});
        assert_eq!(first_ipv4(&r), Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(first_ipv4(&json!({})), None);
    }
}
