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
use std::sync::Arc;

use datapath::lb::maglev::{self, MaglevError, MaglevTable};
use datapath::tables::{
    Backend, BackendSet, EndpointCondition, FrontendKind, ServiceKey, ServicePort,
};
use datapath::{Cidr, IpKey};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort as K8sServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::AgentConfig;
use crate::k8s::{
    HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL, name_of, namespace_of, node_addresses, parse_cidr,
    parse_ip, parse_ip_key, port_number, protocol_number, service_cluster_ips, service_type,
    slice_service_name,
};

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
pub(crate) struct NodeView<'a> {
    pub name: &'a str,
    /// The node's InternalIP and ExternalIP addresses ([`nodeport_addresses`]).
    pub node_ips: &'a [IpKey],
    /// Addresses of pods on this node: an endpoint there is local even without `nodeName`.
    pub local_pod_ips: &'a BTreeSet<IpKey>,
}

/// The node's InternalIP and ExternalIP addresses, sorted: where NodePorts answer.
pub(super) fn nodeport_addresses(node: &Node) -> Vec<IpKey> {
    node_addresses(node)
        .filter(|(ty, _)| matches!(*ty, "InternalIP" | "ExternalIP"))
        .filter_map(|(_, a)| parse_ip(a).ok().map(IpKey::from))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// One Service translated on its own: its ports, in order (IPv4 ports first, each family
/// in `spec.ports` order), and what was skipped. Frontends two Services both claim are
/// settled when the ports are assembled ([`super::service_set::ServiceSet`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceBuild {
    pub ports: Vec<PortBuild>,
    pub warnings: Vec<String>,
    /// What this node answers on the Service's `healthCheckNodePort`, when it has one.
    pub health_check: Option<HealthCheckService>,
}

/// A Service a load balancer health-checks on this node: type LoadBalancer with
/// `externalTrafficPolicy: Local` and a `spec.healthCheckNodePort` (kube-proxy's
/// `NeedsHealthCheck`). The load balancer sends traffic only to nodes answering 200, which
/// they do while they have a ready local endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckService {
    pub namespace: String,
    pub name: String,
    /// `spec.healthCheckNodePort`.
    pub port: u16,
    /// Ready endpoints on this node, counted by address as kube-proxy counts them: an
    /// endpoint serving two of the Service's ports is one endpoint. Terminating ones do not
    /// count (the node should stop getting new traffic while they drain).
    pub local_endpoints: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct PortBuild {
    pub port: Arc<ServicePort>,
    /// Every address the port answers on, in claim order.
    pub frontends: Vec<(ServiceKey, FrontendKind)>,
}

/// EndpointSlices by the Service they belong to (`kubernetes.io/service-name`), each
/// Service's sorted by slice name so endpoints come in a stable order.
pub(super) fn slices_by_service(
    slices: &[EndpointSlice],
) -> BTreeMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut out: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(svc) = slice_service_name(slice) {
            out.entry((namespace_of(&slice.metadata), svc))
                .or_default()
                .push(slice);
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|s| name_of(&s.metadata));
    }
    out
}

/// `spec.loadBalancerSourceRanges` (LoadBalancer Services only; kube-proxy trims each
/// entry). An entry that is no CIDR is warned about and left out; when none is valid the
/// LoadBalancer IPs are closed to everyone (`0.0.0.0/32` and `::/128` stand for "nobody")
/// rather than opened: a typo must not make a restricted Service public.
fn lb_source_ranges(spec: &ServiceSpec, warn: &mut impl FnMut(String)) -> Vec<Cidr> {
    let entries = match (spec.type_.as_deref(), &spec.load_balancer_source_ranges) {
        (Some("LoadBalancer"), Some(entries)) if !entries.is_empty() => entries,
        _ => return Vec::new(),
    };
    let mut ranges = Vec::new();
    for entry in entries {
        match parse_cidr(entry.trim()) {
            Ok(cidr) => ranges.push(cidr),
            Err(e) => warn(format!("loadBalancerSourceRanges {entry:?}: {e}: left out")),
        }
    }
    if ranges.is_empty() {
        warn("loadBalancerSourceRanges: no valid range: its LoadBalancer IPs admit nobody".into());
        ranges = ["0.0.0.0/32", "::/128"]
            .iter()
            .filter_map(|c| parse_cidr(c).ok())
            .collect();
    }
    ranges
}

/// Whether this proxy programs `svc`: kube-proxy watches only Services without the
/// `service.kubernetes.io/service-proxy-name` and `service.kubernetes.io/headless` labels
/// (whatever their values); with `serviceProxyName` set, kxdp programs only the Services
/// labelled with that name instead (Cilium's rule), so two proxies can share a cluster.
pub(crate) fn proxied_here(svc: &Service, config: &AgentConfig) -> bool {
    let labels = svc.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    if label(HEADLESS_LABEL).is_some() {
        return false;
    }
    match (&config.service_proxy_name, label(SERVICE_PROXY_NAME_LABEL)) {
        (None, named) => named.is_none(),
        (Some(ours), named) => named == Some(ours.as_str()),
    }
}

/// Translates one Service with its slices. `previous`: the same Service's last build, whose
/// Maglev tables are reused where a port's selected endpoints did not change (one
/// endpoint change rebuilds only the table it touches).
pub(super) fn build_service(
    svc: &Service,
    slices: &[&EndpointSlice],
    config: &AgentConfig,
    node: &NodeView<'_>,
    previous: Option<&ServiceBuild>,
) -> ServiceBuild {
    let mut out = ServiceBuild::default();
    let ns = namespace_of(&svc.metadata);
    let name = name_of(&svc.metadata);
    let id = format!("{ns}/{name}");
    let mut warnings = Vec::new();
    let mut warn = |msg: String| warnings.push(format!("Service {id}: {msg}"));

    if !proxied_here(svc, config) {
        // Another proxy's, as kube-proxy decides it: not an error, nothing to say.
        return out;
    }
    match service_type(svc) {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        // DNS only: nothing to program.
        "ExternalName" => return out,
        other => {
            warn(format!("type {other:?} is not known: skipped"));
            out.warnings = warnings;
            return out;
        }
    }
    let Some(spec) = svc.spec.as_ref() else {
        return out;
    };
    let cluster_ips = service_cluster_ips(svc);
    if cluster_ips.first() == Some(&"None") {
        // Headless: DNS points at the pods themselves; nothing to program.
        return out;
    }
    if cluster_ips.is_empty() {
        warn("no clusterIP: nothing to program".into());
        out.warnings = warnings;
        return out;
    }
    let vips: Vec<IpKey> = cluster_ips
        .iter()
        .filter_map(|ip| match parse_ip_key(ip) {
            Ok(vip) if in_any(&config.service_cidrs, vip) => Some(vip),
            Ok(vip) => {
                warn(format!(
                    "clusterIP {vip} is outside every Service CIDR ({}): skipped",
                    super::service_cidrs::list(&config.service_cidrs)
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
    let lb_source_ranges = lb_source_ranges(spec, &mut warn);
    let affinity_timeout_ns = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let secs = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S);
        secs * 1_000_000_000
    });
    let fixed_size = maglev_size_annotation(svc, config, &mut warn);
    let size_for = |members: usize| fixed_size.unwrap_or_else(|| config.maglev.size_for(members));
    let ports = spec.ports.as_deref().unwrap_or_default();

    // One Service port per (family, port): a dual-stack Service has separate endpoint
    // sets per family (one EndpointSlice addressType each).
    for v4 in [true, false] {
        let family_vips: Vec<IpKey> = vips.iter().copied().filter(|v| v.is_v4() == v4).collect();
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
            let candidates = candidates(slices, v4, port, proto, &mut warn);
            let port_name = format!("{id}:{number}");
            let mut keys: Vec<(ServiceKey, FrontendKind)> = Vec::new();
            let key = |vip: IpKey, port: u16| ServiceKey { vip, port, proto };
            keys.extend(
                family_vips
                    .iter()
                    .map(|&v| (key(v, number), FrontendKind::ClusterIp)),
            );
            if let Some(node_port) = port.node_port.and_then(|p| port_number(p).ok()) {
                keys.extend(
                    node.node_ips
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
            let backends = backends(&candidates, node);
            let before = previous
                .and_then(|p| p.ports.iter().find(|b| b.port.name == port_name))
                .map(|b| &*b.port);
            let (cluster, local) = match (
                select(
                    &backends,
                    false,
                    &size_for,
                    before.map(|p| (&p.backends[..], &p.cluster)),
                ),
                select(
                    &backends,
                    true,
                    &size_for,
                    before.map(|p| (&p.backends[..], &p.local)),
                ),
            ) {
                (Ok(c), Ok(l)) => (c, l),
                (Err(e), _) | (_, Err(e)) => {
                    warn(format!(
                        "port {number}: Maglev table: {e}: its endpoints are not programmed"
                    ));
                    (empty_set(), empty_set())
                }
            };
            out.ports.push(PortBuild {
                port: Arc::new(ServicePort {
                    stable_id: stable_id(&port_name),
                    name: port_name,
                    backends,
                    cluster,
                    local,
                    external_local,
                    internal_local,
                    affinity_timeout_ns,
                    lb_source_ranges: lb_source_ranges.clone(),
                }),
                frontends: keys,
            });
        }
    }
    out.warnings = warnings;
    out.health_check = health_check_port(spec).map(|port| HealthCheckService {
        namespace: ns.to_string(),
        name: name.to_string(),
        port,
        local_endpoints: local_ready_endpoints(&out.ports),
    });
    out
}

/// `spec.healthCheckNodePort` of a LoadBalancer Service with `externalTrafficPolicy: Local`
/// (the API server allocates one unless `allocateLoadBalancerNodePorts`-style settings
/// leave it 0, which kube-proxy logs and skips, as kxdp does).
fn health_check_port(spec: &ServiceSpec) -> Option<u16> {
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.external_traffic_policy.as_deref() != Some("Local")
    {
        return None;
    }
    port_number(spec.health_check_node_port?).ok()
}

/// Distinct addresses of the ready local endpoints over every port of the Service.
fn local_ready_endpoints(ports: &[PortBuild]) -> usize {
    ports
        .iter()
        .flat_map(|p| p.port.backends.iter())
        .filter(|b| b.local && b.condition == EndpointCondition::Ready)
        .map(|b| b.ip)
        .collect::<BTreeSet<_>>()
        .len()
}

/// The Service's fixed Maglev table size from its annotation, if it has a valid one.
fn maglev_size_annotation(
    svc: &Service,
    config: &AgentConfig,
    warn: &mut impl FnMut(String),
) -> Option<u32> {
    let text = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAGLEV_SIZE_ANNOTATION))?;
    match text.trim().parse::<u32>() {
        Ok(m) if maglev::valid_table_size(m) => Some(m),
        _ => {
            let fallback = if config.maglev.by_backends {
                "sized by its endpoint count".to_string()
            } else {
                config.maglev.table_size.to_string()
            };
            warn(format!(
                "{MAGLEV_SIZE_ANNOTATION}: {text:?} is not a valid table size (a prime in \
                 251..=131071, or 655373): using {fallback}"
            ));
            None
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
/// `before`: the same selection of the previous generation (its port's backends and the
/// set); its table is reused when the members and the size are unchanged.
pub(crate) fn select(
    backends: &[Backend],
    local_only: bool,
    size_for: &dyn Fn(usize) -> u32,
    before: Option<(&[Backend], &BackendSet)>,
) -> Result<BackendSet, MaglevError> {
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
    if members.is_empty() {
        return Ok(empty_set());
    }
    let size = size_for(members.len());
    let addr = |list: &[Backend], i: u32| (list[i as usize].ip, list[i as usize].port);
    if let Some((old_backends, old)) = before
        && old.maglev.size() == size
        && old.members.len() == members.len()
        && old
            .members
            .iter()
            .zip(&members)
            .all(|(&o, &n)| addr(old_backends, o) == addr(backends, n))
    {
        return Ok(BackendSet {
            members,
            maglev: Arc::clone(&old.maglev),
        });
    }
    let keys: Vec<[u8; 18]> = members
        .iter()
        .map(|&i| {
            let (ip, port) = addr(backends, i);
            maglev::backend_key(ip, port)
        })
        .collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let maglev = MaglevTable::build(&key_refs, None, size, maglev::DEFAULT_SEED)?;
    Ok(BackendSet {
        members,
        maglev: Arc::new(maglev),
    })
}

/// No endpoint for new flows: a table without slots (lookups find nothing), shared.
pub(super) fn empty_set() -> BackendSet {
    static EMPTY_TABLE: std::sync::LazyLock<Arc<MaglevTable>> =
        std::sync::LazyLock::new(|| Arc::new(MaglevTable::empty()));
    BackendSet {
        members: Vec::new(),
        maglev: Arc::clone(&EMPTY_TABLE),
    }
}

fn in_any(cidrs: &[Cidr], ip: IpKey) -> bool {
    cidrs.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(labels: &[(&str, &str)]) -> Service {
        let mut svc = Service::default();
        svc.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        svc
    }

    #[test]
    fn kube_proxys_rule_and_a_named_proxys() {
        let plain = labelled(&[("app", "web")]);
        let other = labelled(&[(SERVICE_PROXY_NAME_LABEL, "other")]);
        let empty = labelled(&[(SERVICE_PROXY_NAME_LABEL, "")]);
        let mine = labelled(&[(SERVICE_PROXY_NAME_LABEL, "kxdp")]);
        let headless = labelled(&[(HEADLESS_LABEL, "")]);

        let default = AgentConfig::default();
        let named = AgentConfig::from_yaml("serviceProxyName: kxdp\n").unwrap();
        let cases = [
            (&plain, true, false),
            (&other, false, false),
            // kube-proxy's selector is "does not exist": an empty value is a label too.
            (&empty, false, false),
            (&mine, false, true),
            (&headless, false, false),
        ];
        for (svc, by_default, by_name) in cases {
            let labels = svc.metadata.labels.clone();
            assert_eq!(proxied_here(svc, &default), by_default, "{labels:?}");
            assert_eq!(proxied_here(svc, &named), by_name, "{labels:?} named");
        }
        for bad in ["", "-x", "a b", &"x".repeat(64)] {
            let err = AgentConfig::from_yaml(&format!("serviceProxyName: {bad:?}\n")).unwrap_err();
            assert!(err.to_string().starts_with("serviceProxyName: "), "{err}");
        }
    }

    #[test]
    fn invalid_source_ranges_are_left_out_and_none_valid_admits_nobody() {
        let spec = |kind: &str, ranges: &[&str]| ServiceSpec {
            type_: Some(kind.into()),
            load_balancer_source_ranges: Some(ranges.iter().map(|r| r.to_string()).collect()),
            ..ServiceSpec::default()
        };
        let run = |s: &ServiceSpec| {
            let mut warnings = Vec::new();
            let ranges = lb_source_ranges(s, &mut |w| warnings.push(w));
            (ranges, warnings)
        };
        let (ranges, warnings) = run(&spec("LoadBalancer", &[" 10.0.0.0/8", "10.1.0.0/33"]));
        assert_eq!(ranges, vec![parse_cidr("10.0.0.0/8").unwrap()]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"10.1.0.0/33\""), "{warnings:?}");

        let (ranges, warnings) = run(&spec("LoadBalancer", &["nonsense"]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let port = ServicePort {
            lb_source_ranges: ranges,
            ..ServicePort::clone(&super::super::service_set::FREE_SLOT)
        };
        let lb4 = parse_ip_key("198.51.100.1").unwrap();
        let lb6 = parse_ip_key("2001:db8::1").unwrap();
        for (lb, src) in [(lb4, "203.0.113.7"), (lb4, "0.0.0.1"), (lb6, "2001:db8::7")] {
            let src = parse_ip_key(src).unwrap();
            assert!(!port.lb_source_allowed(lb, src), "{src:?}");
        }
        // Not a LoadBalancer, or no ranges: nothing to enforce.
        assert!(run(&spec("NodePort", &["10.0.0.0/8"])).0.is_empty());
        assert!(run(&spec("LoadBalancer", &[])).0.is_empty());
    }
}
