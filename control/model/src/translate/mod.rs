//! Cluster state + agent config -> the datapath's [`Tables`] for one node.
//!
//! This module owns the mapping from Kubernetes objects to what the workers read: the local
//! node, ports and local pods, routes to other nodes, and the service table. It is PURE: no
//! IO, no clock, no randomness in what it decides; the same inputs always give the same
//! tables (every input list is sorted by a key before use, so the order objects were loaded
//! or watched in does not matter).
//!
//! Only the own node is load-bearing: if it cannot be programmed, that is an error. Any other
//! object that cannot be used (a remote node without an underlay MAC, a clusterIP outside
//! the serviceCIDR, ...) is skipped with a warning, because one bad object elsewhere in the
//! cluster must not take this node's datapath down.

pub mod incremental;
pub mod policy;
pub mod service_cidrs;
mod service_set;
mod services;
pub use services::HealthCheckService;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use datapath::tables::{
    LocalNode, LocalPod, OverlayParams, PortId, PortInfo, PrefixMap, RemoteNode, ServicePort,
    Tables,
};
use datapath::{Cidr, IpKey, MacAddr};
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::config::AgentConfig;
use crate::k8s::{
    UNDERLAY_MAC_ANNOTATION, VTEP_ADDRESS_ANNOTATION, name_of, namespace_of, node_addresses,
    node_pod_cidrs, node_underlay_ipv4, node_underlay_mac, parse_cidr, parse_ip, parse_ip_key,
    parse_unicast_mac, pod_ips,
};
use crate::state::ClusterState;
use service_set::ServiceSet;

/// Port names fixed by the contract (docs/replay.md); the datapath's [`PortInfo`] decides them.
pub const UPLINK_PORT: &str = PortInfo::UPLINK_NAME;
pub const HOST_PORT: &str = PortInfo::HOST_NAME;

/// The datapath port name of a local pod: `pod-<namespace>-<name>`.
pub fn pod_port_name(namespace: &str, name: &str) -> String {
    PortInfo::pod_name(namespace, name)
}

/// What [`translate`] produced.
#[derive(Debug, Clone)]
pub struct Translated {
    pub tables: Tables,
    /// Objects skipped and why, one line each, in a stable order.
    pub warnings: Vec<String>,
    /// The Services whose `healthCheckNodePort` this node answers, with its local endpoints.
    pub health_checks: Vec<HealthCheckService>,
}

/// Why no tables could be built for this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error(
        "node {name:?} is not in the cluster state (nodes: {})",
        names(present)
    )]
    UnknownNode { name: String, present: Vec<String> },
    /// The own node lacks something the datapath cannot run without.
    #[error("Node {node}: {field}: {message}")]
    OwnNode {
        node: String,
        field: String,
        message: String,
    },
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

/// Builds the tables of node `node_name`. `generation` is stamped into the tables as given.
pub fn translate(
    cluster: &ClusterState,
    config: &AgentConfig,
    node_name: &str,
    generation: u64,
) -> Result<Translated, TranslateError> {
    let parts = NodeParts::build(cluster, node_name)?;
    let (config, cidr_warnings) = with_effective_service_cidrs(cluster, config);
    let (services, mut other_warnings) = all_services(cluster, &config, &parts);
    let policy = policy::build(cluster, &parts.local_pods, &mut other_warnings);
    Ok(assemble(
        &parts,
        &services,
        Arc::new(policy),
        &Warnings {
            service_cidrs: &cidr_warnings,
            policy: &other_warnings,
        },
        &config,
        generation,
    ))
}

/// `config` with the Service CIDRs in effect for `cluster` (its ServiceCIDR objects, or
/// kxdp.yaml's; see [`service_cidrs`]): what Services are checked against and what the
/// tables carry. Also the warnings about ServiceCIDR objects.
pub(crate) fn with_effective_service_cidrs(
    cluster: &ClusterState,
    config: &AgentConfig,
) -> (AgentConfig, Vec<String>) {
    let effective = service_cidrs::effective_service_cidrs(&cluster.service_cidrs, config);
    let config = AgentConfig {
        service_cidrs: effective.cidrs,
        ..config.clone()
    };
    (config, effective.warnings)
}

/// Warnings [`assemble`] adds after the node's and the Services'.
pub(crate) struct Warnings<'a> {
    /// About ServiceCIDR objects (placed before the Services', which they explain).
    pub service_cidrs: &'a [String],
    /// Duplicates and policy.
    pub policy: &'a [String],
}

/// Every Service of `cluster` translated and assembled; a Service listed twice keeps its
/// first object (the second is reported in the returned warnings).
pub(crate) fn all_services(
    cluster: &ClusterState,
    config: &AgentConfig,
    parts: &NodeParts,
) -> (ServiceSet, Vec<String>) {
    let slices = services::slices_by_service(&cluster.endpoint_slices);
    let view = parts.view();
    let mut set = ServiceSet::default();
    let mut sorted: Vec<_> = cluster.services.iter().enumerate().collect();
    sorted.sort_by_key(|(i, s)| (namespace_of(&s.metadata), name_of(&s.metadata), *i));
    let mut duplicates = Vec::new();
    let mut last: Option<(&str, &str)> = None;
    for (_, svc) in sorted {
        let key = (namespace_of(&svc.metadata), name_of(&svc.metadata));
        if last == Some(key) {
            duplicates.push(format!(
                "Service {}/{}: listed twice: the second is skipped",
                key.0, key.1
            ));
            continue;
        }
        last = Some(key);
        let svc_slices = slices.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let build = services::build_service(svc, svc_slices, config, &view, None);
        set.set((key.0.to_string(), key.1.to_string()), build);
    }
    (set, duplicates)
}

/// What the tables take from Nodes and from this node's Pods.
#[derive(Debug, Clone)]
pub(crate) struct NodeParts {
    pub node: LocalNode,
    pub ports: Vec<PortInfo>,
    pub local_pods: Vec<LocalPod>,
    pub local_pod_by_ip: BTreeMap<IpKey, usize>,
    pub remote_nodes: Vec<RemoteNode>,
    pub remote_routes: PrefixMap<usize>,
    pub remote_node_by_underlay: datapath::foldhash_map::HashMap<[u8; 4], usize>,
    /// Where NodePorts answer: the node's InternalIP and ExternalIP addresses.
    pub nodeport_ips: Vec<IpKey>,
    /// Local pods' addresses and the node's own: endpoints there are local even when
    /// their slice does not say which node they are on (host-network pods).
    pub local_ips: BTreeSet<IpKey>,
    pub warnings: Vec<String>,
}

impl NodeParts {
    pub fn build(cluster: &ClusterState, node_name: &str) -> Result<NodeParts, TranslateError> {
        let mut warnings = Vec::new();
        let Some(own) = cluster
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name))
        else {
            let mut present: Vec<String> = cluster
                .nodes
                .iter()
                .map(|n| name_of(&n.metadata).to_string())
                .collect();
            present.sort();
            return Err(TranslateError::UnknownNode {
                name: node_name.to_string(),
                present,
            });
        };
        let node = local_node(own, node_name, &mut warnings)?;
        let (ports, local_pods, local_pod_by_ip) = local_pods(&cluster.pods, &node, &mut warnings);
        let (remote_nodes, remote_routes) = remote_nodes(&cluster.nodes, &node, &mut warnings);
        let remote_node_by_underlay = underlay_index(&remote_nodes, &node, &mut warnings);
        let local_ips: BTreeSet<IpKey> = local_pod_by_ip
            .keys()
            .copied()
            .chain(node.addresses.iter().copied())
            .collect();
        Ok(NodeParts {
            nodeport_ips: services::nodeport_addresses(own),
            node,
            ports,
            local_pods,
            local_pod_by_ip,
            remote_nodes,
            remote_routes,
            remote_node_by_underlay,
            local_ips,
            warnings,
        })
    }

    pub(crate) fn view(&self) -> services::NodeView<'_> {
        services::NodeView {
            name: &self.node.name,
            node_ips: &self.nodeport_ips,
            local_pod_ips: &self.local_ips,
        }
    }
}

/// The tables from their parts; warnings in a stable order (node and pods, ServiceCIDRs,
/// Services, the rest: policy). `config` carries the Service CIDRs in effect
/// ([`with_effective_service_cidrs`]).
pub(crate) fn assemble(
    parts: &NodeParts,
    services: &ServiceSet,
    policy: Arc<datapath::policy::PolicyTables>,
    other_warnings: &Warnings<'_>,
    config: &AgentConfig,
    generation: u64,
) -> Translated {
    let mut warnings = parts.warnings.clone();
    warnings.extend(other_warnings.service_cidrs.iter().cloned());
    warnings.extend(services.warnings());
    warnings.extend(other_warnings.policy.iter().cloned());
    let tables = Tables {
        generation,
        policy,
        node: parts.node.clone(),
        overlay: OverlayParams {
            vni: config.vxlan.vni,
            udp_port: config.vxlan.port,
            underlay_mtu: config.underlay_mtu,
        },
        cluster_cidrs: config.cluster_cidrs.clone(),
        service_cidrs: config.service_cidrs.clone(),
        ports: parts.ports.clone(),
        local_pods: parts.local_pods.clone(),
        local_pod_by_ip: parts
            .local_pod_by_ip
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
        remote_routes: parts.remote_routes.clone(),
        remote_nodes: parts.remote_nodes.clone(),
        remote_node_by_underlay: parts.remote_node_by_underlay.clone(),
        service_ports: services.ports(),
        frontends: services.frontends(),
    };
    Translated {
        tables,
        warnings,
        health_checks: services.health_checks(),
    }
}

fn own_err(node: &str, field: &str, message: impl std::fmt::Display) -> TranslateError {
    TranslateError::OwnNode {
        node: node.to_string(),
        field: field.to_string(),
        message: message.to_string(),
    }
}

/// The own node: underlay address and MAC, PodCIDRs, pod gateway, node addresses.
fn local_node(
    own: &Node,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<LocalNode, TranslateError> {
    let underlay_ip = node_underlay_ipv4(own, warnings).ok_or_else(|| {
        own_err(
            name,
            "status.addresses",
            format!(
                "no valid {VTEP_ADDRESS_ANNOTATION} annotation and no IPv4 InternalIP \
                 (the VXLAN underlay address)"
            ),
        )
    })?;
    let mac_field = format!("metadata.annotations[{UNDERLAY_MAC_ANNOTATION:?}]");
    let underlay_mac = node_underlay_mac(own)
        .ok_or_else(|| own_err(name, &mac_field, "missing (the MAC the uplink answers on)"))
        .and_then(|m| parse_unicast_mac(m).map_err(|e| own_err(name, &mac_field, e)))?;

    let mut pod_cidrs = Vec::new();
    for text in node_pod_cidrs(own) {
        pod_cidrs.push(parse_cidr(text).map_err(|e| own_err(name, "spec.podCIDRs", e))?);
    }
    let v4_cidr = pod_cidrs.iter().find(|c| c.addr.is_v4()).ok_or_else(|| {
        own_err(
            name,
            "spec.podCIDR",
            "no IPv4 PodCIDR (the pod gateway is its first address)",
        )
    })?;
    let gateway_ip = v4_cidr
        .first_host()
        .as_v4()
        .expect("first host of an IPv4 CIDR is IPv4");

    // Everything addressed to these belongs to the kernel (walk 6): the node's own IPs and
    // the gateway address the datapath answers ARP for on every PodCIDR.
    let mut addresses: Vec<IpKey> = node_addresses(own)
        .filter_map(|(_, addr)| parse_ip(addr).ok().map(IpKey::from))
        .chain(pod_cidrs.iter().map(Cidr::first_host))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();

    Ok(LocalNode {
        name: name.to_string(),
        underlay_ip,
        underlay_mac,
        pod_cidrs,
        gateway_ip,
        gateway_mac: MacAddr::for_ipv4(gateway_ip),
        addresses,
    })
}

/// A pod this node's datapath has a port for: scheduled here, on the pod network, with an
/// address, and not finished (a Succeeded/Failed pod's sandbox and veth are gone).
fn is_local(pod: &Pod, node: &str) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()) == Some(node)
        && !spec.and_then(|s| s.host_network).unwrap_or(false)
        && !pod_ips(pod).is_empty()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

type LocalPods = (Vec<PortInfo>, Vec<LocalPod>, BTreeMap<IpKey, usize>);

/// Ports (uplink, host, then one per local pod by (namespace, name)) and the local pods.
fn local_pods(pods: &[Pod], node: &LocalNode, warnings: &mut Vec<String>) -> LocalPods {
    let mut ports = vec![PortInfo::uplink(), PortInfo::host()];
    let mut local: Vec<&Pod> = pods.iter().filter(|p| is_local(p, &node.name)).collect();
    local.sort_by_key(|p| (namespace_of(&p.metadata), name_of(&p.metadata)));

    let mut out = Vec::new();
    let mut by_ip: BTreeMap<IpKey, usize> = BTreeMap::new();
    // Port names must be unique: a pod listed twice is only programmed once.
    let mut last: Option<(&str, &str)> = None;
    'pods: for pod in local {
        let (ns, name) = (namespace_of(&pod.metadata), name_of(&pod.metadata));
        let id = format!("Pod {ns}/{name}");
        if last == Some((ns, name)) {
            warnings.push(format!("{id}: listed twice: the second is skipped"));
            continue;
        }
        last = Some((ns, name));

        let mut ips = Vec::new();
        for text in pod_ips(pod) {
            match parse_ip_key(text) {
                Ok(ip) => ips.push(ip),
                Err(e) => warnings.push(format!("{id}: podIP: {e}: address skipped")),
            }
        }
        for ip in &ips {
            // Sorted order decides: the pod first by (namespace, name) keeps the address.
            if let Some(&owner) = by_ip.get(ip) {
                let first: &LocalPod = &out[owner];
                warnings.push(format!(
                    "{id}: podIP {ip} is already Pod {}/{}'s: skipped",
                    first.namespace, first.name
                ));
                continue 'pods;
            }
            if node.addresses.contains(ip) {
                warnings.push(format!(
                    "{id}: podIP {ip} is an address of node {}: skipped",
                    node.name
                ));
                continue 'pods;
            }
        }
        if ips.is_empty() {
            continue;
        }
        // Pods get `0a:58:<IPv4>` from the CNI plugin; an IPv6-only pod gets the same shape
        // from its address's last four bytes.
        let mac = ips
            .iter()
            .find_map(|ip| ip.as_v4())
            .map(MacAddr::for_ipv4)
            .unwrap_or_else(|| MacAddr::for_ip(ips[0]));
        let index = out.len();
        let port = PortId(ports.len() as u32);
        ports.push(PortInfo::pod(ns, name, index));
        for ip in &ips {
            by_ip.insert(*ip, index);
        }
        out.push(LocalPod {
            namespace: ns.to_string(),
            name: name.to_string(),
            port,
            mac,
            ips,
        });
    }
    (ports, out, by_ip)
}

/// Underlay address -> remote node, for checking who sent a VXLAN packet. An address
/// shared by two nodes (or with our own) belongs to the first by name only: VXLAN from it
/// can only be attributed to one node.
fn underlay_index(
    remote: &[RemoteNode],
    own: &LocalNode,
    warnings: &mut Vec<String>,
) -> datapath::foldhash_map::HashMap<[u8; 4], usize> {
    let mut index = datapath::foldhash_map::HashMap::default();
    for (i, n) in remote.iter().enumerate() {
        if n.underlay_ip == own.underlay_ip {
            warnings.push(format!(
                "Node {}: underlay address is also node {}'s: VXLAN from it is not accepted as {}'s",
                n.name, own.name, n.name
            ));
            continue;
        }
        if let Some(&first) = index.get(&n.underlay_ip) {
            let first: &RemoteNode = &remote[first];
            warnings.push(format!(
                "Node {}: underlay address is also node {}'s: VXLAN from it counts as {}'s",
                n.name, first.name, first.name
            ));
            continue;
        }
        index.insert(n.underlay_ip, i);
    }
    index
}

/// Other nodes that can be tunnelled to, by name, and their PodCIDRs as routes.
fn remote_nodes(
    nodes: &[Node],
    own: &LocalNode,
    warnings: &mut Vec<String>,
) -> (Vec<RemoteNode>, PrefixMap<usize>) {
    let mut sorted: Vec<&Node> = nodes
        .iter()
        .filter(|n| name_of(&n.metadata) != own.name)
        .collect();
    sorted.sort_by_key(|n| name_of(&n.metadata));

    let mut out: Vec<RemoteNode> = Vec::new();
    let mut routes = PrefixMap::default();
    // PodCIDR -> node that has it (our own included), so a CIDR claimed twice is routed
    // to the first claimant only.
    let mut claimed: BTreeMap<Cidr, String> = own
        .pod_cidrs
        .iter()
        .map(|c| (*c, own.name.clone()))
        .collect();
    for node in sorted {
        let name = name_of(&node.metadata);
        let skip = |why: String| format!("Node {name}: {why}: no route to its pods");
        if out.last().is_some_and(|n| n.name == name) {
            warnings.push(format!("Node {name}: listed twice: the second is skipped"));
            continue;
        }
        let mut pod_cidrs = Vec::new();
        for text in node_pod_cidrs(node) {
            match parse_cidr(text) {
                Ok(c) => pod_cidrs.push(c),
                Err(e) => warnings.push(skip(format!("podCIDR: {e}"))),
            }
        }
        pod_cidrs.retain(|c| match claimed.get(c) {
            Some(first) => {
                warnings.push(skip(format!("podCIDR {c} is already node {first}'s")));
                false
            }
            None => true,
        });
        if pod_cidrs.is_empty() {
            warnings.push(skip("no usable podCIDR".into()));
            continue;
        }
        let Some(underlay_ip) = node_underlay_ipv4(node, warnings) else {
            warnings.push(skip(format!(
                "no IPv4 InternalIP and no valid {VTEP_ADDRESS_ANNOTATION}"
            )));
            continue;
        };
        let underlay_mac = match node_underlay_mac(node).map(parse_unicast_mac) {
            Some(Ok(mac)) => mac,
            Some(Err(e)) => {
                warnings.push(skip(format!("{UNDERLAY_MAC_ANNOTATION}: {e}")));
                continue;
            }
            None => {
                warnings.push(skip(format!("no {UNDERLAY_MAC_ANNOTATION} annotation")));
                continue;
            }
        };
        let index = out.len();
        for cidr in &pod_cidrs {
            claimed.insert(*cidr, name.to_string());
            routes.insert(*cidr, index);
        }
        out.push(RemoteNode {
            name: name.to_string(),
            pod_cidrs,
            underlay_ip,
            underlay_mac,
        });
    }
    (out, routes)
}

/// A text rendering of `tables` in which every map is sorted, so two equal tables render
/// identically (`Tables`' hash maps are randomly seeded, so their `Debug` order is not
/// stable). For determinism tests and for diffing what a node runs.
pub fn canonical_dump(tables: &Tables) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "generation: {}", tables.generation);
    let _ = writeln!(s, "node: {:?}", tables.node);
    let _ = writeln!(s, "overlay: {:?}", tables.overlay);
    let _ = writeln!(s, "cluster_cidrs: {:?}", tables.cluster_cidrs);
    let _ = writeln!(s, "service_cidrs: {:?}", tables.service_cidrs);
    for (i, p) in tables.ports.iter().enumerate() {
        let _ = writeln!(s, "port {i}: {p:?}");
    }
    for p in &tables.local_pods {
        let _ = writeln!(s, "local_pod: {p:?}");
    }
    let by_ip: BTreeMap<_, _> = tables.local_pod_by_ip.iter().collect();
    let _ = writeln!(s, "local_pod_by_ip: {by_ip:?}");
    for n in &tables.remote_nodes {
        let _ = writeln!(s, "remote_node: {n:?}");
    }
    // PrefixMap cannot be iterated; probe it with every remote PodCIDR instead.
    let _ = writeln!(s, "remote_routes: {} entries", tables.remote_routes.len());
    for n in &tables.remote_nodes {
        for c in &n.pod_cidrs {
            let _ = writeln!(
                s,
                "  {c} -> {:?}",
                tables.remote_routes.longest_match(c.addr)
            );
        }
    }
    // Service ports by name, frontends by the name of the port they reach: slot numbers
    // (`ServiceId`s) depend on the order Services came and went in, so they are left out.
    let mut ports: Vec<&ServicePort> = tables
        .service_ports
        .iter()
        .map(|p| &**p)
        .filter(|p| !p.name.is_empty())
        .collect();
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    for p in ports {
        let _ = writeln!(s, "service_port {}: {p:?}", p.name);
    }
    let frontends: BTreeMap<_, _> = tables.frontends.iter().collect();
    for (k, v) in frontends {
        let port = tables
            .service_port(v.service)
            .map_or("?", |p| p.name.as_str());
        let _ = writeln!(s, "frontend {k:?}: {:?} -> {port}", v.kind);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, internal_ip: &str, cidr: &str, vtep: Option<&str>) -> Node {
        let mut annotations = serde_json::json!({UNDERLAY_MAC_ANNOTATION: "02:00:00:00:00:01"});
        if let Some(v) = vtep {
            annotations[VTEP_ADDRESS_ANNOTATION] = v.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": internal_ip}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_vtep_annotation_is_the_underlay_address_of_every_node() {
        let mut cluster = ClusterState {
            nodes: vec![
                node("n3", "10.0.0.3", "10.244.3.0/24", Some("fd00::3")),
                node("n1", "10.0.0.1", "10.244.1.0/24", Some("192.168.9.1")),
                node("n2", "10.0.0.2", "10.244.2.0/24", Some("192.168.9.2")),
            ],
            ..ClusterState::default()
        };
        let config = AgentConfig::default();
        let out = translate(&cluster, &config, "n1", 1).unwrap();
        assert_eq!(out.tables.node.underlay_ip, [192, 168, 9, 1]);
        let remote: Vec<_> = out
            .tables
            .remote_nodes
            .iter()
            .map(|n| (n.name.as_str(), n.underlay_ip))
            .collect();
        // n3's annotation is IPv6: warned about, its InternalIP used.
        assert_eq!(remote, [("n2", [192, 168, 9, 2]), ("n3", [10, 0, 0, 3])]);
        assert_eq!(
            out.tables.remote_node_by_underlay.get(&[192, 168, 9, 2]),
            Some(&0)
        );
        assert_eq!(
            out.tables.remote_node_by_underlay.get(&[10, 0, 0, 3]),
            Some(&1)
        );
        assert_eq!(
            out.warnings,
            [
                "Node n3: kxdp.io/vtep-address: \"fd00::3\" is IPv6: the VXLAN underlay is IPv4: \
                 using its InternalIP instead"
            ]
        );
        // Pure: the same input in another order gives the same tables and warnings.
        cluster.nodes.reverse();
        let again = translate(&cluster, &config, "n1", 1).unwrap();
        assert_eq!(canonical_dump(&again.tables), canonical_dump(&out.tables));
        assert_eq!(again.warnings, out.warnings);

        // The own node's invalid annotation: same rule, a warning and its InternalIP.
        cluster.nodes.retain(|n| name_of(&n.metadata) != "n1");
        cluster
            .nodes
            .push(node("n1", "10.0.0.1", "10.244.1.0/24", Some("192.168.9")));
        let fallback = translate(&cluster, &config, "n1", 1).unwrap();
        assert_eq!(fallback.tables.node.underlay_ip, [10, 0, 0, 1]);
        assert!(
            fallback.warnings[0].starts_with("Node n1: kxdp.io/vtep-address: \"192.168.9\""),
            "{:?}",
            fallback.warnings
        );
    }

    #[test]
    fn unknown_node_lists_the_present_ones() {
        let mut cluster = ClusterState::default();
        for n in ["b", "a"] {
            let mut node = Node::default();
            node.metadata.name = Some(n.into());
            cluster.nodes.push(node);
        }
        let err = translate(&cluster, &AgentConfig::default(), "c", 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node \"c\" is not in the cluster state (nodes: a, b)"
        );
    }
}
