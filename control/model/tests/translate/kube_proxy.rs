//! kxdp's Service semantics, table-driven against kube-proxy's.
//!
//! kube-proxy's iptables backend checks its rules with "packet flow" tests
//! (`pkg/proxy/iptables/proxier_test.go`: `runPacketFlowTests` over `packetFlowTest` rows of
//! source, protocol, destination -> the DNAT targets the packet may get, `REJECT`/`DROP`, and
//! whether it is masqueraded). This module asks the same questions of kxdp, end to end: each
//! scenario is a cluster (Nodes, Pods, Services, EndpointSlices written as manifests into a
//! state directory, the Services and EndpointSlices by `testkit::manifests::service`, and
//! read by `model::state::load_state_dir`), translated for node-a by
//! `model::translate::translate`, and each probe is a real frame (built with etherparse) that
//! `datapath::process` handles on the port its source sits behind: a local pod's port, the
//! `host` port, or the uplink for a client outside the cluster. The outcome is read from the
//! verdict and the emitted frame (parsed with etherparse, VXLAN unwrapped): which backend the
//! packet was DNATed to, whether its source was translated, an ICMP port unreachable sent back
//! (REJECT), or a drop and its reason.
//!
//! Every probe is sent from several source ports, each with fresh flow state, so "any one of
//! these backends" is checked both ways: every pick is allowed, and every allowed backend is
//! picked by some flow (a backend that should be eligible but never is counts as a failure).
//!
//! The cluster is always the same two nodes: node-a (this node, 192.168.50.10, PodCIDR
//! 10.244.1.0/24, gateway 10.244.1.1) and node-b (192.168.50.11, 10.244.2.0/24), Service CIDR
//! 10.96.0.0/12. Pods: `client` 10.244.1.5, `web-0` 10.244.1.6 and `web-2` 10.244.1.8 on
//! node-a; `web-1` 10.244.2.7 and `web-3` 10.244.2.9 on node-b.
//!
//! Mirrored upstream tests (kubernetes/kubernetes):
//! - `pkg/proxy/iptables/proxier_test.go`: `TestClusterIPGeneral`, `TestOverallIPTablesRules`,
//!   `TestTracePacket`, `TestNoEndpointsReject`, `TestLoadBalancer`, `TestNodePorts`,
//!   `TestExternalTrafficPolicyLocal`, `TestExternalTrafficPolicyCluster`,
//!   `TestInternalTrafficPolicy`, `TestTerminatingEndpointsTrafficPolicyLocal` and
//!   `TestTerminatingEndpointsTrafficPolicyCluster`, the hairpin rows of
//!   `TestClusterIPGeneral`, and `TestBuildServiceMapServiceHeadless` (headless Services
//!   program nothing);
//! - `pkg/proxy/topology_test.go`: `TestCategorizeEndpoints` (which endpoints serve cluster
//!   and local traffic: ready first, serving-terminating only when nothing is ready, never
//!   not-serving ones; the local set falls back on its own).
//!
//! Where kxdp deliberately differs from kube-proxy the case says so. In general:
//! - masquerading is SNAT to this node's pod gateway (10.244.1.1), not to the node IP the
//!   kernel would pick, so replies from a backend on another node cross the overlay back;
//! - REJECT is an ICMP port unreachable from the address the client spoke to, for TCP as well
//!   (which is what kube-proxy's `-j REJECT` rule sends by default);
//! - a packet to an address of the Service CIDR that no Service port answers is dropped
//!   (`no_service`) where kube-proxy matches no rule and lets the kernel route it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use testkit::TempDir;
use testkit::frames::{Headers, Proto};
use testkit::manifests::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec};
use testkit::offline::tables_for;
use testkit::oracle::crc32c;

use datapath::conntrack::Flows;
use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::observer::Observer;
use datapath::tables::{HOST_MAC, PortId, ServicePort, Tables};
use datapath::{IpKey, Verdict, process};
use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{Icmpv4Type, IpNumber, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

// ---------------------------------------------------------------------------------------------
// The cluster.

const NODE_A_IP: [u8; 4] = [192, 168, 50, 10];
const NODE_B_IP: [u8; 4] = [192, 168, 50, 11];
const NODE_A_MAC: [u8; 6] = [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0a];
const GATEWAY: [u8; 4] = [10, 244, 1, 1];
const GATEWAY_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];
/// The router in front of node-a's uplink, through which outside clients arrive.
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// A client outside the cluster.
const OUTSIDE_CLIENT: [u8; 4] = [203, 0, 113, 7];

const CLIENT: &str = "10.244.1.5";
const WEB0: &str = "10.244.1.6";
const WEB2: &str = "10.244.1.8";
const WEB1: &str = "10.244.2.7";
const WEB3: &str = "10.244.2.9";

/// Pods of namespace `demo`: (name, node, address).
const PODS: &[(&str, &str, &str)] = &[
    ("client", "node-a", CLIENT),
    ("web-0", "node-a", WEB0),
    ("web-2", "node-a", WEB2),
    ("web-1", "node-b", WEB1),
    ("web-3", "node-b", WEB3),
];

fn node_of(ip: &str) -> &'static str {
    PODS.iter()
        .find(|(_, _, a)| *a == ip)
        .map(|(_, n, _)| *n)
        .unwrap_or_else(|| panic!("no pod has address {ip}"))
}

const KXDP_YAML: &str = "clusterCIDR: 10.244.0.0/16\nserviceCIDR: 10.96.0.0/12\n\
                         vxlan: {vni: 1, port: 4789}\nunderlayMTU: 1500\n";

fn base_manifests() -> String {
    let mut s = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n");
    for (name, ip, cidr, mac) in [
        (
            "node-a",
            "192.168.50.10",
            "10.244.1.0/24",
            "02:00:c0:a8:32:0a",
        ),
        (
            "node-b",
            "192.168.50.11",
            "10.244.2.0/24",
            "02:00:c0:a8:32:0b",
        ),
    ] {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    \
             kxdp.io/underlay-mac: \"{mac}\"\nspec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\n\
             status:\n  addresses:\n    - type: InternalIP\n      address: {ip}\n    \
             - type: Hostname\n      address: {name}\n"
        );
    }
    for (name, node, ip) in PODS {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  \
             labels: {{app: web}}\nspec:\n  nodeName: {node}\n  containers:\n    \
             - name: main\n      image: registry.k8s.io/pause\nstatus:\n  phase: Running\n  \
             podIP: {ip}\n  podIPs:\n    - ip: {ip}\n"
        );
    }
    s
}

/// A Service of namespace `demo` with these ports, of type NodePort when one of them has a
/// nodePort; `externalTrafficPolicy` is then written out as `Cluster`, as the API server
/// defaults it (`.external_traffic_policy("Local")` overrides that).
///
/// No `selector` is written: translation takes a Service's endpoints from its
/// EndpointSlices alone (`model::translate::services` never reads `spec.selector`), and
/// the slices here are written directly, so a selector would change no table.
fn svc(name: &str, cluster_ip: &str, ports: Vec<PortSpec>) -> ServiceSpec {
    let node_ports = ports.iter().any(|p| p.node_port.is_some());
    let s = ServiceSpec::cluster_ip(name, cluster_ip, ports);
    if node_ports {
        s.kind("NodePort").external_traffic_policy("Cluster")
    } else {
        s
    }
}

/// One TCP port `http` 80 -> 8080.
fn http() -> Vec<PortSpec> {
    vec![PortSpec::new("http", 80, "TCP", 8080)]
}

/// One TCP port `http` 80 -> 8080 at `node_port`.
fn http_np(node_port: u16) -> Vec<PortSpec> {
    vec![PortSpec::new("http", 80, "TCP", 8080).node_port(node_port)]
}

/// The endpoints at these pod addresses, with their conditions; an endpoint's node is its
/// pod's. Every endpoint serves every port of its Service at the port's target port.
fn at_pods(endpoints: &[(&str, Conditions)]) -> Vec<EndpointSpec> {
    endpoints
        .iter()
        .map(|&(ip, conditions)| EndpointSpec::new(ip, node_of(ip), conditions))
        .collect()
}

/// Each Service's manifest followed by its EndpointSlice's (if it has one).
fn service_manifests(services: &[ServiceSpec]) -> Vec<String> {
    services
        .iter()
        .flat_map(|s| std::iter::once(s.service_yaml()).chain(s.slice_yaml()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Probes and what is expected of them.

/// Where a probe comes from.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// A pod of namespace `demo` on node-a, through its pod port.
    Pod(&'static str),
    /// A host-network client of node-a (source: the node's InternalIP), through the `host`
    /// port (the node routes the Service CIDR and Service addresses into `kxdp-host`).
    Host,
    /// A client outside the cluster, arriving on node-a's uplink.
    Outside,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Masq {
    No,
    /// Source translated to the gateway 10.244.1.1.
    Yes,
    /// Only when the backend is the client itself (hairpin).
    IfSelf,
}

#[derive(Debug, Clone)]
enum Expect {
    /// DNAT to one of these `ip:port`s (each must be picked by some flow), source as `Masq`.
    Backend(&'static [&'static str], Masq),
    /// ICMP port unreachable back to the client, from the address it spoke to.
    Reject,
    /// Dropped with this reason.
    Drop(&'static str),
    /// Not ours: handed to the kernel untouched.
    Pass,
}

struct Probe {
    name: &'static str,
    from: Src,
    proto: Proto,
    dst: &'static str,
    port: u16,
    expect: Expect,
}

fn probe(
    name: &'static str,
    from: Src,
    proto: Proto,
    dst: &'static str,
    port: u16,
    expect: Expect,
) -> Probe {
    Probe {
        name,
        from,
        proto,
        dst,
        port,
        expect,
    }
}

use Expect::{Backend, Reject};
use Proto::{Sctp, Tcp, Udp};
use Src::{Host, Outside, Pod};

const CLIENT_POD: Src = Pod("client");

// ---------------------------------------------------------------------------------------------
// The scenarios, one per upstream test function.

/// `TestClusterIPGeneral` (+ the REJECT/no-match rows of `TestTracePacket`).
#[test]
fn cluster_ip_general() {
    let single = svc("single", "10.96.0.41", http())
        .endpoints(at_pods(&[(WEB0, Conditions::READY_SERVING)]));
    let multi = svc(
        "multi",
        "10.96.0.42",
        vec![
            PortSpec::new("http", 80, "TCP", 8080),
            PortSpec::new("https", 443, "TCP", 8443),
            PortSpec::new("dns-udp", 53, "UDP", 53),
            // A target port on TCP only, to tell the three port-53 protocols apart.
            PortSpec::new("dns-tcp", 53, "TCP", 5353),
            PortSpec::new("dns-sctp", 53, "SCTP", 53),
        ],
    )
    .endpoints(at_pods(&[
        (WEB0, Conditions::READY_SERVING),
        (WEB1, Conditions::READY_SERVING),
    ]));
    let manifests = service_manifests(&[single, multi]);
    run_scenario(
        "cluster_ip_general",
        &manifests,
        &[
            probe(
                "pod to cluster IP, one endpoint",
                CLIENT_POD,
                Tcp,
                "10.96.0.41",
                80,
                Backend(&["10.244.1.6:8080"], Masq::No),
            ),
            probe(
                "hairpin: the only endpoint reaches itself, masqueraded",
                Pod("web-0"),
                Tcp,
                "10.96.0.41",
                80,
                Backend(&["10.244.1.6:8080"], Masq::Yes),
            ),
            probe(
                "pod to cluster IP, endpoints on both nodes",
                CLIENT_POD,
                Tcp,
                "10.96.0.42",
                80,
                Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::No),
            ),
            probe(
                "target port differs from the service port",
                CLIENT_POD,
                Tcp,
                "10.96.0.42",
                443,
                Backend(&["10.244.1.6:8443", "10.244.2.7:8443"], Masq::No),
            ),
            probe(
                "TCP, UDP and SCTP on one port number: TCP",
                CLIENT_POD,
                Tcp,
                "10.96.0.42",
                53,
                Backend(&["10.244.1.6:5353", "10.244.2.7:5353"], Masq::No),
            ),
            probe(
                "TCP, UDP and SCTP on one port number: UDP",
                CLIENT_POD,
                Udp,
                "10.96.0.42",
                53,
                Backend(&["10.244.1.6:53", "10.244.2.7:53"], Masq::No),
            ),
            probe(
                "TCP, UDP and SCTP on one port number: SCTP",
                CLIENT_POD,
                Sctp,
                "10.96.0.42",
                53,
                Backend(&["10.244.1.6:53", "10.244.2.7:53"], Masq::No),
            ),
            // kube-proxy: no rule matches and the packet is routed as addressed (into the
            // void). kxdp: an address of the Service CIDR that no Service port answers is
            // dropped with a reason.
            probe(
                "a TCP-only port does not take UDP",
                CLIENT_POD,
                Udp,
                "10.96.0.42",
                80,
                Expect::Drop("no_service"),
            ),
            probe(
                "one Service does not answer another's port",
                CLIENT_POD,
                Tcp,
                "10.96.0.41",
                443,
                Expect::Drop("no_service"),
            ),
            probe(
                "an address of the Service CIDR with no Service",
                CLIENT_POD,
                Tcp,
                "10.96.0.99",
                80,
                Expect::Drop("no_service"),
            ),
            // kube-proxy masquerades to the node IP (`! -s <clusterCIDR> -j KUBE-MARK-MASQ`);
            // kxdp to the gateway, so the reply comes back through the datapath (walk 8).
            probe(
                "host-network client to cluster IP, masqueraded",
                Host,
                Tcp,
                "10.96.0.42",
                80,
                Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::Yes),
            ),
        ],
    );
}

/// `TestNoEndpointsReject`: every frontend of a Service without endpoints rejects.
#[test]
fn no_endpoints_reject() {
    let empty = svc(
        "empty",
        "10.96.0.50",
        vec![
            PortSpec::new("http", 80, "TCP", 8080).node_port(30050),
            PortSpec::new("dns", 53, "UDP", 53).node_port(30053),
        ],
    )
    .external_ips(&["198.51.100.50"])
    .kind("LoadBalancer")
    .ingress(&[("198.51.100.51", None)]);
    // A Service whose slice lists nothing, and one with no slice at all.
    let listed_empty = svc("listed-empty", "10.96.0.52", http()).empty_slice();
    let manifests = service_manifests(&[empty, listed_empty]);
    run_scenario(
        "no_endpoints_reject",
        &manifests,
        &[
            probe(
                "pod to cluster IP",
                CLIENT_POD,
                Tcp,
                "10.96.0.50",
                80,
                Reject,
            ),
            probe(
                "pod to cluster IP, UDP",
                CLIENT_POD,
                Udp,
                "10.96.0.50",
                53,
                Reject,
            ),
            probe(
                "pod to cluster IP, empty EndpointSlice",
                CLIENT_POD,
                Tcp,
                "10.96.0.52",
                80,
                Reject,
            ),
            probe(
                "outside to external IP",
                Outside,
                Tcp,
                "198.51.100.50",
                80,
                Reject,
            ),
            probe(
                "outside to NodePort",
                Outside,
                Tcp,
                "192.168.50.10",
                30050,
                Reject,
            ),
            probe(
                "outside to NodePort, UDP",
                Outside,
                Udp,
                "192.168.50.10",
                30053,
                Reject,
            ),
            probe(
                "outside to load balancer IP",
                Outside,
                Tcp,
                "198.51.100.51",
                80,
                Reject,
            ),
            probe(
                "pod to load balancer IP",
                CLIENT_POD,
                Tcp,
                "198.51.100.51",
                80,
                Reject,
            ),
        ],
    );
}

/// `TestLoadBalancer` and `TestNodePorts` (`loadBalancerSourceRanges`: see
/// [`load_balancer_source_ranges`]), plus `TestOverallIPTablesRules`' ExternalIP Service and an
/// `ipMode: Proxy` load balancer (KEP-1860: kube-proxy programs no rule for its IP).
#[test]
fn load_balancer_and_node_ports() {
    let both = [
        (WEB0, Conditions::READY_SERVING),
        (WEB1, Conditions::READY_SERVING),
    ];
    let lb = svc("lb", "10.96.0.60", http_np(30060))
        .kind("LoadBalancer")
        .ingress(&[("198.51.100.60", None), ("198.51.100.61", None)])
        .endpoints(at_pods(&[(WEB1, Conditions::READY_SERVING)]));
    let np = svc("np", "10.96.0.62", http_np(30062)).endpoints(at_pods(&both));
    let ext = svc("ext", "10.96.0.63", http())
        .external_ips(&["198.51.100.63"])
        .endpoints(at_pods(&both));
    let proxied = svc("proxied", "10.96.0.64", http_np(30064))
        .kind("LoadBalancer")
        .ingress(&[("198.51.100.64", Some("Proxy"))])
        .endpoints(at_pods(&both));
    let manifests = service_manifests(&[lb, np, ext, proxied]);
    run_scenario(
        "load_balancer_and_node_ports",
        &manifests,
        &[
            probe(
                "pod to cluster IP of a LoadBalancer",
                CLIENT_POD,
                Tcp,
                "10.96.0.60",
                80,
                Backend(&["10.244.2.7:8080"], Masq::No),
            ),
            probe(
                "outside to NodePort of a LoadBalancer",
                Outside,
                Tcp,
                "192.168.50.10",
                30060,
                Backend(&["10.244.2.7:8080"], Masq::Yes),
            ),
            probe(
                "outside to the first load balancer IP",
                Outside,
                Tcp,
                "198.51.100.60",
                80,
                Backend(&["10.244.2.7:8080"], Masq::Yes),
            ),
            probe(
                "outside to the second load balancer IP",
                Outside,
                Tcp,
                "198.51.100.61",
                80,
                Backend(&["10.244.2.7:8080"], Masq::Yes),
            ),
            // Only the nodePort is a frontend on the node's address, not the Service port.
            probe(
                "outside to the node IP at the service port is not the Service's",
                Outside,
                Tcp,
                "192.168.50.10",
                80,
                Expect::Pass,
            ),
            probe(
                "outside to NodePort",
                Outside,
                Tcp,
                "192.168.50.10",
                30062,
                Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::Yes),
            ),
            probe(
                "outside to external IP",
                Outside,
                Tcp,
                "198.51.100.63",
                80,
                Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::Yes),
            ),
            // kube-proxy: `masquerade traffic for ... external destinations` marks pod traffic
            // too. kxdp does not SNAT it: the reply is addressed to the pod, so it comes back
            // through this node's datapath (over the overlay if need be) and is reverse-NATed
            // there anyway; the client keeps its address.
            probe(
                "pod to external IP: all endpoints, not masqueraded (kube-proxy masquerades)",
                CLIENT_POD,
                Tcp,
                "198.51.100.63",
                80,
                Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::No),
            ),
            probe(
                "ipMode Proxy: the load balancer IP is not programmed",
                Outside,
                Tcp,
                "198.51.100.64",
                80,
                Expect::Pass,
            ),
            probe(
                "ipMode Proxy: the NodePort still is",
                Outside,
                Tcp,
                "192.168.50.10",
                30064,
                Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::Yes),
            ),
        ],
    );
}

/// `TestExternalTrafficPolicyLocal` (+ the `has no local endpoints` DROP rows of
/// `TestOverallIPTablesRules`/`TestTracePacket` and its `LOCAL, KUBE-MARK-MASQ` row).
#[test]
fn external_traffic_policy_local() {
    let local = svc("local", "10.96.0.70", http_np(30070))
        .external_ips(&["198.51.100.70"])
        .kind("LoadBalancer")
        .ingress(&[("198.51.100.71", None)])
        .external_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB0, Conditions::READY_SERVING),
            (WEB1, Conditions::READY_SERVING),
        ]));
    let remote_only = svc("remote-only", "10.96.0.72", http_np(30072))
        .external_ips(&["198.51.100.72"])
        .kind("LoadBalancer")
        .ingress(&[("198.51.100.73", None)])
        .external_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB1, Conditions::READY_SERVING),
            (WEB3, Conditions::READY_SERVING),
        ]));
    let empty = svc("local-empty", "10.96.0.74", http_np(30074))
        .external_traffic_policy("Local")
        .empty_slice();
    let manifests = service_manifests(&[local, remote_only, empty]);
    const BOTH: &[&str] = &["10.244.1.6:8080", "10.244.2.7:8080"];
    const LOCAL: &[&str] = &["10.244.1.6:8080"];
    run_scenario(
        "external_traffic_policy_local",
        &manifests,
        &[
            probe(
                "pod to cluster IP: all endpoints",
                CLIENT_POD,
                Tcp,
                "10.96.0.70",
                80,
                Backend(BOTH, Masq::No),
            ),
            probe(
                "pod to external IP: all endpoints, not masqueraded",
                CLIENT_POD,
                Tcp,
                "198.51.100.70",
                80,
                Backend(BOTH, Masq::No),
            ),
            probe(
                "outside to external IP: local endpoint only, client IP kept",
                Outside,
                Tcp,
                "198.51.100.70",
                80,
                Backend(LOCAL, Masq::No),
            ),
            probe(
                "pod to load balancer IP: all endpoints, not masqueraded",
                CLIENT_POD,
                Tcp,
                "198.51.100.71",
                80,
                Backend(BOTH, Masq::No),
            ),
            probe(
                "outside to load balancer IP: local endpoint only, client IP kept",
                Outside,
                Tcp,
                "198.51.100.71",
                80,
                Backend(LOCAL, Masq::No),
            ),
            probe(
                "outside to NodePort: local endpoint only, client IP kept",
                Outside,
                Tcp,
                "192.168.50.10",
                30070,
                Backend(LOCAL, Masq::No),
            ),
            // kube-proxy: `masquerade LOCAL traffic` + `route LOCAL traffic` to the cluster
            // chain.
            probe(
                "host-network client to load balancer IP: all endpoints, masqueraded",
                Host,
                Tcp,
                "198.51.100.71",
                80,
                Backend(BOTH, Masq::Yes),
            ),
            probe(
                "no local endpoint: outside to NodePort dropped",
                Outside,
                Tcp,
                "192.168.50.10",
                30072,
                Expect::Drop("no_local_endpoints"),
            ),
            probe(
                "no local endpoint: outside to external IP dropped",
                Outside,
                Tcp,
                "198.51.100.72",
                80,
                Expect::Drop("no_local_endpoints"),
            ),
            probe(
                "no local endpoint: outside to load balancer IP dropped",
                Outside,
                Tcp,
                "198.51.100.73",
                80,
                Expect::Drop("no_local_endpoints"),
            ),
            // kube-proxy: no endpoints at all is REJECT, even under eTP Local (DROP is for
            // "endpoints, but none here").
            probe(
                "no endpoints at all: outside to NodePort rejected, not dropped",
                Outside,
                Tcp,
                "192.168.50.10",
                30074,
                Reject,
            ),
            probe(
                "no local endpoint: pod to load balancer IP still reaches all",
                CLIENT_POD,
                Tcp,
                "198.51.100.73",
                80,
                Backend(&["10.244.2.7:8080", "10.244.2.9:8080"], Masq::No),
            ),
        ],
    );
}

/// `TestExternalTrafficPolicyCluster`.
#[test]
fn external_traffic_policy_cluster() {
    let cluster = svc("cluster", "10.96.0.80", http_np(30080))
        .external_ips(&["198.51.100.80"])
        .kind("LoadBalancer")
        .ingress(&[("198.51.100.81", None)])
        .endpoints(at_pods(&[
            (WEB0, Conditions::READY_SERVING),
            (WEB1, Conditions::READY_SERVING),
        ]));
    let manifests = service_manifests(&[cluster]);
    const BOTH: &[&str] = &["10.244.1.6:8080", "10.244.2.7:8080"];
    run_scenario(
        "external_traffic_policy_cluster",
        &manifests,
        &[
            probe(
                "pod to cluster IP: all endpoints, not masqueraded",
                CLIENT_POD,
                Tcp,
                "10.96.0.80",
                80,
                Backend(BOTH, Masq::No),
            ),
            // kube-proxy masquerades these two (see load_balancer_and_node_ports).
            probe(
                "pod to external IP: all endpoints, not masqueraded (kube-proxy masquerades)",
                CLIENT_POD,
                Tcp,
                "198.51.100.80",
                80,
                Backend(BOTH, Masq::No),
            ),
            probe(
                "pod to load balancer IP: all endpoints, not masqueraded (kube-proxy masquerades)",
                CLIENT_POD,
                Tcp,
                "198.51.100.81",
                80,
                Backend(BOTH, Masq::No),
            ),
            probe(
                "outside to external IP: all endpoints, masqueraded",
                Outside,
                Tcp,
                "198.51.100.80",
                80,
                Backend(BOTH, Masq::Yes),
            ),
            probe(
                "outside to load balancer IP: all endpoints, masqueraded",
                Outside,
                Tcp,
                "198.51.100.81",
                80,
                Backend(BOTH, Masq::Yes),
            ),
            probe(
                "outside to NodePort: all endpoints, masqueraded",
                Outside,
                Tcp,
                "192.168.50.10",
                30080,
                Backend(BOTH, Masq::Yes),
            ),
            probe(
                "outside to NodePort over UDP is not the TCP port's",
                Outside,
                Udp,
                "192.168.50.10",
                30080,
                Expect::Pass,
            ),
        ],
    );
}

/// The `! -s <clusterCIDR> -j KUBE-MARK-MASQ` rule every KUBE-SVC chain starts with
/// (`TestOverallIPTablesRules`): a client outside the cluster that reaches a cluster IP (the
/// node being its route to the Service CIDR) is served by all endpoints and masqueraded.
/// kube-proxy does this whatever the Service's `externalTrafficPolicy`: that policy governs
/// NodePorts, external IPs and load balancer IPs, and the cluster IP's chain is the cluster
/// one (in `TestOverallIPTablesRules`, svc2's cluster IP chain leads to its non-local
/// endpoint although svc2 is `Local`).
#[test]
fn off_cluster_client_to_cluster_ip() {
    let plain = svc("plain", "10.96.0.140", http()).endpoints(at_pods(&[
        (WEB0, Conditions::READY_SERVING),
        (WEB1, Conditions::READY_SERVING),
    ]));
    let manifests = service_manifests(&[plain]);
    run_scenario(
        "off_cluster_client_to_cluster_ip",
        &manifests,
        &[probe(
            "outside to cluster IP: all endpoints, masqueraded",
            Outside,
            Tcp,
            "10.96.0.140",
            80,
            Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::Yes),
        )],
    );
}

/// As [`off_cluster_client_to_cluster_ip`], for a Service with `externalTrafficPolicy: Local`.
#[test]
fn off_cluster_client_to_cluster_ip_of_etp_local_service() {
    let local = svc("etp-local", "10.96.0.141", http_np(30141))
        .external_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB0, Conditions::READY_SERVING),
            (WEB1, Conditions::READY_SERVING),
        ]));
    let manifests = service_manifests(&[local]);
    run_scenario(
        "off_cluster_client_to_cluster_ip_of_etp_local_service",
        &manifests,
        &[probe(
            "outside to cluster IP of an eTP Local Service: all endpoints, masqueraded",
            Outside,
            Tcp,
            "10.96.0.141",
            80,
            Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::Yes),
        )],
    );
}

/// `TestInternalTrafficPolicy`.
#[test]
fn internal_traffic_policy() {
    let local = svc("itp-local", "10.96.0.90", http_np(30090))
        .internal_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB0, Conditions::READY_SERVING),
            (WEB2, Conditions::READY_SERVING),
            (WEB1, Conditions::READY_SERVING),
        ]));
    let none = svc("itp-none", "10.96.0.91", http_np(30091))
        .internal_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB1, Conditions::READY_SERVING),
            (WEB3, Conditions::READY_SERVING),
        ]));
    let manifests = service_manifests(&[local, none]);
    run_scenario(
        "internal_traffic_policy",
        &manifests,
        &[
            probe(
                "pod to cluster IP: local endpoints only",
                CLIENT_POD,
                Tcp,
                "10.96.0.90",
                80,
                Backend(&["10.244.1.6:8080", "10.244.1.8:8080"], Masq::No),
            ),
            probe(
                "host-network client to cluster IP: local endpoints only, masqueraded",
                Host,
                Tcp,
                "10.96.0.90",
                80,
                Backend(&["10.244.1.6:8080", "10.244.1.8:8080"], Masq::Yes),
            ),
            probe(
                "pod to cluster IP, no local endpoint: dropped",
                CLIENT_POD,
                Tcp,
                "10.96.0.91",
                80,
                Expect::Drop("no_local_endpoints"),
            ),
            probe(
                "internalTrafficPolicy does not govern external traffic",
                Outside,
                Tcp,
                "192.168.50.10",
                30091,
                Backend(&["10.244.2.7:8080", "10.244.2.9:8080"], Masq::Yes),
            ),
        ],
    );
}

/// `TestTerminatingEndpointsTrafficPolicyCluster`/`...Local` and topology_test.go's
/// `TestCategorizeEndpoints`: ready endpoints first; serving terminating ones only when
/// nothing is ready (cluster-wide for cluster traffic, on this node for local traffic);
/// not-serving ones never.
#[test]
fn terminating_endpoints() {
    let mixed = svc("term-mixed", "10.96.0.100", http()).endpoints(at_pods(&[
        (WEB0, Conditions::READY_SERVING),
        (WEB1, Conditions::SERVING_TERMINATING),
        (WEB2, Conditions::NOT_READY),
        (WEB3, Conditions::TERMINATING_NOT_SERVING),
    ]));
    let fallback = svc("term-fallback", "10.96.0.101", http()).endpoints(at_pods(&[
        (WEB0, Conditions::SERVING_TERMINATING),
        (WEB1, Conditions::SERVING_TERMINATING),
        (WEB2, Conditions::NOT_READY),
        (WEB3, Conditions::TERMINATING_NOT_SERVING),
    ]));
    let dead = svc("term-dead", "10.96.0.102", http_np(30102)).endpoints(at_pods(&[
        (WEB0, Conditions::TERMINATING_NOT_SERVING),
        (WEB1, Conditions::NOT_READY),
    ]));
    let local = svc("term-local", "10.96.0.103", http_np(30103))
        .external_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB0, Conditions::SERVING_TERMINATING),
            (WEB2, Conditions::TERMINATING_NOT_SERVING),
            (WEB1, Conditions::READY_SERVING),
        ]));
    let local_dead = svc("term-local-dead", "10.96.0.104", http_np(30104))
        .external_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB0, Conditions::TERMINATING_NOT_SERVING),
            (WEB1, Conditions::READY_SERVING),
        ]));
    let itp = svc("term-itp", "10.96.0.105", http())
        .internal_traffic_policy("Local")
        .endpoints(at_pods(&[
            (WEB0, Conditions::SERVING_TERMINATING),
            (WEB2, Conditions::SERVING_TERMINATING),
            (WEB1, Conditions::READY_SERVING),
        ]));
    let manifests = service_manifests(&[mixed, fallback, dead, local, local_dead, itp]);
    run_scenario(
        "terminating_endpoints",
        &manifests,
        &[
            probe(
                "ready endpoints win over terminating ones",
                CLIENT_POD,
                Tcp,
                "10.96.0.100",
                80,
                Backend(&["10.244.1.6:8080"], Masq::No),
            ),
            probe(
                "nothing ready: serving terminating endpoints, never not-serving ones",
                CLIENT_POD,
                Tcp,
                "10.96.0.101",
                80,
                Backend(&["10.244.1.6:8080", "10.244.2.7:8080"], Masq::No),
            ),
            probe(
                "nothing serving: rejected as without endpoints",
                CLIENT_POD,
                Tcp,
                "10.96.0.102",
                80,
                Reject,
            ),
            probe(
                "nothing serving: NodePort rejected as well",
                Outside,
                Tcp,
                "192.168.50.10",
                30102,
                Reject,
            ),
            probe(
                "eTP Local, no ready local endpoint: the serving terminating local one",
                Outside,
                Tcp,
                "192.168.50.10",
                30103,
                Backend(&["10.244.1.6:8080"], Masq::No),
            ),
            probe(
                "eTP Local: cluster traffic still prefers the ready remote endpoint",
                CLIENT_POD,
                Tcp,
                "10.96.0.103",
                80,
                Backend(&["10.244.2.7:8080"], Masq::No),
            ),
            probe(
                "eTP Local, the local endpoint is not serving: dropped",
                Outside,
                Tcp,
                "192.168.50.10",
                30104,
                Expect::Drop("no_local_endpoints"),
            ),
            probe(
                "iTP Local, no ready local endpoint: serving terminating local ones",
                CLIENT_POD,
                Tcp,
                "10.96.0.105",
                80,
                Backend(&["10.244.1.6:8080", "10.244.1.8:8080"], Masq::No),
            ),
        ],
    );
}

/// The hairpin rows of `TestClusterIPGeneral` (and the `-s <endpoint> -j KUBE-MARK-MASQ`
/// rule of every KUBE-SEP chain in `TestOverallIPTablesRules`): a pod reaching itself through
/// its Service is masqueraded, reaching another endpoint it is not.
#[test]
fn hairpin() {
    let web = svc("web", "10.96.0.110", http()).endpoints(at_pods(&[
        (WEB0, Conditions::READY_SERVING),
        (WEB2, Conditions::READY_SERVING),
        (WEB1, Conditions::READY_SERVING),
    ]));
    let udp = svc(
        "web-udp",
        "10.96.0.111",
        vec![PortSpec::new("dns", 53, "UDP", 5353)],
    )
    .endpoints(at_pods(&[(WEB0, Conditions::READY_SERVING)]));
    let manifests = service_manifests(&[web, udp]);
    run_scenario(
        "hairpin",
        &manifests,
        &[
            probe(
                "an endpoint to its own Service: masqueraded only when it picks itself",
                Pod("web-0"),
                Tcp,
                "10.96.0.110",
                80,
                Backend(
                    &["10.244.1.6:8080", "10.244.1.8:8080", "10.244.2.7:8080"],
                    Masq::IfSelf,
                ),
            ),
            probe(
                "the only endpoint to its own Service over UDP",
                Pod("web-0"),
                Udp,
                "10.96.0.111",
                53,
                Backend(&["10.244.1.6:5353"], Masq::Yes),
            ),
        ],
    );
}

/// Headless Services program nothing (kube-proxy leaves them out of its service map:
/// `TestBuildServiceMapServiceHeadless`); ExternalName Services neither.
#[test]
fn headless_and_external_name() {
    let headless = svc("headless", "None", http()).endpoints(at_pods(&[
        (WEB0, Conditions::READY_SERVING),
        (WEB1, Conditions::READY_SERVING),
    ]));
    let mut manifests = service_manifests(&[headless]);
    manifests.push(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: external-name\n  namespace: demo\n\
         spec:\n  type: ExternalName\n  externalName: example.com\n  ports:\n    \
         - name: http\n      port: 80\n"
            .to_string(),
    );
    run_scenario(
        "headless_and_external_name",
        &manifests,
        &[
            // The Service has no address; 10.96.0.120 stands in for the one it would have
            // had: nothing answers there.
            probe(
                "headless: nothing programmed at a would-be cluster IP",
                CLIENT_POD,
                Tcp,
                "10.96.0.120",
                80,
                Expect::Drop("no_service"),
            ),
            // DNS hands out the pods' own addresses: plain pod-to-pod routing, no translation.
            probe(
                "headless: the endpoint's own address is routed as is",
                CLIENT_POD,
                Tcp,
                WEB1,
                8080,
                Expect::Backend(&["10.244.2.7:8080"], Masq::No),
            ),
        ],
    );
}

/// `loadBalancerSourceRanges` (kube-proxy's `TestLoadBalancer` source-range rules and its
/// firewall chain): a new flow to a LoadBalancer IP from outside the ranges is dropped
/// (`lb_source_range`), from inside it is load-balanced; the ranges guard the
/// LoadBalancer IPs only (the Service's NodePort and ClusterIP stay open), and pods are
/// held to them too. (Invalid ranges: a model unit test; the scenario allows no warning.)
#[test]
fn load_balancer_source_ranges() {
    let ranged = |name: &str, vip: &str, node_port: u16, lb_ip: &'static str, ranges: &str| {
        let spec = svc(name, vip, http_np(node_port))
            .kind("LoadBalancer")
            .ingress(&[(lb_ip, None)])
            .endpoints(at_pods(&[(WEB1, Conditions::READY_SERVING)]));
        let service = spec.service_yaml().replacen(
            "spec:\n",
            &format!("spec:\n  loadBalancerSourceRanges: {ranges}\n"),
            1,
        );
        vec![service, spec.slice_yaml().expect("an EndpointSlice")]
    };
    let mut manifests = ranged(
        "office",
        "10.96.0.65",
        30065,
        "198.51.100.65",
        "[\" 203.0.113.0/24 \", \"2001:db8::/32\"]",
    );
    manifests.extend(ranged(
        "elsewhere",
        "10.96.0.66",
        30066,
        "198.51.100.66",
        "[192.0.2.0/24]",
    ));
    let web1 = Backend(&["10.244.2.7:8080"], Masq::Yes);
    run_scenario(
        "load_balancer_source_ranges",
        &manifests,
        &[
            probe(
                "outside, in range",
                Outside,
                Tcp,
                "198.51.100.65",
                80,
                web1.clone(),
            ),
            probe(
                "a pod, out of range",
                CLIENT_POD,
                Tcp,
                "198.51.100.65",
                80,
                Expect::Drop("lb_source_range"),
            ),
            probe(
                "outside, out of range",
                Outside,
                Tcp,
                "198.51.100.66",
                80,
                Expect::Drop("lb_source_range"),
            ),
            probe(
                "its NodePort is not ranged",
                Outside,
                Tcp,
                "192.168.50.10",
                30066,
                web1.clone(),
            ),
            probe(
                "its ClusterIP is not ranged",
                CLIENT_POD,
                Tcp,
                "10.96.0.66",
                80,
                Backend(&["10.244.2.7:8080"], Masq::No),
            ),
        ],
    );
}

/// A Service labelled `service.kubernetes.io/service-proxy-name` (any value) belongs to
/// another proxy: kube-proxy's watch selects `!service.kubernetes.io/service-proxy-name`, so
/// nothing is programmed for it; the same Service unlabelled is. With `serviceProxyName` in
/// kxdp.yaml only the Services labelled with that name are programmed (a model unit test).
#[test]
fn services_of_another_proxy_are_left_alone() {
    let endpoints = || at_pods(&[(WEB1, Conditions::READY_SERVING)]);
    let theirs = svc("theirs", "10.96.0.121", http()).endpoints(endpoints());
    let ours = svc("ours", "10.96.0.122", http()).endpoints(endpoints());
    let mut manifests = service_manifests(&[ours]);
    // The Service only: its EndpointSlice has labels of its own already.
    let label = "  namespace: demo\n  labels: {service.kubernetes.io/service-proxy-name: other}\n";
    let mut labelled = theirs
        .service_yaml()
        .replacen("  namespace: demo\n", label, 1);
    labelled.push_str("---\n");
    labelled.push_str(&theirs.slice_yaml().expect("an EndpointSlice"));
    manifests.push(labelled);
    run_scenario(
        "services_of_another_proxy_are_left_alone",
        &manifests,
        &[
            probe(
                "labelled for another proxy: nothing programmed",
                CLIENT_POD,
                Tcp,
                "10.96.0.121",
                80,
                Expect::Drop("no_service"),
            ),
            probe(
                "unlabelled: load-balanced",
                CLIENT_POD,
                Tcp,
                "10.96.0.122",
                80,
                Expect::Backend(&["10.244.2.7:8080"], Masq::No),
            ),
        ],
    );
}

/// `sessionAffinity: ClientIP` (the `-m recent` rules of `TestOverallIPTablesRules`' svc5):
/// every new connection of one client goes to the backend its first one got. Not a packet
/// flow row upstream (its tracer cannot follow `recent`), so it is its own test here, with
/// one flow table for all the connections.
#[test]
fn session_affinity_client_ip() {
    let sticky = svc("sticky", "10.96.0.130", http_np(30130))
        .affinity(10800)
        .endpoints(at_pods(&[
            (WEB0, Conditions::READY_SERVING),
            (WEB2, Conditions::READY_SERVING),
            (WEB1, Conditions::READY_SERVING),
            (WEB3, Conditions::READY_SERVING),
        ]));
    let manifests = service_manifests(&[sticky]);
    let tables = scenario_tables("session_affinity_client_ip", &manifests);
    for from in [CLIENT_POD, Outside] {
        let (dst, dport) = match from {
            Outside => ("192.168.50.10", 30130),
            _ => ("10.96.0.130", 80),
        };
        let p = probe("affinity", from, Tcp, dst, dport, Expect::Pass);
        let mut flows = Flows::default();
        let mut seen = BTreeSet::new();
        for i in 0..SWEEP {
            let run = send(&tables, &mut flows, &p, source_port(i));
            match classify(&run) {
                Outcome::Delivered { dst, .. } => {
                    seen.insert(dst);
                }
                other => panic!("{from:?}: connection {i}: {other:?} ({:?})", run.steps),
            }
        }
        assert_eq!(
            seen.len(),
            1,
            "{from:?}: one client's connections went to {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The runner.

/// Source ports each probe is sent from (one fresh flow table each).
const SWEEP: u16 = 48;

/// `healthCheckNodePort` (kube-proxy's `NeedsHealthCheck` and `LocalReadyEndpoints`): only
/// a LoadBalancer Service with `externalTrafficPolicy: Local` is health-checked, and its
/// count is this node's ready endpoints by address (one pod serving two ports is one;
/// serving-terminating and other nodes' endpoints are not counted), 0 without any.
#[test]
fn health_check_node_ports() {
    let two_ports = || {
        vec![
            PortSpec::new("http", 80, "TCP", 8080).node_port(30071),
            PortSpec::new("https", 443, "TCP", 8443).node_port(30072),
        ]
    };
    let with_hc = |spec: &ServiceSpec, hc: u16| {
        let mut out = vec![spec.service_yaml().replacen(
            "spec:\n",
            &format!("spec:\n  healthCheckNodePort: {hc}\n"),
            1,
        )];
        out.extend(spec.slice_yaml());
        out
    };
    let lb = |name: &str, vip: &str, lb_ip: &'static str, policy: &'static str| {
        ServiceSpec::cluster_ip(name, vip, two_ports())
            .kind("LoadBalancer")
            .external_traffic_policy(policy)
            .ingress(&[(lb_ip, None)])
    };
    let local = lb("local", "10.96.0.71", "198.51.100.71", "Local").endpoints(at_pods(&[
        (WEB0, Conditions::READY_SERVING),
        (WEB2, Conditions::SERVING_TERMINATING),
        (WEB1, Conditions::READY_SERVING),
    ]));
    let none_here = lb("none-here", "10.96.0.72", "198.51.100.72", "Local")
        .endpoints(at_pods(&[(WEB1, Conditions::READY_SERVING)]));
    let cluster = lb("cluster", "10.96.0.73", "198.51.100.73", "Cluster")
        .endpoints(at_pods(&[(WEB0, Conditions::READY_SERVING)]));
    let node_port = svc("node-port", "10.96.0.74", http_np(30074))
        .external_traffic_policy("Local")
        .endpoints(at_pods(&[(WEB0, Conditions::READY_SERVING)]));
    let mut manifests = with_hc(&local, 32071);
    manifests.extend(with_hc(&none_here, 32072));
    manifests.extend(with_hc(&cluster, 32073));
    manifests.extend(with_hc(&node_port, 32074));

    let dir = TempDir::new("health_check_node_ports");
    dir.write("kxdp.yaml", KXDP_YAML);
    dir.write("00-base.yaml", &base_manifests());
    dir.write("10-services.yaml", &manifests.join("---\n"));
    let state = model::state::load_state_dir(dir.path()).expect("a valid state");
    let translated = model::translate::translate(&state.cluster, &state.config, "node-a", 1)
        .expect("node-a translates");
    let got: Vec<(String, u16, usize)> = translated
        .health_checks
        .iter()
        .map(|h| {
            (
                format!("{}/{}", h.namespace, h.name),
                h.port,
                h.local_endpoints,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("demo/local".to_string(), 32071, 1),
            ("demo/none-here".to_string(), 32072, 0),
        ]
    );
}

fn source_port(i: u16) -> u16 {
    40_000 + i * 131
}

fn scenario_tables(name: &str, manifests: &[String]) -> Tables {
    let dir = TempDir::new(name);
    dir.write("kxdp.yaml", KXDP_YAML);
    dir.write("00-base.yaml", &base_manifests());
    dir.write("10-services.yaml", &manifests.join("---\n"));
    tables_for(dir.path(), name, &["node-a"], 1)
        .pop()
        .unwrap_or_else(|| unreachable!("one node asked, one table built"))
}

fn run_scenario(name: &str, manifests: &[String], probes: &[Probe]) {
    let tables = scenario_tables(name, manifests);
    let mut failures = Vec::new();
    for p in probes {
        if let Err(e) = check_probe(&tables, p) {
            failures.push(format!(
                "[{name}] {} ({:?} {:?} -> {}:{}): {e}",
                p.name, p.from, p.proto, p.dst, p.port
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} probes failed:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
}

fn check_probe(tables: &Tables, p: &Probe) -> Result<(), String> {
    let (client_ip, _, in_port) = source_of(tables, p.from);
    let mut picked = BTreeSet::new();
    for i in 0..SWEEP {
        let sport = source_port(i);
        let run = send(tables, &mut Flows::default(), p, sport);
        let outcome = classify(&run);
        let fail = |what: String| {
            Err(format!(
                "source port {sport}: {what}; steps {:?}",
                run.steps
            ))
        };
        match (&p.expect, &outcome) {
            (
                Backend(allowed, masq),
                Outcome::Delivered {
                    src,
                    dst,
                    out_port,
                    encap_to,
                    dst_mac,
                    checksums_ok,
                },
            ) => {
                let target = format!("{}:{}", dst.0, dst.1);
                if !allowed.contains(&target.as_str()) {
                    return fail(format!("DNAT to {target}, allowed {allowed:?}"));
                }
                if let Some(err) = checksums_ok {
                    return fail(format!("bad checksum after translation: {err}"));
                }
                let is_translated = *dst != (ip(p.dst), p.port);
                if is_translated && (run.backend != Some(*dst) || run.service.is_none()) {
                    return fail(format!(
                        "observer saw service {:?} backend {:?}, the frame went to {target}",
                        run.service, run.backend
                    ));
                }
                let want_masq = match masq {
                    Masq::No => false,
                    Masq::Yes => true,
                    Masq::IfSelf => dst.0 == client_ip,
                };
                let want_src = if want_masq {
                    Ipv4Addr::from(GATEWAY)
                } else {
                    client_ip
                };
                if src.0 != want_src {
                    return fail(format!(
                        "source {}:{}, expected {want_src} ({})",
                        src.0,
                        src.1,
                        if want_masq {
                            "masqueraded"
                        } else {
                            "client kept"
                        }
                    ));
                }
                if !want_masq && src.1 != sport {
                    return fail(format!("source port rewritten to {}", src.1));
                }
                // Delivered where the backend lives: its pod port here, VXLAN to node-b there.
                match node_of(&dst.0.to_string()) {
                    "node-a" => {
                        let pod = tables
                            .local_pod(IpKey::from(dst.0))
                            .ok_or_else(|| format!("{} is no local pod", dst.0))?;
                        if *out_port != pod.port || encap_to.is_some() {
                            return fail(format!(
                                "local backend {target} sent out of port {out_port:?} \
                                 (encap {encap_to:?}), not its pod port {:?}",
                                pod.port
                            ));
                        }
                        if *dst_mac != pod.mac.0 {
                            return fail(format!("destination MAC {dst_mac:02x?}"));
                        }
                    }
                    _ => {
                        if *out_port != PortId::UPLINK
                            || *encap_to != Some(Ipv4Addr::from(NODE_B_IP))
                        {
                            return fail(format!(
                                "remote backend {target} sent out of {out_port:?} with \
                                 encap {encap_to:?}, not VXLAN to node-b"
                            ));
                        }
                    }
                }
                picked.insert(target);
            }
            (
                Reject,
                Outcome::Rejected {
                    out_port,
                    from,
                    to,
                    quoted_dst,
                },
            ) => {
                if *out_port != in_port {
                    return fail(format!("reject sent out of {out_port:?}, not {in_port:?}"));
                }
                if *from != ip(p.dst) || *to != client_ip {
                    return fail(format!(
                        "reject from {from} to {to}, expected from {} to {client_ip}",
                        p.dst
                    ));
                }
                if *quoted_dst != (ip(p.dst), p.port) {
                    return fail(format!("reject quotes {quoted_dst:?}"));
                }
                if run.service.is_none() || run.backend.is_some() {
                    return fail(format!(
                        "observer saw service {:?} backend {:?}",
                        run.service, run.backend
                    ));
                }
            }
            (Expect::Drop(reason), Outcome::Dropped(got)) if reason == got => {}
            (Expect::Pass, Outcome::Passed) => {}
            (want, Outcome::Other(what)) => {
                return fail(format!(
                    "expected {want:?}, got an unrecognised output: {what}"
                ));
            }
            (want, got) => return fail(format!("expected {want:?}, got {got:?}")),
        }
    }
    if let Backend(allowed, _) = &p.expect {
        let never: Vec<_> = allowed.iter().filter(|a| !picked.contains(**a)).collect();
        if !never.is_empty() {
            return Err(format!(
                "no flow of {SWEEP} went to {never:?} (picked {picked:?})"
            ));
        }
    }
    Ok(())
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|_| panic!("{s:?} is no IPv4 address"))
}

/// The probe's source address, source MAC and the port its packets arrive on.
fn source_of(tables: &Tables, from: Src) -> (Ipv4Addr, [u8; 6], PortId) {
    match from {
        Pod(name) => {
            let port = tables
                .port_by_name(&format!("pod-demo-{name}"))
                .unwrap_or_else(|| panic!("no port for pod {name}"));
            let pod = tables.pod_on_port(port).expect("a pod port");
            let v4 = pod.ips[0].as_v4().expect("IPv4 pod");
            (Ipv4Addr::from(v4), pod.mac.0, port)
        }
        Host => (Ipv4Addr::from(NODE_A_IP), HOST_MAC.0, PortId::HOST),
        Outside => (Ipv4Addr::from(OUTSIDE_CLIENT), ROUTER_MAC, PortId::UPLINK),
    }
}

/// What `process` did with one packet, with what the observer saw.
struct Run {
    verdict: Verdict,
    out: Vec<u8>,
    /// The backend the observer was told of.
    backend: Option<(Ipv4Addr, u16)>,
    /// The Service port the observer was told of.
    service: Option<String>,
    steps: Vec<&'static str>,
}

/// Records what `process` reports: the Service, the backend and the steps.
#[derive(Default)]
struct Recorder {
    service: Option<String>,
    backend: Option<(IpKey, u16)>,
    steps: Vec<&'static str>,
}

impl Observer for Recorder {
    fn service(&mut self, service: &ServicePort) {
        self.service = Some(service.name.clone());
    }

    fn backend(&mut self, ip: IpKey, port: u16) {
        self.backend = Some((ip, port));
    }

    fn step(&mut self, what: &'static str) {
        self.steps.push(what);
    }
}

fn send(tables: &Tables, flows: &mut Flows, p: &Probe, sport: u16) -> Run {
    let (src, src_mac, in_port) = source_of(tables, p.from);
    let dst_mac = match p.from {
        Outside => NODE_A_MAC,
        Pod(_) | Host => GATEWAY_MAC,
    };
    let packet = Headers::new(src_mac, dst_mac, src, ip(p.dst)).first(p.proto, sport, p.port);
    let mut buf = vec![0u8; DEFAULT_HEADROOM + packet.len() + 256];
    let mut frame = Frame::load(&mut buf, DEFAULT_HEADROOM, &packet).expect("buffer fits");
    let mut rec = Recorder::default();
    let verdict = process(tables, flows, 1_000_000_000, in_port, &mut frame, &mut rec);
    let backend = rec
        .backend
        .map(|(ip, port)| (Ipv4Addr::from(ip.as_v4().expect("IPv4 backend")), port));
    Run {
        verdict,
        out: frame.data().to_vec(),
        backend,
        service: rec.service,
        steps: rec.steps,
    }
}

/// What happened to a probe, read from the verdict and the emitted frame.
#[derive(Debug)]
enum Outcome {
    Delivered {
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        out_port: PortId,
        /// The outer destination when the frame left VXLAN-encapsulated.
        encap_to: Option<Ipv4Addr>,
        /// Of the (inner) frame.
        dst_mac: [u8; 6],
        /// A checksum that does not verify, if any.
        checksums_ok: Option<String>,
    },
    Rejected {
        out_port: PortId,
        from: Ipv4Addr,
        to: Ipv4Addr,
        quoted_dst: (Ipv4Addr, u16),
    },
    Dropped(&'static str),
    Passed,
    /// Anything this file does not recognise.
    Other(String),
}

fn classify(run: &Run) -> Outcome {
    let out_port = match run.verdict {
        Verdict::Forward(port) => port,
        Verdict::Pass => return Outcome::Passed,
        Verdict::Drop(reason) => return Outcome::Dropped(reason.as_str()),
    };
    let Ok(outer) = SlicedPacket::from_ethernet(&run.out) else {
        return Outcome::Other("the output does not parse".into());
    };
    let Some(NetSlice::Ipv4(outer_ip)) = &outer.net else {
        return Outcome::Other("the output is not IPv4".into());
    };
    let outer_hdr = outer_ip.header();
    // VXLAN towards another node: look at the inner frame.
    if let Some(TransportSlice::Udp(udp)) = &outer.transport
        && udp.destination_port() == 4789
        && out_port == PortId::UPLINK
        && Ipv4Addr::from(outer_hdr.source()) == Ipv4Addr::from(NODE_A_IP)
    {
        let inner_frame = udp.payload().get(8..).unwrap_or(&[]);
        let Ok(inner) = SlicedPacket::from_ethernet(inner_frame) else {
            return Outcome::Other("the VXLAN payload does not parse".into());
        };
        return delivered(
            &inner,
            out_port,
            Some(Ipv4Addr::from(outer_hdr.destination())),
        );
    }
    if let Some(TransportSlice::Icmpv4(icmp)) = &outer.transport {
        if icmp.icmp_type() == Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port) {
            // The quote: the offending IPv4 header and at least 8 bytes of its payload.
            let quote = icmp.payload();
            let ihl = usize::from(quote.first().copied().unwrap_or(0) & 0x0f) * 4;
            let (Some(qdst), Some(qport)) = (quote.get(16..20), quote.get(ihl + 2..ihl + 4)) else {
                return Outcome::Other("short ICMP quote".into());
            };
            return Outcome::Rejected {
                out_port,
                from: Ipv4Addr::from(outer_hdr.source()),
                to: Ipv4Addr::from(outer_hdr.destination()),
                quoted_dst: (
                    Ipv4Addr::new(qdst[0], qdst[1], qdst[2], qdst[3]),
                    u16::from_be_bytes([qport[0], qport[1]]),
                ),
            };
        }
        return Outcome::Other(format!("ICMP {:?}", icmp.icmp_type()));
    }
    delivered(&outer, out_port, None)
}

fn delivered(p: &SlicedPacket<'_>, out_port: PortId, encap_to: Option<Ipv4Addr>) -> Outcome {
    let Some(NetSlice::Ipv4(ipv4)) = &p.net else {
        return Outcome::Other("not IPv4".into());
    };
    let dst_mac = match &p.link {
        Some(LinkSlice::Ethernet2(eth)) => eth.destination(),
        _ => return Outcome::Other("no Ethernet header".into()),
    };
    let hdr = ipv4.header().to_header();
    let mut bad = None;
    if hdr.header_checksum != hdr.calc_header_checksum() {
        bad = Some("IPv4 header".to_string());
    }
    let (sport, dport) = match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let want = tcp.to_header().calc_checksum_ipv4(&hdr, tcp.payload());
            if want.ok() != Some(tcp.checksum()) {
                bad = Some("TCP".into());
            }
            (tcp.source_port(), tcp.destination_port())
        }
        Some(TransportSlice::Udp(udp)) => {
            let want = udp.to_header().calc_checksum_ipv4(&hdr, udp.payload());
            if udp.checksum() != 0 && want.ok() != Some(udp.checksum()) {
                bad = Some("UDP".into());
            }
            (udp.source_port(), udp.destination_port())
        }
        None if ipv4.payload_ip_number() == IpNumber::SCTP => {
            let l4 = ipv4.payload().payload;
            if l4.len() < 12 {
                return Outcome::Other("short SCTP".into());
            }
            let mut zeroed = l4.to_vec();
            zeroed[8..12].fill(0);
            if crc32c(&zeroed).to_le_bytes() != l4[8..12] {
                bad = Some("SCTP CRC32c".into());
            }
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        }
        other => return Outcome::Other(format!("transport {other:?}")),
    };
    Outcome::Delivered {
        src: (Ipv4Addr::from(hdr.source), sport),
        dst: (Ipv4Addr::from(hdr.destination), dport),
        out_port,
        encap_to,
        dst_mac,
        checksums_ok: bad,
    }
}
