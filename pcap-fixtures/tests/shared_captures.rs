//! Real captures from `../shared/fixtures` (tcpdump's and suricata-verify's test pcaps,
//! never copied into this repository) through kxdp:
//!
//! * every capture replays as `uplink` and as a pod port without a panic or an error,
//!   and every drop names its reason;
//! * VXLAN decap recovers exactly the inner frames upstream's expectations describe
//!   (tcpdump's `.out` text, suricata-verify's `test.yaml` counts), and other tunnels
//!   (Geneve, VXLAN-GPE) are left alone.
//!
//! When the directory is absent the tests say so and pass, except under `CI=true`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::overlay::{self, DecapError, Endpoint};
use datapath::wire::vlan::walk_l2;
use etherparse::{ArpOperation, Icmpv4Type, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use replay::input::read_capture;
use replay::linktype::LinkKind;
use replay::{InputSpec, ReplayOptions};

/// `../shared/fixtures` beside the workspace, or `None` (after saying so) when absent.
fn shared() -> Option<PathBuf> {
    let dir = testkit::paths::shared_fixtures();
    if dir.is_dir() {
        return Some(dir);
    }
    testkit::root::skip_or_fail(
        "the shared captures",
        "../shared/fixtures is not beside the checkout",
    );
    None
}

fn example_state() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/two-node")
}

#[test]
fn every_shared_capture_replays_on_uplink_and_pod_ports() {
    let Some(root) = shared() else { return };
    let mut files = testkit::paths::captures_under(&root.join("tcpdump"));
    files.extend(testkit::paths::captures_under(
        &root.join("suricata-verify"),
    ));
    files.sort();
    assert!(!files.is_empty(), "no captures under {}", root.display());
    let mut failures = Vec::new();
    let mut packets = 0;
    for (n, file) in files.iter().enumerate() {
        for port in ["uplink", "pod-demo-client"] {
            let out =
                std::env::temp_dir().join(format!("kxdp-shared-{}-{n}-{port}", std::process::id()));
            let opts = ReplayOptions {
                state: example_state(),
                node: "node-a".into(),
                inputs: vec![InputSpec {
                    port: port.into(),
                    file: file.clone(),
                }],
                out: out.clone(),
                summary: false,
                updates: Vec::new(),
            };
            let name = format!("{} as {port}", file.display());
            match std::panic::catch_unwind(|| replay::run(&opts)) {
                Err(_) => failures.push(format!("{name}: panicked")),
                Ok(Err(e)) => failures.push(format!("{name}: replay failed: {e}")),
                Ok(Ok(report)) => {
                    packets += report.packets;
                    let verdicts =
                        fs::read_to_string(out.join("verdicts.jsonl")).unwrap_or_default();
                    for line in verdicts.lines() {
                        let v: serde_json::Value =
                            serde_json::from_str(line).expect("verdict line is JSON");
                        let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
                        // Other tunnels on the uplink are never ours to forward.
                        let other_tunnel = ["geneve", "nsh-over-vxlan-gpe"]
                            .iter()
                            .any(|t| file.to_string_lossy().contains(t));
                        if port == "uplink" && other_tunnel && v["verdict"] == "forward" {
                            failures.push(format!("{name}: another tunnel was forwarded: {line}"));
                        }
                        if v["verdict"] == "drop" && reason.is_empty() {
                            failures.push(format!("{name}: drop without a reason: {line}"));
                        }
                    }
                }
            }
            let _ = fs::remove_dir_all(&out);
        }
    }
    println!("{} captures, {packets} packets replayed", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every packet of an Ethernet capture.
fn frames(path: &Path) -> Vec<Vec<u8>> {
    let capture = read_capture(path).unwrap_or_else(|e| panic!("{e}"));
    capture
        .packets
        .into_iter()
        .map(|p| {
            assert_eq!(p.link, LinkKind::Ethernet, "{}", path.display());
            p.data
        })
        .collect()
}

/// The outer IPv4 destination and UDP destination port of a frame, if it is UDP over IPv4.
fn outer_udp(frame: &[u8]) -> Option<([u8; 4], u16)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) = (&p.net, &p.transport) else {
        return None;
    };
    Some((ip.header().destination(), udp.destination_port()))
}

/// Decaps `frame` for an endpoint at `local_ip`; the inner frame on success.
fn decap(frame: &[u8], local_ip: [u8; 4], udp_port: u16, vni: u32) -> Result<Vec<u8>, DecapError> {
    let mut buf = vec![0u8; DEFAULT_HEADROOM + frame.len() + 64];
    let mut f = Frame::load(&mut buf, DEFAULT_HEADROOM, frame).expect("buffer fits");
    let l2 = walk_l2(frame).map_err(|_| DecapError::NotOurs)?;
    let ep = Endpoint {
        local_ip,
        udp_port,
        vni,
    };
    overlay::decap(&mut f, &l2, &ep).map(|_| f.data().to_vec())
}

/// What tcpdump printed about one inner frame (`-e` line of a VXLAN packet).
#[derive(Debug, PartialEq, Eq)]
enum Inner {
    Echo {
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        reply: bool,
        id: u16,
        seq: u16,
    },
    Arp {
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        reply: bool,
        /// who-has target / is-at address.
        target: [u8; 4],
    },
}

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("mac");
    }
    out
}

fn ip(text: &str) -> [u8; 4] {
    let a: std::net::Ipv4Addr = text.trim_end_matches([':', ',']).parse().expect("ipv4");
    a.octets()
}

/// Parses vxlan.out: one (outer destination, inner) per packet. The outer line holds
/// `a.b.c.d.port > w.x.y.z.port: VXLAN`, the inner line (the next one) the inner frame.
fn parse_vxlan_out(text: &str) -> Vec<([u8; 4], u32, Inner)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for pair in lines.chunks(2) {
        let (outer, inner) = (pair[0], pair[1]);
        let words: Vec<&str> = outer.split_whitespace().collect();
        let gt = words.iter().rposition(|w| *w == ">").expect("outer >");
        let dst_port = words[gt + 1].trim_end_matches(':');
        let dst = ip(&dst_port[..dst_port.rfind('.').expect("ip.port")]);
        let vni_at = words.iter().position(|w| *w == "vni").expect("vni");
        let vni: u32 = words[vni_at + 1].parse().expect("vni number");

        let w: Vec<&str> = inner.split_whitespace().collect();
        let (src_mac, dst_mac) = (mac(w[0]), mac(w[2].trim_end_matches(',')));
        let parsed = if inner.contains("ICMP echo") {
            let n = |key: &str| -> u16 {
                let at = w.iter().position(|x| *x == key).expect("field");
                w[at + 1].trim_end_matches(',').parse().expect("number")
            };
            let gt = w.iter().rposition(|x| *x == ">").expect(">");
            Inner::Echo {
                src_mac,
                dst_mac,
                src: ip(w[gt - 1]),
                dst: ip(w[gt + 1]),
                reply: inner.contains("echo reply"),
                id: n("id"),
                seq: n("seq"),
            }
        } else if inner.contains("who-has") {
            let at = w.iter().position(|x| *x == "who-has").expect("who-has");
            Inner::Arp {
                src_mac,
                dst_mac,
                reply: false,
                target: ip(w[at + 1]),
            }
        } else if inner.contains("is-at") {
            let at = w.iter().position(|x| *x == "Reply").expect("Reply");
            Inner::Arp {
                src_mac,
                dst_mac,
                reply: true,
                target: ip(w[at + 1]),
            }
        } else {
            panic!("unexpected inner line in vxlan.out: {inner}");
        };
        out.push((dst, vni, parsed));
    }
    out
}

/// What etherparse reads from a decapsulated inner frame, in the same shape.
fn describe_inner(frame: &[u8]) -> Inner {
    let p = SlicedPacket::from_ethernet(frame).expect("inner frame parses");
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        panic!("no Ethernet")
    };
    let (src_mac, dst_mac) = (eth.source(), eth.destination());
    match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(ipv4)), Some(TransportSlice::Icmpv4(icmp))) => {
            let (reply, echo) = match icmp.icmp_type() {
                Icmpv4Type::EchoRequest(e) => (false, e),
                Icmpv4Type::EchoReply(e) => (true, e),
                other => panic!("unexpected ICMP {other:?}"),
            };
            Inner::Echo {
                src_mac,
                dst_mac,
                src: ipv4.header().source(),
                dst: ipv4.header().destination(),
                reply,
                id: echo.id,
                seq: echo.seq,
            }
        }
        (Some(NetSlice::Arp(arp)), _) => {
            let reply = arp.operation() == ArpOperation::REPLY;
            // who-has names the target address; is-at names the sender's.
            let addr = if reply {
                arp.sender_protocol_addr()
            } else {
                arp.target_protocol_addr()
            };
            Inner::Arp {
                src_mac,
                dst_mac,
                reply,
                target: addr.try_into().expect("IPv4 ARP"),
            }
        }
        other => panic!("unexpected inner packet {other:?}"),
    }
}

/// tcpdump's vxlan.pcap (or its copy on port 8472) decaps to exactly the inner frames
/// its .out file lists, for an endpoint at each packet's outer destination.
fn check_tcpdump_vxlan(root: &Path, pcap: &str, out: &str, port: u16) {
    let frames = frames(&root.join("tcpdump").join(pcap));
    let text = fs::read_to_string(root.join("tcpdump").join(out)).expect(".out");
    let expected = parse_vxlan_out(&text);
    assert_eq!(
        frames.len(),
        expected.len(),
        "{pcap}: packets vs .out entries"
    );
    let destinations: BTreeSet<[u8; 4]> = expected.iter().map(|e| e.0).collect();
    assert_eq!(destinations.len(), 2, "{pcap}: both VTEPs appear");
    for (i, (frame, (dst, vni, want))) in frames.iter().zip(&expected).enumerate() {
        let inner =
            decap(frame, *dst, port, *vni).unwrap_or_else(|e| panic!("{pcap} packet {i}: {e:?}"));
        assert_eq!(&describe_inner(&inner), want, "{pcap} packet {i}");
        // The same packet is not ours for the other VTEP, another VNI or the other port.
        let other = *destinations.iter().find(|d| *d != dst).expect("other VTEP");
        assert_eq!(
            decap(frame, other, port, *vni),
            Err(DecapError::NotOurs),
            "{pcap} packet {i}"
        );
        assert_eq!(
            decap(frame, *dst, port, vni + 1),
            Err(DecapError::WrongVni),
            "{pcap} packet {i}"
        );
        let other_port = if port == 4789 { 8472 } else { 4789 };
        assert_eq!(
            decap(frame, *dst, other_port, *vni),
            Err(DecapError::NotOurs),
            "{pcap} packet {i}"
        );
    }
}

#[test]
fn tcpdump_vxlan_decaps_to_the_frames_tcpdump_prints() {
    let Some(root) = shared() else { return };
    check_tcpdump_vxlan(&root, "vxlan.pcap", "vxlan.out", 4789);
}

#[test]
fn tcpdump_vxlan_on_port_8472_decaps_the_same() {
    let Some(root) = shared() else { return };
    check_tcpdump_vxlan(&root, "vxlan_port_8472.pcap", "vxlan_port_8472.out", 8472);
}

/// (inner source port, destination port, protocol) of an inner IPv4 UDP/TCP packet.
fn inner_ports(inner: &[u8]) -> Option<(u16, u16, &'static str)> {
    let p = SlicedPacket::from_ethernet(inner).ok()?;
    match &p.transport {
        Some(TransportSlice::Udp(u)) => Some((u.source_port(), u.destination_port(), "udp")),
        Some(TransportSlice::Tcp(t)) => Some((t.source_port(), t.destination_port(), "tcp")),
        _ => None,
    }
}

/// Decaps every packet that is VXLAN (UDP 4789) with `vni` for its own outer destination.
fn decap_all(frames: &[Vec<u8>], vni: u32) -> (Vec<Vec<u8>>, usize) {
    let mut inner = Vec::new();
    let mut not_ours = 0;
    for frame in frames {
        let Some((dst, _)) = outer_udp(frame) else {
            not_ours += 1;
            continue;
        };
        match decap(frame, dst, 4789, vni) {
            Ok(f) => inner.push(f),
            Err(DecapError::NotOurs) => not_ours += 1,
            Err(e) => panic!("VXLAN not decapsulated: {e:?}"),
        }
    }
    (inner, not_ours)
}

#[test]
fn suricata_vxlan_decoder_01_inner_dns_reply_and_plain_udp_left_alone() {
    let Some(root) = shared() else { return };
    let frames = frames(&root.join("suricata-verify/vxlan-decoder-01/input.pcap"));
    assert_eq!(frames.len(), 3);
    let (inner, not_ours) = decap_all(&frames, 37);
    assert_eq!(
        (inner.len(), not_ours),
        (1, 2),
        "one VXLAN packet, two plain UDP"
    );
    let p = SlicedPacket::from_ethernet(&inner[0]).expect("inner parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("inner IPv4")
    };
    assert_eq!(ip.header().source(), [10, 96, 0, 10]);
    assert_eq!(ip.header().destination(), [185, 27, 115, 6]);
    assert_eq!(inner_ports(&inner[0]), Some((53, 12345, "udp")));
    for frame in &frames[1..] {
        let ports = outer_udp(frame).map(|(_, p)| p);
        assert_ne!(ports, Some(4789), "the plain packets are not VXLAN");
        let p = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("UDP")
        };
        assert!([u.source_port(), u.destination_port()].contains(&32021));
        assert!([u.source_port(), u.destination_port()].contains(&12345));
    }
}

/// (client port, server port, protocol, client address, server address).
type ServerFlow<'a> = (u16, u16, &'a str, [u8; 4], [u8; 4]);

#[test]
fn suricata_vxlan_decoder_03_aws_mirror_flows() {
    let Some(root) = shared() else { return };
    let frames = frames(&root.join("suricata-verify/vxlan-decoder-03/vxlan.pcap"));
    let (inner, not_ours) = decap_all(&frames, 5_569_041);
    assert_eq!(inner.len() + not_ours, frames.len());
    assert!(!inner.is_empty());
    // Every VXLAN packet of the mirror session decaps with its VNI (none is refused).
    let vxlan_packets = frames
        .iter()
        .filter(|f| outer_udp(f).is_some_and(|(_, p)| p == 4789))
        .count();
    assert_eq!(inner.len(), vxlan_packets);
    // Flows as Suricata counts them: the 5-tuple, whichever direction opened it.
    let mut flows: BTreeSet<ServerFlow<'_>> = BTreeSet::new();
    for f in &inner {
        let p = SlicedPacket::from_ethernet(f).expect("inner parses");
        let (Some(NetSlice::Ipv4(ip)), Some((sp, dp, proto))) = (&p.net, inner_ports(f)) else {
            continue;
        };
        let (a, b) = (ip.header().source(), ip.header().destination());
        // Key by the server port so both directions count once.
        if [22, 123, 53].contains(&dp) {
            flows.insert((sp, dp, proto, a, b));
        } else if [22, 123, 53].contains(&sp) {
            flows.insert((dp, sp, proto, b, a));
        }
    }
    let count =
        |port: u16, proto: &str| flows.iter().filter(|f| f.1 == port && f.2 == proto).count();
    assert_eq!(count(22, "tcp"), 4, "4 SSH sessions: {flows:?}");
    assert_eq!(count(123, "udp"), 1, "1 NTP flow: {flows:?}");
    assert!(count(53, "udp") >= 1, "DNS flows: {flows:?}");
    // Suricata's DNS events name the first question: count messages whose first
    // question is the EC2 name (a PTR lookup answered with it does not count).
    let dns_packets = inner
        .iter()
        .filter(|f| first_question_is(f, "ec2-18-196-145-224.eu-central-1.compute.amazonaws.com"))
        .count();
    let outer: BTreeSet<(u16, [u8; 4])> = frames
        .iter()
        .filter_map(|f| {
            let p = SlicedPacket::from_ethernet(f).ok()?;
            let Some(TransportSlice::Udp(u)) = &p.transport else {
                return None;
            };
            let (dst, port) = outer_udp(f)?;
            (port == 4789).then_some((u.source_port(), dst))
        })
        .collect();
    // test.yaml: 13 outer flows for Suricata < 8, 14 for >= 8 (which ends one 5-tuple's
    // flow and starts another); as distinct 5-tuples there are 13.
    assert_eq!(outer.len(), 13, "13 distinct outer 5-tuples to 4789");
    // Suricata >= 8 reports 2 flows from 65445: the one 5-tuple it splits.
    assert_eq!(
        outer.iter().filter(|(sp, _)| *sp == 65445).count(),
        1,
        "one 5-tuple from 65445"
    );
    assert_eq!(dns_packets, 8, "8 DNS messages for the EC2 name");
}

/// Whether `inner` is DNS over UDP whose first question is `name`.
fn first_question_is(inner: &[u8], name: &str) -> bool {
    let Ok(p) = SlicedPacket::from_ethernet(inner) else {
        return false;
    };
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        return false;
    };
    if u.source_port() != 53 && u.destination_port() != 53 {
        return false;
    }
    let msg = u.payload();
    // Header 12 bytes, then QDCOUNT questions; the first name as labels.
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return false;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    while let Some(&len) = msg.get(at) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let Some(label) = msg.get(at + 1..at + 1 + usize::from(len)) else {
            return false;
        };
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + usize::from(len);
    }
    labels.join(".").eq_ignore_ascii_case(name)
}

#[test]
fn suricata_vxlan_non_zero_reserved_fields_are_decapsulated() {
    let Some(root) = shared() else { return };
    let frames = frames(&root.join("suricata-verify/vxlan-non-zero-reserved-fields/input.pcap"));
    let mut to_server = 0;
    let mut to_client = 0;
    for (i, frame) in frames.iter().enumerate() {
        let Some((dst, 4789)) = outer_udp(frame) else {
            continue;
        };
        // The VNI as sent (bytes 4..7 of the VXLAN header); only the I flag is required.
        let p = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            continue;
        };
        let vx = u.payload();
        let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
        let inner = decap(frame, dst, 4789, vni).unwrap_or_else(|e| panic!("packet {i}: {e:?}"));
        match inner_ports(&inner) {
            Some((51252, 80, "tcp")) => to_server += 1,
            Some((80, 51252, "tcp")) => to_client += 1,
            other => panic!("packet {i}: unexpected inner flow {other:?}"),
        }
    }
    assert_eq!((to_server, to_client), (5, 5));
}

#[test]
fn suricata_vxlan_decoder_07_arp_two_inner_arps() {
    let Some(root) = shared() else { return };
    // The suricata test runs on tcpdump's vxlan.pcap.
    let frames = frames(&root.join("tcpdump/vxlan.pcap"));
    let (inner, not_ours) = decap_all(&frames, 100);
    assert_eq!(not_ours, 0);
    let arps = inner
        .iter()
        .filter(|f| f.get(12..14) == Some(&[0x08, 0x06][..]))
        .count();
    assert_eq!(arps, 2);
    let echo = |reply: bool| {
        inner
            .iter()
            .filter(|f| matches!(describe_inner(f), Inner::Echo { reply: r, .. } if r == reply))
            .count()
    };
    assert_eq!(
        (echo(false), echo(true)),
        (4, 4),
        "one ICMP flow, 4 packets each way"
    );
    let outer_flows: BTreeSet<(u16, [u8; 4])> = frames
        .iter()
        .filter_map(|f| {
            let p = SlicedPacket::from_ethernet(f).ok()?;
            let Some(TransportSlice::Udp(u)) = &p.transport else {
                return None;
            };
            Some((u.source_port(), outer_udp(f)?.0))
        })
        .collect();
    assert_eq!(outer_flows.len(), 4, "4 outer flows to 4789");
}

/// Every UDP packet of `path` is left alone by VXLAN decap at its own destination, on
/// the VXLAN port and on the capture's own tunnel port alike.
fn assert_never_decapped(path: &Path, tunnel_port: u16) {
    let frames = frames(path);
    let mut udp = 0;
    for (i, frame) in frames.iter().enumerate() {
        let Some((dst, port)) = outer_udp(frame) else {
            continue;
        };
        udp += 1;
        assert_eq!(port, tunnel_port, "{} packet {i}", path.display());
        assert!(
            decap(frame, dst, 4789, 0x7b).is_err(),
            "{} packet {i} decapped",
            path.display()
        );
        assert!(
            decap(frame, dst, 4789, 1).is_err(),
            "{} packet {i} decapped",
            path.display()
        );
    }
    assert!(udp > 0, "{}: no tunnel packets", path.display());
}

#[test]
fn geneve_and_vxlan_gpe_are_not_decapsulated() {
    let Some(root) = shared() else { return };
    assert_never_decapped(&root.join("tcpdump/geneve.pcap"), 6081);
    assert_never_decapped(
        &root.join("suricata-verify/geneve-decoder/input.pcap"),
        6081,
    );
    assert_never_decapped(&root.join("tcpdump/nsh-over-vxlan-gpe.pcap"), 4790);
}
