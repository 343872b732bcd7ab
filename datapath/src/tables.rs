//! The immutable snapshot the workers read: ports, routes, local pods, services.
//!
//! Built by the control side's pure `translate` and published whole; `process` only
//! reads it. Nothing here changes while a worker holds it, so lookups need no locks.

use std::sync::Arc;

use foldhash::HashMap;

use crate::addr::{Cidr, IpKey, MacAddr};
use crate::lb::maglev::MaglevTable;
use crate::policy::PolicyTables;

/// A datapath port. The numbering is the table's: 0 is always the uplink, 1 the host
/// port, and pods follow. Drivers map their sockets to these ids via [`Tables::ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

impl PortId {
    pub const UPLINK: PortId = PortId(0);
    pub const HOST: PortId = PortId(1);
}

/// The MAC of the kernel side of the `host` veth (`kxdp-host`). The agent sets it on the
/// interface; the datapath writes it as destination of everything it sends to the node.
pub const HOST_MAC: MacAddr = MacAddr([0x0a, 0x58, 0xa9, 0xfe, 0x00, 0x01]);

/// IP protocol numbers the service table is keyed by.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

#[derive(Debug, Clone)]
pub struct Tables {
    /// Increases with every publish; workers report which one they run.
    pub generation: u64,
    pub node: LocalNode,
    pub overlay: OverlayParams,
    /// Pod address space of the whole cluster (kxdp.yaml `clusterCIDR`).
    pub cluster_cidrs: Vec<Cidr>,
    /// Service VIP space (kxdp.yaml `serviceCIDR`).
    pub service_cidrs: Vec<Cidr>,
    /// Indexed by `PortId.0`.
    pub ports: Vec<PortInfo>,
    /// Local pods, indexed by the `PortInfo::Pod` index.
    pub local_pods: Vec<LocalPod>,
    /// Every local pod address -> index into `local_pods`.
    pub local_pod_by_ip: HashMap<IpKey, usize>,
    /// Other nodes' PodCIDRs -> index into `remote_nodes`.
    pub remote_routes: PrefixMap<usize>,
    pub remote_nodes: Vec<RemoteNode>,
    /// Underlay (VTEP) address -> index into `remote_nodes`: who may send us VXLAN.
    pub remote_node_by_underlay: HashMap<[u8; 4], usize>,
    /// Every Service port, indexed by [`ServiceId`]. Ids are this generation's: flows
    /// re-resolve them through `frontends` when the generation changes. Shared (`Arc`)
    /// so that a generation in which one Service changed copies pointers, not tables.
    pub service_ports: Vec<Arc<ServicePort>>,
    /// Every address:port:protocol a Service answers on -> which Service port, and how.
    /// Shared with the previous generation when no frontend changed.
    pub frontends: Arc<HashMap<ServiceKey, Frontend>>,
    /// Compiled NetworkPolicy for the local pods, shared while no policy input changes.
    pub policy: Arc<PolicyTables>,
}

#[derive(Debug, Clone)]
pub struct LocalNode {
    pub name: String,
    /// Underlay (VTEP) address: the Node's InternalIP. IPv4 (the overlay is VXLAN over IPv4).
    pub underlay_ip: [u8; 4],
    /// The MAC our uplink answers on (`kxdp.io/underlay-mac`).
    pub underlay_mac: MacAddr,
    pub pod_cidrs: Vec<Cidr>,
    /// First address of the IPv4 PodCIDR: the pods' default gateway.
    pub gateway_ip: [u8; 4],
    /// `0a:58:<gateway IPv4>`: what the datapath answers ARP with and writes as source MAC.
    pub gateway_mac: MacAddr,
    /// Every address of this node (status.addresses IPs and the gateway): traffic to
    /// them belongs to the kernel (walk 6).
    pub addresses: Vec<IpKey>,
}

#[derive(Debug, Clone, Copy)]
pub struct OverlayParams {
    pub vni: u32,
    pub udp_port: u16,
    pub underlay_mtu: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// `uplink`, `host` or `pod-<namespace>-<name>`.
    pub name: String,
    pub kind: PortKind,
}

/// Port names are part of the replay contract (docs/replay.md): traces and `--summary` name
/// ports, so the names are decided here, once, next to the type that carries them.
impl PortInfo {
    pub const UPLINK_NAME: &'static str = "uplink";
    pub const HOST_NAME: &'static str = "host";

    pub fn uplink() -> PortInfo {
        PortInfo {
            name: Self::UPLINK_NAME.to_string(),
            kind: PortKind::Uplink,
        }
    }

    pub fn host() -> PortInfo {
        PortInfo {
            name: Self::HOST_NAME.to_string(),
            kind: PortKind::Host,
        }
    }

    /// The port of the local pod at `index` in `Tables::local_pods`.
    pub fn pod(namespace: &str, name: &str, index: usize) -> PortInfo {
        PortInfo {
            name: Self::pod_name(namespace, name),
            kind: PortKind::Pod(index),
        }
    }

    /// `pod-<namespace>-<name>`.
    pub fn pod_name(namespace: &str, name: &str) -> String {
        format!("pod-{namespace}-{name}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Uplink,
    Host,
    /// Index into `Tables::local_pods`.
    Pod(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    pub namespace: String,
    pub name: String,
    pub port: PortId,
    /// `0a:58:<first IPv4>`.
    pub mac: MacAddr,
    pub ips: Vec<IpKey>,
}

#[derive(Debug, Clone)]
pub struct RemoteNode {
    pub name: String,
    pub pod_cidrs: Vec<Cidr>,
    pub underlay_ip: [u8; 4],
    pub underlay_mac: MacAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub vip: IpKey,
    pub port: u16,
    /// IP protocol number (see [`proto`]).
    pub proto: u8,
}

/// Index into [`Tables::service_ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

/// How a Service port is reached at one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frontend {
    pub service: ServiceId,
    pub kind: FrontendKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FrontendKind {
    /// `spec.clusterIP(s)`.
    ClusterIp,
    /// One of this node's addresses at `spec.ports[].nodePort`.
    NodePort,
    /// `spec.externalIPs`.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

impl FrontendKind {
    /// NodePort, ExternalIP and LoadBalancer addresses are "external": traffic from
    /// outside the cluster follows `externalTrafficPolicy` there.
    pub fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }
}

#[derive(Debug, Clone)]
pub struct ServicePort {
    /// `namespace/name:port` (port by number), as verdicts.jsonl reports it.
    pub name: String,
    /// A hash of `name`: identifies the port across table generations (session affinity).
    pub stable_id: u32,
    /// Every endpoint the EndpointSlices list for this port (ready or not), sorted by
    /// (ip, port). A flow whose backend is no longer here was to a deleted endpoint.
    pub backends: Vec<Backend>,
    /// The endpoints new flows may use cluster-wide (KEP-1669: ready ones; when none is
    /// ready, serving terminating ones) with their Maglev table.
    pub cluster: BackendSet,
    /// The same selection among this node's endpoints only.
    pub local: BackendSet,
    /// `externalTrafficPolicy: Local`: external traffic only to local endpoints, client IP kept.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: cluster-internal traffic only to local endpoints.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP` with its timeout; `None` without affinity.
    pub affinity_timeout_ns: Option<u64>,
    /// `spec.loadBalancerSourceRanges`: the sources that may open flows to the Service's
    /// LoadBalancer IPs. Empty: anyone (see [`ServicePort::lb_source_allowed`]).
    pub lb_source_ranges: Vec<Cidr>,
}

impl ServicePort {
    /// Whether `src` may open a flow to this port at its LoadBalancer IP `lb_ip`. The
    /// ranges apply per family, as kube-proxy splits them: a family with no range is open.
    pub fn lb_source_allowed(&self, lb_ip: IpKey, src: IpKey) -> bool {
        let mut ranges = self
            .lb_source_ranges
            .iter()
            .filter(|c| c.addr.is_v4() == lb_ip.is_v4())
            .peekable();
        ranges.peek().is_none() || ranges.any(|c| c.contains(src))
    }

    /// Whether `backend` is still listed for this port (in any condition).
    pub fn lists(&self, ip: IpKey, port: u16) -> bool {
        self.backends
            .binary_search_by(|b| (b.ip, b.port).cmp(&(ip, port)))
            .is_ok()
    }
}

/// A choice of endpoints for new flows and the Maglev table over them.
#[derive(Debug, Clone)]
pub struct BackendSet {
    /// Indices into [`ServicePort::backends`], in key order (the order Maglev was built in).
    pub members: Vec<u32>,
    /// Shared across generations while the members stay the same.
    pub maglev: Arc<MaglevTable>,
}

impl BackendSet {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member the Maglev table gives `flow_hash`, as an index into the port's backends.
    pub fn pick(&self, flow_hash: u32) -> Option<usize> {
        let slot = self.maglev.lookup(flow_hash)?;
        self.members.get(slot).map(|&i| i as usize)
    }

    /// Whether backend index `i` of the port may take new flows.
    pub fn contains(&self, i: usize) -> bool {
        self.members.binary_search(&(i as u32)).is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub ip: IpKey,
    pub port: u16,
    pub condition: EndpointCondition,
    /// On this node (its EndpointSlice `nodeName` is ours, or it is a local pod's address).
    pub local: bool,
}

/// An endpoint's EndpointSlice conditions, reduced to what selection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointCondition {
    Ready,
    /// Terminating but still serving: used only when nothing is ready (KEP-1669), and its
    /// existing flows continue.
    ServingTerminating,
    /// Listed but neither ready nor serving: no new flows; existing ones continue until the
    /// endpoint is deleted.
    NotServing,
}

/// Where the routing step sends a destination.
#[derive(Debug, Clone, Copy)]
pub enum Route<'t> {
    /// One of this node's own addresses: the kernel's (walk 6).
    Node,
    LocalPod(&'t LocalPod),
    RemoteNode(&'t RemoteNode),
    /// Inside the cluster CIDR but nobody owns it.
    Unowned,
    /// Inside the Service CIDR (services are looked up before routing; reaching here
    /// means no such service).
    ServiceRange,
    /// Everything else leaves through the host port.
    Host,
}

impl Tables {
    /// Looks a destination up: node addresses, local pods, remote PodCIDRs (longest
    /// prefix), then the cluster and service ranges, then the host.
    pub fn route(&self, dst: IpKey) -> Route<'_> {
        if self.node.addresses.contains(&dst) {
            return Route::Node;
        }
        if let Some(pod) = self.local_pod(dst) {
            return Route::LocalPod(pod);
        }
        if let Some(node) = self
            .remote_routes
            .longest_match(dst)
            .and_then(|&idx| self.remote_nodes.get(idx))
        {
            return Route::RemoteNode(node);
        }
        if self.cluster_cidrs.iter().any(|c| c.contains(dst))
            || self.node.pod_cidrs.iter().any(|c| c.contains(dst))
        {
            return Route::Unowned;
        }
        if self.service_cidrs.iter().any(|c| c.contains(dst)) {
            return Route::ServiceRange;
        }
        Route::Host
    }

    pub fn local_pod(&self, ip: IpKey) -> Option<&LocalPod> {
        self.local_pod_by_ip
            .get(&ip)
            .and_then(|&i| self.local_pods.get(i))
    }

    pub fn port(&self, id: PortId) -> Option<&PortInfo> {
        self.ports.get(id.0 as usize)
    }

    /// Looks up a port by its name (`uplink`, `host`, `pod-<ns>-<name>`).
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u32))
    }

    /// The local pod a pod port belongs to.
    pub fn pod_on_port(&self, id: PortId) -> Option<&LocalPod> {
        match self.port(id)?.kind {
            PortKind::Pod(i) => self.local_pods.get(i),
            _ => None,
        }
    }

    /// The remote node whose underlay address is `ip`.
    pub fn remote_node_by_underlay(&self, ip: [u8; 4]) -> Option<&RemoteNode> {
        self.remote_node_by_underlay
            .get(&ip)
            .and_then(|&i| self.remote_nodes.get(i))
    }

    /// The Service frontend at `key` and its port.
    pub fn frontend(&self, key: &ServiceKey) -> Option<(Frontend, &ServicePort)> {
        let fe = *self.frontends.get(key)?;
        let port = self.service_ports.get(fe.service.0 as usize)?;
        Some((fe, &**port))
    }

    pub fn service_port(&self, id: ServiceId) -> Option<&ServicePort> {
        self.service_ports.get(id.0 as usize).map(|p| &**p)
    }
}

/// Longest-prefix match over the 16-byte key space: one hash map per distinct prefix
/// length, probed longest first. Cost grows with the number of distinct lengths (a
/// handful: every node's PodCIDR is usually the same size), not with the entries.
#[derive(Debug, Clone)]
pub struct PrefixMap<T> {
    /// (key length, entries), longest first.
    by_len: Vec<(u8, HashMap<IpKey, T>)>,
}

impl<T> Default for PrefixMap<T> {
    fn default() -> Self {
        PrefixMap { by_len: Vec::new() }
    }
}

impl<T> PrefixMap<T> {
    pub fn insert(&mut self, cidr: Cidr, value: T) -> Option<T> {
        let pos = match self.by_len.iter().position(|(l, _)| *l <= cidr.key_len) {
            Some(p) if self.by_len[p].0 == cidr.key_len => p,
            Some(p) => {
                self.by_len.insert(p, (cidr.key_len, HashMap::default()));
                p
            }
            None => {
                self.by_len.push((cidr.key_len, HashMap::default()));
                self.by_len.len() - 1
            }
        };
        self.by_len[pos].1.insert(cidr.addr, value)
    }

    pub fn longest_match(&self, ip: IpKey) -> Option<&T> {
        self.by_len.iter().find_map(|(len, map)| {
            map.get(&network(Cidr {
                addr: ip,
                key_len: *len,
            }))
        })
    }

    pub fn len(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn network(c: Cidr) -> IpKey {
    let mut out = c.addr;
    for (i, byte) in out.0.iter_mut().enumerate() {
        let keep = (c.key_len as usize).saturating_sub(i * 8).min(8);
        *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_map_prefers_longest() {
        let mut m = PrefixMap::default();
        m.insert("10.244.0.0/16".parse().unwrap(), 1);
        m.insert("10.244.2.0/24".parse().unwrap(), 2);
        m.insert("0.0.0.0/0".parse().unwrap(), 0);
        assert_eq!(m.longest_match(IpKey::v4([10, 244, 2, 9])), Some(&2));
        assert_eq!(m.longest_match(IpKey::v4([10, 244, 3, 9])), Some(&1));
        assert_eq!(m.longest_match(IpKey::v4([8, 8, 8, 8])), Some(&0));
        assert_eq!(m.longest_match(IpKey::v6([0xfd; 16])), None);
        assert_eq!(m.len(), 3);
    }
}
