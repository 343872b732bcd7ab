//! Turning a packet into the ICMP/ICMPv6 error about itself, in place.
//!
//! The error's headers are written into the frame's headroom in front of the original
//! IP header, which becomes the quoted part; nothing is copied. Quotes follow RFC 1812
//! §4.3.2.3 (as much as fits in 576 bytes) and RFC 4443 §2.4 (as much as fits in 1280).

use crate::addr::{IpKey, MacAddr};
use crate::frame::Frame;
use crate::pipeline::packet::{Family, IpHeaders};
use crate::tables::proto;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};

/// TTL / hop limit of errors we originate.
const ERROR_TTL: u8 = 64;
const V4_MAX_ERROR: usize = 576;
const V6_MAX_ERROR: usize = 1280;

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    TimeExceeded,
    /// Fragmentation needed (v4) / packet too big (v6), with the MTU the sender must use.
    TooBig {
        mtu: u16,
    },
    PortUnreachable,
}

/// Whether RFC 1122 §3.2.2 / RFC 4443 §2.4(e) let us answer this packet with an error:
/// not about an ICMP error, a non-first fragment, or a multicast/broadcast/unspecified address.
pub fn may_answer(frame: &[u8], h: &IpHeaders) -> bool {
    if h.is_icmp_error() || h.later_fragment || h.l3_offset != ethernet::HEADER_LEN {
        return false;
    }
    let dst_mac_multicast = frame.first().is_some_and(|b| b & 1 == 1);
    let src_mac_multicast = frame.get(6).is_none_or(|b| b & 1 == 1);
    if dst_mac_multicast || src_mac_multicast {
        return false;
    }
    match h.family {
        Family::V4 => {
            let (s, d) = (h.src.0[12], h.dst.0[12]);
            let src_bad = h.src.0[12..] == [0, 0, 0, 0]
                || h.src.0[12..] == [255, 255, 255, 255]
                || (224..240).contains(&s);
            let dst_bad = h.dst.0[12..] == [255, 255, 255, 255] || (224..240).contains(&d);
            !src_bad && !dst_bad
        }
        Family::V6 => h.src != IpKey::default() && h.src.0[0] != 0xff && h.dst.0[0] != 0xff,
    }
}

/// Rewrites the frame into `error` about the packet it holds, from `from` (an address of
/// ours, of `h`'s family) and `from_mac`, addressed back to the packet's sender.
/// Returns false (frame unchanged) when there is no room or `from` is of the other family.
pub fn build(
    frame: &mut Frame<'_>,
    h: &IpHeaders,
    error: IcmpError,
    from: IpKey,
    from_mac: MacAddr,
) -> bool {
    let (ip_hdr, max_total) = match h.family {
        Family::V4 if from.is_v4() => (ipv4::HEADER_LEN, V4_MAX_ERROR),
        Family::V6 if !from.is_v4() => (ipv6::HEADER_LEN, V6_MAX_ERROR),
        _ => return false,
    };
    let icmp_hdr = icmpv4::HEADER_LEN; // same 8 bytes for ICMPv6
    let quote_len = h.ip_len.min(max_total - ip_hdr - icmp_hdr);
    let headers = ethernet::HEADER_LEN + ip_hdr + icmp_hdr;
    let Some(sender_mac) = frame
        .data()
        .get(6..12)
        .map(|b| MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]))
    else {
        return false;
    };
    if frame.len() < h.l3_offset + quote_len || !frame.push_front(headers - h.l3_offset) {
        return false;
    }
    frame.truncate(headers + quote_len);
    let buf = frame.data_mut();
    let (eth, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst_addr(sender_mac);
    eth.set_src_addr(from_mac);
    let (ip, icmp) = rest.split_at_mut(ip_hdr);
    let icmp_len = icmp_hdr + quote_len;
    match h.family {
        Family::V4 => {
            eth.set_ethertype(ethernet::ethertype::IPV4);
            Ipv4Repr {
                src_addr: v4(from),
                dst_addr: v4(h.src),
                protocol: proto::ICMP,
                ttl: ERROR_TTL,
                payload_len: icmp_len,
                dont_frag: false,
                ident: 0,
                dscp_ecn: 0,
            }
            .emit(&mut Ipv4Packet::new_unchecked(ip));
            let (ty, code, rest_of_header) = match error {
                IcmpError::TimeExceeded => {
                    (icmpv4::TYPE_TIME_EXCEEDED, icmpv4::CODE_TTL_EXCEEDED, 0)
                }
                IcmpError::TooBig { mtu } => (
                    icmpv4::TYPE_DEST_UNREACHABLE,
                    icmpv4::CODE_FRAG_NEEDED,
                    u32::from(mtu),
                ),
                IcmpError::PortUnreachable => (
                    icmpv4::TYPE_DEST_UNREACHABLE,
                    icmpv4::CODE_PORT_UNREACHABLE,
                    0,
                ),
            };
            let mut pkt = Icmpv4Packet::new_unchecked(icmp);
            pkt.set_msg_type(ty);
            pkt.set_code(code);
            pkt.set_rest_of_header(rest_of_header);
            pkt.fill_checksum();
        }
        Family::V6 => {
            eth.set_ethertype(ethernet::ethertype::IPV6);
            let (src, dst) = (from.0, h.src.0);
            Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: proto::ICMPV6,
                hop_limit: ERROR_TTL,
                payload_len: icmp_len,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut Ipv6Packet::new_unchecked(ip));
            let (ty, code, rest_of_header) = match error {
                IcmpError::TimeExceeded => (icmpv6::TYPE_TIME_EXCEEDED, 0, 0),
                IcmpError::TooBig { mtu } => (icmpv6::TYPE_PACKET_TOO_BIG, 0, u32::from(mtu)),
                // Code 4: port unreachable.
                IcmpError::PortUnreachable => (icmpv6::TYPE_DEST_UNREACHABLE, 4, 0),
            };
            let mut pkt = Icmpv6Packet::new_unchecked(icmp);
            pkt.set_msg_type(ty);
            pkt.set_code(code);
            pkt.set_rest_of_header(rest_of_header);
            pkt.fill_checksum(&src, &dst);
        }
    }
    true
}

fn v4(ip: IpKey) -> [u8; 4] {
    [ip.0[12], ip.0[13], ip.0[14], ip.0[15]]
}
