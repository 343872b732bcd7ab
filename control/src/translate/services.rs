//! Services -> Service ports and their frontends.
//!
//! For every Service port: every endpoint its EndpointSlices list (with conditions and
//! node), the selections new flows may use (cluster-wide and node-local, KEP-1669's
//! serving-terminating fallback included) with a Maglev table each, the traffic policies
//! and session affinity. Frontends map each address the port answers on (cluster IPs,
//! this node's addresses at the nodePort, external IPs, load-balancer ingress IPs) to it.
//!
//! Built in two steps on purpose: endpoints are first gathered as [`Candidate`]s carrying
//! their conditions and node, then [`select`] decides which ones take new flows.

use std::collections::{BTreeMap, BTreeSet};

use datapath::lb::maglev::{self, MaglevTable};
use datapath::tables::{
    Backend, BackendSet, EndpointCondition, Frontend, FrontendKind, ServiceId, ServiceKey,
    ServicePort,
};
use datapath::{Cidr, IpKey};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort as K8sServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::k8s::{
    name_of, namespace_of, node_addresses, parse_ip, parse_ip_key, port_number, protocol_number,
    service_cluster_ips, service_type, slice_service_name,
};
use crate::config::AgentConfig;
use crate::state::ClusterState;

/// Per-Service override of the cluster's Maglev table size (a prime, see
/// `maglev::valid_table_size`).
pub const MAGLEV_SIZE_ANNOTATION: &str = "kxdp.io/maglev-table-size";

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (the API default: 3 hours).
const DEFAULT_AFFINITY_TIMEOUT_S: u64 = 10_800;

/// One endpoint address x port that could back a service port, with what the slice said
/// about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    pub ip: IpKey,
    pub port: u16,
    /// `conditions.ready`, unset read as true (API docs).
    pub ready: bool,
    /// `conditions.serving`, unset read as `ready` (API docs).
    pub serving: bool,
    /// `conditions.terminating`, unset read as false (API docs).
    pub terminating: bool,
    /// `nodeName`, for node-local choices.
    pub node_name: Option<&'a str>,
}

/// What the node contributes to Service translation.
pub(super) struct NodeView<'a> {
    pub name: &'a str,
    /// The node's own Node object (its addresses carry NodePorts).
    pub node: &'a Node,
    /// Addresses of pods on this node: an endpoint there is local even without `nodeName`.
    pub local_pod_ips: &'a BTreeSet<IpKey>,
}

/// The Service ports and frontends of a cluster, as this node programs them.
pub(super) struct ServiceTables {
    pub ports: Vec<ServicePort>,
    pub frontends: BTreeMap<ServiceKey, Frontend>,
}

/// Builds the service tables, sorted so that equal inputs give equal tables.
pub(super) fn build(
    cluster: &ClusterState,
    config: &AgentConfig,
    node: &NodeView<'_>,
    warnings: &mut Vec<String>,
) -> ServiceTables {
    // (namespace, service name) -> its slices, by slice name, so candidates come in a
    // stable order whatever order the slices were loaded or watched in.
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in &cluster.endpoint_slices {
        if let Some(svc) = slice_service_name(slice) {
            slices
                .entry((namespace_of(&slice.metadata), svc))
                .or_default()
                .push(slice);
        }
    }
    for list in slices.values_mut() {
        list.sort_by_key(|s| name_of(&s.metadata));
    }

    let mut services: Vec<&Service> = cluster.services.iter().collect();
    services.sort_by_key(|s| (namespace_of(&s.metadata), name_of(&s.metadata)));

    let node_ips: Vec<IpKey> = node_addresses(node.node)
        .filter(|(ty, _)| matches!(*ty, "InternalIP" | "ExternalIP"))
        .filter_map(|(_, a)| parse_ip(a).ok().map(IpKey::from))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let mut out = ServiceTables {
        ports: Vec::new(),
        frontends: BTreeMap::new(),
    };
    // Which service took a frontend first, to name it when a later one collides.
    let mut owner: BTreeMap<ServiceKey, String> = BTreeMap::new();
    for svc in services {
        let ns = namespace_of(&svc.metadata);
        let name = name_of(&svc.metadata);
        let id = format!("{ns}/{name}");
        let mut warn = |msg: String| warnings.push(format!("Service {id}: {msg}"));

        match service_type(svc) {
            "ClusterIP" | "NodePort" | "LoadBalancer" => {}
            // DNS only: nothing to program.
            "ExternalName" => continue,
            other => {
                warn(format!("type {other:?} is not known: skipped"));
                continue;
            }
        }
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let cluster_ips = service_cluster_ips(svc);
        if cluster_ips.first() == Some(&"None") {
            // Headless: DNS points at the pods themselves; nothing to program.
            continue;
        }
        if cluster_ips.is_empty() {
            warn("no clusterIP: nothing to program".into());
            continue;
        }
        let vips: Vec<IpKey> = cluster_ips
            .iter()
            .filter_map(|ip| match parse_ip_key(ip) {
                Ok(vip) if in_any(&config.service_cidrs, vip) => Some(vip),
                Ok(vip) => {
                    warn(format!(
                        "clusterIP {vip} is outside serviceCIDR {}: skipped",
                        list(&config.service_cidrs)
                    ));
                    None
                }
                Err(e) => {
                    warn(format!("clusterIP: {e}: skipped"));
                    None
                }
            })
            .collect();
        let external_ips: Vec<IpKey> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| parse_ip_key(ip).ok())
            .collect();
        let lb_ips: Vec<IpKey> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            // ipMode Proxy (KEP-1860): the load balancer terminates and re-sends to the
            // node, so the ingress IP must not be short-circuited here.
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_deref().and_then(|ip| parse_ip_key(ip).ok()))
            .collect();
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let affinity_timeout_ns =
            (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                let secs = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .and_then(|t| u64::try_from(t).ok())
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S);
                secs * 1_000_000_000
            });
        let table_size = maglev_size(svc, config, &mut warn);
        let ports = spec.ports.as_deref().unwrap_or_default();
        let svc_slices = slices.get(&(ns, name)).map(Vec::as_slice).unwrap_or(&[]);

        // One Service port per (family, port): a dual-stack Service has separate endpoint
        // sets per family (one EndpointSlice addressType each).
        for v4 in [true, false] {
            let family_vips: Vec<IpKey> =
                vips.iter().copied().filter(|v| v.is_v4() == v4).collect();
            if family_vips.is_empty() {
                continue;
            }
            for port in ports {
                let (Ok(number), Ok(proto)) = (
                    port_number(port.port),
                    protocol_number(port.protocol.as_deref()),
                ) else {
                    warn(format!(
                        "port {} {:?} is not valid: skipped",
                        port.port, port.protocol
                    ));
                    continue;
                };
                let candidates = candidates(svc_slices, v4, port, proto, &mut warn);
                let port_name = format!("{id}:{number}");
                let service = ServiceId(out.ports.len() as u32);
                let mut keys: Vec<(ServiceKey, FrontendKind)> = Vec::new();
                let key = |vip: IpKey, port: u16| ServiceKey { vip, port, proto };
                keys.extend(
                    family_vips
                        .iter()
                        .map(|&v| (key(v, number), FrontendKind::ClusterIp)),
                );
                if let Some(node_port) = port.node_port.and_then(|p| port_number(p).ok()) {
                    keys.extend(
                        node_ips
                            .iter()
                            .filter(|ip| ip.is_v4() == v4)
                            .map(|&ip| (key(ip, node_port), FrontendKind::NodePort)),
                    );
                }
                keys.extend(
                    external_ips
                        .iter()
                        .filter(|ip| ip.is_v4() == v4)
                        .map(|&ip| (key(ip, number), FrontendKind::ExternalIp)),
                );
                keys.extend(
                    lb_ips
                        .iter()
                        .filter(|ip| ip.is_v4() == v4)
                        .map(|&ip| (key(ip, number), FrontendKind::LoadBalancer)),
                );
                let mut any = false;
                for (k, kind) in keys {
                    if let Some(first) = owner.get(&k) {
                        warn(format!(
                            "{} port {} proto {} already belongs to {first}: skipped",
                            k.vip, k.port, k.proto
                        ));
                        continue;
                    }
                    owner.insert(k, port_name.clone());
                    out.frontends.insert(k, Frontend { service, kind });
                    any = true;
                }
                if !any {
                    continue;
                }
                let backends = backends(&candidates, node);
                let (cluster, local) = match (
                    select(&backends, false, table_size),
                    select(&backends, true, table_size),
                ) {
                    (Ok(c), Ok(l)) => (c, l),
                    (Err(e), _) | (_, Err(e)) => {
                        warn(format!(
                            "port {number}: {e}: its endpoints are not programmed"
                        ));
                        (empty_set(table_size), empty_set(table_size))
                    }
                };
                out.ports.push(ServicePort {
                    stable_id: stable_id(&port_name),
                    name: port_name,
                    backends,
                    cluster,
                    local,
                    external_local,
                    internal_local,
                    affinity_timeout_ns,
                });
            }
        }
    }
    out
}

/// The Maglev table size for a Service: its annotation if valid, else the cluster's.
fn maglev_size(svc: &Service, config: &AgentConfig, warn: &mut impl FnMut(String)) -> u32 {
    let Some(text) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAGLEV_SIZE_ANNOTATION))
    else {
        return config.maglev.table_size;
    };
    match text.trim().parse::<u32>() {
        Ok(m) if maglev::valid_table_size(m) => m,
        _ => {
            warn(format!(
                "{MAGLEV_SIZE_ANNOTATION}: {text:?} is not a valid table size (a prime in \
                 251..=131071, or 655373): using {}",
                config.maglev.table_size
            ));
            config.maglev.table_size
        }
    }
}

/// A 32-bit FNV-1a of the port's name: names the port across table generations, where
/// its index may change.
fn stable_id(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Every endpoint address x matching endpoint port of the service's slices for one family.
/// A slice port matches a service port when the names agree (both unset counts as equal)
/// and the protocols do, which is how the EndpointSlice controller relates them.
fn candidates<'a>(
    slices: &[&'a EndpointSlice],
    v4: bool,
    svc_port: &K8sServicePort,
    proto: u8,
    warn: &mut impl FnMut(String),
) -> Vec<Candidate<'a>> {
    let want_type = if v4 { "IPv4" } else { "IPv6" };
    let want_name = svc_port.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == want_type) {
        let ports: Vec<u16> = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.name.as_deref().unwrap_or("") == want_name)
            .filter(|p| protocol_number(p.protocol.as_deref()) == Ok(proto))
            // An unset port means "all ports", which no ClusterIP can express: kube-proxy
            // skips those too.
            .filter_map(|p| p.port.and_then(|n| port_number(n).ok()))
            .collect();
        if ports.is_empty() {
            continue;
        }
        for endpoint in &slice.endpoints {
            let cond = endpoint.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            for addr in &endpoint.addresses {
                let ip = match parse_ip_key(addr) {
                    Ok(ip) if ip.is_v4() == v4 => ip,
                    Ok(_) | Err(_) => {
                        warn(format!(
                            "EndpointSlice {}: address {addr:?} is not {want_type}: skipped",
                            name_of(&slice.metadata)
                        ));
                        continue;
                    }
                };
                for &port in &ports {
                    out.push(Candidate {
                        ip,
                        port,
                        ready,
                        serving,
                        terminating,
                        node_name: endpoint.node_name.as_deref(),
                    });
                }
            }
        }
    }
    out
}

/// Every listed endpoint of one service port, deduplicated (an address can appear in two
/// slices while the controller moves it; the better condition wins) and sorted by
/// (ip, port), so every node sees the same list and builds the same Maglev tables.
pub(crate) fn backends(candidates: &[Candidate<'_>], node: &NodeView<'_>) -> Vec<Backend> {
    let mut by_key: BTreeMap<(IpKey, u16), Backend> = BTreeMap::new();
    for c in candidates {
        let condition = if c.ready {
            EndpointCondition::Ready
        } else if c.serving && c.terminating {
            EndpointCondition::ServingTerminating
        } else {
            EndpointCondition::NotServing
        };
        let local = c.node_name == Some(node.name) || node.local_pod_ips.contains(&c.ip);
        let b = Backend {
            ip: c.ip,
            port: c.port,
            condition,
            local,
        };
        by_key
            .entry((c.ip, c.port))
            .and_modify(|old| {
                if condition < old.condition {
                    *old = b;
                }
            })
            .or_insert(b);
    }
    by_key.into_values().collect()
}

/// The endpoints new flows may use (all, or this node's only): the ready ones, or, when
/// none is ready, the serving terminating ones (KEP-1669), with their Maglev table.
pub(crate) fn select(
    backends: &[Backend],
    local_only: bool,
    table_size: u32,
) -> Result<BackendSet, String> {
    let eligible = |want: EndpointCondition| -> Vec<u32> {
        backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.condition == want && (!local_only || b.local))
            .map(|(i, _)| i as u32)
            .collect()
    };
    let mut members = eligible(EndpointCondition::Ready);
    if members.is_empty() {
        members = eligible(EndpointCondition::ServingTerminating);
    }
    let keys: Vec<[u8; 18]> = members
        .iter()
        .map(|&i| {
            let b = &backends[i as usize];
            maglev::backend_key(b.ip, b.port)
        })
        .collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let maglev = MaglevTable::build(&key_refs, None, table_size, maglev::DEFAULT_SEED)
        .map_err(|e| format!("Maglev table: {e:?}"))?;
    Ok(BackendSet { members, maglev })
}

fn empty_set(table_size: u32) -> BackendSet {
    BackendSet {
        members: Vec::new(),
        maglev: MaglevTable::build(&[], None, table_size, maglev::DEFAULT_SEED).unwrap_or_else(
            |_| {
                MaglevTable::build(&[], None, maglev::DEFAULT_TABLE_SIZE, maglev::DEFAULT_SEED)
                    .expect("the default size is valid")
            },
        ),
    }
}

fn in_any(cidrs: &[Cidr], ip: IpKey) -> bool {
    cidrs.iter().any(|c| c.contains(ip))
}

fn list(cidrs: &[Cidr]) -> String {
    cidrs
        .iter()
        .map(Cidr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
