//! The bench's fixed design: which pods sit where, the Service the traffic goes to, and the
//! state directory node A's agent reads. Pure data and manifests, so the topology, the
//! kernel rules and the agent's tables agree by construction.
//!
//! ```text
//!  <p>-pod-client            <p>-node1 (node A, under test)         <p>-node2 (node B)
//!   eth0 10.244.1.x  <-veth->  kxdp agent (1 worker)   eth0 <-veth-> eth0  flannel.1, cni0
//!   (kxdp-cni ADD)             | or kernel: cni0 +     .11           .12   backend-1 .2.11
//!                              | kube-proxy + flannel.1                    backend-2 .2.12
//! ```
//!
//! Node B is a kernel node (Flannel-style) in every run: throughput is what node A puts on
//! its uplink, counted by an XDP sink on node B's `eth0`; latency goes all the way to the
//! backends' echo servers and back.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use serde_json::{Value, json};

use lab::LabError;
use lab::layout::{CLUSTER_CIDR, ECHO_PORT, NAMESPACE, NODE1, NODE2, NodePlan, PodPlan};
use lab::manifests::{self, PlacedPod};

/// Node A runs what is measured; node B holds the backends.
pub const NODE_A: NodePlan = NODE1;
pub const NODE_B: NodePlan = NODE2;

pub const CLIENT: PodPlan = PodPlan {
    name: "client",
    node: NODE_A,
    labels: &[("app", "bench-client"), ("role", "client")],
    http_host_port: None,
};
pub const BACKENDS: [PodPlan; 2] = [
    PodPlan {
        name: "backend-1",
        node: NODE_B,
        labels: &[("app", "backend")],
        http_host_port: None,
    },
    PodPlan {
        name: "backend-2",
        node: NODE_B,
        labels: &[("app", "backend")],
        http_host_port: None,
    },
];

/// Node B has no CNI plugin of ours: its pods get these addresses by hand.
pub fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, NODE_B.index, 11 + i as u8)
}

/// The host side of backend `i`'s veth, in node B.
pub fn backend_host_veth(i: usize) -> String {
    format!("vethbe{}", i + 1)
}

/// Service bench/bench: a ClusterIP with the two backends on node B.
pub const SERVICE: &str = "bench";
pub const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// Request/response: the backends' `kxdp-lab probe serve` echo.
pub const ECHO_SERVICE_PORT: u16 = 5353;
/// Throughput and background load: nothing listens; the backends' own nft rule drops it
/// before their UDP stack (when it gets that far: the throughput sink counts and drops on
/// node B's uplink).
pub const SINK_PORT: u16 = 7000;
pub const POLICY: &str = "bench-client-egress";

/// (Service port, target port, port name) of the Service.
pub const SERVICE_PORTS: [(u16, u16, &str); 2] = [
    (ECHO_SERVICE_PORT, ECHO_PORT, "echo"),
    (SINK_PORT, SINK_PORT, "sink"),
];

/// The endpoints behind Service port `port` (backends in order).
pub fn endpoints(target_port: u16) -> Vec<SocketAddrV4> {
    (0..BACKENDS.len())
        .map(|i| SocketAddrV4::new(backend_ip(i), target_port))
        .collect()
}

pub fn cluster_cidr() -> &'static str {
    CLUSTER_CIDR
}

/// kxdp.yaml, namespace, both nodes, the Service and the client's egress policy: what
/// node A's agent needs before the client pod exists.
pub fn write_base(state_dir: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(state_dir).map_err(|e| LabError::io(state_dir, e))?;
    manifests::write_atomic(state_dir, manifests::CONFIG_FILE, &manifests::config_yaml())?;
    let cluster = [
        manifests::namespace(),
        manifests::node(NODE_A),
        manifests::node(NODE_B),
    ];
    manifests::write_atomic(
        state_dir,
        manifests::CLUSTER_FILE,
        &manifests::to_yaml(&cluster)?,
    )?;
    manifests::write_atomic(
        state_dir,
        manifests::SERVICES_FILE,
        &manifests::to_yaml(&[service()])?,
    )?;
    manifests::write_atomic(
        state_dir,
        manifests::POLICY_FILE,
        &manifests::to_yaml(&[policy()])?,
    )
}

/// The Pods (the client with its CNI address, the backends) and the Service's slice.
pub fn write_workloads(state_dir: &Path, client_ip: Ipv4Addr) -> Result<(), LabError> {
    let pods = placed(client_ip);
    let mut docs: Vec<Value> = pods.iter().map(manifests::pod).collect();
    let ports: Vec<Value> = SERVICE_PORTS
        .iter()
        .map(|&(_, target, name)| json!({"name": name, "port": target, "protocol": "UDP"}))
        .collect();
    let backends: Vec<PlacedPod> = pods.into_iter().filter(|p| p.plan != CLIENT).collect();
    docs.push(manifests::endpoint_slice(
        SERVICE,
        Value::Array(ports),
        &backends,
    ));
    manifests::write_atomic(
        state_dir,
        manifests::WORKLOADS_FILE,
        &manifests::to_yaml(&docs)?,
    )
}

/// Every pod of the bench with its address.
pub fn placed(client_ip: Ipv4Addr) -> Vec<PlacedPod> {
    let mut pods = vec![PlacedPod {
        plan: CLIENT,
        ip: client_ip,
    }];
    pods.extend(BACKENDS.iter().enumerate().map(|(i, &plan)| PlacedPod {
        plan,
        ip: backend_ip(i),
    }));
    pods
}

fn service() -> Value {
    let ports: Vec<Value> = SERVICE_PORTS
        .iter()
        .map(|&(port, target, name)| {
            json!({"name": name, "protocol": "UDP", "port": port, "targetPort": target})
        })
        .collect();
    manifests::cluster_ip_service(SERVICE, "backend", CLUSTER_IP, Value::Array(ports))
}

/// The client may send only to the backends' two UDP ports: so kxdp's path evaluates a
/// NetworkPolicy on every new flow, as a cluster with policies does (the kernel path has
/// no policy engine: kube-proxy + Flannel enforce none).
fn policy() -> Value {
    let ports: Vec<Value> = SERVICE_PORTS
        .iter()
        .map(|&(_, target, _)| json!({"protocol": "UDP", "port": target}))
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"role": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
                "ports": ports,
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::state::load_state_dir;
    use model::translate::translate;

    #[test]
    fn the_state_dir_translates_for_node_a_without_warnings() {
        let dir = std::env::temp_dir().join(format!("kxdp-bench-plan-{}", std::process::id()));
        write_base(&dir).unwrap();
        write_workloads(&dir, Ipv4Addr::new(10, 244, 1, 2)).unwrap();
        let state = load_state_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(state.cluster.services.len(), 1);
        assert_eq!(state.cluster.pods.len(), 3);
        let t = translate(&state.cluster, &state.config, &NODE_A.name(), 1).unwrap();
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.tables.service_ports.len(), SERVICE_PORTS.len());
    }
}
