//! Pods the CNI plugin attached before this agent started (an agent restart, a DaemonSet
//! rolling update): their veths are still there but nothing redirects their traffic, which
//! would reach the node's kernel and be routed without any policy. The plugin keeps a
//! record per attachment (`<cni state dir>/<network>/<host veth>.json`, naming the pod's
//! port); at start the agent re-opens every recorded port whose veth exists here.

use std::path::Path;

use agent_api::record::Records;

/// A pod port to re-open: its name and host-side veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub port: String,
    pub host_veth: String,
    pub container_id: String,
}

/// Every attachment recorded under `state_dir`, over all networks. Unreadable records are
/// logged and skipped: one bad file must not keep the other pods off the datapath.
pub fn recorded(state_dir: &Path) -> Vec<Recorded> {
    let Ok(networks) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for network in networks.flatten() {
        if !network.path().is_dir() {
            continue;
        }
        let name = network.file_name();
        let Some(name) = name.to_str() else { continue };
        match Records::new(state_dir, name).all() {
            Ok((records, problems)) => {
                for p in problems {
                    tracing::warn!("CNI record: {p}");
                }
                found.extend(records.into_iter().map(|r| Recorded {
                    port: r.port,
                    host_veth: r.host_veth,
                    container_id: r.container_id,
                }));
            }
            Err(e) => tracing::warn!("CNI records of network {name}: {e}"),
        }
    }
    found.sort_by(|a, b| a.port.cmp(&b.port));
    found
}
