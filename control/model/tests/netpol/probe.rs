//! The cluster every NetworkPolicy suite here probes, and the probe itself.
//!
//! Two nodes, `node-a` and `node-b`, joined by the VXLAN overlay; namespaces and pods with
//! labels and container ports (a [`Model`]); the tables kxdp translates for each node from
//! the model plus the suite's own files (a [`Cluster`]). A probe is a real frame handed to
//! `datapath::process` on the node it enters and, when that node tunnels it, to the other
//! node on its uplink; its [`Outcome`] says where it went and, for a drop, what the
//! observer was told.
//!
//! Nothing here decides what policy should do: the expectations are each suite's own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use datapath::conntrack::Flows;
use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::observer::Observer;
use datapath::policy::PolicyDirection;
use datapath::tables::{PortId, PortInfo, Tables};
use datapath::{DropReason, Verdict, process};
use etherparse::{IpNumber, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use testkit::TempDir;
use testkit::frames::{FIRST_SEQ, Headers, Tcp};
use testkit::offline::{pod_mac, tables_for};

pub use testkit::frames::Proto;

pub type Labels = BTreeMap<String, String>;

/// One node: its name, InternalIP, PodCIDR, uplink MAC and overlay gateway address.
#[derive(Debug)]
pub struct NodeSpec {
    pub name: &'static str,
    pub ip: [u8; 4],
    pub pod_cidr: &'static str,
    pub mac: [u8; 6],
    pub gateway: [u8; 4],
}

pub const NODES: [NodeSpec; 2] = [
    NodeSpec {
        name: "node-a",
        ip: [192, 168, 50, 10],
        pod_cidr: "10.244.1.0/24",
        mac: [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0a],
        gateway: [10, 244, 1, 1],
    },
    NodeSpec {
        name: "node-b",
        ip: [192, 168, 50, 11],
        pod_cidr: "10.244.2.0/24",
        mac: [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0b],
        gateway: [10, 244, 2, 1],
    },
];

/// The index in [`NODES`] of the node called `name`.
pub fn node_index(name: &str) -> usize {
    NODES
        .iter()
        .position(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The MAC of node `node`'s overlay gateway: where a pod sends everything.
pub fn gateway_mac(node: usize) -> [u8; 6] {
    pod_mac(NODES[node].gateway)
}

/// A pod of a model.
#[derive(Debug, Clone)]
pub struct ModelPod {
    pub ns: String,
    pub name: String,
    pub labels: Labels,
    /// (name, number, protocol) of every declared container port.
    pub ports: Vec<(String, u16, Proto)>,
    /// Index into [`NODES`].
    pub node: usize,
    pub ip: [u8; 4],
}

impl ModelPod {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// Namespaces (with their labels) and pods. The pods' order is the grid order.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: Vec<ModelPod>,
}

impl Model {
    /// The index of pod `key` (`ns/name`).
    pub fn index(&self, key: &str) -> usize {
        self.pods
            .iter()
            .position(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pod {key} in the model"))
    }

    /// The Nodes, Namespaces and Pods as a state directory file.
    pub fn manifests(&self) -> String {
        let mut s = String::new();
        for n in &NODES {
            let mac = n.mac.map(|b| format!("{b:02x}")).join(":");
            let _ = write!(
                s,
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  annotations:\n    \
                 kxdp.io/underlay-mac: \"{mac}\"\nspec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\n\
                 status:\n  addresses:\n    - {{type: InternalIP, address: {}}}\n",
                n.name,
                Ipv4Addr::from(n.ip),
                cidr = n.pod_cidr,
            );
        }
        for (ns, labels) in &self.namespaces {
            let _ = write!(
                s,
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {}\n",
                labels_yaml(labels)
            );
        }
        for p in &self.pods {
            let ip = Ipv4Addr::from(p.ip);
            let _ = write!(
                s,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  \
                 labels: {}\nspec:\n  nodeName: {}\n  containers:\n",
                p.name,
                p.ns,
                labels_yaml(&p.labels),
                NODES[p.node].name
            );
            // One container per port, as agnhost is run upstream.
            for (i, (name, port, proto)) in p.ports.iter().enumerate() {
                let _ = write!(
                    s,
                    "    - name: cont-{i}\n      image: registry.k8s.io/e2e-test-images/agnhost:2.53\n      \
                     ports:\n        - {{name: {name}, containerPort: {port}, protocol: {}}}\n",
                    proto.k8s()
                );
            }
            let _ = write!(
                s,
                "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n"
            );
        }
        s
    }
}

/// Flow-style YAML labels: `{k: v, ...}`.
pub fn labels_yaml(labels: &Labels) -> String {
    let items: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", items.join(", "))
}

/// The tables both nodes run for a model.
pub struct Cluster {
    pub model: Model,
    pub tables: [Tables; 2],
}

impl Cluster {
    /// The model's manifests plus `files` ((name, text) in the state directory), loaded
    /// and translated for both nodes as table generation `generation`. Neither step may
    /// warn: a warning means the test's manifests are not what it thinks.
    pub fn new(tag: &str, model: Model, files: &[(String, String)], generation: u64) -> Cluster {
        let dir = TempDir::new(tag);
        dir.write("00-model.yaml", &model.manifests());
        for (name, text) in files {
            dir.write(name, text);
        }
        let tables = tables_for(dir.path(), tag, &NODES.map(|n| n.name), generation)
            .try_into()
            .unwrap_or_else(|_| unreachable!("two nodes asked, two tables built"));
        Cluster { model, tables }
    }

    /// Pod `pod`'s port on its node.
    pub fn pod_port(&self, pod: usize) -> PortId {
        let p = &self.model.pods[pod];
        self.tables[p.node]
            .port_by_name(&PortInfo::pod_name(&p.ns, &p.name))
            .unwrap_or_else(|| panic!("{}: no port on {}", p.key(), NODES[p.node].name))
    }
}

/// An address and port.
pub type Addr = (Ipv4Addr, u16);

/// The source port of every probe.
pub const CLIENT_PORT: u16 = 40_123;

/// Which packet of a connection to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// What opens it: a TCP SYN, a UDP datagram, an SCTP INIT.
    First,
    /// The server's TCP SYN-ACK to [`Segment::First`].
    SynAck,
    /// The client's TCP ACK completing the handshake.
    Ack,
}

/// The `segment` of a `proto` connection from `sport` to `dport` behind `headers`: the
/// SYN-ACK and ACK answer and complete the SYN of [`Headers::first`].
pub fn frame(headers: Headers, proto: Proto, sport: u16, dport: u16, segment: Segment) -> Vec<u8> {
    const SERVER_SEQ: u32 = 0x2000_0000;
    match (proto, segment) {
        (Proto::Tcp, Segment::SynAck) => {
            headers.tcp(sport, dport, Tcp::syn_ack(SERVER_SEQ, FIRST_SEQ + 1), &[])
        }
        (Proto::Tcp, Segment::Ack) => {
            headers.tcp(sport, dport, Tcp::ack(FIRST_SEQ + 1, SERVER_SEQ + 1), &[])
        }
        _ => headers.first(proto, sport, dport),
    }
}

/// A frame pod `from` sends to `dst`:`dport` (through its node's gateway).
pub fn from_pod(
    c: &Cluster,
    from: usize,
    dst: [u8; 4],
    proto: Proto,
    dport: u16,
    segment: Segment,
) -> Vec<u8> {
    let p = &c.model.pods[from];
    frame(
        Headers::new(pod_mac(p.ip), gateway_mac(p.node), p.ip, dst),
        proto,
        CLIENT_PORT,
        dport,
        segment,
    )
}

/// Where a frame should come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// On this pod's port (index into the model).
    Pod(usize),
    /// On the host port of the node it entered: an address outside the cluster.
    Outside,
}

/// What became of a frame.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Came out where it should, addressed as it should; `src` is its source there.
    Delivered { src: Addr },
    /// Dropped by the node it entered (hop 1) or, after the overlay, by the other (hop 2).
    Dropped {
        hop: u8,
        reason: DropReason,
        policies: Vec<String>,
        direction: Option<PolicyDirection>,
    },
    /// Anything else (delivered to the wrong place, passed to the kernel, ...).
    Other(String),
}

impl Outcome {
    /// Whether policy let it through: `None` when it was neither delivered nor denied by
    /// policy (the probe then answers nothing about policy).
    pub fn allowed(&self) -> Option<bool> {
        match self {
            Outcome::Delivered { .. } => Some(true),
            Outcome::Dropped {
                reason: DropReason::PolicyDenied,
                ..
            } => Some(false),
            _ => None,
        }
    }

    /// For a policy denial: the direction and the policies the observer was told.
    pub fn denial(&self) -> Option<(Option<&'static str>, &[String])> {
        match self {
            Outcome::Dropped {
                reason: DropReason::PolicyDenied,
                policies,
                direction,
                ..
            } => Some((direction.map(PolicyDirection::as_str), policies)),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::Delivered { .. } => "connected".into(),
            Outcome::Dropped {
                hop,
                reason,
                policies,
                direction,
            } => format!(
                "dropped on the {} node: {} (policies {policies:?}, direction {direction:?})",
                if *hop == 1 { "client's" } else { "server's" },
                reason.as_str()
            ),
            Outcome::Other(what) => what.clone(),
        }
    }
}

/// Records what `process` reports: the policy verdict's explanation and the steps taken.
#[derive(Debug, Default)]
struct Recorder {
    policies: Vec<String>,
    direction: Option<PolicyDirection>,
    steps: Vec<&'static str>,
}

impl Observer for Recorder {
    fn policies(&mut self, names: &[&str]) {
        self.policies.extend(names.iter().map(|n| n.to_string()));
    }

    fn policy_direction(&mut self, direction: PolicyDirection) {
        self.direction = Some(direction);
    }

    fn step(&mut self, what: &'static str) {
        self.steps.push(what);
    }
}

/// Fixed: flows compare ages, and no probe waits.
const NOW: u64 = 1_000_000_000;

/// `packet` in on `in_port` of node `node`, with that node's flows.
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

/// Sends `packet` in on `in_port` of node `node` and follows it over the overlay; it is
/// delivered when it comes out at `dest` addressed to `want`. `flows` (one per node) carry
/// connection state from packet to packet; fresh ones make every packet a first.
pub fn deliver(
    c: &Cluster,
    flows: &mut [Flows; 2],
    node: usize,
    in_port: PortId,
    packet: &[u8],
    dest: Dest,
    want: Addr,
) -> Outcome {
    let (v, out, rec) = run(&c.tables[node], &mut flows[node], in_port, packet);
    let (hop, v, out, rec, at) = match (v, dest) {
        (Verdict::Forward(PortId::UPLINK), Dest::Pod(to)) => {
            let other = 1 - node;
            let to_node = c.model.pods[to].node;
            if to_node != other {
                return Outcome::Other(format!(
                    "sent over the uplink to {}, but {} lives on {}",
                    outer_dst(&out),
                    c.model.pods[to].key(),
                    NODES[to_node].name
                ));
            }
            let (v, out, rec) = run(&c.tables[other], &mut flows[other], PortId::UPLINK, &out);
            (2, v, out, rec, other)
        }
        _ => (1, v, out, rec, node),
    };
    match v {
        Verdict::Forward(p) => {
            let (want_port, what) = match dest {
                Dest::Pod(to) => {
                    let pod = &c.model.pods[to];
                    let name = PortInfo::pod_name(&pod.ns, &pod.name);
                    let Some(port) = c.tables[at].port_by_name(&name) else {
                        return Outcome::Other(format!(
                            "{} has no port on {}",
                            pod.key(),
                            NODES[at].name
                        ));
                    };
                    (port, format!("{}'s port", pod.key()))
                }
                Dest::Outside => (PortId::HOST, "the host port".to_string()),
            };
            if p != want_port {
                return Outcome::Other(format!(
                    "forwarded out of {p:?} on {}, not {what} (steps {:?})",
                    NODES[at].name, rec.steps
                ));
            }
            match endpoints(&out) {
                Ok((src, dst)) if dst == want => Outcome::Delivered { src },
                Ok((_, dst)) => {
                    Outcome::Other(format!("reached {what} addressed to {}:{}", dst.0, dst.1))
                }
                Err(e) => Outcome::Other(e),
            }
        }
        Verdict::Drop(reason) => Outcome::Dropped {
            hop,
            reason,
            policies: rec.policies,
            direction: rec.direction,
        },
        Verdict::Pass => Outcome::Other(format!(
            "passed to the kernel on {} (steps {:?})",
            NODES[at].name, rec.steps
        )),
    }
}

/// A first packet from pod `from` to `dst`:`port`, with fresh flows; `dest` says where it
/// should come out, addressed to `want`. For a delivered TCP probe to a pod, the second
/// element says whether that pod's SYN-ACK gets back to the client as the answer of
/// `dst`:`port` (what the client talked to), whatever isolates the client.
pub fn probe(
    c: &Cluster,
    from: usize,
    dst: [u8; 4],
    proto: Proto,
    port: u16,
    dest: Dest,
    want: Addr,
) -> (Outcome, Option<Result<(), String>>) {
    let mut flows = [Flows::default(), Flows::default()];
    let client = &c.model.pods[from];
    let packet = from_pod(c, from, dst, proto, port, Segment::First);
    let node = client.node;
    let outcome = deliver(c, &mut flows, node, c.pod_port(from), &packet, dest, want);
    let Dest::Pod(to) = dest else {
        return (outcome, None);
    };
    if !matches!(outcome, Outcome::Delivered { .. }) || proto != Proto::Tcp || from == to {
        return (outcome, None);
    }
    let server = &c.model.pods[to];
    let reply = frame(
        Headers::new(
            pod_mac(server.ip),
            gateway_mac(server.node),
            server.ip,
            client.ip,
        ),
        Proto::Tcp,
        port,
        CLIENT_PORT,
        Segment::SynAck,
    );
    let back = deliver(
        c,
        &mut flows,
        server.node,
        c.pod_port(to),
        &reply,
        Dest::Pod(from),
        (Ipv4Addr::from(client.ip), CLIENT_PORT),
    );
    let answered = (Ipv4Addr::from(dst), port);
    let res = match back {
        Outcome::Delivered { src } if src == answered => Ok(()),
        Outcome::Delivered { src } => Err(format!(
            "the SYN-ACK reached the client from {}:{}, not from {}:{}",
            src.0, src.1, answered.0, answered.1
        )),
        other => Err(format!(
            "SYN-ACK from {}: {}",
            server.key(),
            other.describe()
        )),
    };
    (outcome, Some(res))
}

/// A probe from pod `from` to pod `to`'s own address.
pub fn probe_pod(c: &Cluster, from: usize, to: usize, proto: Proto, port: u16) -> Outcome {
    let ip = c.model.pods[to].ip;
    let want = (Ipv4Addr::from(ip), port);
    probe(c, from, ip, proto, port, Dest::Pod(to), want).0
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

/// The (source, destination) address and port of a frame as it left.
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
