//! NetworkPolicy truth tables, after upstream's e2e model.
//!
//! Upstream's NetworkPolicy e2e tests (kubernetes/kubernetes `test/e2e/network/netpol/`:
//! `network_policy.go`, with the model of `model.go`, the expectations of
//! `reachability.go` and the grids of `truthtable.go`) run three namespaces `x`, `y`, `z`
//! with pods `a`, `b`, `c` each, probe every pod from every pod, and compare the observed
//! connectivity matrix with a truth table written per test: start from "everything
//! connects", then apply the test's expectations (`ExpectPeer`, `ExpectAllIngress`,
//! `ExpectAllEgress`, `Expect`). This module asks kxdp the same questions, end to end, with
//! the same model (built with the suites' shared `probe::Model`, probed with `grid`):
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
mod ours;
mod upstream;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::LazyLock;

use datapath::conntrack::Flows;
use datapath::policy::PolicyDirection;
use datapath::tables::{HOST_MAC, PortId};
use testkit::frames::Headers;

use crate::grid::{ANY, GridCheck, Table, Via, check_grid, ns, pod};
use crate::probe::Proto::{self, Sctp, Tcp, Udp};
use crate::probe::{
    CLIENT_PORT, Cluster, Dest, Model, ModelPod, NODES, Outcome, Segment, deliver, frame,
    gateway_mac, node_index,
};

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

/// The model without a step's extra labels: what the truth tables are laid over (only
/// its pods' names and order matter there).
static MODEL: LazyLock<Model> = LazyLock::new(|| model(&Labels::default()));

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

/// The ClusterIP of pod `i`'s Service.
fn service_ip(i: usize) -> [u8; 4] {
    [10, 96, 0, 100 + i as u8]
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

/// Namespaces labelled `ns: <name>` (the `kubernetes.io/metadata.name` label is left to
/// the implied default), pods labelled `pod: <name>` serving 80 and 81 over each protocol
/// (`serve-<port>-<protocol>`), plus `extra`.
fn model(extra: &Labels) -> Model {
    let namespaces = NAMESPACES
        .iter()
        .map(|&ns| {
            let mut labels = BTreeMap::from([("ns".to_string(), ns.to_string())]);
            for (n, k, v) in &extra.namespaces {
                if *n == ns {
                    labels.insert(k.to_string(), v.to_string());
                }
            }
            (ns.to_string(), labels)
        })
        .collect();
    let pods = PODS
        .iter()
        .map(|&(ns, name, node, ip)| {
            let mut labels = BTreeMap::from([("pod".to_string(), name.to_string())]);
            for (p, k, v) in &extra.pods {
                if *p == format!("{ns}/{name}") {
                    labels.insert(k.to_string(), v.to_string());
                }
            }
            let ports = PROTOS
                .iter()
                .flat_map(|&proto| {
                    PORTS.map(|port| (format!("serve-{port}-{}", proto.lower()), port, proto))
                })
                .collect();
            ModelPod {
                ns: ns.to_string(),
                name: name.to_string(),
                labels,
                ports,
                node: node_index(node),
                ip,
            }
        })
        .collect();
    Model { namespaces, pods }
}

/// Each pod's ClusterIP Service `s-<ns>-<pod>` (ports 80 and 81 of each protocol, target
/// the same number) and its EndpointSlice.
fn services() -> String {
    let mut s = String::new();
    for (i, (ns, name, node, ip)) in PODS.iter().enumerate() {
        let ip = Ipv4Addr::from(*ip);
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

// ---------------------------------------------------------------------------------------------
// The runner.

/// Both nodes' tables for one step, as table generation `generation`.
fn step_cluster(name: &str, policies: &[Policy], labels: &Labels, generation: u64) -> Cluster {
    let mut files = vec![
        ("kxdp.yaml".to_string(), KXDP_YAML.to_string()),
        ("05-services.yaml".to_string(), services()),
    ];
    let policies: String = policies.iter().map(Policy::yaml).collect();
    if !policies.is_empty() {
        files.push(("10-policies.yaml".to_string(), policies));
    }
    Cluster::new(name, model(labels), &files, generation)
}

/// The policies a denial of pod `judged` in `dir` must name in step `st`: exactly those
/// selecting it that isolate that direction.
fn explain(st: &Step, judged: usize, dir: PolicyDirection) -> Vec<String> {
    st.policies
        .iter()
        .filter(|p| p.selects(judged, &st.labels) && p.isolates(dir))
        .map(Policy::full_name)
        .collect()
}

fn run_case(name: &str, steps: Vec<Step>) {
    let mut report = String::new();
    let mut failed = 0;
    let mut total = 0;
    for (si, st) in steps.iter().enumerate() {
        let cluster = step_cluster(&format!("{name}-{si}"), &st.policies, &st.labels, 1);
        for g in &st.grids {
            total += 1;
            let check = GridCheck {
                proto: g.proto,
                port: g.port,
                via: Via::Service(&service_ip),
                expect: &g.expect,
                explain: Some(&|judged, dir| explain(st, judged, dir)),
            };
            if let Err(e) = check_grid(&cluster, &check) {
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

/// node-a's host-network client reaches pod `to` (on node-a) through its Service on TCP 80.
fn host_probe(c: &Cluster, to: usize) -> Result<(), String> {
    let mut flows = [Flows::default(), Flows::default()];
    let (_, _, node, to_ip) = PODS[to];
    let ni = node_index(node);
    let packet = frame(
        Headers::new(HOST_MAC.0, gateway_mac(ni), NODES[ni].ip, service_ip(to)),
        Tcp,
        CLIENT_PORT,
        80,
        Segment::First,
    );
    let want = (Ipv4Addr::from(to_ip), 80);
    match deliver(
        c,
        &mut flows,
        ni,
        PortId::HOST,
        &packet,
        Dest::Pod(to),
        want,
    ) {
        Outcome::Delivered { .. } => Ok(()),
        other => Err(other.describe()),
    }
}
