//! NetworkPolicy truth tables, after upstream's e2e model.
//!
//! Upstream's NetworkPolicy e2e tests (kubernetes/kubernetes `test/e2e/network/netpol/`:
//! `network_policy.go`, with the model of `model.go`, the expectations of
//! `reachability.go` and the grids of `truthtable.go`) run three namespaces `x`, `y`, `z`
//! with pods `a`, `b`, `c` each, probe every pod from every pod, and compare the observed
//! connectivity matrix with a truth table written per test: start from "everything
//! connects", then apply the test's expectations (`ExpectPeer`, `ExpectAllIngress`,
//! `ExpectAllEgress`, `Expect`). This file asks kxdp the same questions, end to end, with
//! the same model:
//!
//! - namespaces `x`, `y`, `z`, labelled `ns: <name>` (the `kubernetes.io/metadata.name`
//!   label is left to the implied default, as the API server would set it);
//! - pods `a`, `b`, `c` in each (label `pod: <name>`), each with container ports
//!   `serve-80-tcp`/`serve-81-tcp`, `serve-80-udp`/`serve-81-udp` and
//!   `serve-80-sctp`/`serve-81-sctp`, each behind its own ClusterIP Service `s-<ns>-<pod>`
//!   (ports 80 and 81 of each protocol, target the same number);
//! - x/* on node-a, y and z spread over node-a and node-b, so about half the probes cross
//!   the overlay.
//!
//! A probe from pod s to pod d on (protocol, port) is the first packet of a connection (TCP
//! SYN, UDP datagram, SCTP INIT) sent by s to d's Service, built with etherparse and handed
//! to `datapath::process` with the Tables `model::translate::translate` builds for s's
//! node; when it leaves by the uplink as VXLAN it is handed to d's node's `process` on its
//! uplink. It connects when it reaches d's pod port (addressed to d, at the target port).
//! Each probe gets fresh flow tables (one per node). Loopback (s = d) is left out of the
//! comparison, as upstream does (`ignoreLoopback`).
//!
//! Beyond upstream's grids, each probe also checks that:
//! - a probe that does not connect is dropped with `policy_denied`, the observer was told
//!   the deciding policies (exactly those selecting the judged pod in that direction) and
//!   the direction; egress is judged on the client's node, ingress on the server's node;
//! - for a connected TCP probe, the server's SYN-ACK gets back to the client (through the
//!   same per-node flow tables), reverse-translated to the Service address, whatever
//!   isolates the client;
//! - in the default-deny case, node-a's own traffic (the `host` port) still reaches a local
//!   pod through its Service (node <-> local pod is always allowed).
//!
//! The expected tables are written by hand from each test's expectations, never by running
//! kxdp's policy compiler.
//!
//! Cases (upstream `network_policy.go` test -> test here):
//! - "should support a 'default-deny-ingress' policy" (TCP, and the UDP and SCTP contexts'
//!   tests of that name) -> `default_deny_ingress`
//! - "should support a 'default-deny-all' policy" -> `default_deny_all`
//! - "should enforce policy to allow traffic from pods within server namespace based on
//!   PodSelector" -> `allow_from_same_namespace_pod_selector`
//! - "should enforce policy to allow ingress traffic for a target" -> `allow_ingress_for_a_target`
//! - "should enforce policy to allow ingress traffic from pods in all namespaces" ->
//!   `allow_from_all_namespaces`
//! - "should enforce policy to allow traffic only from a different namespace, based on
//!   NamespaceSelector" -> `allow_from_namespace_selector`
//! - "should enforce policy based on PodSelector with MatchExpressions" ->
//!   `pod_selector_match_expressions`
//! - "should enforce policy based on NamespaceSelector with MatchExpressions" ->
//!   `namespace_selector_match_expressions`
//! - "should enforce policy based on PodSelector or NamespaceSelector" ->
//!   `pod_selector_or_namespace_selector`
//! - "should enforce policy based on PodSelector and NamespaceSelector" ->
//!   `pod_selector_and_namespace_selector`
//! - "should enforce policy based on Multiple PodSelectors and NamespaceSelectors" ->
//!   `multiple_pod_selectors_and_namespace_selectors`
//! - "should enforce policy based on any PodSelectors" -> `any_pod_selectors`
//! - "should enforce policy to allow traffic only from a pod in a different namespace based
//!   on PodSelector and NamespaceSelector" (TCP, UDP and SCTP contexts) ->
//!   `pod_in_other_namespace_and`, and its OR form (two items) -> `pod_in_other_namespace_or`
//! - "should enforce policy based on Ports" (TCP, UDP and SCTP contexts) -> `ports`
//! - "should enforce multiple, stacked policies with overlapping podSelectors" ->
//!   `stacked_policies`
//! - "should support allow-all policy" -> `allow_all`
//! - "should allow ingress access on one named port" -> `named_port_ingress`
//! - "should allow ingress access from namespace on one named port" ->
//!   `named_port_ingress_from_namespace`
//! - "should allow egress access on one named port" -> `named_port_egress`
//! - "should enforce updated policy" -> `updated_policy`
//! - "should allow ingress access from updated namespace" -> `updated_namespace_labels`
//! - "should allow ingress access from updated pod" -> `updated_pod_labels`
//! - "should deny ingress from pods on other namespaces" -> `deny_ingress_from_other_namespaces`
//! - "should deny ingress access to updated pod" -> `deny_ingress_to_updated_pod`
//! - "should deny egress from pods based on PodSelector" -> `deny_egress_pod_selector`
//! - "should deny egress from all pods in a namespace" -> `deny_egress_namespace`
//! - "should work with Ingress, Egress specified together" -> `ingress_and_egress_together`
//! - "should support denying of egress traffic on the client side (even if the server
//!   explicitly allows this traffic)" -> `egress_deny_beats_ingress_allow`
//! - "should enforce egress policy allowing traffic to a server in a different namespace
//!   based on PodSelector and NamespaceSelector" -> `egress_to_pod_in_other_namespace`
//! - "should enforce ingress policy allowing any port traffic to a server on a specific
//!   protocol" -> `protocol_only_port`
//! - "should enforce multiple ingress policies with ingress allow-all policy taking
//!   precedence" -> `ingress_allow_all_takes_precedence`
//! - "should enforce multiple egress policies with egress allow-all policy taking
//!   precedence" -> `egress_allow_all_takes_precedence`
//! - "should stop enforcing policies after they are deleted" -> `deleted_policies`
//! - "should allow egress access to server in CIDR block" -> `egress_cidr`
//! - "should enforce except clause while egress access to server in CIDR block" ->
//!   `egress_cidr_except`
//! - "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed" ->
//!   `egress_cidr_overlapping_except`
//! - "should enforce policies to check ingress and egress policies can be controlled
//!   independently based on PodSelector" -> `ingress_and_egress_independent`
//! - "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin
//!   doesn't support SCTP" -> `sctp_is_not_tcp`
//! - "should properly isolate pods that are selected by a policy allowing SCTP, even if the
//!   plugin doesn't support SCTP" -> `sctp_policy_isolates_tcp`
//! - "should not allow access by TCP when a policy specifies only UDP" -> `udp_only_policy`
//! - "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels
//!   using default ns label" -> `default_namespace_label_match_labels`
//! - "should enforce policy based on NamespaceSelector with MatchExpressions using default
//!   ns label" -> `default_namespace_label_match_expressions`
//!
//! Ours, in the same model (semantics the upstream suite covers only in part):
//! `end_port_range` (`endPort` 80-81 against port 80 alone, ingress and egress),
//! `match_expressions_exists_and_does_not_exist`, `egress_to_namespace` (with and without
//! the usual DNS rule), `empty_ingress_list_vs_empty_rule`, `egress_only_policy_types`
//! (`policyTypes: [Egress]` leaves ingress open; omitted `policyTypes` with egress rules
//! isolates both directions), and `established_flows_rejudged` (connections opened before
//! a policy is updated, added or deleted get, at their next packet, what a new connection
//! would: kxdp's documented choice; upstream's "should enforce updated policy" and "should
//! stop enforcing policies after they are deleted" only probe new connections).

// Grid cells are (client, server) index pairs into several tables at once.
#![allow(clippy::needless_range_loop)]

mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use support::{TempDir, pod_mac, sctp_init};

use datapath::conntrack::Flows;
use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::observer::Observer;
use datapath::policy::PolicyDirection;
use datapath::tables::{HOST_MAC, PortId, Tables};
use datapath::{Verdict, process};
use etherparse::{IpNumber, LinkSlice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use model::state::load_state_dir;
use model::translate::translate;

// ---------------------------------------------------------------------------------------------
// The model.

const NAMESPACES: [&str; 3] = ["x", "y", "z"];

/// Every pod of the model, in grid order: (namespace, name, node, address).
const PODS: [(&str, &str, &str, [u8; 4]); 9] = [
    ("x", "a", "node-a", [10, 244, 1, 10]),
    ("x", "b", "node-a", [10, 244, 1, 11]),
    ("x", "c", "node-a", [10, 244, 1, 12]),
    ("y", "a", "node-a", [10, 244, 1, 13]),
    ("y", "b", "node-b", [10, 244, 2, 14]),
    ("y", "c", "node-b", [10, 244, 2, 15]),
    ("z", "a", "node-b", [10, 244, 2, 16]),
    ("z", "b", "node-a", [10, 244, 1, 17]),
    ("z", "c", "node-b", [10, 244, 2, 18]),
];

/// Nodes: (name, InternalIP, PodCIDR, uplink MAC, gateway).
/// (name, InternalIP, PodCIDR, uplink MAC, gateway)
type NodeRow = (&'static str, [u8; 4], &'static str, [u8; 6], [u8; 4]);

const NODES: [NodeRow; 2] = [
    (
        "node-a",
        [192, 168, 50, 10],
        "10.244.1.0/24",
        [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0a],
        [10, 244, 1, 1],
    ),
    (
        "node-b",
        [192, 168, 50, 11],
        "10.244.2.0/24",
        [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0b],
        [10, 244, 2, 1],
    ),
];

const KXDP_YAML: &str = "clusterCIDR: 10.244.0.0/16\nserviceCIDR: 10.96.0.0/12\n\
                         vxlan: {vni: 1, port: 4789}\nunderlayMTU: 1500\n";

fn pod_index(ns: &str, name: &str) -> usize {
    PODS.iter()
        .position(|p| p.0 == ns && p.1 == name)
        .unwrap_or_else(|| panic!("no pod {ns}/{name}"))
}

fn pod_str(i: usize) -> String {
    format!("{}/{}", PODS[i].0, PODS[i].1)
}

fn node_index(name: &str) -> usize {
    NODES.iter().position(|n| n.0 == name).expect("a node")
}

/// The ClusterIP of pod `i`'s Service.
fn service_ip(i: usize) -> [u8; 4] {
    [10, 96, 0, 100 + i as u8]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

use Proto::{Sctp, Tcp, Udp};

impl Proto {
    fn k8s(self) -> &'static str {
        match self {
            Tcp => "TCP",
            Udp => "UDP",
            Sctp => "SCTP",
        }
    }

    fn lower(self) -> &'static str {
        match self {
            Tcp => "tcp",
            Udp => "udp",
            Sctp => "sctp",
        }
    }
}

const PROTOS: [Proto; 3] = [Tcp, Udp, Sctp];
const PORTS: [u16; 2] = [80, 81];

/// Extra labels a step puts on namespaces or pods (upstream's label-update tests).
#[derive(Clone, Default)]
struct Labels {
    /// (namespace, key, value)
    namespaces: Vec<(&'static str, &'static str, &'static str)>,
    /// ("ns/pod", key, value)
    pods: Vec<(&'static str, &'static str, &'static str)>,
}

fn base_manifests(extra: &Labels) -> String {
    let mut s = String::new();
    for (name, ip, cidr, mac, _) in NODES {
        let ip = Ipv4Addr::from(ip);
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    \
             kxdp.io/underlay-mac: \"{mac}\"\nspec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\n\
             status:\n  addresses:\n    - type: InternalIP\n      address: {ip}\n"
        );
    }
    for ns in NAMESPACES {
        let mut labels = format!("ns: {ns}");
        for (n, k, v) in &extra.namespaces {
            if *n == ns {
                let _ = write!(labels, ", {k}: {v}");
            }
        }
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{{labels}}}\n"
        );
    }
    for (i, (ns, name, node, ip)) in PODS.iter().enumerate() {
        let ip = Ipv4Addr::from(*ip);
        let mut labels = format!("pod: {name}");
        for (p, k, v) in &extra.pods {
            if *p == format!("{ns}/{name}") {
                let _ = write!(labels, ", {k}: {v}");
            }
        }
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
             labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  containers:\n"
        );
        for proto in PROTOS {
            for port in PORTS {
                let _ = write!(
                    s,
                    "    - name: cont-{port}-{p}\n      image: registry.k8s.io/e2e-test-images/agnhost:2.53\n      \
                     ports:\n        - {{containerPort: {port}, name: serve-{port}-{p}, protocol: {k}}}\n",
                    p = proto.lower(),
                    k = proto.k8s()
                );
            }
        }
        let _ = write!(
            s,
            "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n"
        );
        // Its Service and EndpointSlice.
        let vip = Ipv4Addr::from(service_ip(i));
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s-{ns}-{name}\n  namespace: {ns}\n\
             spec:\n  type: ClusterIP\n  clusterIP: {vip}\n  clusterIPs: [{vip}]\n  \
             selector: {{pod: {name}}}\n  ports:\n"
        );
        for proto in PROTOS {
            for port in PORTS {
                let _ = writeln!(
                    s,
                    "    - {{name: service-port-{p}-{port}, port: {port}, protocol: {k}, targetPort: {port}}}",
                    p = proto.lower(),
                    k = proto.k8s()
                );
            }
        }
        let _ = write!(
            s,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
             name: s-{ns}-{name}-1\n  namespace: {ns}\n  labels:\n    \
             kubernetes.io/service-name: s-{ns}-{name}\naddressType: IPv4\nendpoints:\n  \
             - addresses: [{ip}]\n    conditions: {{ready: true, serving: true, terminating: false}}\n    \
             nodeName: {node}\nports:\n"
        );
        for proto in PROTOS {
            for port in PORTS {
                let _ = writeln!(
                    s,
                    "  - {{name: service-port-{p}-{port}, port: {port}, protocol: {k}}}",
                    p = proto.lower(),
                    k = proto.k8s()
                );
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Policies.

/// Which pods of its namespace a policy selects (for checking the names the observer gets).
#[derive(Clone, Copy)]
enum Sel {
    /// `podSelector: {}`
    All,
    /// `podSelector: {matchLabels: {pod: <name>}}`
    Pod(&'static str),
    /// `podSelector: {matchLabels: {target: isolated}}`: pods so labelled by the step.
    TargetIsolated,
}

#[derive(Clone)]
struct Policy {
    ns: &'static str,
    name: &'static str,
    select: Sel,
    /// `policyTypes`, or None to leave the field out (the API's defaulting applies).
    types: Option<&'static [&'static str]>,
    /// `ingress:` as flow-style YAML (`"[]"`, `"[{}]"`, ...), None to leave it out.
    ingress: Option<String>,
    egress: Option<String>,
}

fn policy(ns: &'static str, name: &'static str, select: Sel) -> Policy {
    Policy {
        ns,
        name,
        select,
        types: None,
        ingress: None,
        egress: None,
    }
}

impl Policy {
    /// `SetSpecIngressRules(rules...)`: policyTypes Ingress and these rules.
    fn ingress(mut self, rules: &str) -> Policy {
        self.ingress = Some(rules.to_string());
        self.add_type("Ingress");
        self
    }

    /// `SetSpecEgressRules(rules...)`: policyTypes Egress and these rules.
    fn egress(mut self, rules: &str) -> Policy {
        self.egress = Some(rules.to_string());
        self.add_type("Egress");
        self
    }

    fn add_type(&mut self, t: &'static str) {
        let has_in = self.types.is_some_and(|ts| ts.contains(&"Ingress")) || t == "Ingress";
        let has_eg = self.types.is_some_and(|ts| ts.contains(&"Egress")) || t == "Egress";
        self.types = Some(match (has_in, has_eg) {
            (true, true) => &["Ingress", "Egress"],
            (true, false) => &["Ingress"],
            _ => &["Egress"],
        });
    }

    fn types(mut self, types: Option<&'static [&'static str]>) -> Policy {
        self.types = types;
        self
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn yaml(&self) -> String {
        let selector = match self.select {
            Sel::All => "{}".to_string(),
            Sel::Pod(p) => format!("{{matchLabels: {{pod: {p}}}}}"),
            Sel::TargetIsolated => "{matchLabels: {target: isolated}}".to_string(),
        };
        let mut s = format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  \
             namespace: {}\nspec:\n  podSelector: {selector}\n",
            self.name, self.ns
        );
        if let Some(types) = self.types {
            let _ = writeln!(s, "  policyTypes: [{}]", types.join(", "));
        }
        if let Some(r) = &self.ingress {
            let _ = writeln!(s, "  ingress: {r}");
        }
        if let Some(r) = &self.egress {
            let _ = writeln!(s, "  egress: {r}");
        }
        s
    }

    /// The directions it isolates, with the API's defaulting of `policyTypes`.
    fn isolates(&self, dir: PolicyDirection) -> bool {
        match self.types {
            Some(ts) => ts.contains(&match dir {
                PolicyDirection::Ingress => "Ingress",
                PolicyDirection::Egress => "Egress",
            }),
            None => match dir {
                PolicyDirection::Ingress => true,
                PolicyDirection::Egress => self.egress.is_some(),
            },
        }
    }

    fn selects(&self, pod: usize, labels: &Labels) -> bool {
        let (ns, name, _, _) = PODS[pod];
        ns == self.ns
            && match self.select {
                Sel::All => true,
                Sel::Pod(p) => p == name,
                Sel::TargetIsolated => labels.pods.iter().any(|(p, k, v)| {
                    *p == format!("{ns}/{name}") && *k == "target" && *v == "isolated"
                }),
            }
    }
}

// ---------------------------------------------------------------------------------------------
// Truth tables, the way upstream's `Reachability` builds them.

#[derive(Clone, Copy, Default)]
struct Peer {
    ns: Option<&'static str>,
    pod: Option<&'static str>,
}

/// `&Peer{}`: everything.
const ANY: Peer = Peer {
    ns: None,
    pod: None,
};

fn ns(n: &'static str) -> Peer {
    Peer {
        ns: Some(n),
        pod: None,
    }
}

fn pod(n: &'static str, p: &'static str) -> Peer {
    Peer {
        ns: Some(n),
        pod: Some(p),
    }
}

impl Peer {
    fn matches(&self, i: usize) -> bool {
        self.ns.is_none_or(|n| n == PODS[i].0) && self.pod.is_none_or(|p| p == PODS[i].1)
    }
}

#[derive(Clone, PartialEq, Eq)]
struct Table([[bool; 9]; 9]);

impl Table {
    /// `NewReachability(..., true)`
    fn all() -> Table {
        Table([[true; 9]; 9])
    }

    /// `ExpectPeer(from, to, connected)`
    fn peer(mut self, from: Peer, to: Peer, connected: bool) -> Table {
        for f in 0..9 {
            for t in 0..9 {
                if from.matches(f) && to.matches(t) {
                    self.0[f][t] = connected;
                }
            }
        }
        self
    }

    /// `Expect(from, to, connected)`
    fn expect(
        self,
        from: (&'static str, &'static str),
        to: (&'static str, &'static str),
        c: bool,
    ) -> Table {
        self.peer(pod(from.0, from.1), pod(to.0, to.1), c)
    }

    /// `ExpectAllIngress(pod, connected)`
    fn all_ingress(self, to: (&'static str, &'static str), c: bool) -> Table {
        self.peer(ANY, pod(to.0, to.1), c)
    }

    /// `ExpectAllEgress(pod, connected)`
    fn all_egress(self, from: (&'static str, &'static str), c: bool) -> Table {
        self.peer(pod(from.0, from.1), ANY, c)
    }

    /// Upstream's `TruthTable.PrettyPrint` style: "." connects, "X" does not; rows are
    /// clients, columns servers; `marks` overrides cells (used to point at mismatches).
    fn render(&self, marks: &[[Option<char>; 9]; 9]) -> String {
        let mut s = String::from("-\t");
        for t in 0..9 {
            let _ = write!(s, "{}\t", pod_str(t));
        }
        s.push('\n');
        for f in 0..9 {
            let _ = write!(s, "{}\t", pod_str(f));
            for t in 0..9 {
                let c = marks[f][t].unwrap_or(if self.0[f][t] { '.' } else { 'X' });
                let _ = write!(s, "{c}\t");
            }
            s.push('\n');
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// One probe grid: every pod to every pod's Service on (protocol, port).
struct Grid {
    proto: Proto,
    port: u16,
    expect: Table,
}

fn grid(proto: Proto, port: u16, expect: Table) -> Grid {
    Grid {
        proto,
        port,
        expect,
    }
}

/// A cluster state (the policies present, extra labels) and the grids expected of it.
struct Step {
    policies: Vec<Policy>,
    labels: Labels,
    grids: Vec<Grid>,
}

fn step(policies: Vec<Policy>, grids: Vec<Grid>) -> Step {
    Step {
        policies,
        labels: Labels::default(),
        grids,
    }
}

fn step_labels(policies: Vec<Policy>, labels: Labels, grids: Vec<Grid>) -> Step {
    Step {
        policies,
        labels,
        grids,
    }
}

const XA: (&str, &str) = ("x", "a");
const XB: (&str, &str) = ("x", "b");
const XC: (&str, &str) = ("x", "c");
const YA: (&str, &str) = ("y", "a");
const YB: (&str, &str) = ("y", "b");
const ZB: (&str, &str) = ("z", "b");

fn ip_of(p: (&str, &str)) -> Ipv4Addr {
    Ipv4Addr::from(PODS[pod_index(p.0, p.1)].3)
}

#[test]
fn default_deny_ingress() {
    let deny = policy("x", "deny-ingress", Sel::All).ingress("[]");
    let t = Table::all().peer(ANY, ns("x"), false);
    run_case(
        "default_deny_ingress",
        vec![step(
            vec![deny],
            vec![
                grid(Tcp, 80, t.clone()),
                grid(Udp, 80, t.clone()),
                grid(Sctp, 80, t),
            ],
        )],
    );
    // Node <-> local pod is always allowed: node-a's host-network client reaches x/a (on
    // node-a) through its Service although x is isolated.
    let deny = policy("x", "deny-ingress", Sel::All).ingress("[]");
    let tables = step_tables("default_deny_ingress_host", &[deny], &Labels::default());
    if let Err(e) = host_probe(&tables, pod_index("x", "a")) {
        panic!("node-a's host to x/a through its Service under default deny: {e}");
    }
}

#[test]
fn default_deny_all() {
    let deny = policy("x", "deny-all", Sel::All).ingress("[]").egress("[]");
    let t = Table::all()
        .peer(ANY, ns("x"), false)
        .peer(ns("x"), ANY, false);
    run_case(
        "default_deny_all",
        vec![step(vec![deny], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn allow_from_same_namespace_pod_selector() {
    let p = policy("x", "x-a-allows-x-b", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {matchLabels: {pod: b}}}]}]");
    let t = Table::all().all_ingress(XA, false).expect(XB, XA, true);
    run_case(
        "allow_from_same_namespace_pod_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn allow_ingress_for_a_target() {
    let deny = policy("x", "deny-all", Sel::All).ingress("[]");
    let allow = policy("x", "allow-all-to-a", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {}, namespaceSelector: {}}]}]");
    let t = Table::all().peer(ANY, ns("x"), false).all_ingress(XA, true);
    run_case(
        "allow_ingress_for_a_target",
        vec![step(vec![deny, allow], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn allow_from_all_namespaces() {
    let p = policy("x", "allow-from-another-ns", Sel::Pod("a"))
        .ingress("[{from: [{namespaceSelector: {matchLabels: {}}}]}]");
    run_case(
        "allow_from_all_namespaces",
        vec![step(vec![p], vec![grid(Tcp, 80, Table::all())])],
    );
}

#[test]
fn allow_from_namespace_selector() {
    let p = policy("x", "allow-client-a-via-ns-selector", Sel::Pod("a"))
        .ingress("[{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]");
    let t = Table::all()
        .peer(ns("x"), pod("x", "a"), false)
        .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "allow_from_namespace_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_selector_match_expressions() {
    let p = policy("x", "x-a-allows-x-b", Sel::Pod("a")).ingress(
        "[{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}]",
    );
    let t = Table::all().all_ingress(XA, false).expect(XB, XA, true);
    run_case(
        "pod_selector_match_expressions",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn namespace_selector_match_expressions() {
    let p = policy("x", "allow-ns-y-match-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y]}]}}]}]",
    );
    let t = Table::all()
        .peer(ns("x"), pod("x", "a"), false)
        .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "namespace_selector_match_expressions",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_selector_or_namespace_selector() {
    let p = policy("x", "allow-ns-y-match-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}, \
         {podSelector: {matchLabels: {pod: b}}}]}]",
    );
    let t = Table::all().expect(XA, XA, false).expect(XC, XA, false);
    run_case(
        "pod_selector_or_namespace_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_selector_and_namespace_selector() {
    let p = policy("x", "allow-ns-y-podselector-and-nsselector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}, \
         podSelector: {matchLabels: {pod: b}}}]}]",
    );
    let t = Table::all()
        .all_ingress(XA, false)
        .expect(YB, XA, true)
        .expect(ZB, XA, true);
    run_case(
        "pod_selector_and_namespace_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn multiple_pod_selectors_and_namespace_selectors() {
    let p = policy("x", "allow-ns-y-z-pod-b-c", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}, \
         podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]",
    );
    let t = Table::all()
        .peer(ns("x"), pod("x", "a"), false)
        .expect(YA, XA, false)
        .expect(("z", "a"), XA, false);
    run_case(
        "multiple_pod_selectors_and_namespace_selectors",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn any_pod_selectors() {
    let p = policy("x", "allow-ns-x-pod-b-c", Sel::Pod("a")).ingress(
        "[{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]",
    );
    let t = Table::all()
        .all_ingress(XA, false)
        .expect(XB, XA, true)
        .expect(XC, XA, true);
    run_case(
        "any_pod_selectors",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_in_other_namespace_and() {
    let p = policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let t = Table::all().all_ingress(XA, false).expect(YA, XA, true);
    run_case(
        "pod_in_other_namespace_and",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 80, t.clone()),
                grid(Udp, 80, t.clone()),
                grid(Sctp, 80, t),
            ],
        )],
    );
}

/// The same selectors as two items: ORed, so all of y, and pod=a of x itself.
#[test]
fn pod_in_other_namespace_or() {
    let p = policy("x", "allow-ns-y-or-pod-a", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let t = Table::all()
        .all_ingress(XA, false)
        .peer(ns("y"), pod("x", "a"), true)
        .expect(XA, XA, true);
    run_case(
        "pod_in_other_namespace_or",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn ports() {
    let mut grids = Vec::new();
    let mut policies = Vec::new();
    for proto in PROTOS {
        // One case per protocol in upstream; one policy per protocol here, on x/a, x/b, x/c
        // (so the three do not mix): x/a for TCP, x/b for UDP, x/c for SCTP.
        let (target, name) = match proto {
            Tcp => ("a", "allow-port-81-tcp"),
            Udp => ("b", "allow-port-81-udp"),
            Sctp => ("c", "allow-port-81-sctp"),
        };
        policies.push(policy("x", name, Sel::Pod(target)).ingress(&format!(
            "[{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 81, protocol: {}}}]}}]",
            proto.k8s()
        )));
        let allow81 = Table::all().peer(ns("x"), pod("x", target), false).peer(
            ns("z"),
            pod("x", target),
            false,
        );
        let deny80 = Table::all().peer(ANY, pod("x", target), false);
        // The other two targets are isolated for this protocol too (their policy allows
        // only their own protocol).
        let others = |mut t: Table| {
            for o in ["a", "b", "c"] {
                if o != target {
                    t = t.peer(ANY, pod("x", o), false);
                }
            }
            t
        };
        grids.push(grid(proto, 81, others(allow81)));
        grids.push(grid(proto, 80, others(deny80)));
    }
    run_case("ports", vec![step(policies, grids)]);
}

#[test]
fn stacked_policies() {
    let p81 = policy("x", "allow-client-a-via-ns-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81, protocol: TCP}]}]",
    );
    let p80 = policy("x", "allow-client-a-via-ns-selector-80", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80, protocol: TCP}]}]",
    );
    let allow = Table::all()
        .peer(ns("x"), pod("x", "a"), false)
        .peer(ns("y"), pod("x", "a"), true)
        .peer(ns("z"), pod("x", "a"), false);
    let deny = Table::all().all_ingress(XA, false);
    run_case(
        "stacked_policies",
        vec![
            step(
                vec![p81.clone()],
                vec![grid(Tcp, 81, allow.clone()), grid(Tcp, 80, deny)],
            ),
            step(
                vec![p81, p80],
                vec![grid(Tcp, 81, allow.clone()), grid(Tcp, 80, allow)],
            ),
        ],
    );
}

#[test]
fn allow_all() {
    let p = policy("x", "allow-all", Sel::All).ingress("[{}]");
    run_case(
        "allow_all",
        vec![step(
            vec![p],
            vec![grid(Tcp, 80, Table::all()), grid(Tcp, 81, Table::all())],
        )],
    );
}

#[test]
fn named_port_ingress() {
    let p = policy("x", "allow-all", Sel::All).ingress("[{ports: [{port: serve-81-tcp}]}]");
    run_case(
        "named_port_ingress",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 81, Table::all()),
                grid(Tcp, 80, Table::all().peer(ANY, ns("x"), false)),
                // The name is serve-81-tcp: UDP 81 is not it.
                grid(Udp, 81, Table::all().peer(ANY, ns("x"), false)),
            ],
        )],
    );
}

#[test]
fn named_port_ingress_from_namespace() {
    let p = policy("x", "allow-client-a-via-ns-selector-80", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: serve-80-tcp, protocol: TCP}]}]",
    );
    let t80 = Table::all()
        .peer(ns("x"), pod("x", "a"), false)
        .peer(ns("z"), pod("x", "a"), false);
    let t81 = Table::all().all_ingress(XA, false);
    run_case(
        "named_port_ingress_from_namespace",
        vec![step(vec![p], vec![grid(Tcp, 80, t80), grid(Tcp, 81, t81)])],
    );
}

#[test]
fn named_port_egress() {
    let p = policy("x", "allow-egress", Sel::All).egress("[{ports: [{port: serve-80-tcp}]}]");
    run_case(
        "named_port_egress",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 80, Table::all()),
                grid(Tcp, 81, Table::all().peer(ns("x"), ANY, false)),
            ],
        )],
    );
}

#[test]
fn updated_policy() {
    let allow = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[{}]");
    let deny = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[]");
    run_case(
        "updated_policy",
        vec![
            step(vec![allow], vec![grid(Tcp, 81, Table::all())]),
            step(
                vec![deny],
                vec![grid(Tcp, 81, Table::all().peer(ANY, ns("x"), false))],
            ),
        ],
    );
}

#[test]
fn updated_namespace_labels() {
    let p = policy("x", "allow-client-a-via-ns-selector", Sel::Pod("a"))
        .ingress("[{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]");
    run_case(
        "updated_namespace_labels",
        vec![
            step(
                vec![p.clone()],
                vec![grid(Tcp, 80, Table::all().all_ingress(XA, false))],
            ),
            step_labels(
                vec![p],
                Labels {
                    namespaces: vec![("y", "ns2", "updated")],
                    pods: vec![],
                },
                vec![grid(
                    Tcp,
                    80,
                    Table::all().all_ingress(XA, false).peer(ns("y"), ANY, true),
                )],
            ),
        ],
    );
}

#[test]
fn updated_pod_labels() {
    let p = policy("x", "allow-client-a-via-pod-selector", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}]");
    run_case(
        "updated_pod_labels",
        vec![
            step(
                vec![p.clone()],
                vec![grid(Tcp, 80, Table::all().all_ingress(XA, false))],
            ),
            step_labels(
                vec![p],
                Labels {
                    namespaces: vec![],
                    pods: vec![("x/b", "pod2", "updated")],
                },
                vec![grid(
                    Tcp,
                    80,
                    Table::all().all_ingress(XA, false).expect(XB, XA, true),
                )],
            ),
        ],
    );
}

#[test]
fn deny_ingress_from_other_namespaces() {
    let p = policy("x", "deny-empty-policy", Sel::All)
        .ingress("[{from: [{podSelector: {matchLabels: {}}}]}]");
    let t = Table::all()
        .peer(ns("y"), ns("x"), false)
        .peer(ns("z"), ns("x"), false);
    run_case(
        "deny_ingress_from_other_namespaces",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn deny_ingress_to_updated_pod() {
    let p = policy("x", "deny-ingress-via-label-selector", Sel::TargetIsolated).ingress("[]");
    run_case(
        "deny_ingress_to_updated_pod",
        vec![
            step(vec![p.clone()], vec![grid(Tcp, 80, Table::all())]),
            step_labels(
                vec![p],
                Labels {
                    namespaces: vec![],
                    pods: vec![("x/a", "target", "isolated")],
                },
                vec![grid(Tcp, 80, Table::all().all_ingress(XA, false))],
            ),
        ],
    );
}

#[test]
fn deny_egress_pod_selector() {
    let p = policy("x", "deny-egress-pod-a", Sel::Pod("a")).egress("[]");
    run_case(
        "deny_egress_pod_selector",
        vec![step(
            vec![p],
            vec![grid(Tcp, 80, Table::all().all_egress(XA, false))],
        )],
    );
}

#[test]
fn deny_egress_namespace() {
    let p = policy("x", "deny-egress-ns-x", Sel::All).egress("[]");
    run_case(
        "deny_egress_namespace",
        vec![step(
            vec![p],
            vec![grid(Tcp, 80, Table::all().peer(ns("x"), ANY, false))],
        )],
    );
}

#[test]
fn ingress_and_egress_together() {
    let p = policy("x", "allow-client-a-via-pod-selector", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {matchLabels: {pod: b}}}]}]")
        .egress("[{ports: [{port: 80}]}]");
    let t80 = Table::all().all_ingress(XA, false).expect(XB, XA, true);
    let t81 = Table::all()
        .all_ingress(XA, false)
        .all_egress(XA, false)
        .expect(XB, XA, true);
    run_case(
        "ingress_and_egress_together",
        vec![step(vec![p], vec![grid(Tcp, 80, t80), grid(Tcp, 81, t81)])],
    );
}

#[test]
fn egress_deny_beats_ingress_allow() {
    let egress = policy("x", "allow-to-ns-y-pod-a", Sel::Pod("a")).egress(
        "[{to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let from_xa = "[{from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]}]";
    let on_ya = policy("y", "allow-from-xa-on-ya-match-selector", Sel::Pod("a")).ingress(from_xa);
    let on_yb = policy("y", "allow-from-xa-on-yb-match-selector", Sel::Pod("b")).ingress(from_xa);
    let t = Table::all()
        .peer(pod("x", "a"), ANY, false)
        .peer(ANY, pod("y", "a"), false)
        .peer(pod("x", "a"), pod("y", "a"), true)
        .peer(ANY, pod("y", "b"), false);
    run_case(
        "egress_deny_beats_ingress_allow",
        vec![step(vec![egress, on_ya, on_yb], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn egress_to_pod_in_other_namespace() {
    let p = policy("x", "allow-to-ns-y-pod-a", Sel::Pod("a")).egress(
        "[{to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let t = Table::all().all_egress(XA, false).expect(XA, YA, true);
    run_case(
        "egress_to_pod_in_other_namespace",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn protocol_only_port() {
    let p = policy("x", "allow-ingress-by-proto", Sel::Pod("a"))
        .ingress("[{ports: [{protocol: TCP}]}]");
    run_case(
        "protocol_only_port",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 80, Table::all()),
                grid(Tcp, 81, Table::all()),
                grid(Udp, 80, Table::all().all_ingress(XA, false)),
            ],
        )],
    );
}

#[test]
fn ingress_allow_all_takes_precedence() {
    let p80 = policy("x", "allow-ingress-port-80", Sel::All).ingress("[{ports: [{port: 80}]}]");
    let all = policy("x", "allow-ingress", Sel::All).ingress("[{}]");
    run_case(
        "ingress_allow_all_takes_precedence",
        vec![
            step(
                vec![p80.clone()],
                vec![grid(Tcp, 81, Table::all().peer(ANY, ns("x"), false))],
            ),
            step(vec![p80, all], vec![grid(Tcp, 81, Table::all())]),
        ],
    );
}

#[test]
fn egress_allow_all_takes_precedence() {
    let p80 = policy("x", "allow-egress-port-80", Sel::All).egress("[{ports: [{port: 80}]}]");
    let all = policy("x", "allow-egress", Sel::All).egress("[{}]");
    run_case(
        "egress_allow_all_takes_precedence",
        vec![
            step(
                vec![p80.clone()],
                vec![grid(Tcp, 81, Table::all().peer(ns("x"), ANY, false))],
            ),
            step(vec![p80, all], vec![grid(Tcp, 81, Table::all())]),
        ],
    );
}

#[test]
fn deleted_policies() {
    let deny = policy("x", "deny-all", Sel::All).ingress("[]").egress("[]");
    run_case(
        "deleted_policies",
        vec![
            step(
                vec![deny],
                vec![grid(
                    Tcp,
                    80,
                    Table::all()
                        .peer(ns("x"), ANY, false)
                        .peer(ANY, ns("x"), false),
                )],
            ),
            step(vec![], vec![grid(Tcp, 80, Table::all())]),
        ],
    );
}

#[test]
fn egress_cidr() {
    let cidr = format!("{}/32", ip_of(YB));
    let p = policy("x", "allow-client-a-via-cidr-egress-rule", Sel::Pod("a"))
        .egress(&format!("[{{to: [{{ipBlock: {{cidr: {cidr}}}}}]}}]"));
    let t = Table::all().all_egress(XA, false).expect(XA, YB, true);
    run_case("egress_cidr", vec![step(vec![p], vec![grid(Tcp, 80, t)])]);
}

/// Upstream's `makeLargeCIDRForIP`: the /4 around the address.
fn large_cidr(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.0.0.0/4", o[0] & 0xf0)
}

fn cidr_except_policy() -> Policy {
    let b = ip_of(XB);
    policy("x", "allow-client-a-via-cidr-egress-rule", Sel::Pod("a")).egress(&format!(
        "[{{to: [{{ipBlock: {{cidr: {}, except: [{b}/32]}}}}]}}]",
        large_cidr(b)
    ))
}

#[test]
fn egress_cidr_except() {
    let t = Table::all().expect(XA, XB, false);
    run_case(
        "egress_cidr_except",
        vec![step(vec![cidr_except_policy()], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn egress_cidr_overlapping_except() {
    let b = ip_of(XB);
    // The same policy updated to allow x/b alone.
    let updated = policy("x", "allow-client-a-via-cidr-egress-rule", Sel::Pod("a"))
        .egress(&format!("[{{to: [{{ipBlock: {{cidr: {b}/32}}}}]}}]"));
    run_case(
        "egress_cidr_overlapping_except",
        vec![
            step(
                vec![cidr_except_policy()],
                vec![grid(Tcp, 80, Table::all().expect(XA, XB, false))],
            ),
            step(
                vec![updated],
                vec![grid(
                    Tcp,
                    80,
                    Table::all().all_egress(XA, false).expect(XA, XB, true),
                )],
            ),
        ],
    );
}

#[test]
fn ingress_and_egress_independent() {
    let egress = policy("x", "allow-egress-for-target", Sel::Pod("a")).egress("[{}]");
    let deny = policy("x", "deny-ingress-via-label-selector", Sel::Pod("a")).ingress("[]");
    run_case(
        "ingress_and_egress_independent",
        vec![
            step(vec![egress.clone()], vec![grid(Tcp, 80, Table::all())]),
            step(
                vec![egress, deny],
                vec![grid(Tcp, 80, Table::all().all_ingress(XA, false))],
            ),
        ],
    );
}

#[test]
fn sctp_is_not_tcp() {
    let deny = policy("x", "deny-ingress", Sel::All).ingress("[]");
    let sctp = policy("x", "allow-only-sctp-ingress-on-port-81", Sel::Pod("a"))
        .ingress("[{ports: [{port: 81, protocol: SCTP}]}]");
    let isolated = Table::all().peer(ANY, ns("x"), false);
    run_case(
        "sctp_is_not_tcp",
        vec![step(
            vec![deny, sctp],
            vec![
                grid(Tcp, 81, isolated.clone()),
                // Ours: SCTP 81 does reach x/a.
                grid(Sctp, 81, isolated.all_ingress(XA, true)),
            ],
        )],
    );
}

#[test]
fn sctp_policy_isolates_tcp() {
    let p = policy("x", "allow-only-sctp-ingress-on-port-80", Sel::Pod("a"))
        .ingress("[{ports: [{port: 80, protocol: SCTP}]}]");
    run_case(
        "sctp_policy_isolates_tcp",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 81, Table::all().all_ingress(XA, false)),
                grid(Tcp, 80, Table::all().all_ingress(XA, false)),
                grid(Sctp, 80, Table::all()),
                grid(Sctp, 81, Table::all().all_ingress(XA, false)),
            ],
        )],
    );
}

#[test]
fn udp_only_policy() {
    let p = policy("x", "allow-only-udp-ingress-on-port-81", Sel::Pod("a"))
        .ingress("[{ports: [{port: 81, protocol: UDP}]}]");
    run_case(
        "udp_only_policy",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 81, Table::all().all_ingress(XA, false)),
                grid(Udp, 81, Table::all()),
                grid(Udp, 80, Table::all().all_ingress(XA, false)),
            ],
        )],
    );
}

#[test]
fn default_namespace_label_match_labels() {
    let p = policy(
        "x",
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        Sel::Pod("a"),
    )
    .ingress("[{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]");
    let t = Table::all()
        .peer(ns("x"), pod("x", "a"), false)
        .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "default_namespace_label_match_labels",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn default_namespace_label_match_expressions() {
    let p = policy(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        Sel::Pod("a"),
    )
    .egress(
        "[{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, \
         operator: NotIn, values: [y]}]}}]}]",
    );
    let t = Table::all().peer(pod("x", "a"), ns("y"), false);
    run_case(
        "default_namespace_label_match_expressions",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn end_port_range() {
    let range = policy("x", "allow-80-81-from-y", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80, endPort: 81, protocol: TCP}]}]",
    );
    let only80 = policy("x", "allow-80-from-y", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80, protocol: TCP}]}]",
    );
    let egress = policy("y", "egress-81-82", Sel::Pod("b"))
        .egress("[{ports: [{port: 81, endPort: 82, protocol: TCP}]}]");
    let from_y =
        Table::all()
            .peer(ns("x"), pod("x", "a"), false)
            .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "end_port_range",
        vec![
            step(
                vec![range],
                vec![
                    grid(Tcp, 80, from_y.clone()),
                    grid(Tcp, 81, from_y.clone()),
                    grid(Udp, 80, Table::all().all_ingress(XA, false)),
                ],
            ),
            step(
                vec![only80],
                vec![
                    grid(Tcp, 80, from_y),
                    grid(Tcp, 81, Table::all().all_ingress(XA, false)),
                ],
            ),
            step(
                vec![egress],
                vec![
                    grid(Tcp, 80, Table::all().all_egress(YB, false)),
                    grid(Tcp, 81, Table::all()),
                ],
            ),
        ],
    );
}

#[test]
fn match_expressions_exists_and_does_not_exist() {
    let exists = policy("x", "from-labelled-pods-not-c", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists}]}, \
         podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}}]}]",
    );
    let does_not_exist = policy("x", "from-unlabelled-pods", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}}]}]",
    );
    let ns_does_not_exist = policy("x", "from-unlabelled-namespaces", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: DoesNotExist}]}}]}]",
    );
    run_case(
        "match_expressions_exists_and_does_not_exist",
        vec![
            step(
                vec![exists],
                vec![grid(
                    Tcp,
                    80,
                    Table::all().peer(
                        Peer {
                            ns: None,
                            pod: Some("c"),
                        },
                        pod("x", "a"),
                        false,
                    ),
                )],
            ),
            step(
                vec![does_not_exist],
                vec![grid(Tcp, 80, Table::all().all_ingress(XA, false))],
            ),
            step(
                vec![ns_does_not_exist],
                vec![grid(Tcp, 80, Table::all().all_ingress(XA, false))],
            ),
        ],
    );
}

#[test]
fn egress_to_namespace() {
    let plain = policy("x", "allow-egress-to-y", Sel::Pod("a"))
        .egress("[{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]");
    let with_dns = policy("x", "allow-egress-to-y-and-dns", Sel::Pod("a")).egress(
        "[{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}, \
         {to: [{namespaceSelector: {}}], ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]}]",
    );
    let t = Table::all()
        .all_egress(XA, false)
        .peer(pod("x", "a"), ns("y"), true);
    run_case(
        "egress_to_namespace",
        vec![
            step(
                vec![plain],
                vec![grid(Tcp, 80, t.clone()), grid(Udp, 81, t.clone())],
            ),
            step(
                vec![with_dns],
                vec![grid(Tcp, 80, t.clone()), grid(Udp, 81, t)],
            ),
        ],
    );
}

#[test]
fn empty_ingress_list_vs_empty_rule() {
    let empty_list = policy("y", "ingress-empty-list", Sel::Pod("b")).ingress("[]");
    let empty_rule = policy("y", "ingress-empty-rule", Sel::Pod("b")).ingress("[{}]");
    run_case(
        "empty_ingress_list_vs_empty_rule",
        vec![
            step(
                vec![empty_list.clone()],
                vec![grid(Tcp, 80, Table::all().all_ingress(YB, false))],
            ),
            step(vec![empty_rule.clone()], vec![grid(Tcp, 80, Table::all())]),
            // Both: rules add up, the empty rule admits everything.
            step(
                vec![empty_list, empty_rule],
                vec![grid(Tcp, 80, Table::all())],
            ),
        ],
    );
}

#[test]
fn egress_only_policy_types() {
    let egress_only = policy("z", "egress-only", Sel::Pod("b")).egress("[]");
    // No policyTypes, egress rules present: the API defaults to [Ingress, Egress], so zb is
    // isolated both ways, egress open on port 80 only.
    let defaulted = policy("z", "defaulted-types", Sel::Pod("b"))
        .egress("[{ports: [{port: 80}]}]")
        .types(None);
    run_case(
        "egress_only_policy_types",
        vec![
            step(
                vec![egress_only],
                vec![grid(Tcp, 80, Table::all().all_egress(ZB, false))],
            ),
            step(
                vec![defaulted],
                vec![
                    grid(Tcp, 80, Table::all().all_ingress(ZB, false)),
                    grid(
                        Tcp,
                        81,
                        Table::all().all_ingress(ZB, false).all_egress(ZB, false),
                    ),
                ],
            ),
        ],
    );
}

/// "should enforce updated policy" and the reverse of "should stop enforcing policies after
/// they are deleted", for connections that exist across the change: every TCP 81 connection
/// is opened (SYN, SYN-ACK) under the first generation, and the client's ACK is sent under
/// the second. kxdp judges an established flow again at its first packet after a table
/// change (README: NetworkPolicy), so the ACK must get what a new connection would.
#[test]
fn established_flows_rejudged() {
    let allow = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[{}]");
    let deny = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[]");
    let deny_all = policy("x", "deny-all", Sel::All).ingress("[]").egress("[]");
    let mut report = String::new();
    for (name, before, after, expect) in [
        (
            "updated_to_deny",
            vec![allow],
            vec![deny],
            Table::all().peer(ANY, ns("x"), false),
        ),
        (
            "policy_added",
            vec![],
            vec![deny_all.clone()],
            Table::all()
                .peer(ANY, ns("x"), false)
                .peer(ns("x"), ANY, false),
        ),
        ("policy_deleted", vec![deny_all], vec![], Table::all()),
    ] {
        let labels = Labels::default();
        let t1 = step_tables_gen(&format!("rejudge-{name}-1"), &before, &labels, 1);
        let t2 = step_tables_gen(&format!("rejudge-{name}-2"), &after, &labels, 2);
        let after_step = step(after, vec![]);
        for f in 0..9 {
            for t in 0..9 {
                if f == t {
                    continue;
                }
                // Only connections the first generation admits.
                let mut flows = [Flows::default(), Flows::default()];
                let Some(ack_cell) = open_then_ack(&t1, &t2, &mut flows, f, t) else {
                    continue;
                };
                let pair = format!("{} -> {}", pod_str(f), pod_str(t));
                let want = expect.0[f][t];
                match (&ack_cell, want) {
                    (Cell::Connected { .. }, true) => {}
                    (
                        Cell::Dropped {
                            hop,
                            reason,
                            policies,
                            direction,
                        },
                        false,
                    ) => {
                        if let Err(e) =
                            check_drop(&after_step, f, t, *hop, reason, policies, *direction)
                        {
                            let _ = writeln!(report, "[{name}] {pair}: ACK denied, but {e}");
                        }
                    }
                    (got, _) => {
                        let _ = writeln!(
                            report,
                            "[{name}] {pair}: the ACK after the change should be {}, got {}",
                            if want { "connected" } else { "denied" },
                            describe(got)
                        );
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "{report}");
}

/// Opens TCP 81 from `from` to `to`'s Service under `before` (None if it does not connect
/// or the SYN-ACK does not get back), then sends the client's ACK under `after`.
fn open_then_ack(
    before: &[Tables; 2],
    after: &[Tables; 2],
    flows: &mut [Flows; 2],
    from: usize,
    to: usize,
) -> Option<Cell> {
    let (_, _, from_node, from_ip) = PODS[from];
    let (_, _, to_node, to_ip) = PODS[to];
    let (fi, ti) = (node_index(from_node), node_index(to_node));
    let vip = service_ip(to);
    let syn = build(
        pod_mac(from_ip),
        gateway_mac(fi),
        from_ip,
        vip,
        Tcp,
        CLIENT_PORT,
        81,
        None,
    );
    let c = deliver(
        before,
        flows,
        fi,
        pod_port(&before[fi], from),
        &syn,
        to,
        (to_ip, 81),
    );
    if !matches!(c, Ok(Cell::Connected { .. })) {
        return None;
    }
    let syn_ack = build(
        pod_mac(to_ip),
        gateway_mac(ti),
        to_ip,
        from_ip,
        Tcp,
        81,
        CLIENT_PORT,
        Some(0x1000_0001),
    );
    let c = deliver(
        before,
        flows,
        ti,
        pod_port(&before[ti], to),
        &syn_ack,
        from,
        (from_ip, CLIENT_PORT),
    );
    if !matches!(c, Ok(Cell::Connected { .. })) {
        return None;
    }
    let ack = build(
        pod_mac(from_ip),
        gateway_mac(fi),
        from_ip,
        vip,
        Tcp,
        CLIENT_PORT,
        81,
        ACK_ONLY,
    );
    Some(
        deliver(
            after,
            flows,
            fi,
            pod_port(&after[fi], from),
            &ack,
            to,
            (to_ip, 81),
        )
        .unwrap_or_else(Cell::Other),
    )
}

// ---------------------------------------------------------------------------------------------
// The runner.

/// The Tables of both nodes for one step.
fn step_tables(name: &str, policies: &[Policy], labels: &Labels) -> [Tables; 2] {
    step_tables_gen(name, policies, labels, 1)
}

/// The same, as table generation `generation`.
fn step_tables_gen(
    name: &str,
    policies: &[Policy],
    labels: &Labels,
    generation: u64,
) -> [Tables; 2] {
    let dir = TempDir::new(name);
    dir.write("kxdp.yaml", KXDP_YAML);
    dir.write("00-model.yaml", &base_manifests(labels));
    let policies: String = policies.iter().map(Policy::yaml).collect();
    if !policies.is_empty() {
        dir.write("10-policies.yaml", &policies);
    }
    let state = load_state_dir(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(state.warnings.is_empty(), "{name}: {:?}", state.warnings);
    NODES.map(|(node, ..)| {
        let t = translate(&state.cluster, &state.config, node, generation)
            .unwrap_or_else(|e| panic!("{name} on {node}: {e}"));
        if !t.warnings.is_empty() {
            eprintln!("[{name}] translate warnings on {node}: {:?}", t.warnings);
        }
        t.tables
    })
}

fn run_case(name: &str, steps: Vec<Step>) {
    let mut report = String::new();
    let mut failed = 0;
    let mut total = 0;
    for (si, st) in steps.iter().enumerate() {
        let tables = step_tables(&format!("{name}-{si}"), &st.policies, &st.labels);
        for g in &st.grids {
            total += 1;
            if let Err(e) = check_grid(&tables, st, g) {
                failed += 1;
                let _ = writeln!(
                    report,
                    "=== [{name}] step {si} ({}), {} {}:\n{e}",
                    if st.policies.is_empty() {
                        "no policies".to_string()
                    } else {
                        st.policies
                            .iter()
                            .map(Policy::full_name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    g.proto.k8s(),
                    g.port
                );
            }
        }
    }
    assert!(failed == 0, "{failed} of {total} grids differ:\n{report}");
}

/// What happened to one probe.
#[derive(Debug, Clone)]
enum Cell {
    /// Reached the pod's port; the packet's source as it arrived.
    Connected { src: (Ipv4Addr, u16) },
    /// Dropped by `node` (the client's node is hop 1, the server's is hop 2 when they
    /// differ).
    Dropped {
        hop: u8,
        reason: &'static str,
        policies: Vec<String>,
        direction: Option<PolicyDirection>,
    },
    /// Anything else (delivered to the wrong place, passed, ...).
    Other(String),
}

fn check_grid(tables: &[Tables; 2], st: &Step, g: &Grid) -> Result<(), String> {
    let mut observed = Table::all();
    let mut marks = [[None; 9]; 9];
    let mut problems = Vec::new();
    for f in 0..9 {
        for t in 0..9 {
            let (cell, reply) = probe(tables, f, t, g.proto, g.port);
            let connected = matches!(cell, Cell::Connected { .. });
            observed.0[f][t] = connected;
            if f == t {
                continue; // ignoreLoopback
            }
            let want = g.expect.0[f][t];
            let pair = format!("{} -> {}", pod_str(f), pod_str(t));
            if want != connected {
                marks[f][t] = Some('!');
                problems.push(format!(
                    "{pair}: expected {}, got {}",
                    if want { "connected" } else { "denied" },
                    describe(&cell)
                ));
                continue;
            }
            match &cell {
                Cell::Connected { .. } => {
                    if let Some(Err(e)) = reply {
                        marks[f][t] = Some('r');
                        problems.push(format!("{pair}: connected, but the reply: {e}"));
                    }
                }
                Cell::Dropped {
                    hop,
                    reason,
                    policies,
                    direction,
                } => {
                    if let Err(e) = check_drop(st, f, t, *hop, reason, policies, *direction) {
                        marks[f][t] = Some('?');
                        problems.push(format!("{pair}: denied, but {e}"));
                    }
                }
                Cell::Other(_) => unreachable!("not connected"),
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut s = String::new();
    let _ = writeln!(s, "expected:\n{}", g.expect.render(&[[None; 9]; 9]));
    let _ = writeln!(s, "observed:\n{}", observed.render(&[[None; 9]; 9]));
    let _ = writeln!(
        s,
        "observed, '!' where it differs from expected, '?' a denial with the wrong \
         explanation, 'r' a reply that did not get back:\n{}",
        observed.render(&marks)
    );
    for p in problems {
        let _ = writeln!(s, "  {p}");
    }
    Err(s)
}

fn describe(cell: &Cell) -> String {
    match cell {
        Cell::Connected { .. } => "connected".into(),
        Cell::Dropped {
            hop,
            reason,
            policies,
            direction,
        } => format!(
            "dropped on the {} node: {reason} (policies {policies:?}, direction {direction:?})",
            if *hop == 1 { "client's" } else { "server's" }
        ),
        Cell::Other(what) => what.clone(),
    }
}

/// A denied probe must be `policy_denied`, explained by exactly the policies selecting the
/// judged pod in the judged direction, egress on the client's node and ingress on the
/// server's.
fn check_drop(
    st: &Step,
    from: usize,
    to: usize,
    hop: u8,
    reason: &str,
    policies: &[String],
    direction: Option<PolicyDirection>,
) -> Result<(), String> {
    if reason != "policy_denied" {
        return Err(format!("the reason is {reason}, not policy_denied"));
    }
    let Some(dir) = direction else {
        return Err(format!(
            "the observer was told no direction (policies {policies:?})"
        ));
    };
    let same_node = PODS[from].2 == PODS[to].2;
    let judged = match dir {
        PolicyDirection::Egress => {
            if hop != 1 {
                return Err("an egress denial on the server's node".into());
            }
            from
        }
        PolicyDirection::Ingress => {
            if hop == 1 && !same_node {
                return Err("an ingress denial on the client's node".into());
            }
            to
        }
    };
    let want: BTreeSet<String> = st
        .policies
        .iter()
        .filter(|p| p.selects(judged, &st.labels) && p.isolates(dir))
        .map(Policy::full_name)
        .collect();
    let got: BTreeSet<String> = policies.iter().cloned().collect();
    if want.is_empty() {
        return Err(format!(
            "{} of {} is not isolated by any policy, yet it was named ({got:?})",
            dir.as_str(),
            pod_str(judged)
        ));
    }
    if want != got {
        return Err(format!(
            "{} of {}: the observer named {got:?}, the policies selecting it are {want:?}",
            dir.as_str(),
            pod_str(judged)
        ));
    }
    Ok(())
}

/// Records what `process` reports about policy.
#[derive(Default)]
struct Recorder {
    policies: Vec<String>,
    direction: Option<PolicyDirection>,
    steps: Vec<&'static str>,
}

impl Observer for Recorder {
    fn policies(&mut self, names: &[&str]) {
        self.policies = names.iter().map(|n| n.to_string()).collect();
    }

    fn policy_direction(&mut self, direction: PolicyDirection) {
        self.direction = Some(direction);
    }

    fn step(&mut self, what: &'static str) {
        self.steps.push(what);
    }
}

const NOW: u64 = 1_000_000_000;

/// Processes `packet` arriving on `in_port` of node `node`.
fn run(
    tables: &Tables,
    flows: &mut Flows,
    in_port: PortId,
    packet: &[u8],
) -> (Verdict, Vec<u8>, Recorder) {
    let mut buf = vec![0u8; DEFAULT_HEADROOM + packet.len() + 256];
    let mut frame = Frame::load(&mut buf, DEFAULT_HEADROOM, packet).expect("buffer fits");
    let mut rec = Recorder::default();
    let verdict = process(tables, flows, NOW, in_port, &mut frame, &mut rec);
    (verdict, frame.data().to_vec(), rec)
}

const CLIENT_PORT: u16 = 40_123;

/// `build`'s `syn_ack` value asking for the client's bare ACK instead.
const ACK_ONLY: Option<u32> = Some(u32::MAX);

/// Probes `to`'s Service from `from`; for a connected TCP probe also sends the server's
/// SYN-ACK back and says whether it reached the client as the Service's answer.
fn probe(
    tables: &[Tables; 2],
    from: usize,
    to: usize,
    proto: Proto,
    port: u16,
) -> (Cell, Option<Result<(), String>>) {
    let mut flows = [Flows::default(), Flows::default()];
    let (_, _, from_node, from_ip) = PODS[from];
    let (to_ns, to_name, to_node, to_ip) = PODS[to];
    let (fi, ti) = (node_index(from_node), node_index(to_node));
    let vip = service_ip(to);
    let packet = build(
        pod_mac(from_ip),
        gateway_mac(fi),
        from_ip,
        vip,
        proto,
        CLIENT_PORT,
        port,
        None,
    );
    let src_port = pod_port(&tables[fi], from);
    let cell = deliver(tables, &mut flows, fi, src_port, &packet, to, (to_ip, port));
    let cell = match cell {
        Ok(cell) => cell,
        Err(e) => Cell::Other(e),
    };
    if !matches!(cell, Cell::Connected { .. }) || proto != Tcp || from == to {
        return (cell, None);
    }
    // The SYN-ACK, from the server's pod port, to the client's own address.
    let reply = build(
        pod_mac(to_ip),
        gateway_mac(ti),
        to_ip,
        from_ip,
        Tcp,
        port,
        CLIENT_PORT,
        Some(0x1000_0001),
    );
    let back = deliver(
        tables,
        &mut flows,
        ti,
        pod_port(&tables[ti], to),
        &reply,
        from,
        (from_ip, CLIENT_PORT),
    );
    let res = match back {
        Ok(Cell::Connected { src }) if src == (Ipv4Addr::from(vip), port) => Ok(()),
        Ok(Cell::Connected { src }) => Err(format!(
            "the SYN-ACK reached the client from {}:{}, not from the Service {}:{port}",
            src.0,
            src.1,
            Ipv4Addr::from(vip)
        )),
        Ok(other) => Err(format!(
            "SYN-ACK from {to_ns}/{to_name}: {}",
            describe(&other)
        )),
        Err(e) => Err(e),
    };
    (cell, Some(res))
}

/// Sends `packet` in on `in_port` of node `node`; follows it over the overlay; it
/// connects when it leaves on pod `to`'s port addressed to `want_dst`.
fn deliver(
    tables: &[Tables; 2],
    flows: &mut [Flows; 2],
    node: usize,
    in_port: PortId,
    packet: &[u8],
    to: usize,
    want_dst: ([u8; 4], u16),
) -> Result<Cell, String> {
    let (v, out, rec) = run(&tables[node], &mut flows[node], in_port, packet);
    let (hop, v, out, rec, at) = match v {
        Verdict::Forward(p) if p == PortId::UPLINK => {
            let other = 1 - node;
            let dst_node = PODS[to].2;
            if NODES[other].0 != dst_node {
                return Ok(Cell::Other(format!(
                    "sent over the uplink to {}, but {} lives on {}",
                    outer_dst(&out),
                    pod_str(to),
                    dst_node
                )));
            }
            let (v2, out2, rec2) = run(&tables[other], &mut flows[other], PortId::UPLINK, &out);
            (2, v2, out2, rec2, other)
        }
        _ => (1, v, out, rec, node),
    };
    match v {
        Verdict::Forward(p) => {
            let want_port = tables[at]
                .port_by_name(&format!("pod-{}-{}", PODS[to].0, PODS[to].1))
                .ok_or_else(|| format!("{} has no port on {}", pod_str(to), NODES[at].0))?;
            if p != want_port {
                return Ok(Cell::Other(format!(
                    "forwarded out of {p:?} on {}, not {}'s port (steps {:?})",
                    NODES[at].0,
                    pod_str(to),
                    rec.steps
                )));
            }
            let (src, dst) = endpoints(&out)?;
            if dst != (Ipv4Addr::from(want_dst.0), want_dst.1) {
                return Ok(Cell::Other(format!(
                    "reached {}'s port addressed to {}:{}",
                    pod_str(to),
                    dst.0,
                    dst.1
                )));
            }
            Ok(Cell::Connected { src })
        }
        Verdict::Drop(reason) => Ok(Cell::Dropped {
            hop,
            reason: reason.as_str(),
            policies: rec.policies,
            direction: rec.direction,
        }),
        Verdict::Pass => Ok(Cell::Other(format!(
            "passed to the kernel on {} (steps {:?})",
            NODES[at].0, rec.steps
        ))),
    }
}

/// node-a's host-network client reaches pod `to` (on node-a) through its Service on TCP 80.
fn host_probe(tables: &[Tables; 2], to: usize) -> Result<(), String> {
    let mut flows = [Flows::default(), Flows::default()];
    let (_, _, node, to_ip) = PODS[to];
    let ni = node_index(node);
    let packet = build(
        HOST_MAC.0,
        gateway_mac(ni),
        NODES[ni].1,
        service_ip(to),
        Tcp,
        CLIENT_PORT,
        80,
        None,
    );
    match deliver(
        tables,
        &mut flows,
        ni,
        PortId::HOST,
        &packet,
        to,
        (to_ip, 80),
    )? {
        Cell::Connected { .. } => Ok(()),
        other => Err(describe(&other)),
    }
}

fn pod_port(tables: &Tables, i: usize) -> PortId {
    tables
        .port_by_name(&format!("pod-{}-{}", PODS[i].0, PODS[i].1))
        .unwrap_or_else(|| panic!("no port for {}", pod_str(i)))
}

fn gateway_mac(node: usize) -> [u8; 6] {
    pod_mac(NODES[node].4)
}

fn outer_dst(frame: &[u8]) -> String {
    match SlicedPacket::from_ethernet(frame) {
        Ok(SlicedPacket {
            net: Some(NetSlice::Ipv4(ip)),
            ..
        }) => Ipv4Addr::from(ip.header().destination()).to_string(),
        _ => "?".into(),
    }
}

/// An address and port.
type Addr = (Ipv4Addr, u16);

/// The (source, destination) address and port of a frame leaving on a pod port.
fn endpoints(frame: &[u8]) -> Result<(Addr, Addr), String> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| format!("output: {e}"))?;
    if !matches!(p.link, Some(LinkSlice::Ethernet2(_))) {
        return Err("output: no Ethernet header".into());
    }
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return Err("output: not IPv4".into());
    };
    let h = ip.header();
    let (sport, dport) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        None if ip.payload_ip_number() == IpNumber::SCTP => {
            let l4 = ip.payload().payload;
            if l4.len() < 4 {
                return Err("output: short SCTP".into());
            }
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        }
        other => return Err(format!("output: transport {other:?}")),
    };
    Ok((
        (Ipv4Addr::from(h.source()), sport),
        (Ipv4Addr::from(h.destination()), dport),
    ))
}

/// A first packet (TCP SYN, UDP datagram, SCTP INIT), or with `syn_ack` a TCP SYN-ACK
/// acknowledging that number ([`ACK_ONLY`]: the client's ACK completing the handshake).
#[allow(clippy::too_many_arguments)]
fn build(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: Proto,
    sport: u16,
    dport: u16,
    syn_ack: Option<u32>,
) -> Vec<u8> {
    let ipv4 = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src, dst, 64);
    let mut out = Vec::new();
    match (proto, syn_ack) {
        (Tcp, None) => ipv4
            .tcp(sport, dport, 0x1000_0000, 64_240)
            .syn()
            .write(&mut out, &[])
            .expect("TCP builds"),
        (Tcp, ACK_ONLY) => ipv4
            .tcp(sport, dport, 0x1000_0001, 64_240)
            .ack(0x2000_0001)
            .write(&mut out, &[])
            .expect("TCP builds"),
        (Tcp, Some(ack)) => ipv4
            .tcp(sport, dport, 0x2000_0000, 64_240)
            .syn()
            .ack(ack)
            .write(&mut out, &[])
            .expect("TCP builds"),
        (Udp, _) => ipv4
            .udp(sport, dport)
            .write(&mut out, b"probe")
            .expect("UDP builds"),
        (Sctp, _) => ipv4
            .write(&mut out, IpNumber::SCTP, &sctp_init(sport, dport))
            .expect("SCTP builds"),
    }
    out
}
