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
//! node tunnels the packet, through the uplink of the destination's node. A pod addressing
//! itself (which never leaves the pod in a cluster) is not compared; kxdp must refuse it as
//! a loop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use datapath::policy::PolicyDirection;
use serde_yaml::Value;

use crate::grid::{Expect, GridCheck, Table, Via, check_grid};
use crate::probe::{Cluster, Model, ModelPod, Proto};

const POLICY: &str =
    "network-policy-conformance-gryffindor/allow-gress-from-to-slytherin-to-gryffindor";

// ---------------------------------------------------------------------------------------------
// The fixtures.

fn fixtures_dir() -> Option<PathBuf> {
    testkit::paths::shared_fixture("network-policy-api", "conformance/base/manifests.yaml")
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

fn proto_of(name: &str) -> Proto {
    match name {
        "TCP" => Proto::Tcp,
        "UDP" => Proto::Udp,
        "SCTP" => Proto::Sctp,
        other => panic!("protocol {other}"),
    }
}

fn house(p: &ModelPod) -> &str {
    &p.labels["conformance-house"]
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
                            proto_of(p["protocol"].as_str().unwrap_or("TCP")),
                        ));
                    }
                }
                let replicas = spec["replicas"].as_u64().expect("replicas");
                for i in 0..replicas {
                    let n = u8::try_from(pods.len()).expect("a few pods");
                    let (node, ip) = if i % 2 == 0 {
                        (0, [10, 244, 1, 10 + n])
                    } else {
                        (1, [10, 244, 2, 10 + n])
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
                ("web".to_string(), 80, Proto::Tcp),
                ("dns".to_string(), 53, Proto::Udp)
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
// Probing.

/// The six (protocol, port)s every pod serves.
const PROBES: [(Proto, u16); 6] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 8080),
    (Proto::Udp, 53),
    (Proto::Udp, 5353),
    (Proto::Sctp, 9003),
    (Proto::Sctp, 9005),
];

/// Both nodes' tables for the model plus `policies` (file name, YAML).
fn cluster(tag: &str, model: Model, policies: &[(String, String)]) -> Cluster {
    let files: Vec<(String, String)> = policies
        .iter()
        .map(|(name, text)| (format!("50-{name}"), text.clone()))
        .collect();
    Cluster::new(tag, model, &files, 1)
}

/// Probes every ordered pair of distinct pods, to the pod's address, on the six ports,
/// expecting `expected(src house, dst house)`; a denial must name what `explain` gives for
/// the judged pod. Returns the number of probes compared, and a report per differing grid.
fn probe_all(
    c: &Cluster,
    expected: impl Fn(&str, &str) -> Expect,
    explain: Option<&dyn Fn(usize, PolicyDirection) -> Vec<String>>,
) -> (usize, String) {
    let expect = Table::from_fn(&c.model, |from, to| Some(expected(house(from), house(to))));
    let mut probes = 0;
    let mut report = String::new();
    for (proto, port) in PROBES {
        let check = GridCheck {
            proto,
            port,
            via: Via::PodAddress,
            expect: &expect,
            explain,
        };
        match check_grid(c, &check) {
            Ok(n) => probes += n,
            Err(e) => {
                let _ = write!(report, "{proto:?} {port}:\n{e}\n");
            }
        }
    }
    (probes, report)
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn without_the_policy_everything_is_allowed() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let c = cluster("npapi-none", load_model(&dir), &[]);
    let (probes, report) = probe_all(&c, |_, _| Expect::Connected, None);
    assert!(report.is_empty(), "{report}");
    eprintln!("network-policy-api model, no policy: {probes} probes");
    assert_eq!(probes, 8 * 7 * 6);
}

#[test]
fn networkpolicy_of_standard_anp_np_banp_alone() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let c = cluster("npapi-np", load_model(&dir), &[the_network_policy(&dir)]);
    // The NetworkPolicy-only reading of the module docs: gryffindor pods are isolated both
    // ways by the one policy, which admits slytherin alone.
    let (probes, report) = probe_all(
        &c,
        |src, dst| {
            if src == "gryffindor" && dst != "slytherin" {
                Expect::DeniedOn(PolicyDirection::Egress)
            } else if dst == "gryffindor" && src != "slytherin" {
                Expect::DeniedOn(PolicyDirection::Ingress)
            } else {
                Expect::Connected
            }
        },
        Some(&|judged, _| {
            if house(&c.model.pods[judged]) == "gryffindor" {
                vec![POLICY.to_string()]
            } else {
                Vec::new()
            }
        }),
    );
    assert!(report.is_empty(), "{report}");
    eprintln!("network-policy-api model, {POLICY}: {probes} probes");
    assert_eq!(probes, 8 * 7 * 6);
}
