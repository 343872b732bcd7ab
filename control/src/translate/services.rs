//! Services -> the service table: one [`ServiceKey`] per (cluster IP, service port), with
//! its backends taken from the Service's EndpointSlices.
//!
//! Built in two steps on purpose: every endpoint that could back a port is first gathered
//! as a [`Candidate`] carrying its conditions and node, then [`select_backends`] decides
//! which ones serve. The serving/terminating fallback, `internalTrafficPolicy: Local`,
//! NodePort/ExternalIP/LoadBalancer keys and Maglev tables slot into those two places.

use std::collections::BTreeMap;

use datapath::tables::{Backend, ServiceKey, ServicePort};
use datapath::{Cidr, IpKey};
use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::k8s::{
    name_of, namespace_of, parse_ip_key, port_number, protocol_number, service_cluster_ips,
    service_type, slice_service_name,
};
use crate::config::AgentConfig;
use crate::state::ClusterState;

/// One endpoint address x port that could back a service port, with what the slice said
/// about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    pub ip: IpKey,
    pub port: u16,
    /// `conditions.ready`, unset read as true (API docs).
    pub ready: bool,
    /// `conditions.serving`, unset read as true (API docs).
    pub serving: bool,
    /// `conditions.terminating`, unset read as false (API docs).
    pub terminating: bool,
    /// `nodeName`, for topology-aware choices (`internalTrafficPolicy: Local`).
    pub node_name: Option<&'a str>,
}

/// Builds the service table, sorted so that equal inputs give equal tables.
pub(super) fn build(
    cluster: &ClusterState,
    config: &AgentConfig,
    warnings: &mut Vec<String>,
) -> BTreeMap<ServiceKey, ServicePort> {
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

    let mut table = BTreeMap::new();
    // Which service took a key first, to name it when a later one collides.
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
        let ips = service_cluster_ips(svc);
        if ips.first() == Some(&"None") {
            // Headless: DNS points at the pods themselves.
            continue;
        }
        if ips.is_empty() {
            warn("no clusterIP: nothing to program".into());
            continue;
        }
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let svc_slices = slices.get(&(ns, name)).map(Vec::as_slice).unwrap_or(&[]);

        for ip in ips {
            let vip = match parse_ip_key(ip) {
                Ok(vip) => vip,
                Err(e) => {
                    warn(format!("clusterIP: {e}: skipped"));
                    continue;
                }
            };
            if !in_any(&config.service_cidrs, vip) {
                warn(format!(
                    "clusterIP {vip} is outside serviceCIDR {}: skipped",
                    list(&config.service_cidrs)
                ));
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
                let key = ServiceKey {
                    vip,
                    port: number,
                    proto,
                };
                if let Some(first) = owner.get(&key) {
                    warn(format!(
                        "{vip} port {number} proto {proto} already belongs to Service {first}: skipped"
                    ));
                    continue;
                }
                let candidates = candidates(svc_slices, vip.is_v4(), port, proto, &mut warn);
                let backends = select_backends(&candidates);
                owner.insert(key, id.clone());
                table.insert(
                    key,
                    ServicePort {
                        name: format!("{id}:{number}"),
                        backends,
                    },
                );
            }
        }
    }
    table
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
            let serving = cond.and_then(|c| c.serving).unwrap_or(true);
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

/// The backends of one service port: ready endpoints, deduplicated (an address can appear
/// in two slices while the controller moves it) and sorted, so every node sees the same
/// list and Maglev picks the same backend for the same flow everywhere.
pub(crate) fn select_backends(candidates: &[Candidate<'_>]) -> Vec<Backend> {
    let mut backends: Vec<Backend> = candidates
        .iter()
        .filter(|c| c.ready)
        .map(|c| Backend {
            ip: c.ip,
            port: c.port,
        })
        .collect();
    backends.sort_unstable();
    backends.dedup();
    backends
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
