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
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::wire::WireError;
use datapath::wire::arp::{self, ArpPacket};
use datapath::wire::ethernet::ethertype;
use datapath::wire::icmpv4::{self, Icmpv4Packet};
use datapath::wire::icmpv6::{self, Icmpv6Packet};
use datapath::wire::ipv4::{self, Ipv4Packet, protocol};
use datapath::wire::ipv6::{self, Ipv6Packet};
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
        ethertype::IPV6 => describe_ipv6(out, l3, vxlan_port, depth),
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
    let src = IpAddr::from(ip.src_addr());
    let dst = IpAddr::from(ip.dst_addr());
    if ip.frag_offset() != 0 {
        // Not the first fragment: no L4 header here.
        let _ = write!(
            out,
            "{src} -> {dst} fragment proto {} offset {}",
            ip.protocol(),
            ip.frag_offset()
        );
    } else {
        let l4 = L4 {
            src,
            dst,
            proto: ip.protocol(),
            bytes: ip.payload(),
        };
        describe_l4(out, &l4, vxlan_port, depth);
        if ip.more_frags() {
            out.push_str(" [first fragment]");
        }
    }
    if truncated {
        out.push_str(" [truncated]");
    }
}

fn describe_ipv6(out: &mut String, l3: &[u8], vxlan_port: u16, depth: u8) {
    // As for IPv4: a snaplen-cut capture is described as far as it was captured.
    let mut patched;
    let (ip, truncated) = match Ipv6Packet::new_checked(l3) {
        Ok(ip) => (ip, false),
        Err(WireError::Truncated) if l3.len() >= ipv6::HEADER_LEN => {
            patched = l3.to_vec();
            let captured = u16::try_from(l3.len() - ipv6::HEADER_LEN).unwrap_or(u16::MAX);
            Ipv6Packet::new_unchecked(&mut patched[..]).set_payload_len(captured);
            match Ipv6Packet::new_checked(&patched[..]) {
                Ok(ip) => (ip, true),
                Err(e) => {
                    let _ = write!(out, "IPv6 ({e})");
                    return;
                }
            }
        }
        Err(e) => {
            let _ = write!(out, "IPv6 ({e})");
            return;
        }
    };
    let src = IpAddr::from(ip.src_addr());
    let dst = IpAddr::from(ip.dst_addr());
    match ipv6::walk_extension_headers(ip.packet()) {
        Err(e) => {
            let _ = write!(out, "{src} -> {dst} IPv6 extension headers ({e})");
        }
        Ok(upper) => match upper.fragment {
            Some(frag) if frag.offset != 0 => {
                let _ = write!(
                    out,
                    "{src} -> {dst} fragment proto {} offset {}",
                    upper.protocol, frag.offset
                );
            }
            frag => {
                let l4 = L4 {
                    src,
                    dst,
                    proto: upper.protocol,
                    bytes: ip.packet().get(upper.offset..).unwrap_or_default(),
                };
                describe_l4(out, &l4, vxlan_port, depth);
                if frag.is_some_and(|f| f.more) {
                    out.push_str(" [first fragment]");
                }
            }
        },
    }
    if truncated {
        out.push_str(" [truncated]");
    }
}

/// An upper-layer header and what the IP layer said about it.
struct L4<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    bytes: &'a [u8],
}

impl L4<'_> {
    /// `src:sport -> dst:dport` (IPv6 in brackets).
    fn endpoints(&self, sport: u16, dport: u16) -> String {
        format!(
            "{} -> {}",
            SocketAddr::new(self.src, sport),
            SocketAddr::new(self.dst, dport)
        )
    }

    fn addresses(&self) -> String {
        format!("{} -> {}", self.src, self.dst)
    }
}

fn describe_l4(out: &mut String, l4: &L4<'_>, vxlan_port: u16, depth: u8) {
    match l4.proto {
        protocol::TCP => describe_tcp(out, l4),
        protocol::UDP => describe_udp(out, l4, vxlan_port, depth),
        protocol::ICMP => describe_icmpv4(out, l4),
        protocol::ICMPV6 => describe_icmpv6(out, l4),
        protocol::SCTP => {
            let _ = write!(out, "{} SCTP", l4.addresses());
        }
        ipv6::next_header::NO_NEXT_HEADER => {
            let _ = write!(out, "{} no next header", l4.addresses());
        }
        other => {
            let _ = write!(out, "{} proto {other}", l4.addresses());
        }
    }
}

fn describe_tcp(out: &mut String, l4: &L4<'_>) {
    let tcp = match TcpPacket::new_checked(l4.bytes) {
        Ok(tcp) => tcp,
        Err(e) => {
            let _ = write!(out, "{} TCP ({e})", l4.addresses());
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
        "{} TCP [{flag_text}]",
        l4.endpoints(tcp.src_port(), tcp.dst_port())
    );
    let len = tcp.payload().len();
    if len > 0 {
        let _ = write!(out, " len {len}");
    }
}

fn describe_udp(out: &mut String, l4: &L4<'_>, vxlan_port: u16, depth: u8) {
    let udp = match UdpPacket::new_checked(l4.bytes) {
        Ok(udp) => udp,
        Err(e) => {
            let _ = write!(out, "{} UDP ({e})", l4.addresses());
            return;
        }
    };
    let _ = write!(out, "{} ", l4.endpoints(udp.src_port(), udp.dst_port()));
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

fn describe_icmpv4(out: &mut String, l4: &L4<'_>) {
    let icmp = match Icmpv4Packet::new_checked(l4.bytes) {
        Ok(icmp) => icmp,
        Err(e) => {
            let _ = write!(out, "{} ICMP ({e})", l4.addresses());
            return;
        }
    };
    let _ = write!(out, "{} ICMP ", l4.addresses());
    let (t, code) = (icmp.msg_type(), icmp.code());
    let _ = match t {
        icmpv4::TYPE_ECHO_REQUEST => write!(
            out,
            "echo request id {} seq {}",
            icmp.echo_ident(),
            icmp.echo_seq()
        ),
        icmpv4::TYPE_ECHO_REPLY => write!(
            out,
            "echo reply id {} seq {}",
            icmp.echo_ident(),
            icmp.echo_seq()
        ),
        icmpv4::TYPE_DEST_UNREACHABLE => write!(out, "unreachable code {code}"),
        icmpv4::TYPE_TIME_EXCEEDED => write!(out, "time exceeded code {code}"),
        _ => write!(out, "type {t} code {code}"),
    };
}

fn describe_icmpv6(out: &mut String, l4: &L4<'_>) {
    let icmp = match Icmpv6Packet::new_checked(l4.bytes) {
        Ok(icmp) => icmp,
        Err(e) => {
            let _ = write!(out, "{} ICMPv6 ({e})", l4.addresses());
            return;
        }
    };
    let _ = write!(out, "{} ICMPv6 ", l4.addresses());
    let (t, code) = (icmp.msg_type(), icmp.code());
    let _ = match t {
        icmpv6::TYPE_ECHO_REQUEST => write!(
            out,
            "echo request id {} seq {}",
            icmp.echo_ident(),
            icmp.echo_seq()
        ),
        icmpv6::TYPE_ECHO_REPLY => write!(
            out,
            "echo reply id {} seq {}",
            icmp.echo_ident(),
            icmp.echo_seq()
        ),
        icmpv6::TYPE_DEST_UNREACHABLE => write!(out, "unreachable code {code}"),
        icmpv6::TYPE_PACKET_TOO_BIG => write!(out, "packet too big mtu {}", icmp.mtu()),
        icmpv6::TYPE_TIME_EXCEEDED => write!(out, "time exceeded code {code}"),
        icmpv6::TYPE_ROUTER_SOLICIT => write!(out, "router solicitation"),
        icmpv6::TYPE_ROUTER_ADVERT => write!(out, "router advertisement"),
        icmpv6::TYPE_NEIGHBOR_SOLICIT => write!(out, "neighbor solicitation"),
        icmpv6::TYPE_NEIGHBOR_ADVERT => write!(out, "neighbor advertisement"),
        _ => write!(out, "type {t} code {code}"),
    };
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
    fn ipv6_udp_through_a_fragment_header() {
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, 44, 64];
        ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        // Fragment header: next UDP, offset 0, more fragments.
        let mut rest = vec![17, 0, 0, 1, 0, 0, 0, 7];
        rest.extend_from_slice(&udp(53, 5353, b"abc"));
        let plen = u16::try_from(rest.len()).unwrap();
        ip[4..6].copy_from_slice(&plen.to_be_bytes());
        ip.extend_from_slice(&rest);
        assert_eq!(
            describe(&eth(0x86dd, &ip), 4789),
            "[fd00::1]:53 -> [fd00::2]:5353 UDP len 3 [first fragment]"
        );
        // Cut inside the UDP payload: still described, marked.
        let f = eth(0x86dd, &ip);
        assert_eq!(
            describe(&f[..f.len() - 2], 4789),
            "fd00::1 -> fd00::2 UDP (truncated) [first fragment] [truncated]"
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
        assert_eq!(
            describe(&eth(0x86dd, &[0x45; 40]), 4789),
            "IPv6 (malformed)"
        );
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
