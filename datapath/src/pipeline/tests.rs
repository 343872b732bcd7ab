//! The walks of ARCHITECTURE.md §2 through `process`, on hand-built tables and packets
//! built (and checked) with etherparse, an implementation independent of ours.

use std::sync::Arc;

use etherparse::checksum::Sum16BitWords;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

use super::*;
use crate::addr::Cidr;
use crate::frame::DEFAULT_HEADROOM;
use crate::lb::maglev::{self, MaglevTable};
use crate::observer::NoObserver;
use crate::tables::{
    Backend, BackendSet, EndpointCondition, Frontend, FrontendKind, LocalNode, OverlayParams,
    PortInfo, PrefixMap, ServiceId, ServiceKey, ServicePort, proto,
};

const GW_MAC: MacAddr = MacAddr([0x0a, 0x58, 10, 244, 1, 1]);
const CLIENT: [u8; 4] = [10, 244, 1, 5];
const WEB0: [u8; 4] = [10, 244, 1, 6];
const WEB1: [u8; 4] = [10, 244, 2, 7];
const VIP: [u8; 4] = [10, 96, 0, 10];
const NODE_A_MAC: MacAddr = MacAddr([2, 0, 0xc0, 0xa8, 0x32, 0x0a]);
const NODE_B_MAC: MacAddr = MacAddr([2, 0, 0xc0, 0xa8, 0x32, 0x0b]);

fn pod(ns: &str, name: &str, port: u32, ip: [u8; 4]) -> LocalPod {
    LocalPod {
        namespace: ns.into(),
        name: name.into(),
        port: PortId(port),
        mac: MacAddr::for_ipv4(ip),
        ips: vec![IpKey::v4(ip)],
    }
}

/// node-a of the two-node example: client and web-0 local, web-1 on node-b.
pub(crate) fn node_a_tables(backends: Vec<(IpKey, u16)>) -> Tables {
    let local_pods = vec![
        pod("demo", "client", 2, CLIENT),
        pod("demo", "web-0", 3, WEB0),
    ];
    let mut local_pod_by_ip = foldhash::HashMap::default();
    for (i, p) in local_pods.iter().enumerate() {
        local_pod_by_ip.insert(p.ips[0], i);
    }
    let mut remote_routes = PrefixMap::default();
    remote_routes.insert("10.244.2.0/24".parse::<Cidr>().unwrap(), 0);
    let mut frontends = foldhash::HashMap::default();
    frontends.insert(
        ServiceKey {
            vip: IpKey::v4(VIP),
            port: 80,
            proto: proto::TCP,
        },
        Frontend {
            service: ServiceId(0),
            kind: FrontendKind::ClusterIp,
        },
    );
    let service_ports = vec![ready_port("demo/web:80", backends)];
    Tables {
        generation: 1,
        node: LocalNode {
            name: "node-a".into(),
            underlay_ip: [192, 168, 50, 10],
            underlay_mac: NODE_A_MAC,
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            gateway_ip: [10, 244, 1, 1],
            gateway_mac: GW_MAC,
            addresses: vec![IpKey::v4([192, 168, 50, 10]), IpKey::v4([10, 244, 1, 1])],
        },
        overlay: OverlayParams {
            vni: 1,
            udp_port: 4789,
            underlay_mtu: 1500,
        },
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        ports: vec![
            PortInfo::uplink(),
            PortInfo::host(),
            PortInfo::pod("demo", "client", 0),
            PortInfo::pod("demo", "web-0", 1),
        ],
        local_pods,
        local_pod_by_ip,
        remote_routes,
        remote_nodes: vec![RemoteNode {
            name: "node-b".into(),
            pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
            underlay_ip: [192, 168, 50, 11],
            underlay_mac: NODE_B_MAC,
        }],
        remote_node_by_underlay: [([192, 168, 50, 11], 0)].into_iter().collect(),
        service_ports: service_ports.into_iter().map(Arc::new).collect(),
        frontends: Arc::new(frontends),
        policy: Arc::default(),
    }
}

/// A Service port whose endpoints are all ready; those in node-a's PodCIDR are local.
pub(crate) fn ready_port(name: &str, endpoints: Vec<(IpKey, u16)>) -> ServicePort {
    let mut backends: Vec<Backend> = endpoints
        .into_iter()
        .map(|(ip, port)| Backend {
            ip,
            port,
            condition: EndpointCondition::Ready,
            local: ip.0[12..15] == [10, 244, 1],
        })
        .collect();
    backends.sort();
    let set = |members: Vec<u32>| {
        let keys: Vec<[u8; 18]> = members
            .iter()
            .map(|&i| maglev::backend_key(backends[i as usize].ip, backends[i as usize].port))
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        BackendSet {
            members,
            maglev: Arc::new(MaglevTable::build(&refs, None, 1021, maglev::DEFAULT_SEED).unwrap()),
        }
    };
    let all: Vec<u32> = (0..backends.len() as u32).collect();
    let local: Vec<u32> = all
        .iter()
        .copied()
        .filter(|&i| backends[i as usize].local)
        .collect();
    ServicePort {
        name: name.into(),
        stable_id: 7,
        cluster: set(all),
        local: set(local),
        backends,
        external_local: false,
        internal_local: false,
        affinity_timeout_ns: None,
        lb_source_ranges: Vec::new(),
    }
}

fn web_backends() -> Vec<(IpKey, u16)> {
    vec![(IpKey::v4(WEB0), 8080), (IpKey::v4(WEB1), 8080)]
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MacAddr::for_ipv4(src).0, GW_MAC.0)
        .ipv4(src, dst, ttl)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MacAddr::for_ipv4(src).0, GW_MAC.0)
        .ipv4(src, dst, ttl)
        .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

struct Run {
    verdict: Verdict,
    out: Vec<u8>,
}

fn run(tables: &Tables, flows: &mut Flows, port: PortId, packet: &[u8]) -> Run {
    run_observed(tables, flows, port, packet, &mut NoObserver)
}

fn run_observed<O: Observer>(
    tables: &Tables,
    flows: &mut Flows,
    port: PortId,
    packet: &[u8],
    obs: &mut O,
) -> Run {
    let mut buf = vec![0xa5u8; DEFAULT_HEADROOM + packet.len() + 256];
    let mut frame = Frame::load(&mut buf, DEFAULT_HEADROOM, packet).unwrap();
    let verdict = process(tables, flows, 1_000, port, &mut frame, obs);
    Run {
        verdict,
        out: frame.data().to_vec(),
    }
}

/// Checks every checksum of an IPv4 packet in an Ethernet frame with etherparse.
fn assert_checksums_valid(frame: &[u8]) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("etherparse parses our output");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
        panic!("not IPv4")
    };
    let hdr = ip.header().to_header();
    assert_eq!(
        hdr.header_checksum,
        hdr.calc_header_checksum(),
        "IPv4 header checksum"
    );
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&hdr, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
        }
        Some(TransportSlice::Udp(u)) if u.checksum() != 0 => {
            let want = u.to_header().calc_checksum_ipv4(&hdr, u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
        }
        _ => {}
    }
}

#[test]
fn pod_to_pod_same_node_rewrites_l2_and_ttl() {
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let r = run(
        &t,
        &mut flows,
        PortId(2),
        &udp(CLIENT, WEB0, 5000, 8080, 64, b"hi"),
    );
    assert_eq!(r.verdict, Verdict::Forward(PortId(3)));
    assert_eq!(&r.out[0..6], &MacAddr::for_ipv4(WEB0).0);
    assert_eq!(&r.out[6..12], &GW_MAC.0);
    assert_eq!(r.out[14 + 8], 63, "TTL decremented");
    assert_checksums_valid(&r.out);
}

#[test]
fn pod_to_remote_pod_is_vxlan_encapsulated() {
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let inner = udp(CLIENT, WEB1, 5000, 8080, 64, b"hello");
    let r = run(&t, &mut flows, PortId(2), &inner);
    assert_eq!(r.verdict, Verdict::Forward(PortId::UPLINK));
    let outer = SlicedPacket::from_ethernet(&r.out).unwrap();
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &outer.link else {
        panic!()
    };
    assert_eq!(eth.destination(), NODE_B_MAC.0);
    assert_eq!(eth.source(), NODE_A_MAC.0);
    let Some(etherparse::NetSlice::Ipv4(ip)) = &outer.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), [192, 168, 50, 10]);
    assert_eq!(ip.header().destination(), [192, 168, 50, 11]);
    assert!(ip.header().dont_fragment());
    let Some(TransportSlice::Udp(u)) = &outer.transport else {
        panic!()
    };
    assert_eq!(u.destination_port(), 4789);
    assert!(u.source_port() >= 49152);
    assert_eq!(u.checksum(), 0);
    assert_checksums_valid(&r.out);
    let vx = &u.payload()[..8];
    assert_eq!(vx, &[0x08, 0, 0, 0, 0, 0, 1, 0]);
    let inner_out = &u.payload()[8..];
    assert_eq!(&inner_out[6..12], &GW_MAC.0);
    assert_eq!(&inner_out[0..6], &MacAddr::for_ipv4([10, 244, 2, 1]).0);
    assert_eq!(inner_out[14 + 8], 63);
    assert_eq!(
        &inner_out[14 + 12..],
        &inner[14 + 12..],
        "addresses and payload unchanged"
    );
}

#[test]
fn vxlan_from_remote_node_is_delivered_to_local_pod() {
    // Build node-b's view of web-1 sending to client, encapsulated by node-b.
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let mut inner = udp(WEB1, CLIENT, 8080, 5000, 63, b"reply");
    inner[0..6].copy_from_slice(&GW_MAC.0);
    let outer = {
        let b = PacketBuilder::ethernet2(NODE_B_MAC.0, NODE_A_MAC.0)
            .ipv4([192, 168, 50, 11], [192, 168, 50, 10], 64)
            .udp(50000, 4789);
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        payload.extend_from_slice(&inner);
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    };
    let r = run(&t, &mut flows, PortId::UPLINK, &outer);
    assert_eq!(r.verdict, Verdict::Forward(PortId(2)));
    assert_eq!(&r.out[0..6], &MacAddr::for_ipv4(CLIENT).0);
    assert_eq!(r.out[14 + 8], 62);
    assert_checksums_valid(&r.out);

    // The same with another VNI is dropped; to another port it is the kernel's.
    let mut wrong_vni = outer.clone();
    wrong_vni[14 + 20 + 8 + 6] = 2;
    assert_eq!(
        run(&t, &mut flows, PortId::UPLINK, &wrong_vni).verdict,
        Verdict::Drop(DropReason::VxlanWrongVni)
    );
}

#[test]
fn clusterip_dnat_then_reply_reverse_nat() {
    let t = node_a_tables(vec![(IpKey::v4(WEB0), 8080)]);
    let mut flows = Flows::default();
    let r = run(
        &t,
        &mut flows,
        PortId(2),
        &tcp(CLIENT, VIP, 40000, 80, 64, b""),
    );
    assert_eq!(r.verdict, Verdict::Forward(PortId(3)));
    assert_eq!(&r.out[14 + 16..14 + 20], &WEB0);
    assert_eq!(u16::from_be_bytes([r.out[36], r.out[37]]), 8080);
    assert_checksums_valid(&r.out);
    assert_eq!(flows.len(), 1);

    let mut reply = tcp(WEB0, CLIENT, 8080, 40000, 64, b"");
    reply[0..6].copy_from_slice(&GW_MAC.0);
    let r = run(&t, &mut flows, PortId(3), &reply);
    assert_eq!(r.verdict, Verdict::Forward(PortId(2)));
    assert_eq!(&r.out[14 + 12..14 + 16], &VIP, "reply comes from the VIP");
    assert_eq!(u16::from_be_bytes([r.out[34], r.out[35]]), 80);
    assert_checksums_valid(&r.out);
}

/// Two Service addresses reaching one backend from the same client port would share a
/// reply tuple: the second flow leaves from another source port (as Linux conntrack's NAT
/// does), and each reply reaches the client from the address it used.
#[test]
fn a_reply_tuple_clash_moves_the_new_flows_source_port() {
    const VIP2: [u8; 4] = [10, 96, 0, 11];
    let mut t = node_a_tables(vec![(IpKey::v4(WEB0), 8080)]);
    let key = |vip| ServiceKey {
        vip: IpKey::v4(vip),
        port: 80,
        proto: proto::TCP,
    };
    let fe = *t.frontends.get(&key(VIP)).unwrap();
    Arc::make_mut(&mut t.frontends).insert(key(VIP2), fe);
    let mut flows = Flows::default();
    let sport = |out: &[u8]| u16::from_be_bytes([out[34], out[35]]);

    let first = run(
        &t,
        &mut flows,
        PortId(2),
        &tcp(CLIENT, VIP, 40000, 80, 64, b""),
    );
    assert_eq!(first.verdict, Verdict::Forward(PortId(3)));
    assert_eq!(
        sport(&first.out),
        40000,
        "no clash: the client's port is kept"
    );
    let second = run(
        &t,
        &mut flows,
        PortId(2),
        &tcp(CLIENT, VIP2, 40000, 80, 64, b""),
    );
    assert_eq!(second.verdict, Verdict::Forward(PortId(3)));
    let moved = sport(&second.out);
    assert_ne!(moved, 40000, "the clashing flow got another source port");
    assert_eq!(
        &second.out[14 + 12..14 + 16],
        &CLIENT,
        "the address is kept"
    );
    assert_checksums_valid(&second.out);
    assert_eq!(flows.len(), 2);

    for (port, vip) in [(40000, VIP), (moved, VIP2)] {
        let mut reply = tcp(WEB0, CLIENT, 8080, port, 64, b"");
        reply[0..6].copy_from_slice(&GW_MAC.0);
        let r = run(&t, &mut flows, PortId(3), &reply);
        assert_eq!(r.verdict, Verdict::Forward(PortId(2)));
        assert_eq!(
            &r.out[14 + 12..14 + 16],
            &vip,
            "reply from the address used"
        );
        assert_eq!(u16::from_be_bytes([r.out[36], r.out[37]]), 40000);
        assert_checksums_valid(&r.out);
    }
}

#[test]
fn service_without_endpoints_answers_port_unreachable() {
    let t = node_a_tables(vec![]);
    let mut flows = Flows::default();
    let sent = tcp(CLIENT, VIP, 40000, 80, 64, b"");
    let r = run(&t, &mut flows, PortId(2), &sent);
    assert_eq!(r.verdict, Verdict::Forward(PortId(2)));
    let p = SlicedPacket::from_ethernet(&r.out).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), VIP);
    assert_eq!(ip.header().destination(), CLIENT);
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 3));
    assert_eq!(
        &icmp.payload()[..sent.len() - 14],
        &sent[14..],
        "quotes the packet as sent"
    );
    let sum = etherparse::Icmpv4Header::from_slice(icmp.slice())
        .unwrap()
        .0
        .icmp_type
        .calc_checksum(icmp.payload());
    assert_eq!(icmp.checksum(), sum);
}

#[test]
fn ttl_one_gets_time_exceeded_from_gateway() {
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let sent = udp(CLIENT, WEB1, 5000, 8080, 1, b"x");
    let r = run(&t, &mut flows, PortId(2), &sent);
    assert_eq!(r.verdict, Verdict::Forward(PortId(2)));
    assert_eq!(&r.out[0..6], &MacAddr::for_ipv4(CLIENT).0);
    let p = SlicedPacket::from_ethernet(&r.out).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), [10, 244, 1, 1]);
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (11, 0));
    assert_checksums_valid(&r.out);
}

#[test]
fn too_big_for_the_underlay_gets_frag_needed() {
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let mut sent = udp(CLIENT, WEB1, 5000, 8080, 64, &[0u8; 1460]);
    // etherparse sets DF; the packet is 1488 bytes of IP > 1450.
    let r = run(&t, &mut flows, PortId(2), &sent);
    assert_eq!(r.verdict, Verdict::Forward(PortId(2)));
    let p = SlicedPacket::from_ethernet(&r.out).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp.slice()[6], icmp.slice()[7]]), 1450);
    assert!(r.out.len() <= 14 + 576);
    // Without DF: a counted drop (we do not fragment for the sender).
    sent[14 + 6] &= !0x40;
    let csum_fixed = {
        let mut ip = etherparse::Ipv4HeaderSlice::from_slice(&sent[14..])
            .unwrap()
            .to_header();
        ip.dont_fragment = false;
        ip.header_checksum = ip.calc_header_checksum();
        ip
    };
    let mut hdr = Vec::new();
    csum_fixed.write(&mut hdr).unwrap();
    sent[14..34].copy_from_slice(&hdr);
    assert_eq!(
        run(&t, &mut flows, PortId(2), &sent).verdict,
        Verdict::Drop(DropReason::MtuExceeded)
    );
}

/// The client pod's ARP request for its gateway, 10.244.1.1.
fn client_arp_for_gateway() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MacAddr::for_ipv4(CLIENT).0, [0xff; 6])
        .arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &MacAddr::for_ipv4(CLIENT).0,
                &CLIENT,
                &[0; 6],
                &[10, 244, 1, 1],
            )
            .unwrap(),
        )
        .write(&mut out)
        .unwrap();
    out
}

#[test]
fn arp_for_gateway_is_answered_in_place() {
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let req = client_arp_for_gateway();
    let r = run(&t, &mut flows, PortId(2), &req);
    assert_eq!(r.verdict, Verdict::Forward(PortId(2)));
    let arp = etherparse::ArpPacketSlice::from_slice(&r.out[14..]).unwrap();
    assert_eq!(arp.operation(), etherparse::ArpOperation::REPLY);
    assert_eq!(arp.sender_hw_addr(), &GW_MAC.0);
    assert_eq!(arp.sender_protocol_addr(), &[10, 244, 1, 1]);
    assert_eq!(arp.target_protocol_addr(), &CLIENT);
    assert_eq!(&r.out[0..6], &MacAddr::for_ipv4(CLIENT).0);
}

#[test]
fn pod_traffic_leaves_by_host_or_kernel() {
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let r = run(
        &t,
        &mut flows,
        PortId(2),
        &udp(CLIENT, [1, 1, 1, 1], 5000, 53, 64, b"q"),
    );
    assert_eq!(r.verdict, Verdict::Forward(PortId::HOST));
    assert_eq!(&r.out[0..6], &HOST_MAC.0);
    let r = run(
        &t,
        &mut flows,
        PortId(2),
        &udp(CLIENT, [192, 168, 50, 10], 5000, 10250, 64, b"q"),
    );
    assert_eq!(r.verdict, Verdict::Pass);
}

#[test]
fn spoofed_and_unknown_are_dropped_with_reasons() {
    let t = node_a_tables(web_backends());
    let mut flows = Flows::default();
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (udp(WEB0, WEB1, 1, 2, 64, b""), DropReason::SourceSpoofed),
        (
            udp(CLIENT, [10, 244, 9, 9], 1, 2, 64, b""),
            DropReason::NoRoute,
        ),
        (
            udp(CLIENT, [10, 96, 0, 99], 1, 2, 64, b""),
            DropReason::NoService,
        ),
        (vec![0u8; 10], DropReason::MalformedEthernet),
    ];
    for (pkt, reason) in cases {
        assert_eq!(
            run(&t, &mut flows, PortId(2), &pkt).verdict,
            Verdict::Drop(reason)
        );
    }
    let mut bad_csum = udp(CLIENT, WEB0, 1, 2, 64, b"");
    bad_csum[14 + 10] ^= 0xff;
    assert_eq!(
        run(&t, &mut flows, PortId(2), &bad_csum).verdict,
        Verdict::Drop(DropReason::MalformedIpv4)
    );
    assert_eq!(
        run(
            &t,
            &mut flows,
            PortId(99),
            &udp(CLIENT, WEB0, 1, 2, 64, b"")
        )
        .verdict,
        Verdict::Drop(DropReason::UnknownPort)
    );
}

// ---------------------------------------------------------------------------------------
// Mutated frames: never a panic, and whatever leaves is well-formed.

/// The IP packet an Ethernet frame carries, read with etherparse (not `datapath::wire`).
struct IpView<'a> {
    /// Source and destination as the pseudo-header carries them.
    addrs: PseudoAddrs,
    /// Transport protocol (after IPv6 extension headers).
    proto: u8,
    /// The transport bytes, exactly the IP payload; None for a fragment (no transport
    /// header to judge, or only part of the segment its checksum covers).
    l4: Option<&'a [u8]>,
    /// Frame bytes after the IP packet: Ethernet padding.
    pad: usize,
}

enum PseudoAddrs {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

impl IpView<'_> {
    /// The ones'-complement sum of the pseudo-header for `len` transport bytes.
    fn pseudo_header(&self, len: usize) -> Sum16BitWords {
        match self.addrs {
            PseudoAddrs::V4(s, d) => Sum16BitWords::new()
                .add_4bytes(s)
                .add_4bytes(d)
                .add_2bytes([0, self.proto])
                .add_2bytes((len as u16).to_be_bytes()),
            PseudoAddrs::V6(s, d) => Sum16BitWords::new()
                .add_16bytes(s)
                .add_16bytes(d)
                .add_4bytes((len as u32).to_be_bytes())
                .add_2bytes([0, self.proto]),
        }
    }

    /// The Ethernet frame inside a VXLAN datagram (UDP to 4789), if this is one.
    fn vxlan_inner(&self) -> Option<&[u8]> {
        let l4 = self.l4?;
        let vxlan_port = 4789u16.to_be_bytes();
        (self.proto == proto::UDP && l4.len() >= 16 && l4[2..4] == vxlan_port).then(|| &l4[16..])
    }
}

/// RFC 1071's check: the ones'-complement sum over the covered bytes, checksum field
/// included, is all ones. Accepts either form of zero, as a receiver does.
fn sum_verifies(sum: Sum16BitWords) -> bool {
    sum.ones_complement() == 0
}

enum Parsed<'a> {
    Arp { pad: usize },
    Ip(IpView<'a>),
}

/// Reads an Ethernet frame's ARP or IP packet. Always checked (whatever the input was,
/// the datapath verified or computed these): IP lengths within the frame and the IPv4
/// header checksum.
fn parse_frame(frame: &[u8]) -> Result<Parsed<'_>, String> {
    let eth =
        etherparse::Ethernet2Slice::from_slice_without_fcs(frame).map_err(|e| e.to_string())?;
    let l3 = eth.payload_slice();
    match eth.ether_type() {
        etherparse::EtherType::ARP => {
            let pad = l3
                .len()
                .checked_sub(28)
                .ok_or("ARP shorter than 28 bytes")?;
            Ok(Parsed::Arp { pad })
        }
        etherparse::EtherType::IPV4 => {
            let ip = etherparse::Ipv4Slice::from_slice(l3).map_err(|e| format!("IPv4: {e}"))?;
            let h = ip.header();
            if !sum_verifies(Sum16BitWords::new().add_slice(h.slice())) {
                return Err(format!("IPv4 header checksum {:#06x}", h.header_checksum()));
            }
            let total = usize::from(h.total_len());
            let pad = l3.len().checked_sub(total).ok_or_else(|| {
                format!("IPv4 total length {total} > {} bytes after L2", l3.len())
            })?;
            let payload = ip.payload();
            Ok(Parsed::Ip(IpView {
                addrs: PseudoAddrs::V4(h.source(), h.destination()),
                proto: payload.ip_number.0,
                l4: (!payload.fragmented).then_some(payload.payload),
                pad,
            }))
        }
        etherparse::EtherType::IPV6 => {
            let ip = etherparse::Ipv6Slice::from_slice(l3).map_err(|e| format!("IPv6: {e}"))?;
            let h = ip.header();
            let total = 40 + usize::from(h.payload_length());
            let pad = l3
                .len()
                .checked_sub(total)
                .ok_or_else(|| format!("IPv6 40 + payload length > {} bytes after L2", l3.len()))?;
            let payload = ip.payload();
            Ok(Parsed::Ip(IpView {
                addrs: PseudoAddrs::V6(h.source(), h.destination()),
                proto: payload.ip_number.0,
                l4: (!payload.fragmented).then_some(payload.payload),
                pad,
            }))
        }
        other => Err(format!("EtherType {other:?}")),
    }
}

/// Which transport headers [`check_frame`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4Check {
    None,
    /// The frame's own transport header, not what it quotes or tunnels.
    Own,
    /// Also those of a packet an ICMP error quotes whole, and of a VXLAN inner frame.
    All,
}

/// The transport header's length fields and checksum: TCP's data offset within the
/// segment, UDP's length equal to the IP payload, and the checksum of TCP, UDP (0 is
/// "none" over IPv4), ICMP and ICMPv6. With `quotes`, for an ICMPv4 error quoting a whole
/// IPv4 packet, that packet's header checksum and transport header too.
fn check_l4(ip: &IpView<'_>, quotes: bool) -> Result<(), String> {
    let Some(l4) = ip.l4 else {
        return Ok(());
    };
    let v6 = matches!(ip.addrs, PseudoAddrs::V6(..));
    let word = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    match ip.proto {
        proto::TCP => {
            let doff = l4.get(12).map_or(0, |b| usize::from(b >> 4) * 4);
            if l4.len() < 20 || doff < 20 || doff > l4.len() {
                return Err(format!("TCP data offset {doff} in {} bytes", l4.len()));
            }
            if !sum_verifies(ip.pseudo_header(l4.len()).add_slice(l4)) {
                return Err(format!("TCP checksum {:#06x}", word(16)));
            }
        }
        proto::UDP => {
            if l4.len() < 8 || usize::from(word(4)) != l4.len() {
                return Err(format!(
                    "UDP length field vs {} bytes of IP payload",
                    l4.len()
                ));
            }
            let none = word(6) == 0;
            if none && v6 {
                return Err("UDP over IPv6 without checksum".into());
            }
            if !none && !sum_verifies(ip.pseudo_header(l4.len()).add_slice(l4)) {
                return Err(format!("UDP checksum {:#06x}", word(6)));
            }
        }
        proto::ICMP if !v6 => {
            if l4.len() < 8 || !sum_verifies(Sum16BitWords::new().add_slice(l4)) {
                return Err(format!("ICMP checksum in {} bytes", l4.len()));
            }
            // Destination unreachable, time exceeded, parameter problem: a quote.
            if quotes && matches!(l4[0], 3 | 11 | 12) {
                check_quote(&l4[8..]).map_err(|e| format!("ICMP quote: {e}"))?;
            }
        }
        proto::ICMPV6
            if v6 && (l4.len() < 8 || !sum_verifies(ip.pseudo_header(l4.len()).add_slice(l4))) =>
        {
            return Err(format!("ICMPv6 checksum in {} bytes", l4.len()));
        }
        _ => {}
    }
    Ok(())
}

/// The packet an ICMPv4 error quotes, when the quote holds all of it (a cut quote has no
/// checksum anyone could verify).
fn check_quote(quote: &[u8]) -> Result<(), String> {
    let Ok(ip) = etherparse::Ipv4Slice::from_slice(quote) else {
        return Ok(());
    };
    let h = ip.header();
    if usize::from(h.total_len()) != quote.len() {
        return Ok(());
    }
    if !sum_verifies(Sum16BitWords::new().add_slice(h.slice())) {
        return Err("IPv4 header checksum".into());
    }
    let payload = ip.payload();
    if payload.ip_number == etherparse::IpNumber::TCP {
        // Not a quoted TCP checksum: the datapath's ICMP NAT (icmp_nat::rewrite) translates
        // a quoted TCP header's ports and addresses but leaves its checksum as it was (it
        // updates a quoted UDP checksum only), where Linux's NAT updates it too when the
        // whole header is quoted. Receivers do not verify quoted checksums; a known gap,
        // left out here rather than asserted.
        return Ok(());
    }
    check_l4(
        &IpView {
            addrs: PseudoAddrs::V4(h.source(), h.destination()),
            proto: payload.ip_number.0,
            l4: (!payload.fragmented).then_some(payload.payload),
            pad: 0,
        },
        true,
    )
}

/// Checks a whole frame and the frame inside it if it is VXLAN: always the IP lengths and
/// IPv4 header checksums, and the transport headers `l4` says ([`check_l4`]).
/// Returns the padding found, inner frames' included.
fn check_frame(frame: &[u8], l4: L4Check) -> Result<usize, String> {
    let ip = match parse_frame(frame)? {
        Parsed::Arp { pad } => return Ok(pad),
        Parsed::Ip(ip) => ip,
    };
    if l4 != L4Check::None {
        check_l4(&ip, l4 == L4Check::All)?;
    }
    let mut pad = ip.pad;
    if let Some(inner) = ip.vxlan_inner() {
        let inner_l4 = if l4 == L4Check::All {
            L4Check::All
        } else {
            L4Check::None
        };
        pad += check_frame(inner, inner_l4).map_err(|e| format!("inside VXLAN: {e}"))?;
    }
    Ok(pad)
}

/// A client source port whose new flow to VIP:`dport` node-a's Maglev table sends to
/// web-0, so that its replies and ICMP errors come from a local pod.
fn sport_to_web0(t: &Tables, udp_flow: bool, dport: u16) -> u16 {
    (41000..u16::MAX)
        .find(|&sport| {
            let pkt = if udp_flow {
                udp(CLIENT, VIP, sport, dport, 64, b"q")
            } else {
                tcp(CLIENT, VIP, sport, dport, 64, b"")
            };
            let r = run(t, &mut Flows::default(), PortId(2), &pkt);
            r.verdict == Verdict::Forward(PortId(3))
        })
        .expect("some port maps to web-0")
}

/// `from` tells `to` that the IP packet `quote` found its port closed.
fn port_unreachable(from: [u8; 4], to: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MacAddr::for_ipv4(from).0, GW_MAC.0)
        .ipv4(from, to, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut out, quote)
        .unwrap();
    out
}

/// The steps (`Observer::step`) that answer a packet instead of forwarding it.
const ANSWERS: &[&str] = &[
    "arp_reply",
    "ndp_advert",
    "icmp_time_exceeded",
    "icmp_frag_needed",
    "icmp_packet_too_big",
    "icmp_port_unreachable",
    "reject_port_unreachable",
    "tcp_reset",
];

/// The pipeline steps one packet took.
#[derive(Default)]
struct Steps(Vec<&'static str>);

impl Observer for Steps {
    fn step(&mut self, what: &'static str) {
        self.0.push(what);
    }
}

/// What the mutation loop saw, to show it exercised every outcome.
#[derive(Default, Debug)]
struct Tally {
    /// Forwarded frames, by what happened to them.
    forwarded: usize,
    encapsulated: usize,
    answered: usize,
    /// Forwarded frames whose transport checksums were checked (their input's were right).
    l4_checked: usize,
    /// The steps (rewrites, answers) that made the frames checked in full.
    l4_checked_steps: std::collections::BTreeMap<&'static str, usize>,
    passed: usize,
    drops: std::collections::BTreeMap<&'static str, usize>,
}

/// Random byte mutations and truncations of valid frames, on every port: `process` never
/// panics, and every frame it emits is well-formed. Its length agrees with its headers
/// (Ethernet + IPv4 total length or IPv6 40 + payload length, UDP length = IP payload;
/// never more padding than the input had) and its IPv4 header checksums verify, outer and
/// inner. Its transport checksums verify whenever the input's did: rewrites update them
/// incrementally (RFC 1624), so a right packet stays right, and answers (ICMP errors, RSTs,
/// ARP and NDP replies) are built whole. An input whose transport checksum was already
/// wrong is forwarded as wrong (L4 checksums are not verified, see README "Checks on the
/// way"): out of scope. VXLAN's outer UDP checksum is 0 by design (RFC 7348 on IPv4).
/// `Pass` hands the frame to the kernel untouched.
/// Lets the Service's VIP answer UDP 53 too, so one table carries UDP flows beside TCP.
fn answer_udp_53(t: &mut Tables) {
    Arc::make_mut(&mut t.frontends).insert(
        ServiceKey {
            vip: IpKey::v4(VIP),
            port: 53,
            proto: proto::UDP,
        },
        Frontend {
            service: ServiceId(0),
            kind: FrontendKind::ClusterIp,
        },
    );
}

#[test]
fn any_bytes_on_any_port_never_panic() {
    let mut t = node_a_tables(web_backends());
    // The Service also answers UDP 53, for UDP flows and ICMP errors about them.
    answer_udp_53(&mut t);
    let mut flows = Flows::new(crate::conntrack::ConntrackConfig {
        capacity: 64,
        ..Default::default()
    });
    let (tcp_sport, udp_sport) = (sport_to_web0(&t, false, 80), sport_to_web0(&t, true, 53));
    let no_udp_checksum = {
        // Through the Service's NAT: a checksum of 0 ("none") must stay 0.
        let mut p = udp(CLIENT, VIP, 5001, 53, 64, b"no checksum");
        p[14 + 20 + 6..14 + 20 + 8].fill(0);
        p
    };
    let vxlan_from_node_b = {
        let mut inner = udp(WEB1, CLIENT, 8080, 5000, 63, b"reply");
        inner[0..6].copy_from_slice(&GW_MAC.0);
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        payload.extend_from_slice(&inner);
        let mut out = Vec::new();
        PacketBuilder::ethernet2(NODE_B_MAC.0, NODE_A_MAC.0)
            .ipv4([192, 168, 50, 11], [192, 168, 50, 10], 64)
            .udp(50000, 4789)
            .write(&mut out, &payload)
            .unwrap();
        // As VTEPs send it: no outer checksum, so inner mutations leave the outer valid.
        out[14 + 20 + 6..14 + 20 + 8].fill(0);
        out
    };
    let arp_request = client_arp_for_gateway();
    let echo = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MacAddr::for_ipv4(CLIENT).0, GW_MAC.0)
            .ipv4(CLIENT, WEB1, 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut out, b"ping")
            .unwrap();
        out
    };
    let neighbour_solicitation = {
        // From the host (the datapath answers it for any address not the node's own).
        let target = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut src = [0u8; 16];
        src[..2].copy_from_slice(&[0xfe, 0x80]);
        src[15] = 2;
        let mut dst = [0u8; 16];
        dst[..2].copy_from_slice(&[0xff, 0x02]);
        dst[11..].copy_from_slice(&[1, 0xff, 0, 0, 1]);
        let mut out = Vec::new();
        PacketBuilder::ethernet2(HOST_MAC.0, [0x33, 0x33, 0xff, 0, 0, 1])
            .ipv6(src, dst, 255)
            .icmpv6_raw(135, 0, [0; 4])
            .write(&mut out, &target)
            .unwrap();
        out
    };
    let syn_ack = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MacAddr::for_ipv4(WEB0).0, GW_MAC.0)
            .ipv4(WEB0, CLIENT, 64)
            .tcp(8080, tcp_sport, 5000, 64240)
            .syn()
            .ack(1001)
            .write(&mut out, b"")
            .unwrap();
        out
    };
    let seeds: Vec<Vec<u8>> = vec![
        udp(CLIENT, WEB1, 5000, 8080, 64, b"hello"),
        tcp(CLIENT, VIP, 40000, 80, 64, b""),
        udp(CLIENT, WEB0, 5000, 8080, 1, b"x"),
        no_udp_checksum,
        // A Service flow to web-0, its reply (reverse NAT) and an ICMP error about it.
        tcp(CLIENT, VIP, tcp_sport, 80, 64, b""),
        syn_ack,
        port_unreachable(
            WEB0,
            CLIENT,
            &tcp(CLIENT, WEB0, tcp_sport, 8080, 63, b"")[14..],
        ),
        udp(CLIENT, VIP, udp_sport, 53, 64, b"query"),
        udp(WEB0, CLIENT, 8080, udp_sport, 64, b"answer"),
        port_unreachable(
            WEB0,
            CLIENT,
            &udp(CLIENT, WEB0, udp_sport, 8080, 63, b"q")[14..],
        ),
        vxlan_from_node_b,
        arp_request,
        echo,
        neighbour_solicitation,
    ];
    for (i, seed) in seeds.iter().enumerate() {
        assert_eq!(
            check_frame(seed, L4Check::All),
            Ok(0),
            "seed {i} is well-formed"
        );
    }

    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut tally = Tally::default();
    for i in 0..30_000u32 {
        let mut pkt = seeds[i as usize % seeds.len()].clone();
        let flips = next() % 6;
        for _ in 0..flips {
            let pos = (next() as usize) % pkt.len();
            pkt[pos] = next() as u8;
        }
        // Half are cut short somewhere; the rest keep their length, so that mutations
        // which keep a frame forwardable (payload, ports, MACs) come up often.
        if next() % 2 == 0 {
            pkt.truncate((next() as usize) % (pkt.len() + 1));
        }
        // What the input was: only a well-formed input must come out well-formed in full.
        let input = check_frame(&pkt, L4Check::All);
        let input_pad = check_frame(&pkt, L4Check::None).unwrap_or_default();
        // Pod ports first: Service flows start where their clients are (from the uplink
        // they would be SNATed), so replies and errors about them come next.
        for port in [2, 3, 1, 0, 4] {
            let mut steps = Steps::default();
            let r = run_observed(&t, &mut flows, PortId(port), &pkt, &mut steps);
            let out_port = match r.verdict {
                Verdict::Forward(p) => p,
                Verdict::Pass => {
                    assert_eq!(r.out, pkt, "iteration {i} port {port}: Pass must not touch");
                    tally.passed += 1;
                    continue;
                }
                Verdict::Drop(reason) => {
                    *tally.drops.entry(reason.as_str()).or_default() += 1;
                    continue;
                }
            };
            let ctx = || {
                format!(
                    "iteration {i}, in port {port}, out port {}, input ({:?}) {:02x?}, output {:02x?}",
                    out_port.0, input, pkt, r.out
                )
            };
            // An answer the datapath built (it goes back out where the packet came in), or
            // the packet itself, perhaps rewritten and perhaps tunnelled.
            let answered = steps.0.iter().any(|s| ANSWERS.contains(s));
            let encapsulated = steps.0.contains(&"vxlan_encap");
            if answered {
                assert_eq!(out_port.0, port, "answers go back: {}", ctx());
            }
            // A well-formed input comes out well-formed in full; an answer's own transport
            // header is built whole, whatever the input (which it may quote).
            let l4 = if input.is_ok() {
                L4Check::All
            } else if answered {
                L4Check::Own
            } else {
                L4Check::None
            };
            let pad = check_frame(&r.out, l4).unwrap_or_else(|e| panic!("{e}: {}", ctx()));
            assert!(pad <= input_pad, "padding {pad} > {input_pad}: {}", ctx());
            if encapsulated {
                // Ours: node-a's underlay address to node-b's, UDP to the VXLAN port.
                assert_eq!(out_port, PortId::UPLINK, "{}", ctx());
                assert_eq!(&r.out[12..14], &[0x08, 0x00], "{}", ctx());
                assert_eq!(
                    &r.out[14 + 12..14 + 20],
                    &[192, 168, 50, 10, 192, 168, 50, 11],
                    "{}",
                    ctx()
                );
                let udp = &r.out[14 + 20..];
                assert_eq!(&udp[2..4], &4789u16.to_be_bytes(), "{}", ctx());
                assert_eq!(&udp[6..8], &[0, 0], "VXLAN UDP checksum is 0: {}", ctx());
                // Built whole: no padding outside, the UDP datagram is the rest.
                assert_eq!(
                    usize::from(u16::from_be_bytes([udp[4], udp[5]])),
                    udp.len(),
                    "VXLAN UDP length: {}",
                    ctx()
                );
            }
            if l4 == L4Check::All {
                tally.l4_checked += 1;
                for step in steps.0 {
                    *tally.l4_checked_steps.entry(step).or_default() += 1;
                }
            }
            if encapsulated {
                tally.encapsulated += 1;
            } else if answered {
                tally.answered += 1;
            } else {
                tally.forwarded += 1;
            }
        }
    }
    // Not vacuous: every kind of outcome came up, often, and every rewrite and answer
    // was checked in full on right inputs.
    println!("{tally:#?}");
    assert!(tally.forwarded >= 3000, "{tally:#?}");
    assert!(tally.encapsulated >= 500, "{tally:#?}");
    assert!(tally.answered >= 1000, "{tally:#?}");
    assert!(tally.l4_checked >= 3000, "{tally:#?}");
    assert!(tally.passed >= 1000, "{tally:#?}");
    assert!(tally.drops.len() >= 12, "{tally:#?}");
    for step in [
        "dnat",
        "snat",
        "reverse_nat",
        "icmp_related",
        "vxlan_encap",
        "vxlan_decap",
        "icmp_time_exceeded",
        "arp_reply",
        "ndp_advert",
    ] {
        let n = tally.l4_checked_steps.get(step).copied().unwrap_or(0);
        assert!(n >= 50, "{step}: {n} checked in full; {tally:#?}");
    }
}

#[test]
fn new_generation_ends_udp_flows_to_deleted_endpoints_at_once() {
    let mut t1 = node_a_tables(vec![(IpKey::v4(WEB0), 8080)]);
    // The same Service port also answers UDP 53, so one table carries both flows.
    answer_udp_53(&mut t1);
    let mut flows = Flows::default();
    let r = run(
        &t1,
        &mut flows,
        PortId(2),
        &udp(CLIENT, VIP, 5000, 53, 64, b"q"),
    );
    assert_eq!(r.verdict, Verdict::Forward(PortId(3)));
    let r = run(
        &t1,
        &mut flows,
        PortId(2),
        &tcp(CLIENT, VIP, 40000, 80, 64, b""),
    );
    assert_eq!(r.verdict, Verdict::Forward(PortId(3)));
    assert_eq!(flows.len(), 2);

    // Generation 2: web-0 deleted, web-1 listed instead.
    let mut t2 = t1.clone();
    t2.generation = 2;
    t2.service_ports[0] = Arc::new(ready_port("demo/web:80", vec![(IpKey::v4(WEB1), 8080)]));
    assert_eq!(end_flows_to_deleted_endpoints(&t2, &mut flows), 1);
    assert_eq!(
        flows.len(),
        1,
        "the TCP flow waits for its next packet, to be reset"
    );
    let r = run(
        &t2,
        &mut flows,
        PortId(2),
        &tcp(CLIENT, VIP, 40000, 80, 64, b""),
    );
    assert_eq!(
        r.verdict,
        Verdict::Forward(PortId(2)),
        "answered with a RST"
    );
    assert!(flows.is_empty());
}

/// node-a's tables with web-0 ingress-isolated: only `client` may reach it, on TCP 8080.
fn web0_isolated() -> Tables {
    use crate::policy::{DirectionPolicy, EndpointPolicy, IdentityId, PortSet};
    let mut t = node_a_tables(web_backends());
    let policy = Arc::make_mut(&mut t.policy);
    let client_id = IdentityId(1);
    policy.identity_by_ip.insert(IpKey::v4(CLIENT), client_id);
    policy.identity_by_ip.insert(IpKey::v4(WEB0), IdentityId(2));
    policy.policy_names = vec!["demo/web-from-client".into()];
    let mut ingress = DirectionPolicy {
        selected_by: vec![0],
        ..DirectionPolicy::default()
    };
    ingress.by_identity.insert(
        client_id,
        PortSet {
            ranges: vec![(proto::TCP, 8080, 8080)],
            ..PortSet::default()
        },
    );
    policy.endpoints = vec![
        EndpointPolicy::default(),
        EndpointPolicy {
            ingress: Some(ingress),
            egress: None,
        },
    ];
    t
}

#[derive(Default)]
struct PolicyRecorder {
    policies: Vec<String>,
    direction: Option<crate::policy::PolicyDirection>,
}

impl Observer for PolicyRecorder {
    fn policies(&mut self, names: &[&str]) {
        self.policies = names.iter().map(|n| n.to_string()).collect();
    }
    fn policy_direction(&mut self, d: crate::policy::PolicyDirection) {
        self.direction = Some(d);
    }
}

#[test]
fn policy_allows_the_rule_and_its_replies_and_explains_drops() {
    let t = web0_isolated();
    let mut flows = Flows::default();
    // Allowed: client -> web-0 TCP 8080, and web-0's reply passes back.
    let r = run(
        &t,
        &mut flows,
        PortId(2),
        &tcp(CLIENT, WEB0, 40000, 8080, 64, b""),
    );
    assert_eq!(r.verdict, Verdict::Forward(PortId(3)));
    let mut reply = tcp(WEB0, CLIENT, 8080, 40000, 64, b"");
    reply[0..6].copy_from_slice(&GW_MAC.0);
    assert_eq!(
        run(&t, &mut flows, PortId(3), &reply).verdict,
        Verdict::Forward(PortId(2))
    );

    // Denied: UDP 8080, explained.
    let pkt = udp(CLIENT, WEB0, 5000, 8080, 64, b"x");
    let mut buf = vec![0u8; DEFAULT_HEADROOM + pkt.len() + 256];
    let mut frame = Frame::load(&mut buf, DEFAULT_HEADROOM, &pkt).unwrap();
    let mut rec = PolicyRecorder::default();
    let v = process(&t, &mut flows, 2_000, PortId(2), &mut frame, &mut rec);
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDenied));
    assert_eq!(rec.policies, vec!["demo/web-from-client".to_string()]);
    assert_eq!(rec.direction, Some(crate::policy::PolicyDirection::Ingress));

    // Judged on the post-DNAT packet: client -> VIP:80 lands on web-0:8080 (allowed) or
    // web-1 (not isolated); never denied.
    for sport in 41000..41010 {
        let v = run(
            &t,
            &mut flows,
            PortId(2),
            &tcp(CLIENT, VIP, sport, 80, 64, b""),
        )
        .verdict;
        assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
    }
    // The node itself is always allowed in.
    let mut from_host = tcp([192, 168, 50, 10], WEB0, 40000, 9999, 64, b"");
    from_host[0..6].copy_from_slice(&GW_MAC.0);
    assert_eq!(
        run(&t, &mut flows, PortId::HOST, &from_host).verdict,
        Verdict::Forward(PortId(3))
    );
}

#[test]
fn a_policy_change_rejudges_established_flows() {
    // Generation 1: web-0 admits client on 8080 and 9090; the flow to 9090 is tracked.
    let mut open = web0_isolated();
    let ingress = Arc::make_mut(&mut open.policy).endpoints[1]
        .ingress
        .as_mut()
        .unwrap();
    ingress
        .by_identity
        .values_mut()
        .for_each(|p| p.ranges.push((proto::TCP, 9090, 9090)));
    let mut flows = Flows::default();
    let syn = tcp(CLIENT, WEB0, 40000, 9090, 64, b"");
    assert_eq!(
        run(&open, &mut flows, PortId(2), &syn).verdict,
        Verdict::Forward(PortId(3))
    );
    assert_eq!(
        flows.len(),
        1,
        "plain flows are tracked once a pod is isolated"
    );
    assert_eq!(
        run(&open, &mut flows, PortId(2), &syn).verdict,
        Verdict::Forward(PortId(3))
    );
    // Generation 2 drops 9090: the established flow is judged again at its next packet.
    let mut closed = web0_isolated();
    closed.generation = 2;
    assert_eq!(
        run(&closed, &mut flows, PortId(2), &syn).verdict,
        Verdict::Drop(DropReason::PolicyDenied)
    );
    assert!(flows.is_empty());
}
