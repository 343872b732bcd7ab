//! The lab's state directory (docs/replay.md): what a cluster's API server would hold
//! for it. `write_base` before the agents start (nodes, namespace, ServiceCIDRs, Services,
//! policy);
//! `write_workloads` once the CNI plugin has given every pod its address (Pods with
//! status.podIP, and the EndpointSlices the controller would derive from them), in one
//! file written atomically, so an agent never sees pods without their endpoints.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};

use super::error::LabError;
use super::layout::{
    self, ADMIN_PORT, AGENT_NODES, CLIENT_IP, CLUSTER_CIDR, ECHO_PORT, EXTERNAL_IP,
    EXTRA_CLUSTER_IP, EXTRA_SERVICE, HTTP_PORT, LOAD_BALANCER_IP, NAMESPACE, NODE_PORT,
    NODEPORT_CLUSTER_IP, NODEPORT_SERVICE, NodePlan, POLICY, PodPlan, SECOND_SERVICE_CIDR,
    SERVICE_CIDR, VNI, VXLAN_PORT, WEB_CLUSTER_IP, WEB_SERVICE, WEB_TCP_PORT, WEB_UDP_PORT,
};

/// A pod with the address the CNI plugin gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedPod {
    pub plan: PodPlan,
    pub ip: Ipv4Addr,
}

pub const CONFIG_FILE: &str = "kxdp.yaml";
pub const CLUSTER_FILE: &str = "cluster.yaml";
pub const SERVICE_CIDRS_FILE: &str = "service-cidrs.yaml";
pub const SERVICES_FILE: &str = "services.yaml";
pub const POLICY_FILE: &str = "policy.yaml";
pub const WORKLOADS_FILE: &str = "workloads.yaml";

/// kxdp.yaml, every key at the value the lab's topology is built for, but the uplink and
/// its MTU: each agent finds them (the interface holding its Node's InternalIP, and its
/// MTU), as on a real node.
pub fn config_yaml() -> String {
    format!(
        "# The agent config of the kxdp-lab (every key at its default, written out).\n\
         clusterCIDR: {CLUSTER_CIDR}\n\
         serviceCIDR: {SERVICE_CIDR}\n\
         vxlan: {{vni: {VNI}, port: {VXLAN_PORT}}}\n\
         # No uplink and no underlayMTU: each agent uses the interface holding its Node's\n\
         # InternalIP, and that interface's MTU.\n"
    )
}

/// Writes everything but the pods: config, namespace, nodes, ServiceCIDRs, Services,
/// NetworkPolicy.
pub fn write_base(state_dir: &Path) -> Result<(), LabError> {
    fs::create_dir_all(state_dir).map_err(|e| LabError::io(state_dir, e))?;
    write_atomic(state_dir, CONFIG_FILE, &config_yaml())?;
    let mut cluster = vec![namespace()];
    cluster.extend(layout::NODES.iter().map(|&n| node(n)));
    write_atomic(state_dir, CLUSTER_FILE, &to_yaml(&cluster)?)?;
    write_atomic(state_dir, SERVICE_CIDRS_FILE, &to_yaml(&service_cidrs())?)?;
    write_atomic(state_dir, SERVICES_FILE, &to_yaml(&services())?)?;
    write_atomic(state_dir, POLICY_FILE, &to_yaml(&[policy()])?)?;
    Ok(())
}

/// Writes the Pods and the Services' EndpointSlices, in one file.
pub fn write_workloads(state_dir: &Path, pods: &[PlacedPod]) -> Result<(), LabError> {
    let mut docs: Vec<Value> = pods.iter().map(pod).collect();
    docs.extend(endpoint_slices(pods));
    write_atomic(state_dir, WORKLOADS_FILE, &to_yaml(&docs)?)
}

/// Writes `name` through a dot-file and a rename: readers see the old or the new file,
/// never half of one (and never the dot-file, which the state loader skips).
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<(), LabError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    fs::write(&tmp, text).map_err(|e| LabError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LabError::io(&path, e))
}

pub fn to_yaml(docs: &[Value]) -> Result<String, LabError> {
    let mut out = String::from("# Written by `kxdp-lab up`.\n");
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(d).map_err(|e| LabError::Setup(format!("yaml: {e}")))?);
    }
    Ok(out)
}

pub fn namespace() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}},
    })
}

/// node3 is the kernel VXLAN peer: a Node like the others, so kxdp accepts its VXLAN
/// (only known nodes, only sources in their PodCIDR) and routes its PodCIDR to it.
pub fn node(n: NodePlan) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name(),
            "labels": {"kubernetes.io/hostname": n.name()},
            "annotations": {"kxdp.io/underlay-mac": n.underlay_mac().to_string()},
        },
        "spec": {"podCIDR": n.pod_cidr_string(), "podCIDRs": [n.pod_cidr_string()]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": n.underlay_ip().to_string()},
            {"type": "Hostname", "address": n.name()},
        ]},
    })
}

fn labels(p: &PodPlan) -> Value {
    Value::Object(
        p.labels
            .iter()
            .map(|&(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

pub fn pod(p: &PlacedPod) -> Value {
    let mut http = json!({"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"});
    if let Some(host_port) = p.plan.http_host_port {
        http["hostPort"] = json!(host_port);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": p.plan.name, "namespace": NAMESPACE, "labels": labels(&p.plan)},
        "spec": {
            "nodeName": p.plan.node.name(),
            "containers": [{
                "name": "probe",
                "image": "kxdp-probe",
                "ports": [
                    http,
                    {"name": "echo", "containerPort": ECHO_PORT, "protocol": "UDP"},
                    {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
                ],
            }],
        },
        "status": {
            "phase": "Running",
            "podIP": p.ip.to_string(),
            "podIPs": [{"ip": p.ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// The cluster's ServiceCIDRs: the API server's own (`kubernetes`, the range kxdp.yaml
/// also names) and a second one. With these present kxdp.yaml's serviceCIDR is only the
/// fallback; every agent routes both ranges into its kxdp-host.
fn service_cidrs() -> Vec<Value> {
    [
        ("kubernetes", SERVICE_CIDR),
        ("second", SECOND_SERVICE_CIDR),
    ]
    .iter()
    .map(|(name, cidr)| {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "ServiceCIDR",
            "metadata": {"name": name},
            "spec": {"cidrs": [cidr]},
        })
    })
    .collect()
}

/// A ClusterIP Service of the lab's namespace selecting `app=<app>`.
pub fn cluster_ip_service(name: &str, app: &str, ip: Ipv4Addr, ports: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": app},
            "clusterIP": ip.to_string(),
            "clusterIPs": [ip.to_string()],
            "ports": ports,
        },
    })
}

/// demo/web: ClusterIP, TCP and UDP, backends on both nodes. demo/web-nodeport: the same
/// backends on every node's InternalIP at 30080 (externalTrafficPolicy Cluster: SNAT to
/// the node's gateway), and, being a LoadBalancer Service, at an externalIP and its
/// load balancer's IP on port 80, the latter open only to the external client
/// (`loadBalancerSourceRanges`). demo/web-extra: the web pods' http again, at a ClusterIP
/// allocated from the second ServiceCIDR.
fn services() -> Vec<Value> {
    vec![
        cluster_ip_service(
            EXTRA_SERVICE,
            "web",
            EXTRA_CLUSTER_IP,
            json!([{"name": "http", "protocol": "TCP", "port": WEB_TCP_PORT, "targetPort": "http"}]),
        ),
        cluster_ip_service(
            WEB_SERVICE,
            "web",
            WEB_CLUSTER_IP,
            json!([
                {"name": "http", "protocol": "TCP", "port": WEB_TCP_PORT, "targetPort": "http"},
                {"name": "echo", "protocol": "UDP", "port": WEB_UDP_PORT, "targetPort": "echo"},
            ]),
        ),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NODEPORT_SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": "web"},
                "clusterIP": NODEPORT_CLUSTER_IP.to_string(),
                "clusterIPs": [NODEPORT_CLUSTER_IP.to_string()],
                "externalIPs": [EXTERNAL_IP.to_string()],
                "externalTrafficPolicy": "Cluster",
                "loadBalancerSourceRanges": [format!("{CLIENT_IP}/32")],
                "ports": [{
                    "name": "http", "protocol": "TCP", "port": WEB_TCP_PORT,
                    "targetPort": "http", "nodePort": NODE_PORT,
                }],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP.to_string()}]}},
        }),
    ]
}

/// The web pods accept anything from pods labelled role=client, and TCP to their `http`
/// port from the nodes' gateways (where NodePort traffic is SNATed to); everything else
/// is denied, e.g. any traffic from demo/other.
fn policy() -> Value {
    let gateways: Vec<Value> = AGENT_NODES
        .iter()
        .map(|n| json!({"ipBlock": {"cidr": format!("{}/32", n.gateway())}}))
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]},
                {"from": gateways, "ports": [{"protocol": "TCP", "port": "http"}]},
            ],
        },
    })
}

fn endpoint_slices(pods: &[PlacedPod]) -> Vec<Value> {
    let web: Vec<PlacedPod> = pods.iter().filter(|p| p.plan.is_web()).copied().collect();
    vec![
        endpoint_slice(
            WEB_SERVICE,
            json!([
                {"name": "http", "port": HTTP_PORT, "protocol": "TCP"},
                {"name": "echo", "port": ECHO_PORT, "protocol": "UDP"},
            ]),
            &web,
        ),
        endpoint_slice(
            NODEPORT_SERVICE,
            json!([{"name": "http", "port": HTTP_PORT, "protocol": "TCP"}]),
            &web,
        ),
        endpoint_slice(
            EXTRA_SERVICE,
            json!([{"name": "http", "port": HTTP_PORT, "protocol": "TCP"}]),
            &web,
        ),
    ]
}

/// The EndpointSlice the controller would derive for Service `service` of the lab's
/// namespace: `ports` as given, every pod of `endpoints` ready on its node.
pub fn endpoint_slice(service: &str, ports: Value, endpoints: &[PlacedPod]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|p| {
            json!({
                "addresses": [p.ip.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": p.plan.node.name(),
                "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": p.plan.name},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-lab"),
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{NODE1, NODE2, PODS};
    use model::state::load_state_dir;
    use model::translate::{pod_port_name, translate};

    fn placed() -> Vec<PlacedPod> {
        PODS.iter()
            .enumerate()
            .map(|(i, &plan)| PlacedPod {
                plan,
                ip: Ipv4Addr::new(10, 244, plan.node.index, 2 + i as u8),
            })
            .collect()
    }

    /// The generated directory is what kxdp's own loader and translator accept, without
    /// a warning, for both agent nodes.
    #[test]
    fn state_dir_loads_and_translates_for_both_nodes() {
        let dir = std::env::temp_dir().join(format!("kxdp-lab-manifests-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_base(&dir).unwrap();
        write_workloads(&dir, &placed()).unwrap();
        let state = load_state_dir(&dir).unwrap();
        assert!(state.warnings.is_empty(), "{:?}", state.warnings);
        assert_eq!(state.cluster.nodes.len(), 3);
        assert_eq!(state.cluster.pods.len(), 4);
        assert_eq!(state.cluster.endpoint_slices.len(), 3);
        assert_eq!(state.cluster.service_cidrs.len(), 2);
        assert_eq!(state.config.vxlan.vni, VNI);
        for node in [NODE1, NODE2] {
            let t = translate(&state.cluster, &state.config, &node.name(), 1).unwrap();
            assert!(t.warnings.is_empty(), "{}: {:?}", node.name(), t.warnings);
            let dump = model::translate::canonical_dump(&t.tables);
            for p in PODS.iter().filter(|p| p.node == node) {
                let port = pod_port_name(NAMESPACE, p.name);
                assert!(dump.contains(&port), "{port} missing from {}", node.name());
            }
            assert!(dump.contains(&NODE_PORT.to_string()), "{dump}");
            // Admitted through the second ServiceCIDR, and both ranges in effect.
            assert!(dump.contains("demo/web-extra:80"), "{dump}");
            let cidrs: Vec<String> = t
                .tables
                .service_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect();
            assert_eq!(cidrs, [SERVICE_CIDR, SECOND_SERVICE_CIDR]);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_parses_with_the_lab_values() {
        let c = model::config::AgentConfig::from_yaml(&config_yaml()).unwrap();
        assert_eq!(c.vxlan.port, VXLAN_PORT);
        assert!(!c.underlay_mtu_explicit && c.uplink.is_none());
    }
}
