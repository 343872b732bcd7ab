//! One-line, human-readable descriptions of frames for the `--summary` table.
//!
//! Read-only and total: any byte sequence gets a description. Parsing goes through
//! `datapath::wire`, so the summary sees a frame the way the datapath does. A capture cut
//! short by its snaplen is described as far as it goes and marked `[truncated]`; a header
//! that contradicts its format is named and marked `(malformed)`.
//!
//! Examples: `10.244.1.5:40000 -> 10.96.0.10:80 TCP [S]`,
//! `ARP who-has 10.244.1.1 tell 10.244.1.5`,
//! `192.168.0.1:51234 -> 192.168.0.2:4789 VXLAN vni 1 [inner: 10.244.1.5 -> 10.244.2.7 ICMP echo request id 1 seq 1]`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use datapath::wire::WireError;
use datapath::wire::arp::{self, ArpPacket};
use datapath::wire::ethernet::ethertype;
use datapath::wire::icmpv4::{self, Icmpv4Packet};
use datapath::wire::ipv4::{self, Ipv4Packet, protocol};
use datapath::wire::tcp::{TcpPacket, flags};
use datapath::wire::udp::UdpPacket;
use datapath::wire::vlan::walk_l2;
use datapath::wire::vxlan::VxlanHeader;

/// How deep VXLAN-in-VXLAN is followed; deeper inner frames are only counted.
const MAX_DEPTH: u8 = 2;

/// Describes an Ethernet frame in one line. `vxlan_port` is the UDP port the overlay uses,
/// so tunnel traffic is shown with its inner packet.
pub fn describe(frame: &[u8], vxlan_port: u16) -> String {
    let mut out = String::new();
    ethernet(&mut out, frame, vxlan_port, 0);
    out
}

fn ethernet(out: &mut String, frame: &[u8], vxlan_port: u16, depth: u8) {
    let l2 = match walk_l2(frame) {
        Ok(l2) => l2,
        Err(WireError::Truncated) => {
            let _ = write!(out, "short frame ({} bytes)", frame.len());
            return;
        }
        Err(WireError::Malformed) => {
            out.push_str("too many VLAN tags");
            return;
        }
    };
    if let Some(vid) = l2.outer_vid {
        let _ = write!(out, "vlan {vid} ");
    }
    let l3 = frame.get(l2.l3_offset..).unwrap_or_default();
    match l2.ethertype {
        ethertype::IPV4 => describe_ipv4(out, l3, vxlan_port, depth),
        ethertype::ARP => describe_arp(out, l3),
        ethertype::IPV6 => describe_ipv6(out, l3),
        other => {
            let _ = write!(out, "ethertype 0x{other:04x}");
        }
    }
}

fn describe_arp(out: &mut String, l3: &[u8]) {
    let arp = match ArpPacket::new_checked(l3) {
        Ok(arp) => arp,
        Err(e) => {
            let _ = write!(out, "ARP ({e})");
            return;
        }
    };
    let sender = Ipv4Addr::from(arp.sender_proto_addr());
    let target = Ipv4Addr::from(arp.target_proto_addr());
    let _ = match arp.operation() {
        arp::OP_REQUEST => write!(out, "ARP who-has {target} tell {sender}"),
        arp::OP_REPLY => write!(out, "ARP reply {sender} is-at {}", arp.sender_hw_addr()),
        op => write!(out, "ARP op {op} {sender} -> {target}"),
    };
}

fn describe_ipv4(out: &mut String, l3: &[u8], vxlan_port: u16, depth: u8) {
    // A snaplen-cut capture fails the total-length check; describe the bytes we have by
    // viewing a copy whose total length says what was captured.
    let mut patched;
    let (ip, truncated) = match Ipv4Packet::new_checked(l3) {
        Ok(ip) => (ip, false),
        Err(WireError::Truncated) if l3.len() >= ipv4::HEADER_LEN => {
            patched = l3.to_vec();
            let captured = u16::try_from(l3.len()).unwrap_or(u16::MAX);
            Ipv4Packet::new_unchecked(&mut patched[..]).set_total_len(captured);
            match Ipv4Packet::new_checked(&patched[..]) {
                Ok(ip) => (ip, true),
                Err(e) => {
                    let _ = write!(out, "IPv4 ({e})");
                    return;
                }
            }
        }
        Err(e) => {
            let _ = write!(out, "IPv4 ({e})");
            return;
        }
    };
    let src = Ipv4Addr::from(ip.src_addr());
    let dst = Ipv4Addr::from(ip.dst_addr());
    if ip.frag_offset() != 0 {
        // Not the first fragment: no L4 header here.
        let _ = write!(
            out,
            "{src} -> {dst} fragment proto {} offset {}",
            ip.protocol(),
            ip.frag_offset()
        );
    } else {
        let payload = ip.payload();
        match ip.protocol() {
            protocol::TCP => describe_tcp(out, src, dst, payload),
            protocol::UDP => describe_udp(out, src, dst, payload, vxlan_port, depth),
            protocol::ICMP => describe_icmpv4(out, src, dst, payload),
            other => {
                let _ = write!(out, "{src} -> {dst} proto {other}");
            }
        }
        if ip.more_frags() {
            out.push_str(" [first fragment]");
        }
    }
    if truncated {
        out.push_str(" [truncated]");
    }
}

fn describe_tcp(out: &mut String, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) {
    let tcp = match TcpPacket::new_checked(l4) {
        Ok(tcp) => tcp,
        Err(e) => {
            let _ = write!(out, "{src} -> {dst} TCP ({e})");
            return;
        }
    };
    // tcpdump's notation: letters in its order, '.' for ACK.
    const LETTERS: [(u8, char); 8] = [
        (flags::FIN, 'F'),
        (flags::SYN, 'S'),
        (flags::RST, 'R'),
        (flags::PSH, 'P'),
        (flags::ACK, '.'),
        (flags::URG, 'U'),
        (flags::ECE, 'E'),
        (flags::CWR, 'W'),
    ];
    let flag_text: String = LETTERS
        .iter()
        .filter(|(bit, _)| tcp.has_flags(*bit))
        .map(|(_, c)| c)
        .collect();
    let _ = write!(
        out,
        "{src}:{} -> {dst}:{} TCP [{flag_text}]",
        tcp.src_port(),
        tcp.dst_port()
    );
    let len = tcp.payload().len();
    if len > 0 {
        let _ = write!(out, " len {len}");
    }
}

fn describe_udp(
    out: &mut String,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    l4: &[u8],
    vxlan_port: u16,
    depth: u8,
) {
    let udp = match UdpPacket::new_checked(l4) {
        Ok(udp) => udp,
        Err(e) => {
            let _ = write!(out, "{src} -> {dst} UDP ({e})");
            return;
        }
    };
    let _ = write!(out, "{src}:{} -> {dst}:{} ", udp.src_port(), udp.dst_port());
    if udp.dst_port() != vxlan_port {
        let _ = write!(out, "UDP len {}", udp.payload().len());
        return;
    }
    let vxlan = match VxlanHeader::new_checked(udp.payload()) {
        Ok(v) => v,
        Err(e) => {
            let _ = write!(out, "VXLAN ({e})");
            return;
        }
    };
    let _ = write!(out, "VXLAN vni {}", vxlan.vni());
    if !vxlan.vni_valid() {
        out.push_str(" (I flag clear)");
    }
    if depth + 1 >= MAX_DEPTH {
        let _ = write!(out, " [inner: {} bytes]", vxlan.payload().len());
        return;
    }
    out.push_str(" [inner: ");
    ethernet(out, vxlan.payload(), vxlan_port, depth + 1);
    out.push(']');
}

fn describe_icmpv4(out: &mut String, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) {
    let icmp = match Icmpv4Packet::new_checked(l4) {
        Ok(icmp) => icmp,
        Err(e) => {
            let _ = write!(out, "{src} -> {dst} ICMP ({e})");
            return;
        }
    };
    let _ = write!(out, "{src} -> {dst} ICMP ");
    let _ = match icmp.msg_type() {
        icmpv4::TYPE_ECHO_REQUEST | icmpv4::TYPE_ECHO_REPLY => write!(
            out,
            "echo {} id {} seq {}",
            if icmp.msg_type() == icmpv4::TYPE_ECHO_REQUEST {
                "request"
            } else {
                "reply"
            },
            icmp.echo_ident(),
            icmp.echo_seq()
        ),
        icmpv4::TYPE_DEST_UNREACHABLE => write!(out, "unreachable code {}", icmp.code()),
        icmpv4::TYPE_TIME_EXCEEDED => write!(out, "time exceeded code {}", icmp.code()),
        t => write!(out, "type {t} code {}", icmp.code()),
    };
}

/// IPv6: addresses and next header from the fixed 40-byte header (extension headers are
/// not walked here).
fn describe_ipv6(out: &mut String, l3: &[u8]) {
    let (Some(&next), Some(src), Some(dst)) = (l3.get(6), l3.get(8..24), l3.get(24..40)) else {
        let _ = write!(out, "IPv6 ({})", WireError::Truncated);
        return;
    };
    let addr = |b: &[u8]| {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ipv6Addr::from(a)
    };
    let (src, dst) = (addr(src), addr(dst));
    let proto = match next {
        protocol::TCP => "TCP".to_string(),
        protocol::UDP => "UDP".to_string(),
        protocol::ICMPV6 => "ICMPv6".to_string(),
        other => format!("next-header {other}"),
    };
    let _ = write!(out, "{src} -> {dst} IPv6 {proto}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x0a, 0x58, 10, 244, 1, 1, 0x0a, 0x58, 10, 244, 1, 5];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + payload.len()).unwrap();
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0x50,
            flags::SYN,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
        t
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(8 + payload.len()).unwrap();
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&len.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    #[test]
    fn tcp_syn_line() {
        let f = eth(
            0x0800,
            &ipv4(6, [10, 244, 1, 5], [10, 96, 0, 10], &tcp_syn(40000, 80)),
        );
        assert_eq!(
            describe(&f, 4789),
            "10.244.1.5:40000 -> 10.96.0.10:80 TCP [S]"
        );
    }

    #[test]
    fn arp_request_line() {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&[0x0a, 0x58, 10, 244, 1, 5, 10, 244, 1, 5]);
        a.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 244, 1, 1]);
        assert_eq!(
            describe(&eth(0x0806, &a), 4789),
            "ARP who-has 10.244.1.1 tell 10.244.1.5"
        );
    }

    #[test]
    fn vxlan_shows_inner_frame() {
        let inner = eth(
            0x0800,
            &ipv4(6, [10, 244, 1, 5], [10, 244, 2, 7], &tcp_syn(1, 2)),
        );
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&inner);
        let f = eth(
            0x0800,
            &ipv4(
                17,
                [192, 168, 0, 1],
                [192, 168, 0, 2],
                &udp(5555, 4789, &vx),
            ),
        );
        assert_eq!(
            describe(&f, 4789),
            "192.168.0.1:5555 -> 192.168.0.2:4789 VXLAN vni 1 [inner: 10.244.1.5:1 -> 10.244.2.7:2 TCP [S]]"
        );
    }

    #[test]
    fn truncated_capture_still_described() {
        let full = eth(
            0x0800,
            &ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &udp(1, 2, &[7; 100])),
        );
        let cut = &full[..14 + 20 + 4];
        assert_eq!(
            describe(cut, 4789),
            "10.0.0.1 -> 10.0.0.2 UDP (truncated) [truncated]"
        );
    }

    #[test]
    fn any_bytes_get_a_description() {
        assert_eq!(describe(&[1, 2, 3], 4789), "short frame (3 bytes)");
        assert_eq!(describe(&eth(0x88cc, &[]), 4789), "ethertype 0x88cc");
        assert_eq!(describe(&eth(0x0800, &[0x45]), 4789), "IPv4 (truncated)");
        assert_eq!(describe(&eth(0x86dd, &[0x60]), 4789), "IPv6 (truncated)");
        // Every prefix of a VXLAN frame, and garbage after an IPv4 EtherType, without panicking.
        let inner = eth(0x0806, &[0; 28]);
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&inner);
        let f = eth(
            0x0800,
            &ipv4(17, [1, 1, 1, 1], [2, 2, 2, 2], &udp(1, 4789, &vx)),
        );
        for n in 0..=f.len() {
            let _ = describe(&f[..n], 4789);
        }
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..60u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 13) as u8)
                .collect();
            let _ = describe(&eth(0x0800, &bytes), 4789);
            let _ = describe(&eth(0x0806, &bytes), 4789);
        }
    }
}
