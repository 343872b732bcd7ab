//! kxdp's NetworkPolicy on the cluster model of kubernetes-sigs/network-policy-api's
//! conformance suite.
//!
//! The fixtures live in `../shared/fixtures/network-policy-api` beside the checkout
//! (SOURCES.md there names the upstream commit). Without them the tests say they skip, unless
//! `CI=true`, where missing fixtures are a failure.
//!
//! The model comes from `conformance/base/manifests.yaml`, parsed as generic YAML: its
//! Namespaces as written (`network-policy-conformance-<house>`, labelled
//! `conformance-house=<house>`), and for each StatefulSet `replicas` Pods `<name>-<i>` with the
//! template's labels and its containers' declared ports. Deliberate departures from the file:
//! - Addresses and placement are ours: replica 0 runs on node-a, replica 1 on node-b, so every
//!   pair of houses is probed both within a node and across the VXLAN overlay. The n-th pod of
//!   the file gets 10.244.1.(10+n) on node-a or 10.244.2.(10+n) on node-b.
//! - The `centaur` StatefulSet (namespace forbidden-forrest) is `hostNetwork: true` and its
//!   ports are Go-template placeholders: its pods would carry their node's address, not a pod
//!   address, so they are not pods of the overlay and are left out (the namespace stays).
//! - agnhost serves TCP 80 and 8080, UDP 53 and 5353 and SCTP 9003 and 9005 in every pod, but
//!   the manifests declare only `web` (TCP 80) and `dns` (UDP 53) as container ports; we
//!   declare the same. kxdp delivers to a pod whatever the port, and the policy below names no
//!   port, so all six are probed.
//!
//! The policy: the one networking.k8s.io/v1 NetworkPolicy of
//! `conformance/base/api_integration/standard-anp-np-banp.yaml`,
//! `network-policy-conformance-gryffindor/allow-gress-from-to-slytherin-to-gryffindor`, taken
//! from that multi-document file as written. The file's two ClusterNetworkPolicy documents
//! (tiers Admin and Baseline) belong to a later tier and are left out, so what is asserted here
//! is the NetworkPolicy-only reading, not upstream's expectation for the whole file:
//! - `podSelector:` (null, i.e. empty) selects every gryffindor pod, for Ingress and Egress;
//!   so gryffindor pods are isolated both ways.
//! - Ingress: one rule, from namespaces `conformance-house=slytherin`, no `ports`: every port
//!   and protocol. Egress: the same, to slytherin.
//! - So slytherin <-> gryffindor is allowed both ways; hufflepuff and ravenclaw -> gryffindor
//!   are denied on ingress (on the gryffindor pod's node); gryffindor -> hufflepuff, ravenclaw
//!   and another gryffindor pod are denied on egress (on the client's node, where the flow is
//!   judged first); every drop is `policy_denied` naming the policy. Traffic among the other
//!   houses is not selected by anything and is allowed.
//! - Without the policy, every probe is allowed.
//!
//! Probes go pod -> pod address (a TCP SYN, a UDP datagram or an SCTP INIT, built with
//! etherparse) through `datapath::process` on the source pod's port of its node and, when that
//! node tunnels the packet, through the uplink of the destination's node. A pod never probes
//! itself (that never leaves the pod).

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use support::{PolicyRecorder, TempDir, pod_mac, sctp_init, step, tables_for};

use datapath::tables::{PortId, Tables};
use datapath::{DropReason, Verdict};
use etherparse::{IpNumber, PacketBuilder};
use serde_yaml::Value;

const POLICY: &str =
    "network-policy-conformance-gryffindor/allow-gress-from-to-slytherin-to-gryffindor";

// ---------------------------------------------------------------------------------------------
// The fixtures.

fn fixtures_dir() -> Option<PathBuf> {
    let dir = testkit::paths::shared_fixtures().join("network-policy-api");
    if dir.join("conformance/base/manifests.yaml").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: CI must have the network-policy-api fixtures",
            dir.display()
        );
    }
    eprintln!(
        "skipping: {} not found (the network-policy-api fixtures live beside the checkout)",
        dir.display()
    );
    None
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of a multi-document YAML file, each as its text and its generic value.
fn documents(text: &str) -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut flush = |cur: &mut String| {
        let value: Value = serde_yaml::from_str(cur).unwrap_or_else(|e| panic!("{e}:\n{cur}"));
        if !value.is_null() {
            docs.push((std::mem::take(cur), value));
        }
        cur.clear();
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&mut cur);
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    flush(&mut cur);
    docs
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    match v {
        Value::Null => BTreeMap::new(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    str_of(k, "label").to_string(),
                    str_of(v, "label").to_string(),
                )
            })
            .collect(),
        other => panic!("labels: {other:?}"),
    }
}

#[derive(Debug, Clone)]
struct ModelPod {
    ns: String,
    name: String,
    labels: BTreeMap<String, String>,
    /// (name, port, protocol) of every declared container port.
    ports: Vec<(String, u16, String)>,
    node: &'static str,
    ip: [u8; 4],
}

impl ModelPod {
    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn house(&self) -> &str {
        &self.labels["conformance-house"]
    }
}

struct Model {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pods: Vec<ModelPod>,
}

/// manifests.yaml as our model (see the module docs).
fn load_model(dir: &Path) -> Model {
    let docs = documents(&read(&dir.join("conformance/base/manifests.yaml")));
    let mut namespaces = BTreeMap::new();
    let mut pods = Vec::new();
    let mut skipped = Vec::new();
    for (_, doc) in &docs {
        let kind = str_of(&doc["kind"], "kind");
        let meta = &doc["metadata"];
        match kind {
            "Namespace" => {
                namespaces.insert(
                    str_of(&meta["name"], "name").to_string(),
                    labels_of(&meta["labels"]),
                );
            }
            "StatefulSet" => {
                let name = str_of(&meta["name"], "name");
                let ns = str_of(&meta["namespace"], "namespace");
                let spec = &doc["spec"];
                let template = &spec["template"];
                if template["spec"]["hostNetwork"].as_bool() == Some(true) {
                    skipped.push(name.to_string());
                    continue;
                }
                let labels = labels_of(&template["metadata"]["labels"]);
                let mut ports = Vec::new();
                for c in template["spec"]["containers"]
                    .as_sequence()
                    .expect("containers")
                {
                    for p in c["ports"].as_sequence().map(Vec::as_slice).unwrap_or(&[]) {
                        let port = p["containerPort"].as_u64().expect("containerPort");
                        ports.push((
                            str_of(&p["name"], "port name").to_string(),
                            u16::try_from(port).expect("a port"),
                            p["protocol"].as_str().unwrap_or("TCP").to_string(),
                        ));
                    }
                }
                let replicas = spec["replicas"].as_u64().expect("replicas");
                for i in 0..replicas {
                    let n = u8::try_from(pods.len()).expect("a few pods");
                    let (node, ip) = if i % 2 == 0 {
                        ("node-a", [10, 244, 1, 10 + n])
                    } else {
                        ("node-b", [10, 244, 2, 10 + n])
                    };
                    pods.push(ModelPod {
                        ns: ns.to_string(),
                        name: format!("{name}-{i}"),
                        labels: labels.clone(),
                        ports: ports.clone(),
                        node,
                        ip,
                    });
                }
            }
            other => panic!("manifests.yaml: unexpected kind {other}"),
        }
    }
    // What SOURCES.md describes.
    assert_eq!(namespaces.len(), 5, "5 namespaces");
    for (ns, labels) in &namespaces {
        let house = ns
            .strip_prefix("network-policy-conformance-")
            .expect("namespace prefix");
        assert_eq!(
            labels.get("conformance-house").map(String::as_str),
            Some(house)
        );
    }
    assert_eq!(skipped, ["centaur"], "the one hostNetwork StatefulSet");
    let names: Vec<String> = pods.iter().map(ModelPod::key).collect();
    assert_eq!(
        names,
        [
            "network-policy-conformance-gryffindor/harry-potter-0",
            "network-policy-conformance-gryffindor/harry-potter-1",
            "network-policy-conformance-slytherin/draco-malfoy-0",
            "network-policy-conformance-slytherin/draco-malfoy-1",
            "network-policy-conformance-hufflepuff/cedric-diggory-0",
            "network-policy-conformance-hufflepuff/cedric-diggory-1",
            "network-policy-conformance-ravenclaw/luna-lovegood-0",
            "network-policy-conformance-ravenclaw/luna-lovegood-1",
        ]
    );
    for p in &pods {
        assert_eq!(
            p.ports,
            [
                ("web".to_string(), 80, "TCP".to_string()),
                ("dns".to_string(), 53, "UDP".to_string())
            ],
            "{}",
            p.key()
        );
    }
    Model { namespaces, pods }
}

/// The one networking.k8s.io/v1 NetworkPolicy of standard-anp-np-banp.yaml, as written.
fn the_network_policy(dir: &Path) -> (String, String) {
    let docs = documents(&read(
        &dir.join("conformance/base/api_integration/standard-anp-np-banp.yaml"),
    ));
    let mut policies = Vec::new();
    let mut ignored = 0;
    for (text, doc) in docs {
        match (
            str_of(&doc["apiVersion"], "apiVersion"),
            str_of(&doc["kind"], "kind"),
        ) {
            ("networking.k8s.io/v1", "NetworkPolicy") => policies.push((text, doc)),
            ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy") => ignored += 1,
            other => panic!("standard-anp-np-banp.yaml: unexpected {other:?}"),
        }
    }
    assert_eq!(ignored, 2, "the Admin and Baseline ClusterNetworkPolicies");
    assert_eq!(policies.len(), 1, "one NetworkPolicy");
    let (text, doc) = policies.pop().expect("one");
    assert_eq!(
        format!(
            "{}/{}",
            str_of(&doc["metadata"]["namespace"], "namespace"),
            str_of(&doc["metadata"]["name"], "name")
        ),
        POLICY
    );
    ("standard-anp-np-banp-networkpolicy.yaml".into(), text)
}

// ---------------------------------------------------------------------------------------------
// The cluster as kxdp reads it.

const NODES: [(&str, &str, &str, &str); 2] = [
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
];

fn labels_yaml(labels: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", items.join(", "))
}

fn ip_str(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

fn manifests(model: &Model) -> String {
    let mut s = String::new();
    for (name, ip, cidr, mac) in NODES {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    \
             kxdp.io/underlay-mac: \"{mac}\"\nspec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\n\
             status:\n  addresses:\n    - {{type: InternalIP, address: {ip}}}\n"
        );
    }
    for (ns, labels) in &model.namespaces {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {}\n",
            labels_yaml(labels)
        );
    }
    for p in &model.pods {
        let ip = ip_str(p.ip);
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  \
             labels: {}\nspec:\n  nodeName: {}\n  containers:\n    - name: agnhost\n      \
             image: registry.k8s.io/e2e-test-images/agnhost:2.45\n      ports:\n",
            p.name,
            p.ns,
            labels_yaml(&p.labels),
            p.node
        );
        for (name, port, proto) in &p.ports {
            let _ = writeln!(
                s,
                "        - {{name: {name}, containerPort: {port}, protocol: {proto}}}"
            );
        }
        let _ = write!(
            s,
            "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n"
        );
    }
    s
}

struct Cluster {
    model: Model,
    node_a: Tables,
    node_b: Tables,
}

impl Cluster {
    fn new(tag: &str, model: Model, policies: &[(String, String)]) -> Cluster {
        let dir = TempDir::new(tag);
        dir.write("00-model.yaml", &manifests(&model));
        for (name, text) in policies {
            dir.write(&format!("50-{name}"), text);
        }
        let [node_a, node_b]: [Tables; 2] = tables_for(dir.path(), tag, &["node-a", "node-b"], 1)
            .try_into()
            .unwrap_or_else(|_| unreachable!("two nodes asked, two tables built"));
        Cluster {
            node_a,
            node_b,
            model,
        }
    }

    fn tables(&self, node: &str) -> &Tables {
        if node == "node-a" {
            &self.node_a
        } else {
            &self.node_b
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Probing.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

/// The six (protocol, port)s every pod serves.
const PROBES: [(Proto, u16); 6] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 8080),
    (Proto::Udp, 53),
    (Proto::Udp, 5353),
    (Proto::Sctp, 9003),
    (Proto::Sctp, 9005),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allowed,
    /// `policy_denied`, with the side and the policies the verdict named.
    Denied(&'static str, Vec<String>),
    Other(String),
}

fn gateway_mac(node: &str) -> [u8; 6] {
    if node == "node-a" {
        [0x0a, 0x58, 10, 244, 1, 1]
    } else {
        [0x0a, 0x58, 10, 244, 2, 1]
    }
}

/// A first packet: TCP SYN, a UDP datagram, or an SCTP INIT.
fn first_packet(src: &ModelPod, dst: [u8; 4], proto: Proto, sport: u16, dport: u16) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(pod_mac(src.ip), gateway_mac(src.node)).ipv4(src.ip, dst, 64);
    let mut out = Vec::new();
    match proto {
        Proto::Tcp => ip
            .tcp(sport, dport, 1000, 64_240)
            .syn()
            .write(&mut out, &[])
            .expect("tcp"),
        Proto::Udp => ip.udp(sport, dport).write(&mut out, b"probe").expect("udp"),
        Proto::Sctp => ip
            .write(&mut out, IpNumber::SCTP, &sctp_init(sport, dport))
            .expect("sctp"),
    }
    out
}

fn judged(verdict: Verdict, rec: PolicyRecorder, delivered: impl Fn(PortId) -> bool) -> Outcome {
    match verdict {
        Verdict::Forward(p) if delivered(p) => Outcome::Allowed,
        Verdict::Drop(DropReason::PolicyDenied) => {
            Outcome::Denied(rec.direction.unwrap_or("(none)"), rec.policies)
        }
        other => Outcome::Other(format!("{other:?}")),
    }
}

/// Pod `from` -> pod `to` on `proto`/`port`: the source node, then (when tunnelled) the
/// destination node's uplink.
fn probe(c: &Cluster, from: &ModelPod, to: &ModelPod, proto: Proto, port: u16) -> Outcome {
    let port_of = |t: &Tables, p: &ModelPod| {
        t.port_by_name(&format!("pod-{}-{}", p.ns, p.name))
            .unwrap_or_else(|| panic!("{}: no port on {}", p.key(), p.node))
    };
    let tables = c.tables(from.node);
    let packet = first_packet(from, to.ip, proto, 40_000, port);
    let (verdict, out, rec) = step(tables, port_of(tables, from), &packet);
    if to.node == from.node {
        return judged(verdict, rec, |p| p == port_of(tables, to));
    }
    if verdict != Verdict::Forward(PortId::UPLINK) {
        return judged(verdict, rec, |_| false);
    }
    let remote = c.tables(to.node);
    let (verdict, _, rec) = step(remote, PortId::UPLINK, &out);
    judged(verdict, rec, |p| p == port_of(remote, to))
}

/// Probes every ordered pair of distinct pods on the six ports; returns the number of
/// probes and a line per probe whose outcome is not `expected(src house, dst house)`.
fn probe_all(c: &Cluster, expected: impl Fn(&str, &str) -> Outcome) -> (usize, Vec<String>) {
    let mut probes = 0;
    let mut failures = Vec::new();
    for from in &c.model.pods {
        for to in &c.model.pods {
            if from.key() == to.key() {
                continue;
            }
            let want = expected(from.house(), to.house());
            for (proto, port) in PROBES {
                probes += 1;
                let got = probe(c, from, to, proto, port);
                if got != want {
                    failures.push(format!(
                        "{} ({}) -> {} ({}) {proto:?} {port}: expected {want:?}, got {got:?}",
                        from.key(),
                        from.node,
                        to.key(),
                        to.node
                    ));
                }
            }
        }
    }
    (probes, failures)
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn without_the_policy_everything_is_allowed() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let c = Cluster::new("npapi-none", load_model(&dir), &[]);
    let (probes, failures) = probe_all(&c, |_, _| Outcome::Allowed);
    eprintln!("network-policy-api model, no policy: {probes} probes");
    assert_eq!(probes, 8 * 7 * 6);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn networkpolicy_of_standard_anp_np_banp_alone() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let c = Cluster::new("npapi-np", load_model(&dir), &[the_network_policy(&dir)]);
    // The NetworkPolicy-only reading of the module docs.
    let denied = |direction| Outcome::Denied(direction, vec![POLICY.to_string()]);
    let (probes, failures) = probe_all(&c, |src, dst| {
        if src == "gryffindor" && dst != "slytherin" {
            denied("egress")
        } else if dst == "gryffindor" && src != "slytherin" {
            denied("ingress")
        } else {
            Outcome::Allowed
        }
    });
    eprintln!("network-policy-api model, {POLICY}: {probes} probes");
    assert_eq!(probes, 8 * 7 * 6);
    assert!(
        failures.is_empty(),
        "{} of {probes} probes differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
