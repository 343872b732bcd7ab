//! Address and port rewriting with incremental checksum updates (RFC 1624).
//!
//! A NAT touches a few bytes of a packet; recomputing checksums over the payload would
//! cost more than everything else the pipeline does. Only SCTP, whose CRC32c has no
//! incremental form, is recomputed (and only when a port changes).

use crate::addr::IpKey;
use crate::pipeline::packet::{Family, IpHeaders};
use crate::tables::proto;
use crate::wire::checksum;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::sctp::SctpPacket;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;

/// Which end of the packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Rewrites one end's address and (for TCP/UDP/SCTP) port, fixing every checksum that
/// covers them, and updates `h` to match. The families of `h` and `ip` must agree; a
/// mismatch leaves the packet untouched and returns false.
pub fn rewrite(frame: &mut [u8], h: &mut IpHeaders, end: End, ip: IpKey, port: u16) -> bool {
    let old_ip = match end {
        End::Source => h.src,
        End::Destination => h.dst,
    };
    let old_port = match end {
        End::Source => h.src_port,
        End::Destination => h.dst_port,
    };
    let (old_addr, new_addr): (&[u8], &[u8]) = match h.family {
        Family::V4 => match (old_ip.as_v4(), ip.as_v4()) {
            (Some(_), Some(_)) => (&old_ip.0[12..], &ip.0[12..]),
            _ => return false,
        },
        Family::V6 => {
            if ip.is_v4() {
                return false;
            }
            (&old_ip.0[..], &ip.0[..])
        }
    };

    let Some(l3) = frame.get_mut(h.l3_offset..h.l3_offset + h.ip_len) else {
        return false;
    };
    match h.family {
        Family::V4 => {
            let mut pkt = Ipv4Packet::new_unchecked(&mut *l3);
            let addr = [new_addr[0], new_addr[1], new_addr[2], new_addr[3]];
            match end {
                End::Source => pkt.set_src_addr(addr),
                End::Destination => pkt.set_dst_addr(addr),
            }
            let sum = checksum::update_bytes(pkt.checksum(), old_addr, new_addr);
            pkt.set_checksum(sum);
        }
        Family::V6 => {
            let mut pkt = Ipv6Packet::new_unchecked(&mut *l3);
            let mut addr = [0u8; 16];
            addr.copy_from_slice(new_addr);
            match end {
                End::Source => pkt.set_src_addr(&addr),
                End::Destination => pkt.set_dst_addr(&addr),
            }
        }
    }

    let rewrite_port = h.has_ports() && port != old_port;
    let l4_rel = h.l4_offset - h.l3_offset;
    if let Some(l4) = l3.get_mut(l4_rel..).filter(|_| !h.later_fragment) {
        rewrite_l4(
            l4,
            h.proto,
            end,
            old_addr,
            new_addr,
            rewrite_port.then_some((old_port, port)),
        );
    }
    match end {
        End::Source => {
            h.src = ip;
            if h.has_ports() {
                h.src_port = port;
            }
        }
        End::Destination => {
            h.dst = ip;
            if h.has_ports() {
                h.dst_port = port;
            }
        }
    }
    true
}

fn rewrite_l4(
    l4: &mut [u8],
    protocol: u8,
    end: End,
    old_addr: &[u8],
    new_addr: &[u8],
    ports: Option<(u16, u16)>,
) {
    match protocol {
        proto::TCP if l4.len() >= crate::wire::tcp::HEADER_LEN => {
            let mut tcp = TcpPacket::new_unchecked(l4);
            let mut sum = checksum::update_bytes(tcp.checksum(), old_addr, new_addr);
            if let Some((old, new)) = ports {
                sum = checksum::update_u16(sum, old, new);
                match end {
                    End::Source => tcp.set_src_port(new),
                    End::Destination => tcp.set_dst_port(new),
                }
            }
            tcp.set_checksum(sum);
        }
        proto::UDP if l4.len() >= crate::wire::udp::HEADER_LEN => {
            let mut udp = UdpPacket::new_unchecked(l4);
            // A zero UDP checksum over IPv4 means "none": keep it that way.
            let had_sum = udp.checksum() != 0;
            let mut sum = checksum::update_bytes(udp.checksum(), old_addr, new_addr);
            if let Some((old, new)) = ports {
                sum = checksum::update_u16(sum, old, new);
                match end {
                    End::Source => udp.set_src_port(new),
                    End::Destination => udp.set_dst_port(new),
                }
            }
            if had_sum {
                udp.set_checksum(if sum == 0 { 0xffff } else { sum });
            }
        }
        proto::SCTP if l4.len() >= crate::wire::sctp::HEADER_LEN => {
            // SCTP's CRC32c covers no pseudo-header: addresses don't matter, ports do.
            if let Some((_, new)) = ports {
                let mut sctp = SctpPacket::new_unchecked(l4);
                match end {
                    End::Source => sctp.set_src_port(new),
                    End::Destination => sctp.set_dst_port(new),
                }
                sctp.fill_checksum();
            }
        }
        proto::ICMPV6 if l4.len() >= crate::wire::icmpv6::HEADER_LEN => {
            // ICMPv6 checksums cover the pseudo-header (ICMPv4's do not).
            let mut icmp = crate::wire::icmpv6::Icmpv6Packet::new_unchecked(l4);
            let sum = checksum::update_bytes(icmp.checksum(), old_addr, new_addr);
            icmp.set_checksum(sum);
        }
        _ => {}
    }
}
