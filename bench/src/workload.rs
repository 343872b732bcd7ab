//! A fixed, deterministic workload for profiling the pure pipeline: one packet path at a
//! time, built from the `pcap-fixtures/examples/two-node` state directory (node-a's view),
//! driven through `datapath::process` exactly as replay and the workers drive it.
//!
//! The shape that makes instruction counts subtract cleanly: `prepare(path, capacity)`
//! builds the tables, the flow table and `capacity` frames up front (everything whose cost
//! depends on `capacity`, not on how many packets are processed), then `run(n)` processes
//! the first `n` frames in place, with no copy, as a worker processes frames in UMEM. Two
//! runs with the same `capacity` and different `n` differ only by `n` times the per-packet
//! work.

use std::path::{Path, PathBuf};

use datapath::conntrack::{ConntrackConfig, Flows};
use datapath::frame::DEFAULT_HEADROOM;
use datapath::{DropReason, Frame, MacAddr, NoObserver, PortId, Tables, Verdict, process};
use etherparse::PacketBuilder;
use model::state::{ClusterState, load_state_dir};
use model::translate::translate;

/// Room per frame: headroom for VXLAN encap plus the largest packet here, rounded up.
const FRAME_SIZE: usize = 512;
/// Flows that established-flow paths cycle over (set up before measuring).
const ESTABLISHED_FLOWS: u16 = 64;
/// Fixed hash seed: the flow index must place entries identically in every run.
const FLOW_SEED: u64 = 0x6b78_6470_7072_6f66;
const FLOW_CAPACITY: usize = 1 << 16;
/// The most packets one prepared workload may hold: new-flow paths give each packet its own
/// source port, so this stays well inside the port space and the flow table.
pub const MAX_PACKETS: usize = 32_768;

const NODE: &str = "node-a";
const GW_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];
const CLIENT: [u8; 4] = [10, 244, 1, 5];
const WEB0: [u8; 4] = [10, 244, 1, 6];
const WEB1: [u8; 4] = [10, 244, 2, 7];
const DB0: [u8; 4] = [10, 244, 1, 8];
const VIP: [u8; 4] = [10, 96, 0, 10];
const NODE_A_UNDERLAY: ([u8; 6], [u8; 4]) = ([2, 0, 0xc0, 0xa8, 0x32, 0x0a], [192, 168, 50, 10]);
const NODE_B_UNDERLAY: ([u8; 6], [u8; 4]) = ([2, 0, 0xc0, 0xa8, 0x32, 0x0b], [192, 168, 50, 11]);

/// One packet path through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketPath {
    /// Walk 1: client -> web-0 UDP, no policy anywhere (nothing tracked).
    PodToLocalPod,
    /// Walk 2: client -> web-1 UDP, VXLAN encap towards node-b.
    PodToRemotePodVxlan,
    /// Walk 2 at the receiving end: node-b's encap of web-1 -> client UDP, decap.
    VxlanInToLocalPod,
    /// Walk 3: client -> 10.96.0.10:80 TCP SYN, each packet a new flow (Maglev pick,
    /// conntrack insert, DNAT, remote or local backend).
    ClusterIpNewTcp,
    /// Walk 3: TCP ACKs on 64 flows set up before measuring (conntrack hit, DNAT).
    ClusterIpEstablishedTcp,
    /// client -> db-0 TCP 5432 SYN with db-0 isolated by a NetworkPolicy that allows it:
    /// each packet a new flow, judged and tracked.
    PolicyNewAllowedTcp,
    /// The same, ACKs on 64 judged flows (cached verdict).
    PolicyEstablishedTcp,
    /// web-0 -> db-0 TCP 5432 SYN, denied by the policy (each a new flow).
    PolicyDeniedTcp,
}

impl PacketPath {
    pub const ALL: [PacketPath; 8] = [
        PacketPath::PodToLocalPod,
        PacketPath::PodToRemotePodVxlan,
        PacketPath::VxlanInToLocalPod,
        PacketPath::ClusterIpNewTcp,
        PacketPath::ClusterIpEstablishedTcp,
        PacketPath::PolicyNewAllowedTcp,
        PacketPath::PolicyEstablishedTcp,
        PacketPath::PolicyDeniedTcp,
    ];

    /// Stable names: they key the baseline file and the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            PacketPath::PodToLocalPod => "pod_to_local_pod_udp",
            PacketPath::PodToRemotePodVxlan => "pod_to_remote_pod_vxlan_udp",
            PacketPath::VxlanInToLocalPod => "vxlan_in_to_local_pod_udp",
            PacketPath::ClusterIpNewTcp => "clusterip_new_tcp",
            PacketPath::ClusterIpEstablishedTcp => "clusterip_established_tcp",
            PacketPath::PolicyNewAllowedTcp => "policy_new_allowed_tcp",
            PacketPath::PolicyEstablishedTcp => "policy_established_tcp",
            PacketPath::PolicyDeniedTcp => "policy_new_denied_tcp",
        }
    }

    pub fn from_name(name: &str) -> Option<PacketPath> {
        PacketPath::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The paths judged by NetworkPolicy run on tables with db-0 and its policy added; the
    /// others on the example as it is (with any pod isolated, plain flows get tracked too).
    fn with_policy(self) -> bool {
        matches!(
            self,
            PacketPath::PolicyNewAllowedTcp
                | PacketPath::PolicyEstablishedTcp
                | PacketPath::PolicyDeniedTcp
        )
    }
}

/// What the workload expects `process` to decide for every packet of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Forward(PortId),
    /// Forwarded on whichever port (Service paths: Maglev picks local and remote backends).
    Forwarded,
    Drop(DropReason),
}

/// Why a workload could not be prepared or did not behave as the path says.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("state directory {dir}: {message}")]
    State { dir: PathBuf, message: String },
    #[error("{0}")]
    Build(String),
    #[error("capacity {capacity} is not in 1..={MAX_PACKETS}")]
    Capacity { capacity: usize },
    #[error("asked to run {n} packets but only {capacity} were prepared")]
    TooMany { n: usize, capacity: usize },
    #[error("{path}: packet {index}: verdict {got:?}, expected {expected}")]
    Unexpected {
        path: &'static str,
        index: usize,
        got: Verdict,
        expected: String,
    },
}

/// Builds the i-th packet of a path.
type MakePacket = Box<dyn Fn(usize) -> Vec<u8>>;

/// A prepared path: tables, flow state and frames, ready to be processed.
#[derive(Debug)]
pub struct Workload {
    path: PacketPath,
    tables: Tables,
    flows: Flows,
    in_port: PortId,
    expect: Expect,
    /// The packets as built, for `rerun` (the frames are rewritten in place).
    packets: Vec<Vec<u8>>,
    /// The length of the packet loaded into each frame.
    lens: Vec<usize>,
    frames: Vec<u8>,
    now_ns: u64,
}

/// The example state directory the workload is built from.
pub fn example_state_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-fixtures/examples/two-node")
}

impl Workload {
    /// Builds everything for `path` with `capacity` frames; established-flow paths also
    /// set up their flows here, so the measured packets all take the established path.
    pub fn prepare(path: PacketPath, capacity: usize) -> Result<Workload, WorkloadError> {
        if capacity == 0 || capacity > MAX_PACKETS {
            return Err(WorkloadError::Capacity { capacity });
        }
        let tables = tables(path.with_policy())?;
        let port = |name: &str| {
            tables
                .port_by_name(name)
                .ok_or_else(|| WorkloadError::Build(format!("no port {name} in the tables")))
        };
        let client = port("pod-demo-client")?;
        let web0 = port("pod-demo-web-0")?;
        let mut flows = Flows::with_seed(
            ConntrackConfig {
                capacity: FLOW_CAPACITY,
                ..ConntrackConfig::default()
            },
            FLOW_SEED,
        );
        flows.preallocate();

        // Source ports: new-flow paths give every packet its own; the rest cycle over
        // ESTABLISHED_FLOWS flows.
        let new_port = |i: usize| 10_000 + i as u16;
        let cycle_port = |i: usize| 40_000 + (i as u16 % ESTABLISHED_FLOWS);
        let (in_port, expect, packet): (PortId, Expect, MakePacket) = match path {
            PacketPath::PodToLocalPod => (
                client,
                Expect::Forward(web0),
                Box::new(move |i| udp(CLIENT, WEB0, cycle_port(i), 8080)),
            ),
            PacketPath::PodToRemotePodVxlan => (
                client,
                Expect::Forward(PortId::UPLINK),
                Box::new(move |i| udp(CLIENT, WEB1, cycle_port(i), 8080)),
            ),
            PacketPath::VxlanInToLocalPod => (
                PortId::UPLINK,
                Expect::Forward(client),
                Box::new(move |i| vxlan_from_node_b(&udp(WEB1, CLIENT, cycle_port(i), 5000))),
            ),
            PacketPath::ClusterIpNewTcp => (
                client,
                Expect::Forwarded,
                Box::new(move |i| tcp(CLIENT, VIP, new_port(i), 80, Tcp::Syn)),
            ),
            PacketPath::ClusterIpEstablishedTcp => (
                client,
                Expect::Forwarded,
                Box::new(move |i| tcp(CLIENT, VIP, cycle_port(i), 80, Tcp::Ack)),
            ),
            PacketPath::PolicyNewAllowedTcp => (
                client,
                Expect::Forward(port("pod-demo-db-0")?),
                Box::new(move |i| tcp(CLIENT, DB0, new_port(i), 5432, Tcp::Syn)),
            ),
            PacketPath::PolicyEstablishedTcp => (
                client,
                Expect::Forward(port("pod-demo-db-0")?),
                Box::new(move |i| tcp(CLIENT, DB0, cycle_port(i), 5432, Tcp::Ack)),
            ),
            PacketPath::PolicyDeniedTcp => (
                web0,
                Expect::Drop(DropReason::PolicyDenied),
                Box::new(move |i| tcp(WEB0, DB0, new_port(i), 5432, Tcp::Syn)),
            ),
        };
        // Building with etherparse is slow in debug builds (and under valgrind), so each
        // distinct packet is built once: cycling paths repeat their first ESTABLISHED_FLOWS
        // packets, new-flow paths patch the source port of the first one.
        let distinct = capacity.min(usize::from(ESTABLISHED_FLOWS));
        let built: Vec<Vec<u8>> = (0..distinct).map(&packet).collect();
        let new_flows = matches!(
            path,
            PacketPath::ClusterIpNewTcp
                | PacketPath::PolicyNewAllowedTcp
                | PacketPath::PolicyDeniedTcp
        );
        let packets: Vec<Vec<u8>> = (0..capacity)
            .map(|i| {
                if new_flows {
                    with_tcp_src_port(&built[0], new_port(i))
                } else {
                    built[i % distinct].clone()
                }
            })
            .collect();
        let mut w = Workload {
            path,
            tables,
            flows,
            in_port,
            expect,
            packets,
            lens: Vec::new(),
            frames: vec![0u8; capacity.max(usize::from(ESTABLISHED_FLOWS)) * FRAME_SIZE],
            now_ns: 1_000_000_000,
        };
        if matches!(
            path,
            PacketPath::ClusterIpEstablishedTcp | PacketPath::PolicyEstablishedTcp
        ) {
            // The SYNs of the flows the measured ACKs belong to.
            let (dst, dport) = if path == PacketPath::PolicyEstablishedTcp {
                (DB0, 5432)
            } else {
                (VIP, 80)
            };
            let syns: Vec<Vec<u8>> = (0..usize::from(ESTABLISHED_FLOWS))
                .map(|i| tcp(CLIENT, dst, cycle_port(i), dport, Tcp::Syn))
                .collect();
            w.load(&syns);
            w.run(syns.len())?;
        }
        let packets = std::mem::take(&mut w.packets);
        w.load(&packets);
        w.packets = packets;
        Ok(w)
    }

    pub fn path(&self) -> PacketPath {
        self.path
    }

    pub fn capacity(&self) -> usize {
        self.packets.len()
    }

    /// Copies `packets` into the first frames (at the kernel's XDP headroom).
    fn load(&mut self, packets: &[Vec<u8>]) {
        self.lens = packets.iter().map(Vec::len).collect();
        for (pkt, buf) in packets.iter().zip(self.frames.chunks_exact_mut(FRAME_SIZE)) {
            // Every packet here is far smaller than a frame, so load cannot fail.
            let _ = Frame::load(buf, DEFAULT_HEADROOM, pkt);
        }
    }

    /// Processes the first `n` frames as they are in memory, one `process` call each, and
    /// checks every verdict. The hot loop of the instructions-per-packet measurement.
    pub fn run(&mut self, n: usize) -> Result<(), WorkloadError> {
        if n > self.lens.len() {
            return Err(WorkloadError::TooMany {
                n,
                capacity: self.lens.len(),
            });
        }
        let frames = self.frames.chunks_exact_mut(FRAME_SIZE);
        for (index, (buf, &len)) in frames.zip(&self.lens).take(n).enumerate() {
            let mut frame = Frame::new(buf, DEFAULT_HEADROOM, len);
            self.now_ns += 1_000;
            let got = process(
                &self.tables,
                &mut self.flows,
                self.now_ns,
                self.in_port,
                &mut frame,
                &mut NoObserver,
            );
            let ok = match (self.expect, got) {
                (Expect::Drop(want), Verdict::Drop(r)) => want == r,
                (Expect::Forwarded, Verdict::Forward(_)) => true,
                (Expect::Forward(want), Verdict::Forward(p)) => want == p,
                _ => false,
            };
            if !ok {
                return Err(WorkloadError::Unexpected {
                    path: self.path.name(),
                    index,
                    got,
                    expected: format!("{:?}", self.expect),
                });
            }
        }
        Ok(())
    }

    /// Reloads every frame and processes them all again; new-flow paths first forget their
    /// flows, so every pass takes the same path. For sampling profilers, not for counting.
    pub fn rerun(&mut self) -> Result<(), WorkloadError> {
        if matches!(
            self.path,
            PacketPath::ClusterIpNewTcp
                | PacketPath::PolicyNewAllowedTcp
                | PacketPath::PolicyDeniedTcp
        ) {
            self.flows.retain(|_| false);
        }
        let packets = std::mem::take(&mut self.packets);
        self.load(&packets);
        self.packets = packets;
        self.run(self.packets.len())
    }
}

/// node-a's tables from the example; with `policy`, plus pod db-0 (10.244.1.8, app=db,
/// named port postgres 5432) and a NetworkPolicy isolating it for ingress, allowing only
/// app=client pods on TCP postgres.
fn tables(policy: bool) -> Result<Tables, WorkloadError> {
    let dir = example_state_dir();
    let state = load_state_dir(&dir).map_err(|e| WorkloadError::State {
        dir: dir.clone(),
        message: e.to_string(),
    })?;
    let mut cluster: ClusterState = state.cluster;
    if policy {
        add_db_pod_and_policy(&mut cluster)?;
    }
    let translated = translate(&cluster, &state.config, NODE, 1)
        .map_err(|e| WorkloadError::Build(format!("translate: {e}")))?;
    Ok(translated.tables)
}

fn add_db_pod_and_policy(cluster: &mut ClusterState) -> Result<(), WorkloadError> {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "demo", "labels": {"app": "db"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "db", "image": "postgres",
            "ports": [{"name": "postgres", "containerPort": 5432, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "10.244.1.8", "podIPs": [{"ip": "10.244.1.8"}]}
    });
    let policy = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db-ingress", "namespace": "demo"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                "ports": [{"protocol": "TCP", "port": "postgres"}]
            }]
        }
    });
    let bad = |what: &str, e: serde_json::Error| WorkloadError::Build(format!("{what}: {e}"));
    cluster
        .pods
        .push(serde_json::from_value(pod).map_err(|e| bad("db-0 pod", e))?);
    cluster
        .network_policies
        .push(serde_json::from_value(policy).map_err(|e| bad("db-ingress policy", e))?);
    Ok(())
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail; a failure would leave an empty packet, which the
    // verdict check reports.
    let _ = PacketBuilder::ethernet2(MacAddr::for_ipv4(src).0, GW_MAC)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, &[0u8; 18]);
    out
}

#[derive(Debug, Clone, Copy)]
enum Tcp {
    Syn,
    Ack,
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, kind: Tcp) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2(MacAddr::for_ipv4(src).0, GW_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64240);
    let b = match kind {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(1),
    };
    let _ = b.write(&mut out, &[]);
    out
}

/// `packet` (Ethernet + IPv4 without options + TCP) with another TCP source port, its
/// checksum adjusted incrementally (RFC 1624: HC' = ~(~HC + ~m + m')).
fn with_tcp_src_port(packet: &[u8], port: u16) -> Vec<u8> {
    const SPORT: usize = 14 + 20;
    const CSUM: usize = SPORT + 16;
    let mut p = packet.to_vec();
    let (Some(old), Some(sum)) = (p.get(SPORT..SPORT + 2), p.get(CSUM..CSUM + 2)) else {
        return p;
    };
    let old = u16::from_be_bytes([old[0], old[1]]);
    let sum = u16::from_be_bytes([sum[0], sum[1]]);
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(port);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let new_sum = !(acc as u16);
    p[SPORT..SPORT + 2].copy_from_slice(&port.to_be_bytes());
    p[CSUM..CSUM + 2].copy_from_slice(&new_sum.to_be_bytes());
    p
}

/// node-b's VXLAN encapsulation of `inner` towards node-a (VNI 1, port 4789).
fn vxlan_from_node_b(inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    payload.extend_from_slice(inner);
    let mut out = Vec::new();
    let _ = PacketBuilder::ethernet2(NODE_B_UNDERLAY.0, NODE_A_UNDERLAY.0)
        .ipv4(NODE_B_UNDERLAY.1, NODE_A_UNDERLAY.1, 64)
        .udp(50_000, 4789)
        .write(&mut out, &payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_source_port_keeps_the_tcp_checksum_valid() {
        let p = tcp(CLIENT, VIP, 10_000, 80, Tcp::Syn);
        let q = with_tcp_src_port(&p, 23_456);
        let parsed = etherparse::SlicedPacket::from_ethernet(&q).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
            panic!("not IPv4");
        };
        let Some(etherparse::TransportSlice::Tcp(t)) = parsed.transport else {
            panic!("not TCP");
        };
        assert_eq!(t.source_port(), 23_456);
        let want = t
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
            .expect("checksum");
        assert_eq!(t.checksum(), want);
    }

    #[test]
    fn every_path_prepares_and_runs_with_its_verdict() {
        for path in PacketPath::ALL {
            let mut w = Workload::prepare(path, 200).expect("prepares");
            w.run(200).unwrap_or_else(|e| panic!("{e}"));
            w.rerun()
                .unwrap_or_else(|e| panic!("{}: rerun: {e}", path.name()));
            assert_eq!(PacketPath::from_name(path.name()), Some(path));
        }
    }
}
