//! cyclonus as a second, independent oracle for kxdp's NetworkPolicy.
//!
//! cyclonus (github.com/mattfenwick/cyclonus, MIT) is a NetworkPolicy simulator; its
//! `examples/` hold a probe model and the grids it computed for the `simple-example`
//! policies. This file builds that model as a kxdp cluster, lets the real code decide
//! (`model::state::load_state_dir` -> `model::translate::translate` per node ->
//! `datapath::process` on a real frame), and compares every probed cell with cyclonus's
//! `Combined` grid. Nothing here evaluates a policy itself: the expected answers are
//! cyclonus's, or (for the policy files cyclonus has no output for) what the file's name and
//! contents say, with the reading written next to each assertion.
//!
//! The fixtures live in `../shared/fixtures/cyclonus` beside the checkout (SOURCES.md there
//! names the upstream commit). Without them the test says it skips, unless `CI=true`, where
//! a missing oracle is a failure.
//!
//! The model (examples/probe.json): namespaces x, y, z labelled `ns=<name>`; pods a, b, c in
//! each, labelled `pod=<name>`, serving TCP 80 (`serve-80-tcp`) and 81 (`serve-81-tcp`).
//! Deliberate departures from the file:
//! - Addresses are ours. Upstream gives the pods 192.168.1.8-13 and (a quirk SOURCES.md
//!   notes) lets z/a, z/b, z/c reuse the addresses of y/a, y/b, y/c; two pods with one
//!   address cannot both be reached, and kxdp, like the cluster, needs pod addresses inside
//!   the node's PodCIDR. So the n-th pod of the file gets 10.244.1.(10+n) on node-a when n is
//!   even and 10.244.2.(10+n) on node-b when odd. cyclonus matches pod peers by labels, and
//!   the one ipBlock of the examples (`0.0.0.0/24`) holds neither set of addresses, so the
//!   grids do not depend on this choice.
//! - Probes go pod -> pod address directly (no Service), as cyclonus's probe does, through
//!   the source pod's port on its node and, when that node tunnels it, through the uplink of
//!   the destination's node: egress is judged on the first, ingress on the second.
//! - A pod sending to its own address: in a cluster that never leaves the pod (loopback),
//!   so kxdp never sees it; cyclonus fills the diagonal by policy anyway. Those cells are
//!   not compared; the test checks instead that `process` refuses such a frame as
//!   `hairpin` (a loop), never as a policy verdict.
//! - TCP 82 (nothing serves it: `N`) and `?` cells are not compared.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use support::{PolicyRecorder, TempDir, pod_mac, step, tables_for};

use datapath::tables::{PortId, Tables};
use datapath::{DropReason, Verdict};
use etherparse::PacketBuilder;

// ---------------------------------------------------------------------------------------------
// The fixtures.

fn cyclonus_dir() -> Option<PathBuf> {
    let dir = testkit::paths::shared_fixtures().join("cyclonus");
    if dir.join("examples/probe.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: CI must have the cyclonus fixtures",
            dir.display()
        );
    }
    eprintln!(
        "skipping: {} not found (the cyclonus oracle lives beside the checkout)",
        dir.display()
    );
    None
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A pod of the model: `ns/name`, labels, where it runs and its address (ours).
#[derive(Debug, Clone)]
struct ModelPod {
    ns: String,
    name: String,
    labels: BTreeMap<String, String>,
    /// (name, port) of every container port.
    ports: Vec<(String, u16)>,
    node: &'static str,
    ip: [u8; 4],
}

impl ModelPod {
    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// probe.json: the namespaces with their labels, the pods, the probed (protocol, port)s.
struct Model {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pods: Vec<ModelPod>,
    probes: Vec<(String, u16)>,
}

fn load_model(dir: &Path) -> Model {
    let v: serde_json::Value =
        serde_json::from_str(&read(&dir.join("examples/probe.json"))).expect("probe.json");
    let labels = |v: &serde_json::Value| -> BTreeMap<String, String> {
        v.as_object()
            .expect("labels object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
            .collect()
    };
    let namespaces = v["Resources"]["Namespaces"]
        .as_object()
        .expect("Namespaces")
        .iter()
        .map(|(ns, l)| (ns.clone(), labels(l)))
        .collect();
    let pods = v["Resources"]["Pods"]
        .as_array()
        .expect("Pods")
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let n = u8::try_from(n).expect("a few pods");
            // Our addresses (see the module docs): alternate nodes, one address each.
            let (node, ip) = if n % 2 == 0 {
                ("node-a", [10, 244, 1, 10 + n])
            } else {
                ("node-b", [10, 244, 2, 10 + n])
            };
            let ports = p["Containers"]
                .as_array()
                .expect("Containers")
                .iter()
                .map(|c| {
                    assert_eq!(c["Protocol"].as_str(), Some("tcp"), "only TCP servers");
                    let port = c["Port"].as_u64().expect("Port");
                    (
                        c["PortName"].as_str().expect("PortName").to_string(),
                        u16::try_from(port).expect("a port"),
                    )
                })
                .collect();
            ModelPod {
                ns: p["Namespace"].as_str().expect("Namespace").to_string(),
                name: p["Name"].as_str().expect("Name").to_string(),
                labels: labels(&p["Labels"]),
                ports,
                node,
                ip,
            }
        })
        .collect();
    let probes = v["Probes"]
        .as_array()
        .expect("Probes")
        .iter()
        .map(|p| {
            (
                p["Protocol"].as_str().expect("Protocol").to_string(),
                u16::try_from(p["Port"].as_u64().expect("Port")).expect("a port"),
            )
        })
        .collect();
    Model {
        namespaces,
        pods,
        probes,
    }
}

/// A `Combined` grid: (source `ns/name`, destination `ns/name`) -> allowed (`.`) or denied
/// (`X`); `N` and `?` cells are left out.
type Grid = BTreeMap<(String, String), bool>;

/// Every `Combined:` table of analyze-probe.txt, in file order (one per probe of
/// probe.json, in its order; the file ends with an empty one, which has no rows).
fn combined_grids(text: &str) -> Vec<Grid> {
    let mut grids = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "Combined:" {
            continue;
        }
        let mut columns: Vec<String> = Vec::new();
        let mut grid = Grid::new();
        while let Some(row) = lines.peek() {
            let row = row.trim();
            if !(row.starts_with('|') || row.starts_with('+')) {
                break;
            }
            lines.next();
            if row.starts_with('+') {
                continue;
            }
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            if columns.is_empty() {
                // The header: destinations, upper-cased by cyclonus.
                columns = cells[1..].iter().map(|c| c.to_lowercase()).collect();
                continue;
            }
            let src = cells[0].to_string();
            for (dst, cell) in columns.iter().zip(&cells[1..]) {
                match *cell {
                    "." => grid.insert((src.clone(), dst.clone()), true),
                    "X" => grid.insert((src.clone(), dst.clone()), false),
                    "N" | "?" => None,
                    other => panic!("unknown cell {other:?} in row {src}"),
                };
            }
        }
        grids.push(grid);
    }
    grids
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
             labels: {}\nspec:\n  nodeName: {}\n  containers:\n",
            p.name,
            p.ns,
            labels_yaml(&p.labels),
            p.node
        );
        for (i, (name, port)) in p.ports.iter().enumerate() {
            let _ = write!(
                s,
                "    - name: cont-{}\n      image: registry.k8s.io/e2e-test-images/agnhost\n      \
                 ports:\n        - {{name: {name}, containerPort: {port}, protocol: TCP}}\n",
                i + 1
            );
        }
        let _ = write!(
            s,
            "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n"
        );
    }
    s
}

fn ip_str(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

/// Both nodes' tables for the model plus `policies` (file name, YAML as written upstream).
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

    fn pod(&self, key: &str) -> &ModelPod {
        self.model
            .pods
            .iter()
            .find(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pod {key} in the model"))
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
}

/// What became of a probe's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Delivered to the destination pod's port (or, outside the cluster, the host port).
    Allowed,
    /// `policy_denied`, with the side and the policies the verdict named.
    Denied(&'static str, Vec<String>),
    /// Anything else: the probe could not answer the question.
    Other(String),
}

impl Outcome {
    fn allowed(&self) -> Option<bool> {
        match self {
            Outcome::Allowed => Some(true),
            Outcome::Denied(..) => Some(false),
            Outcome::Other(_) => None,
        }
    }
}

fn gateway_mac(node: &str) -> [u8; 6] {
    if node == "node-a" {
        [0x0a, 0x58, 10, 244, 1, 1]
    } else {
        [0x0a, 0x58, 10, 244, 2, 1]
    }
}

/// An Ethernet + IPv4 first packet: a TCP SYN or a UDP datagram.
fn first_packet(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: Proto,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src, dst, 64);
    let mut out = Vec::new();
    match proto {
        Proto::Tcp => {
            let b = ip.tcp(sport, dport, 1000, 64240).syn();
            b.write(&mut out, &[]).expect("tcp");
        }
        Proto::Udp => {
            let b = ip.udp(sport, dport);
            b.write(&mut out, b"probe").expect("udp");
        }
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

/// A pod of the model -> `dst`:`port`. A pod destination is reached through its node's
/// uplink when the source's node tunnels the packet; an address outside the cluster is
/// reached when the source's node sends it to its host port.
fn probe(c: &Cluster, src: &str, dst: [u8; 4], proto: Proto, port: u16) -> Outcome {
    let from = c.pod(src);
    let tables = c.tables(from.node);
    let in_port = tables
        .port_by_name(&format!("pod-{}-{}", from.ns, from.name))
        .expect("the source pod's port");
    let packet = first_packet(
        pod_mac(from.ip),
        gateway_mac(from.node),
        from.ip,
        dst,
        proto,
        40_000,
        port,
    );
    let to = c.model.pods.iter().find(|p| p.ip == dst);
    let (verdict, out, rec) = step(tables, in_port, &packet);
    let Some(to) = to else {
        return judged(verdict, rec, |p| p == PortId::HOST);
    };
    let dst_port = |t: &Tables| {
        t.port_by_name(&format!("pod-{}-{}", to.ns, to.name))
            .expect("the destination pod's port")
    };
    if to.node == from.node {
        return judged(verdict, rec, |p| p == dst_port(tables));
    }
    if verdict != Verdict::Forward(PortId::UPLINK) {
        return judged(verdict, rec, |_| false);
    }
    let remote = c.tables(to.node);
    let (verdict, _, rec) = step(remote, PortId::UPLINK, &out);
    judged(verdict, rec, |p| p == dst_port(remote))
}

/// A probe from pod `src` to pod `dst` (both `ns/name`).
fn probe_pod(c: &Cluster, src: &str, dst: &str, proto: Proto, port: u16) -> Outcome {
    probe(c, src, c.pod(dst).ip, proto, port)
}

fn render(pods: &[String], cell: impl Fn(&str, &str) -> char) -> String {
    let mut s = String::from("      ");
    for d in pods {
        let _ = write!(s, "{d:>5} ");
    }
    s.push('\n');
    for src in pods {
        let _ = write!(s, "{src:>5} ");
        for dst in pods {
            let _ = write!(s, "{:>5} ", cell(src, dst));
        }
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The simple-example grids.

fn simple_example_policies(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("networkpolicies/simple-example"))
        .expect("simple-example/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.file_name().expect("file name").to_string_lossy().into();
            (name, read(p))
        })
        .collect()
}

#[test]
fn simple_example_matches_cyclonus_combined_grids() {
    let Some(dir) = cyclonus_dir() else {
        return;
    };
    let policies = simple_example_policies(&dir);
    assert_eq!(policies.len(), 7, "the 7 simple-example policies");
    let grids = combined_grids(&read(
        &dir.join("examples/cyclonus-output/analyze-probe.txt"),
    ));
    let cluster = Cluster::new("simple-example", load_model(&dir), &policies);
    let pods: Vec<String> = cluster.model.pods.iter().map(ModelPod::key).collect();

    let mut compared = 0;
    let mut report = String::new();
    for (i, (proto, port)) in cluster.model.probes.iter().enumerate() {
        let grid = &grids[i];
        if grid.is_empty() {
            // TCP 82: every cell is N (nothing serves it).
            continue;
        }
        assert_eq!(proto, "TCP", "probe.json probes TCP only");
        assert_eq!(grid.len(), 81, "TCP {port}: a full 9 x 9 grid");
        let mut ours = BTreeMap::new();
        let mut mismatches = Vec::new();
        for src in &pods {
            for dst in &pods {
                if src == dst {
                    // Never leaves the pod in a cluster; kxdp refuses it as a loop.
                    let from = cluster.pod(src);
                    let tables = cluster.tables(from.node);
                    let port_id = tables
                        .port_by_name(&format!("pod-{}-{}", from.ns, from.name))
                        .expect("port");
                    let packet = first_packet(
                        pod_mac(from.ip),
                        gateway_mac(from.node),
                        from.ip,
                        from.ip,
                        Proto::Tcp,
                        40_000,
                        *port,
                    );
                    let (verdict, _, _) = step(tables, port_id, &packet);
                    assert_eq!(
                        verdict,
                        Verdict::Drop(DropReason::Hairpin),
                        "{src} -> itself"
                    );
                    continue;
                }
                let outcome = probe_pod(&cluster, src, dst, Proto::Tcp, *port);
                let Some(allowed) = outcome.allowed() else {
                    panic!("TCP {port} {src} -> {dst}: {outcome:?}");
                };
                ours.insert((src.clone(), dst.clone()), allowed);
                let expected = grid[&(src.clone(), dst.clone())];
                compared += 1;
                if allowed != expected {
                    mismatches.push(format!(
                        "{src} -> {dst}: cyclonus {}, kxdp {outcome:?}",
                        if expected { "allowed" } else { "denied" }
                    ));
                }
            }
        }
        if !mismatches.is_empty() {
            let cell = |g: &BTreeMap<(String, String), bool>, s: &str, d: &str| match g
                .get(&(s.to_string(), d.to_string()))
            {
                Some(true) => '.',
                Some(false) => 'X',
                None => '-',
            };
            let _ = write!(
                report,
                "TCP {port}: {} cell(s) differ:\n  {}\ncyclonus Combined:\n{}kxdp:\n{}\n",
                mismatches.len(),
                mismatches.join("\n  "),
                render(&pods, |s, d| cell(grid, s, d)),
                render(&pods, |s, d| cell(&ours, s, d)),
            );
        }
    }
    eprintln!("cyclonus simple-example: {compared} cells compared (TCP 80 and 81, 72 each)");
    assert_eq!(compared, 144, "both grids, every cell off the diagonal");
    assert!(report.is_empty(), "{report}");
}

#[test]
fn combined_grid_parser_reads_cyclonus_tables() {
    let text = "Combined:\n+-----+-----+-----+\n|     | X/A | Y/B |\n+-----+-----+-----+\n\
                | x/a | .   | X   |\n| y/b | N   | ?   |\n+-----+-----+-----+\n\nCombined:\n\
                +--+\n|  |\n+--+\n+--+\n";
    let grids = combined_grids(text);
    assert_eq!(grids.len(), 2);
    assert_eq!(grids[0].len(), 2);
    assert!(grids[0][&("x/a".into(), "x/a".into())]);
    assert!(!grids[0][&("x/a".into(), "y/b".into())]);
    assert!(grids[1].is_empty());
}

// ---------------------------------------------------------------------------------------------
// The other policy files: no cyclonus output, so the reading is ours, stated per file.

/// The model plus namespace `abcd` (labelled `ns=abcd`) with a (node-a) and b (node-b): the
/// namespace allow-all.yaml and allow-all-internal.yaml are written for.
fn model_with_abcd(dir: &Path) -> Model {
    let mut model = load_model(dir);
    model.namespaces.insert(
        "abcd".into(),
        BTreeMap::from([("ns".to_string(), "abcd".to_string())]),
    );
    for (name, node, ip) in [
        ("a", "node-a", [10, 244, 1, 50]),
        ("b", "node-b", [10, 244, 2, 51]),
    ] {
        model.pods.push(ModelPod {
            ns: "abcd".into(),
            name: name.into(),
            labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
            ports: vec![("serve-80-tcp".into(), 80), ("serve-81-tcp".into(), 81)],
            node,
            ip,
        });
    }
    model
}

/// Ingress isolation of every pod of abcd with no rule: without the file under test,
/// abcd admits nothing.
fn deny_abcd() -> (String, String) {
    (
        "deny-abcd.yaml".into(),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  \
         namespace: abcd\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n"
            .into(),
    )
}

fn policy_file(dir: &Path, rel: &str) -> (String, String) {
    let name = Path::new(rel).file_name().expect("name").to_string_lossy();
    (name.into(), read(&dir.join("networkpolicies").join(rel)))
}

/// A frame node-b's kxdp tunnels to node-a from node-b's own gateway (10.244.2.1: the
/// address a node's own traffic into the overlay uses): a peer that is no pod.
fn from_node_b_gateway(dst: [u8; 4], port: u16) -> Vec<u8> {
    let inner = first_packet(
        gateway_mac("node-b"),
        gateway_mac("node-a"),
        [10, 244, 2, 1],
        dst,
        Proto::Tcp,
        41_000,
        port,
    );
    // RFC 7348: flags (I set), 3 reserved bytes, VNI 1 in three bytes, 1 reserved byte.
    let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vxlan.extend_from_slice(&inner);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(
        [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0b],
        [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0a],
    )
    .ipv4([192, 168, 50, 11], [192, 168, 50, 10], 64)
    .udp(50_000, 4789)
    .write(&mut out, &vxlan)
    .expect("vxlan");
    out
}

/// node-b's gateway -> a pod on node-a, judged by node-a's ingress.
fn probe_from_node_b(c: &Cluster, dst: &str, port: u16) -> Outcome {
    let to = c.pod(dst);
    assert_eq!(to.node, "node-a");
    let (verdict, _, rec) = step(&c.node_a, PortId::UPLINK, &from_node_b_gateway(to.ip, port));
    let dst_port = c
        .node_a
        .port_by_name(&format!("pod-{}-{}", to.ns, to.name))
        .expect("port");
    judged(verdict, rec, |p| p == dst_port)
}

fn expect(failures: &mut Vec<String>, what: &str, got: Outcome, allowed: bool) {
    if got.allowed() != Some(allowed) {
        failures.push(format!(
            "{what}: expected {}, got {got:?}",
            if allowed { "allowed" } else { "denied" }
        ));
    }
}

#[test]
fn allow_all_admits_every_source_into_its_namespace() {
    let Some(dir) = cyclonus_dir() else {
        return;
    };
    // allow-all.yaml: every pod of abcd (`podSelector: {}`) for Ingress, one rule with
    // `from: []`: an empty peer list matches all sources, pods of any namespace and
    // addresses that are no pod alike. Rules add up, so beside deny-abcd (isolation, no
    // rule) everything still reaches abcd; namespaces it does not name are untouched.
    let c = Cluster::new(
        "allow-all",
        model_with_abcd(&dir),
        &[policy_file(&dir, "allow-all.yaml"), deny_abcd()],
    );
    let mut f = Vec::new();
    for (src, dst, port) in [
        ("x/a", "abcd/a", 80),
        ("z/c", "abcd/a", 81),
        ("y/b", "abcd/b", 80),
        ("abcd/a", "abcd/b", 81),
        ("abcd/b", "x/c", 80),
    ] {
        let what = format!("{src} -> {dst}:{port}");
        expect(
            &mut f,
            &what,
            probe_pod(&c, src, dst, Proto::Tcp, port),
            true,
        );
    }
    expect(
        &mut f,
        "node-b's gateway -> abcd/a:80",
        probe_from_node_b(&c, "abcd/a", 80),
        true,
    );
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn allow_all_internal_admits_pods_only() {
    let Some(dir) = cyclonus_dir() else {
        return;
    };
    // allow-all-internal.yaml: every pod of abcd for Ingress, from `namespaceSelector: {}`:
    // every pod of every namespace, and nothing that is not a pod. So pods anywhere reach
    // abcd; a peer that is no pod (node-b's own traffic, from its gateway address over the
    // overlay) does not: only a pod's own node is always allowed.
    let c = Cluster::new(
        "allow-all-internal",
        model_with_abcd(&dir),
        &[policy_file(&dir, "allow-all-internal.yaml")],
    );
    let mut f = Vec::new();
    for (src, dst, port) in [
        ("x/a", "abcd/a", 80),
        ("y/c", "abcd/b", 81),
        ("z/b", "abcd/a", 81),
        ("abcd/b", "abcd/a", 80),
    ] {
        let what = format!("{src} -> {dst}:{port}");
        expect(
            &mut f,
            &what,
            probe_pod(&c, src, dst, Proto::Tcp, port),
            true,
        );
    }
    let got = probe_from_node_b(&c, "abcd/a", 80);
    expect(&mut f, "node-b's gateway -> abcd/a:80", got.clone(), false);
    if let Outcome::Denied(dir, names) = &got {
        assert_eq!(
            (*dir, names.as_slice()),
            ("ingress", &["abcd/allow-all-internal".to_string()][..])
        );
    }
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn allow_to_ns_y_pod_a_limits_x_a_egress() {
    let Some(dir) = cyclonus_dir() else {
        return;
    };
    // upstream_test_cases/allow-to-ns-y-pod-a.yaml: x/a (`pod=a` in x) isolated for Egress;
    // rule 1: to pods `pod=a` in namespaces `ns=y` (one peer: both selectors ANDed), TCP 80;
    // rule 2: UDP 53 to anyone (DNS). Everything else x/a starts is denied on egress; other
    // pods are not selected.
    let c = Cluster::new(
        "allow-to-ns-y-pod-a",
        load_model(&dir),
        &[policy_file(
            &dir,
            "upstream_test_cases/allow-to-ns-y-pod-a.yaml",
        )],
    );
    let mut f = Vec::new();
    for (src, dst, proto, port, allowed) in [
        ("x/a", "y/a", Proto::Tcp, 80, true),
        ("x/a", "y/a", Proto::Tcp, 81, false),
        ("x/a", "y/b", Proto::Tcp, 80, false),
        ("x/a", "z/a", Proto::Tcp, 80, false),
        ("x/a", "x/b", Proto::Tcp, 80, false),
        ("x/a", "y/a", Proto::Udp, 80, false),
        ("x/a", "z/c", Proto::Udp, 53, true),
        ("x/b", "y/b", Proto::Tcp, 81, true),
        ("y/a", "x/a", Proto::Tcp, 80, true),
    ] {
        let what = format!("{src} -> {dst} {proto:?} {port}");
        expect(&mut f, &what, probe_pod(&c, src, dst, proto, port), allowed);
    }
    expect(
        &mut f,
        "x/a -> 8.8.8.8 UDP 53",
        probe(&c, "x/a", [8, 8, 8, 8], Proto::Udp, 53),
        true,
    );
    let got = probe(&c, "x/a", [8, 8, 8, 8], Proto::Tcp, 80);
    expect(&mut f, "x/a -> 8.8.8.8 TCP 80", got.clone(), false);
    if let Outcome::Denied(dir, names) = &got {
        assert_eq!(
            (*dir, names.as_slice()),
            ("egress", &["x/allow-to-ns-y-pod-a".to_string()][..])
        );
    }
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn portrange_end_port_is_inclusive() {
    let Some(dir) = cyclonus_dir() else {
        return;
    };
    // features/portrange1.yaml (pr-1): as allow-to-ns-y-pod-a, but the TCP rule is the range
    // `port: 80, endPort: 103`, both ends included: x/a reaches y/a on 80, 81, 103, not on
    // 79 or 104, and not over UDP in that range.
    let c = Cluster::new(
        "portrange1",
        load_model(&dir),
        &[policy_file(&dir, "features/portrange1.yaml")],
    );
    let mut f = Vec::new();
    for (dst, proto, port, allowed) in [
        ("y/a", Proto::Tcp, 80, true),
        ("y/a", Proto::Tcp, 81, true),
        ("y/a", Proto::Tcp, 95, true),
        ("y/a", Proto::Tcp, 103, true),
        ("y/a", Proto::Tcp, 79, false),
        ("y/a", Proto::Tcp, 104, false),
        ("y/a", Proto::Udp, 90, false),
        ("y/b", Proto::Tcp, 80, false),
        ("z/a", Proto::Tcp, 90, false),
        ("y/c", Proto::Udp, 53, true),
    ] {
        let what = format!("x/a -> {dst} {proto:?} {port}");
        expect(
            &mut f,
            &what,
            probe_pod(&c, "x/a", dst, proto, port),
            allowed,
        );
    }
    assert!(f.is_empty(), "{}", f.join("\n"));
}

// ---------------------------------------------------------------------------------------------
