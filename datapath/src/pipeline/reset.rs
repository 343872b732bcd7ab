//! Turning a TCP segment into the RST that ends its connection, in place (RFC 9293
//! §3.10.7.1): the answer a client gets when its Service endpoint was deleted under it.

use crate::addr::{IpKey, MacAddr};
use crate::frame::Frame;
use crate::pipeline::packet::{Family, IpHeaders};
use crate::tables::proto;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::tcp::{self, TcpPacket, TcpRepr, flags};

const RST_TTL: u8 = 64;

/// Rewrites the TCP segment in the frame into a RST from (`from`, `from_port`) back to its
/// sender, from `from_mac`. The sequence numbers make the sender accept it: with ACK set,
/// the RST's sequence is the segment's acknowledgment; without, it acknowledges the
/// segment instead. Returns false (frame unchanged) if the segment cannot be read.
pub fn build(
    frame: &mut Frame<'_>,
    h: &IpHeaders,
    from: IpKey,
    from_port: u16,
    from_mac: MacAddr,
) -> bool {
    if h.proto != proto::TCP || h.later_fragment || h.l3_offset != ethernet::HEADER_LEN {
        return false;
    }
    let data = frame.data();
    let Some(seg) = data
        .get(h.l4_offset..h.l3_offset + h.ip_len)
        .and_then(|b| TcpPacket::new_checked(b).ok())
    else {
        return false;
    };
    if seg.flags() & flags::RST != 0 {
        // Never answer a RST with a RST.
        return false;
    }
    let seg_len = seg.payload().len() as u32
        + u32::from(seg.flags() & flags::SYN != 0)
        + u32::from(seg.flags() & flags::FIN != 0);
    let (seq, ack, rst_flags) = if seg.flags() & flags::ACK != 0 {
        (seg.ack_number(), 0, flags::RST)
    } else {
        (
            0,
            seg.seq_number().wrapping_add(seg_len),
            flags::RST | flags::ACK,
        )
    };
    let to_port = seg.src_port();
    let sender_mac = EthernetFrame::new_unchecked(data).src_addr();
    let ip_len = match h.family {
        Family::V4 => ipv4::HEADER_LEN,
        Family::V6 => ipv6::HEADER_LEN,
    };
    if !frame.set_len(ethernet::HEADER_LEN + ip_len + tcp::HEADER_LEN) {
        return false;
    }
    let buf = frame.data_mut();
    let (eth, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst_addr(sender_mac);
    eth.set_src_addr(from_mac);
    let (ip, seg) = rest.split_at_mut(ip_len);
    let repr = TcpRepr {
        src_port: from_port,
        dst_port: to_port,
        seq_number: seq,
        ack_number: ack,
        flags: rst_flags,
        window: 0,
        urgent: 0,
    };
    let mut seg = TcpPacket::new_unchecked(seg);
    repr.emit(&mut seg);
    match h.family {
        Family::V4 => {
            eth.set_ethertype(ethernet::ethertype::IPV4);
            let (src, dst) = (v4(from), v4(h.src));
            Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                protocol: proto::TCP,
                ttl: RST_TTL,
                payload_len: tcp::HEADER_LEN,
                dont_frag: true,
                ident: 0,
                dscp_ecn: 0,
            }
            .emit(&mut Ipv4Packet::new_unchecked(ip));
            seg.fill_checksum_v4(src, dst);
        }
        Family::V6 => {
            eth.set_ethertype(ethernet::ethertype::IPV6);
            Ipv6Repr {
                src_addr: from.0,
                dst_addr: h.src.0,
                next_header: proto::TCP,
                hop_limit: RST_TTL,
                payload_len: tcp::HEADER_LEN,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut Ipv6Packet::new_unchecked(ip));
            seg.fill_checksum_v6(&from.0, &h.src.0);
        }
    }
    true
}

fn v4(ip: IpKey) -> [u8; 4] {
    [ip.0[12], ip.0[13], ip.0[14], ip.0[15]]
}
