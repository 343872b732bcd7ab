//! cyclonus as a second, independent oracle for kxdp's NetworkPolicy.
//!
//! cyclonus (github.com/mattfenwick/cyclonus, MIT) is a NetworkPolicy simulator; its
//! `examples/` hold a probe model and the grids it computed for the `simple-example`
//! policies. This module builds that model as a kxdp cluster, lets the real code decide
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use datapath::conntrack::Flows;
use datapath::tables::PortId;
use testkit::frames::Headers;

use crate::grid::{Expect, GridCheck, Table, Via, check_grid};
use crate::probe::{
    Cluster, Dest, Model, ModelPod, NODES, Outcome, Proto, deliver, gateway_mac, probe, probe_pod,
};

// ---------------------------------------------------------------------------------------------
// The fixtures.

fn cyclonus_dir() -> Option<PathBuf> {
    testkit::paths::shared_fixture("cyclonus", "examples/probe.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// probe.json: the model (namespaces with their labels, pods) and the probed
/// (protocol, port)s.
fn load_model(dir: &Path) -> (Model, Vec<(String, u16)>) {
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
                (0, [10, 244, 1, 10 + n])
            } else {
                (1, [10, 244, 2, 10 + n])
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
                        Proto::Tcp,
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
    (Model { namespaces, pods }, probes)
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

/// A cyclonus grid as expectations over the model; cells it leaves out are not compared.
fn expectations(model: &Model, grid: &Grid) -> Table {
    Table::from_fn(model, |from, to| {
        grid.get(&(from.key(), to.key())).map(|&allowed| {
            if allowed {
                Expect::Connected
            } else {
                Expect::Denied
            }
        })
    })
}

/// Both nodes' tables for the model plus `policies` (file name, YAML as written upstream).
fn cluster(tag: &str, model: Model, policies: &[(String, String)]) -> Cluster {
    let files: Vec<(String, String)> = policies
        .iter()
        .map(|(name, text)| (format!("50-{name}"), text.clone()))
        .collect();
    Cluster::new(tag, model, &files, 1)
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
    let (model, probes) = load_model(&dir);
    let cluster = cluster("simple-example", model, &policies);

    let mut compared = 0;
    let mut report = String::new();
    for (i, (proto, port)) in probes.iter().enumerate() {
        let grid = &grids[i];
        if grid.is_empty() {
            // TCP 82: every cell is N (nothing serves it).
            continue;
        }
        assert_eq!(proto, "TCP", "probe.json probes TCP only");
        assert_eq!(grid.len(), 81, "TCP {port}: a full 9 x 9 grid");
        let expect = expectations(&cluster.model, grid);
        // The diagonal (cyclonus fills it by policy) is not compared; addressed to itself
        // a pod's packet must be refused as a loop (see the module docs).
        let check = GridCheck {
            proto: Proto::Tcp,
            port: *port,
            via: Via::PodAddress,
            expect: &expect,
            explain: None,
        };
        match check_grid(&cluster, &check) {
            Ok(n) => compared += n,
            Err(e) => {
                let _ = write!(report, "TCP {port}, cyclonus Combined vs kxdp:\n{e}\n");
            }
        }
    }
    assert!(report.is_empty(), "{report}");
    eprintln!("cyclonus simple-example: {compared} cells compared (TCP 80 and 81, 72 each)");
    assert_eq!(compared, 144, "both grids, every cell off the diagonal");
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
    let (mut model, _) = load_model(dir);
    model.namespaces.insert(
        "abcd".into(),
        BTreeMap::from([("ns".to_string(), "abcd".to_string())]),
    );
    for (name, node, ip) in [("a", 0, [10, 244, 1, 50]), ("b", 1, [10, 244, 2, 51])] {
        model.pods.push(ModelPod {
            ns: "abcd".into(),
            name: name.into(),
            labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
            ports: vec![
                ("serve-80-tcp".into(), 80, Proto::Tcp),
                ("serve-81-tcp".into(), 81, Proto::Tcp),
            ],
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

/// Pod `src` -> pod `dst` (both `ns/name`), to the pod's own address.
fn probe_keys(c: &Cluster, src: &str, dst: &str, proto: Proto, port: u16) -> Outcome {
    probe_pod(c, c.model.index(src), c.model.index(dst), proto, port)
}

/// Pod `src` -> `dst`, an address outside the cluster: it should leave by its node's host
/// port.
fn probe_outside(c: &Cluster, src: &str, dst: [u8; 4], proto: Proto, port: u16) -> Outcome {
    let want = (Ipv4Addr::from(dst), port);
    probe(c, c.model.index(src), dst, proto, port, Dest::Outside, want).0
}

/// A frame node-b's kxdp tunnels to node-a from node-b's own gateway (10.244.2.1: the
/// address a node's own traffic into the overlay uses): a peer that is no pod.
fn from_node_b_gateway(dst: [u8; 4], port: u16) -> Vec<u8> {
    let inner = Headers::new(gateway_mac(1), gateway_mac(0), NODES[1].gateway, dst).first(
        Proto::Tcp,
        41_000,
        port,
    );
    Headers::new(NODES[1].mac, NODES[0].mac, NODES[1].ip, NODES[0].ip)
        .vxlan(50_000, 4789, 1, &inner)
}

/// node-b's gateway -> a pod on node-a, judged by node-a's ingress.
fn probe_from_node_b(c: &Cluster, dst: &str, port: u16) -> Outcome {
    let to = c.model.index(dst);
    let ip = c.model.pods[to].ip;
    assert_eq!(c.model.pods[to].node, 0, "{dst} runs on node-a");
    let mut flows = [Flows::default(), Flows::default()];
    let packet = from_node_b_gateway(ip, port);
    let want = (Ipv4Addr::from(ip), port);
    deliver(
        c,
        &mut flows,
        0,
        PortId::UPLINK,
        &packet,
        Dest::Pod(to),
        want,
    )
}

fn expect(failures: &mut Vec<String>, what: &str, got: Outcome, allowed: bool) {
    if got.allowed() != Some(allowed) {
        failures.push(format!(
            "{what}: expected {}, got {}",
            if allowed { "allowed" } else { "denied" },
            got.describe()
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
    let c = cluster(
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
            probe_keys(&c, src, dst, Proto::Tcp, port),
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
    let c = cluster(
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
            probe_keys(&c, src, dst, Proto::Tcp, port),
            true,
        );
    }
    let got = probe_from_node_b(&c, "abcd/a", 80);
    expect(&mut f, "node-b's gateway -> abcd/a:80", got.clone(), false);
    if let Some(denial) = got.denial() {
        assert_eq!(
            denial,
            (
                Some("ingress"),
                &["abcd/allow-all-internal".to_string()][..]
            )
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
    let c = cluster(
        "allow-to-ns-y-pod-a",
        load_model(&dir).0,
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
        expect(
            &mut f,
            &what,
            probe_keys(&c, src, dst, proto, port),
            allowed,
        );
    }
    expect(
        &mut f,
        "x/a -> 8.8.8.8 UDP 53",
        probe_outside(&c, "x/a", [8, 8, 8, 8], Proto::Udp, 53),
        true,
    );
    let got = probe_outside(&c, "x/a", [8, 8, 8, 8], Proto::Tcp, 80);
    expect(&mut f, "x/a -> 8.8.8.8 TCP 80", got.clone(), false);
    if let Some(denial) = got.denial() {
        assert_eq!(
            denial,
            (Some("egress"), &["x/allow-to-ns-y-pod-a".to_string()][..])
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
    let c = cluster(
        "portrange1",
        load_model(&dir).0,
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
            probe_keys(&c, "x/a", dst, proto, port),
            allowed,
        );
    }
    assert!(f.is_empty(), "{}", f.join("\n"));
}

// ---------------------------------------------------------------------------------------------
