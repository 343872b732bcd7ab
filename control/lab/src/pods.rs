//! Pods as a container runtime makes them: an empty network namespace, then the CNI
//! plugin's ADD (run in the node's namespace, as a kubelet on that node would), whose
//! result says the pod's address; DEL on the way down.

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
use super::layout::{NAMESPACE, NodePlan, PODS, PodPlan};
use super::topology;
use cni::pod_cidr::USE_POD_CIDR;

/// The CNI plugin binary, looked for next to `kxdp`.
pub const CNI_BINARY: &str = "kxdp-cni";
/// Where Debian's containernetworking-plugins (host-local) live.
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";
pub const CNI_VERSION: &str = "1.0.0";
pub const NETWORK_NAME: &str = "kxdp";
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
}

/// The node's conflist, as a runtime would find it in /etc/cni/net.d (the lab keeps it in
/// DIR/<node>/): kxdp-cni with the node's agent socket and its attachment records under
/// DIR/<node>/cni, host-local IPAM with its leases under DIR/<node>/ipam over `usePodCidr`,
/// which kxdp-cni fills in with the PodCIDR the node's agent reports (so the range is the
/// same on every node, as in deploy/kxdp.yaml; only the lab's per-node paths differ, since
/// the lab's nodes share one filesystem).
pub fn conflist(lab: &Lab, node: NodePlan) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{
            "type": CNI_BINARY,
            "agentSocket": lab.agent_socket(node).display().to_string(),
            "stateDir": lab.node_dir(node).join("cni").display().to_string(),
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": USE_POD_CIDR}]],
                "dataDir": lab.node_dir(node).join("ipam").display().to_string(),
            },
        }],
    })
}

/// Writes DIR/<node>/10-kxdp.conflist (for people reading the lab; ADD and DEL use the
/// same value).
pub fn write_conflist(lab: &Lab, node: NodePlan) -> Result<PathBuf, LabError> {
    let dir = lab.node_dir(node);
    fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
    let path = dir.join("10-kxdp.conflist");
    let text = serde_json::to_string_pretty(&conflist(lab, node))
        .map_err(|e| LabError::Setup(e.to_string()))?;
    fs::write(&path, text).map_err(|e| LabError::io(&path, e))?;
    Ok(path)
}

/// What a runtime hands a plugin of a conflist: the plugin's object plus the list's name
/// and version.
fn plugin_config(list: &Value) -> Value {
    let mut plugin = list["plugins"][0].clone();
    if let Some(obj) = plugin.as_object_mut() {
        obj.insert("cniVersion".into(), list["cniVersion"].clone());
        obj.insert("name".into(), list["name"].clone());
    }
    plugin
}

fn record_path(lab: &Lab, name: &str) -> PathBuf {
    lab.pods_dir().join(format!("{name}.json"))
}

fn save(lab: &Lab, rec: &PodRecord) -> Result<(), LabError> {
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

/// Creates the pod's namespace and runs CNI ADD for it; returns its address.
pub fn add(lab: &Lab, pod: &PodPlan) -> Result<Ipv4Addr, LabError> {
    let cni = lab.cni_binary()?;
    let mut rec = PodRecord {
        name: pod.name.to_string(),
        node: pod.node.index,
        netns: lab.names().pod(pod),
        container_id: format!("{}-{}", lab.prefix, pod.name),
        ip: None,
    };
    // Recorded before ADD: a runtime DELs after a failed ADD, and so does `down`.
    save(lab, &rec)?;
    topology::add_netns(&rec.netns)?;
    let result = invoke(lab, &cni, "ADD", &rec, pod.node)?;
    let ip = first_ipv4(&result).ok_or_else(|| LabError::Cni {
        command: "ADD".into(),
        pod: pod.name.into(),
        detail: format!("the result has no IPv4 address: {result}"),
    })?;
    rec.ip = Some(ip);
    save(lab, &rec)?;
    Ok(ip)
}

/// CNI DEL (the plugin and the agent must take it twice), then the record goes.
pub fn del(lab: &Lab, rec: &PodRecord) -> Result<(), LabError> {
    let node = super::layout::NODES
        .iter()
        .copied()
        .find(|n| n.index == rec.node)
        .ok_or_else(|| LabError::Setup(format!("pod {}: no node {}", rec.name, rec.node)))?;
    let result = match lab.cni_binary() {
        Ok(cni) if cmd::netns_exists(&lab.names().node(node)) => {
            invoke(lab, &cni, "DEL", rec, node).map(|_| ())
        }
        // Nothing to run DEL in (the node is gone): its veths went with it.
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if result.is_ok() {
        let path = record_path(lab, &rec.name);
        let _ = fs::remove_file(path);
    }
    result
}

/// Runs the plugin in the node's namespace with the CNI environment; Ok(stdout JSON).
fn invoke(
    lab: &Lab,
    cni: &Path,
    command: &str,
    rec: &PodRecord,
    node: NodePlan,
) -> Result<Value, LabError> {
    let cni_err = |detail: String| LabError::Cni {
        command: command.into(),
        pod: rec.name.clone(),
        detail,
    };
    let config = plugin_config(&conflist(lab, node));
    let stdin = serde_json::to_vec(&config).map_err(|e| cni_err(e.to_string()))?;
    let cni_path = format!("{SYSTEM_CNI_DIR}:{}", lab.bin_dir.display());
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
        rec.name, rec.container_id
    );
    let mut c: Command = cmd::in_netns(&lab.names().node(node), cni);
    c.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rec.container_id)
        .env("CNI_NETNS", cmd::netns_path(&rec.netns))
        .env("CNI_IFNAME", POD_IFNAME)
        .env("CNI_PATH", cni_path)
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| cni_err(format!("cannot start {}: {e}", cni.display())))?;
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

    #[test]
    fn plugin_config_carries_name_and_version() {
        let list =
            json!({"cniVersion": "1.0.0", "name": "kxdp", "plugins": [{"type": "kxdp-cni"}]});
        let p = plugin_config(&list);
        assert_eq!(p["type"], "kxdp-cni");
        assert_eq!(p["name"], "kxdp");
        assert_eq!(p["cniVersion"], "1.0.0");
    }
}
