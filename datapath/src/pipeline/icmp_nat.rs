//! ICMP errors about translated flows: the packet an error quotes is rewritten to what
//! its receiver sent or was sent, and the error's own addresses follow the flow's NAT
//! (RFC 5508 §4.2 asks the same of NATs), so a client sees "VIP:80 unreachable", never a
//! backend address it did not talk to.

use crate::addr::IpKey;
use crate::conntrack::FlowKey;
use crate::pipeline::packet::{Family, IpHeaders};
use crate::tables::proto;
use crate::wire::checksum;
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet};

/// The packet quoted inside an ICMP error, located in the frame.
#[derive(Debug, Clone, Copy)]
pub struct Quoted {
    /// Frame offset of the quoted IP header.
    pub l3_offset: usize,
    /// Frame offset of the quoted transport header (its first 8 bytes are present).
    pub l4_offset: usize,
    /// The quoted packet's tuple, as it was on the wire.
    pub key: FlowKey,
}

/// Reads the tuple an ICMP error quotes (TCP, UDP or SCTP with at least its ports).
pub fn quoted(frame: &[u8], h: &IpHeaders) -> Option<Quoted> {
    let icmp_hdr = match h.family {
        Family::V4 => icmpv4::HEADER_LEN,
        Family::V6 => icmpv6::HEADER_LEN,
    };
    let l3_offset = h.l4_offset + icmp_hdr;
    let inner = frame.get(l3_offset..h.l3_offset + h.ip_len)?;
    let (src, dst, protocol, hdr_len) = match h.family {
        Family::V4 => {
            // The quote may be cut short of its total length: check the header only.
            let ip = Ipv4Packet::new_unchecked(inner);
            let hl = ip.header_len();
            if inner.len() < ipv4::HEADER_LEN
                || ip.version() != 4
                || hl < ipv4::HEADER_LEN
                || inner.len() < hl
            {
                return None;
            }
            if ip.frag_offset() != 0 {
                return None;
            }
            (
                IpKey::v4(ip.src_addr()),
                IpKey::v4(ip.dst_addr()),
                ip.protocol(),
                hl,
            )
        }
        Family::V6 => {
            if inner.len() < ipv6::HEADER_LEN {
                return None;
            }
            let ip = Ipv6Packet::new_unchecked(inner);
            // Extension headers in quotes are rare; only a direct transport header is handled.
            (
                IpKey::v6(ip.src_addr()),
                IpKey::v6(ip.dst_addr()),
                ip.next_header(),
                ipv6::HEADER_LEN,
            )
        }
    };
    if !matches!(protocol, proto::TCP | proto::UDP | proto::SCTP) {
        return None;
    }
    let l4 = inner.get(hdr_len..hdr_len + 8)?;
    Some(Quoted {
        l3_offset,
        l4_offset: l3_offset + hdr_len,
        key: FlowKey {
            src,
            dst,
            src_port: u16::from_be_bytes([l4[0], l4[1]]),
            dst_port: u16::from_be_bytes([l4[2], l4[3]]),
            proto: protocol,
        },
    })
}

/// Rewrites the quoted packet to `quote` and the error's outer addresses to `outer_src` /
/// `outer_dst`, then fixes every checksum involved. `h` is updated to the new outer
/// addresses. The caller has checked the families agree.
pub fn rewrite(
    frame: &mut [u8],
    h: &mut IpHeaders,
    q: &Quoted,
    quote: &FlowKey,
    outer_src: IpKey,
    outer_dst: IpKey,
) {
    // The quoted transport ports (and UDP's checksum, the only one inside 8 bytes).
    if let Some(l4) = frame.get_mut(q.l4_offset..q.l4_offset + 8) {
        let sum_delta_ports = |old: u16, new: u16, at: usize, l4: &mut [u8]| {
            l4[at..at + 2].copy_from_slice(&new.to_be_bytes());
            if quote.proto == proto::UDP {
                let csum = u16::from_be_bytes([l4[6], l4[7]]);
                if csum != 0 {
                    let c = checksum::update_u16(csum, old, new);
                    l4[6..8].copy_from_slice(&c.to_be_bytes());
                }
            }
        };
        sum_delta_ports(q.key.src_port, quote.src_port, 0, l4);
        sum_delta_ports(q.key.dst_port, quote.dst_port, 2, l4);
        if quote.proto == proto::UDP {
            let csum = u16::from_be_bytes([l4[6], l4[7]]);
            if csum != 0 {
                let (old, new) = (
                    addr_bytes(h.family, &q.key.src, &q.key.dst),
                    addr_bytes(h.family, &quote.src, &quote.dst),
                );
                let c = checksum::update_bytes(csum, &old.0[..old.1], &new.0[..new.1]);
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
    // The quoted IP header's addresses (and, for IPv4, its header checksum).
    if let Some(ip) = frame.get_mut(q.l3_offset..q.l4_offset) {
        match h.family {
            Family::V4 => {
                let mut ip = Ipv4Packet::new_unchecked(ip);
                ip.set_src_addr(v4(quote.src));
                ip.set_dst_addr(v4(quote.dst));
                ip.fill_checksum();
            }
            Family::V6 => {
                let mut ip = Ipv6Packet::new_unchecked(ip);
                ip.set_src_addr(&quote.src.0);
                ip.set_dst_addr(&quote.dst.0);
            }
        }
    }
    // The outer header, then the ICMP checksum over the whole (changed) message.
    let end = h.l3_offset + h.ip_len;
    match h.family {
        Family::V4 => {
            if let Some(ip) = frame.get_mut(h.l3_offset..end) {
                let mut ip = Ipv4Packet::new_unchecked(ip);
                ip.set_src_addr(v4(outer_src));
                ip.set_dst_addr(v4(outer_dst));
                ip.fill_checksum();
            }
            if let Some(icmp) = frame.get_mut(h.l4_offset..end) {
                Icmpv4Packet::new_unchecked(icmp).fill_checksum();
            }
        }
        Family::V6 => {
            if let Some(ip) = frame.get_mut(h.l3_offset..end) {
                let mut ip = Ipv6Packet::new_unchecked(ip);
                ip.set_src_addr(&outer_src.0);
                ip.set_dst_addr(&outer_dst.0);
            }
            if let Some(icmp) = frame.get_mut(h.l4_offset..end) {
                Icmpv6Packet::new_unchecked(icmp).fill_checksum(&outer_src.0, &outer_dst.0);
            }
        }
    }
    h.src = outer_src;
    h.dst = outer_dst;
}

/// The address bytes a pseudo-header covers, for incremental updates: 8 (v4) or 32 (v6).
fn addr_bytes(family: Family, src: &IpKey, dst: &IpKey) -> ([u8; 32], usize) {
    let mut out = [0u8; 32];
    match family {
        Family::V4 => {
            out[..4].copy_from_slice(&src.0[12..]);
            out[4..8].copy_from_slice(&dst.0[12..]);
            (out, 8)
        }
        Family::V6 => {
            out[..16].copy_from_slice(&src.0);
            out[16..].copy_from_slice(&dst.0);
            (out, 32)
        }
    }
}

fn v4(ip: IpKey) -> [u8; 4] {
    [ip.0[12], ip.0[13], ip.0[14], ip.0[15]]
}
