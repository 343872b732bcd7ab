//! Statistics of Service load balancing, measured through `replay::run` (the
//! code behind `kxdp replay`) on captures generated here, in temporary directories.
//!
//! Scenario cases pin exact bytes and so use Services with one backend; these tests
//! measure what only many flows show: Maglev's spread, which flows an endpoint change
//! keeps or ends, and session affinity. Backends are counted from the `backend` field of
//! verdicts.jsonl, never by asking the datapath. Every backend is on node-b, so every
//! choice is visible as a forwarded (encapsulated) packet.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_fixtures::case::BASE_NS;
use pcap_fixtures::cases::world::{CLIENT, CLIENT_PORT, NODE_A_IP, NODE_A_MAC, UPLINK};
use pcap_fixtures::cases::world::{from_pod, two_node_with};
use pcap_fixtures::packet::{L2, L4, V4, eth_v4, tcp_flags};
use pcap_fixtures::pcapio;
use replay::{InputSpec, ReplayOptions, StateUpdate};
use testkit::manifests::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec};

const VIP: [u8; 4] = [10, 96, 0, 90];
const NODE_PORT: u16 = 30300;
const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;

/// The four backends, all on node-b, as verdicts name them.
fn backend_ips() -> Vec<String> {
    (10..14).map(|h| format!("10.244.2.{h}")).collect()
}

fn backend_names() -> Vec<String> {
    backend_ips()
        .iter()
        .map(|ip| format!("{ip}:8080"))
        .collect()
}

/// demo/lb: 10.96.0.90:80 (and NodePort 30300) -> 8080 on the four backends, with the
/// first one's conditions given.
fn lb_service(first: Option<Conditions>, affinity_s: Option<u32>) -> ServiceSpec {
    let mut endpoints = Vec::new();
    for (i, ip) in backend_ips().iter().enumerate() {
        match (i, first) {
            (0, None) => {}
            (0, Some(cond)) => endpoints.push(EndpointSpec::new(ip, "node-b", cond)),
            _ => endpoints.push(EndpointSpec::ready(ip, "node-b")),
        }
    }
    let svc = ServiceSpec::cluster_ip(
        "lb",
        "10.96.0.90",
        vec![PortSpec::new("http", 80, "TCP", 8080).node_port(NODE_PORT)],
    )
    .kind("NodePort")
    .external_traffic_policy("Cluster")
    .endpoints(endpoints);
    match affinity_s {
        Some(t) => svc.affinity(t),
        None => svc,
    }
}

/// One verdicts.jsonl line, the fields these tests read.
#[derive(Debug, Clone)]
struct Line {
    in_port: String,
    verdict: String,
    out_port: Option<String>,
    backend: Option<String>,
}

/// A temporary directory holding state dirs, inputs and outputs of one test.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kxdp-stats-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch { dir }
    }

    /// Writes the two-node world with `services` as state dir `name`.
    fn state(&self, name: &str, services: Vec<ServiceSpec>) -> PathBuf {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).expect("state dir");
        for (file, text) in two_node_with(None, services).files() {
            fs::write(dir.join(file), text).expect("state file");
        }
        dir
    }

    /// Writes the frames a port receives as one input pcap.
    fn input(&self, port: &str, packets: &[(u64, Vec<u8>)]) -> InputSpec {
        let file = self.dir.join(format!("{port}.pcap"));
        let refs: Vec<(u64, &[u8])> = packets.iter().map(|(t, f)| (*t, f.as_slice())).collect();
        pcapio::write(&file, &refs).expect("input pcap");
        InputSpec {
            port: port.to_string(),
            file,
        }
    }

    /// Replays as node-a and returns verdicts.jsonl, in processing order.
    fn replay(&self, state: &Path, inputs: Vec<InputSpec>, updates: Vec<StateUpdate>) -> Vec<Line> {
        let out = self.dir.join("out");
        let opts = ReplayOptions {
            state: state.to_path_buf(),
            node: "node-a".to_string(),
            inputs,
            out: out.clone(),
            summary: false,
            updates,
        };
        let _ = fs::remove_dir_all(&out);
        replay::run(&opts).expect("replay runs");
        let text = fs::read_to_string(out.join("verdicts.jsonl")).expect("verdicts");
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
                Line {
                    in_port: s("in_port").unwrap_or_default(),
                    verdict: s("verdict").unwrap_or_default(),
                    out_port: s("out_port"),
                    backend: s("backend"),
                }
            })
            .collect()
    }
}

impl Scratch {
    /// The frames the last replay sent on `port`.
    fn output(&self, port: &str) -> Vec<Vec<u8>> {
        let path = self.dir.join("out").join(format!("{port}.pcap"));
        pcapio::read(&path)
            .expect("output pcap")
            .into_iter()
            .map(|p| p.data)
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The client pod's TCP segment to the VIP from `sport`.
fn client_segment(sport: u16, flags: u8) -> Vec<u8> {
    let seq = if flags & tcp_flags::SYN != 0 { 1 } else { 2 };
    let ack = if flags & tcp_flags::ACK != 0 { 7 } else { 0 };
    eth_v4(
        from_pod(CLIENT),
        V4::new(CLIENT, VIP),
        L4::tcp(sport, 80, seq, ack, flags),
        b"",
    )
}

/// An outside client's SYN to node-a's NodePort.
fn outside_syn(client: [u8; 4], sport: u16) -> Vec<u8> {
    let l2 = L2 {
        src: [0x02, 0x00, client[0], client[1], client[2], client[3]],
        dst: NODE_A_MAC,
    };
    eth_v4(
        l2,
        V4::new(client, NODE_A_IP),
        L4::tcp(sport, NODE_PORT, 1, 0, tcp_flags::SYN),
        b"",
    )
}

/// How many verdicts name each backend.
fn count(lines: &[Line]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for l in lines {
        if let Some(b) = &l.backend {
            *counts.entry(b.clone()).or_insert(0) += 1;
        }
    }
    counts
}

fn forwarded_to_node_b(l: &Line) -> bool {
    l.verdict == "forward" && l.out_port.as_deref() == Some(UPLINK)
}

#[test]
fn maglev_spreads_1000_flows_within_ten_percent() {
    let s = Scratch::new("spread");
    let state = s.state("state", vec![lb_service(Some(Conditions::READY), None)]);
    let syns: Vec<(u64, Vec<u8>)> = (0..1000u16)
        .map(|i| {
            (
                BASE_NS + u64::from(i) * MS,
                client_segment(20000 + i, tcp_flags::SYN),
            )
        })
        .collect();
    let lines = s.replay(&state, vec![s.input(CLIENT_PORT, &syns)], Vec::new());
    assert_eq!(lines.len(), 1000);
    assert!(
        lines.iter().all(forwarded_to_node_b),
        "every SYN is tunnelled"
    );
    let counts = count(&lines);
    println!("1000 SYNs over 4 backends: {counts:?}");
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), backend_names());
    for (backend, n) in &counts {
        assert!(
            (225..=275).contains(n),
            "{backend} took {n} of 1000 flows, outside 250 +- 10%: {counts:?}"
        );
    }
}

/// 200 flows opened, then `update` applied, then each flow's next segment and 200 new
/// flows. What it returns.
struct Churn {
    /// The backend of each old flow, from its SYN's verdict.
    first: Vec<String>,
    /// The verdicts of the old flows' segments after the update.
    old: Vec<Line>,
    /// The verdicts of the new flows.
    new: Vec<Line>,
    /// What the client's port received (RSTs, if any).
    to_client: Vec<Vec<u8>>,
}

fn churn(name: &str, after: ServiceSpec) -> Churn {
    let s = Scratch::new(name);
    let before = s.state("state", vec![lb_service(Some(Conditions::READY), None)]);
    let after = s.state("state-1", vec![after]);
    let mut packets = Vec::new();
    let mut t = BASE_NS;
    for i in 0..200u16 {
        packets.push((t, client_segment(30000 + i, tcp_flags::SYN)));
        t += MS;
    }
    let update_at = t + SECOND;
    t = update_at;
    for i in 0..200u16 {
        packets.push((t, client_segment(30000 + i, tcp_flags::ACK)));
        t += MS;
    }
    for i in 0..200u16 {
        packets.push((t, client_segment(31000 + i, tcp_flags::SYN)));
        t += MS;
    }
    let lines = s.replay(
        &before,
        vec![s.input(CLIENT_PORT, &packets)],
        vec![StateUpdate {
            at_ns: update_at,
            state: after,
        }],
    );
    assert_eq!(lines.len(), 600);
    let first: Vec<String> = lines[..200]
        .iter()
        .map(|l| l.backend.clone().expect("every SYN has a backend"))
        .collect();
    let to_client = if lines
        .iter()
        .any(|l| l.out_port.as_deref() == Some(CLIENT_PORT))
    {
        s.output(CLIENT_PORT)
    } else {
        Vec::new()
    };
    Churn {
        first,
        old: lines[200..400].to_vec(),
        new: lines[400..].to_vec(),
        to_client,
    }
}

#[test]
fn terminating_backend_keeps_its_flows_and_gets_no_new_ones() {
    let names = backend_names();
    let leaving = &names[0];
    let Churn {
        first,
        old,
        new,
        to_client,
    } = churn(
        "terminating",
        lb_service(Some(Conditions::SERVING_TERMINATING), None),
    );
    assert!(to_client.is_empty(), "no flow was reset");
    let on_leaving = first.iter().filter(|b| *b == leaving).count();
    println!("{on_leaving} of 200 flows were on {leaving} when it began terminating");
    assert!(
        on_leaving > 0,
        "the test needs flows on the terminating backend"
    );
    for (i, (was, now)) in first.iter().zip(&old).enumerate() {
        assert!(forwarded_to_node_b(now), "old flow {i}: {now:?}");
        assert_eq!(
            now.backend.as_ref(),
            Some(was),
            "old flow {i} changed backend"
        );
    }
    let counts = count(&new);
    println!("200 new flows after the update: {counts:?}");
    assert!(new.iter().all(forwarded_to_node_b));
    assert!(
        !counts.contains_key(leaving),
        "a new flow went to {leaving}"
    );
    assert_eq!(counts.len(), 3, "new flows use the three ready backends");
}

#[test]
fn deleted_backend_ends_its_flows_with_resets() {
    let names = backend_names();
    let deleted = &names[0];
    let Churn {
        first,
        old,
        new,
        to_client,
    } = churn("deleted", lb_service(None, None));
    let on_deleted = first.iter().filter(|b| *b == deleted).count();
    let mut resets = 0;
    for (i, (was, now)) in first.iter().zip(&old).enumerate() {
        if was == deleted {
            // Answered in place: a RST back to the client, nothing to the backend.
            assert_eq!(now.verdict, "forward", "old flow {i}: {now:?}");
            assert_eq!(now.out_port.as_deref(), Some(CLIENT_PORT), "old flow {i}");
            assert_eq!(now.in_port, CLIENT_PORT);
            resets += 1;
        } else {
            assert!(forwarded_to_node_b(now), "old flow {i}: {now:?}");
            assert_eq!(
                now.backend.as_ref(),
                Some(was),
                "old flow {i} changed backend"
            );
        }
    }
    println!("{on_deleted} of 200 flows were on {deleted}: {resets} RSTs");
    assert!(
        on_deleted > 0,
        "the test needs flows on the deleted backend"
    );
    // Each of them a RST from the VIP's port 80, parsed independently.
    assert_eq!(to_client.len(), on_deleted);
    for frame in &to_client {
        let p = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4: {frame:02x?}");
        };
        assert_eq!(ip.header().source(), VIP);
        assert_eq!(ip.header().destination(), CLIENT);
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("not TCP: {frame:02x?}");
        };
        assert!(tcp.rst() && !tcp.syn(), "{frame:02x?}");
        assert_eq!(tcp.source_port(), 80);
    }
    let counts = count(&new);
    println!("200 new flows after the deletion: {counts:?}");
    assert!(
        !counts.contains_key(deleted),
        "a new flow went to {deleted}"
    );
    assert_eq!(counts.len(), 3);
}

#[test]
fn client_ip_affinity_pins_a_client_until_its_timeout() {
    const TIMEOUT_S: u32 = 10;
    let s = Scratch::new("affinity");
    let state = s.state(
        "state",
        vec![lb_service(Some(Conditions::READY), Some(TIMEOUT_S))],
    );
    let mut client = Vec::new();
    let mut t = BASE_NS;
    for i in 0..50u16 {
        client.push((t, client_segment(20000 + i, tcp_flags::SYN)));
        t += MS;
    }
    // After the timeout every new flow is a fresh choice: each starts more than
    // `timeoutSeconds` after the previous one (which refreshed the entry, as kube-proxy's
    // `recent` match does), so affinity can no longer decide any of them.
    let gap = u64::from(TIMEOUT_S + 1) * SECOND;
    for i in 0..16u16 {
        t += gap;
        client.push((t, client_segment(21000 + i, tcp_flags::SYN)));
    }
    let outside: Vec<(u64, Vec<u8>)> = (0..50u8)
        .map(|i| {
            (
                BASE_NS + 500 * MS + u64::from(i) * MS,
                outside_syn([192, 168, 60, 1 + i], 40000),
            )
        })
        .collect();
    let lines = s.replay(
        &state,
        vec![s.input(CLIENT_PORT, &client), s.input(UPLINK, &outside)],
        Vec::new(),
    );
    let from_client: Vec<&Line> = lines.iter().filter(|l| l.in_port == CLIENT_PORT).collect();
    let from_outside: Vec<&Line> = lines.iter().filter(|l| l.in_port == UPLINK).collect();
    assert_eq!((from_client.len(), from_outside.len()), (66, 50));
    assert!(lines.iter().all(forwarded_to_node_b));

    let pinned: BTreeSet<&String> = from_client[..50]
        .iter()
        .filter_map(|l| l.backend.as_ref())
        .collect();
    println!("50 flows of one client within the timeout: {pinned:?}");
    assert_eq!(pinned.len(), 1, "one client, one backend: {pinned:?}");

    let spread: Vec<String> = from_outside
        .iter()
        .filter_map(|l| l.backend.clone())
        .collect();
    let spread_counts = count(
        &from_outside
            .iter()
            .map(|l| (*l).clone())
            .collect::<Vec<_>>(),
    );
    println!("50 outside clients: {spread_counts:?}");
    assert_eq!(spread.len(), 50);
    assert!(spread_counts.len() >= 3, "{spread_counts:?}");

    let later: BTreeSet<&String> = from_client[50..]
        .iter()
        .filter_map(|l| l.backend.as_ref())
        .collect();
    println!("16 flows of the client, each after the timeout: {later:?}");
    assert!(
        later.len() >= 2,
        "after the timeout the client is no longer pinned: {later:?}"
    );
}
