//! Answering IPv6 neighbour solicitations for the addresses the datapath stands in for:
//! ARP's counterpart (RFC 4861), so IPv6 pods find their gateway without L2 learning.
//!
//! The answer is built in place: the solicitation becomes the advertisement, from the
//! gateway MAC, with a target link-layer address option carrying that MAC.

use crate::addr::{IpKey, MacAddr};
use crate::frame::Frame;
use crate::pipeline::packet::IpHeaders;
use crate::tables::proto;
use crate::verdict::DropReason;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};

/// RFC 4861 §7.1.1: a neighbour solicitation that did not come with hop limit 255 may
/// have been forwarded, i.e. spoofed from off-link.
const NDP_HOP_LIMIT: u8 = 255;
/// Solicitation body after the 8-byte ICMPv6 header starts with the 16-byte target.
const TARGET_LEN: usize = 16;
/// Advertisement: ICMPv6 header (8) + target (16) + target link-layer option (8).
const ADVERT_LEN: usize = icmpv6::HEADER_LEN + TARGET_LEN + 8;
/// NA flags (first byte of the word after the checksum): Router, Solicited, Override.
const FLAG_ROUTER: u32 = 0x8000_0000;
const FLAG_SOLICITED: u32 = 0x4000_0000;
const FLAG_OVERRIDE: u32 = 0x2000_0000;
/// NDP option type "target link-layer address", length in units of 8 bytes.
const OPT_TARGET_LL: u8 = 2;

/// The solicitation's sender and target.
#[derive(Debug, Clone, Copy)]
pub struct Solicitation {
    pub sender: IpKey,
    pub target: IpKey,
}

/// Validates a neighbour solicitation (hop limit 255, code 0, room for the target) and
/// reads it. Duplicate address detection (unspecified source) is not ours to answer.
pub fn parse_solicitation(frame: &[u8], h: &IpHeaders) -> Result<Solicitation, DropReason> {
    if h.ttl != NDP_HOP_LIMIT {
        return Err(DropReason::MalformedL4);
    }
    let icmp = frame
        .get(h.l4_offset..h.l3_offset + h.ip_len)
        .and_then(|b| Icmpv6Packet::new_checked(b).ok())
        .ok_or(DropReason::MalformedL4)?;
    if icmp.code() != 0 || icmp.data().len() < TARGET_LEN {
        return Err(DropReason::MalformedL4);
    }
    if h.src == IpKey::default() {
        return Err(DropReason::NdpNotForGateway);
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&icmp.data()[..TARGET_LEN]);
    Ok(Solicitation {
        sender: h.src,
        target: IpKey::v6(target),
    })
}

/// Rewrites the frame into the advertisement "`sol.target` is at `mac`", addressed back to
/// the soliciting node. `router` sets the R flag (the target is the pods' gateway).
pub fn advertise_in_place(
    frame: &mut Frame<'_>,
    sol: &Solicitation,
    mac: MacAddr,
    router: bool,
) -> bool {
    let Some(requester) = frame
        .data()
        .get(6..12)
        .map(|b| MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]))
    else {
        return false;
    };
    let total = ethernet::HEADER_LEN + ipv6::HEADER_LEN + ADVERT_LEN;
    if !frame.set_len(total) {
        return false;
    }
    let buf = frame.data_mut();
    let (eth, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst_addr(requester);
    eth.set_src_addr(mac);
    eth.set_ethertype(ethernet::ethertype::IPV6);
    let (ip, icmp) = rest.split_at_mut(ipv6::HEADER_LEN);
    let (src, dst) = (sol.target.0, sol.sender.0);
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto::ICMPV6,
        hop_limit: NDP_HOP_LIMIT,
        payload_len: ADVERT_LEN,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(ip));
    let mut pkt = Icmpv6Packet::new_unchecked(&mut icmp[..ADVERT_LEN]);
    pkt.set_msg_type(icmpv6::TYPE_NEIGHBOR_ADVERT);
    pkt.set_code(0);
    let router_flag = if router { FLAG_ROUTER } else { 0 };
    pkt.set_rest_of_header(router_flag | FLAG_SOLICITED | FLAG_OVERRIDE);
    let body = &mut icmp[icmpv6::HEADER_LEN..ADVERT_LEN];
    body[..TARGET_LEN].copy_from_slice(&src);
    body[TARGET_LEN] = OPT_TARGET_LL;
    body[TARGET_LEN + 1] = 1;
    body[TARGET_LEN + 2..].copy_from_slice(&mac.0);
    Icmpv6Packet::new_unchecked(&mut icmp[..ADVERT_LEN]).fill_checksum(&src, &dst);
    true
}
