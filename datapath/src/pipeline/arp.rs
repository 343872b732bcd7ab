//! Answering ARP from pods and from the host for the addresses the datapath stands in for.
//!
//! Pods route everything via their gateway and, with a /24 address, also ARP for
//! neighbours in their PodCIDR; the host routes Service and cluster ranges into the
//! `host` port and ARPs for each destination. The datapath answers all of these with
//! the node's gateway MAC (proxy ARP), in place, so no L2 state is ever learnt.

use crate::addr::MacAddr;
use crate::frame::Frame;
use crate::verdict::DropReason;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::EthernetFrame;

/// The request's sender and target, for the caller to decide whether to answer.
#[derive(Debug, Clone, Copy)]
pub struct ArpRequest {
    pub sender_ip: [u8; 4],
    pub target_ip: [u8; 4],
}

/// Parses an ARP request at `offset`. Replies and gratuitous announcements are not ours
/// to act on (L2 is never learnt).
pub fn parse_request(frame: &[u8], offset: usize) -> Result<ArpRequest, DropReason> {
    let pkt = frame
        .get(offset..)
        .and_then(|b| ArpPacket::new_checked(b).ok())
        .ok_or(DropReason::MalformedArp)?;
    if pkt.operation() != arp::OP_REQUEST {
        return Err(DropReason::ArpNotForGateway);
    }
    let req = ArpRequest {
        sender_ip: pkt.sender_proto_addr(),
        target_ip: pkt.target_proto_addr(),
    };
    if req.sender_ip == req.target_ip {
        // Gratuitous ARP / address conflict probe: the pod announcing itself.
        return Err(DropReason::ArpNotForGateway);
    }
    Ok(req)
}

/// Rewrites the request at `offset` into the reply "`req.target_ip` is at `mac`".
pub fn reply_in_place(frame: &mut Frame<'_>, offset: usize, req: &ArpRequest, mac: MacAddr) {
    let data = frame.data_mut();
    let requester = {
        let eth = EthernetFrame::new_unchecked(&*data);
        eth.src_addr()
    };
    let requester_hw = match data.get(offset..).map(ArpPacket::new_unchecked) {
        Some(p) => p.sender_hw_addr(),
        None => return,
    };
    {
        let mut eth = EthernetFrame::new_unchecked(&mut *data);
        eth.set_dst_addr(requester);
        eth.set_src_addr(mac);
    }
    if let Some(b) = data.get_mut(offset..) {
        let mut pkt = ArpPacket::new_unchecked(b);
        pkt.set_operation(arp::OP_REPLY);
        pkt.set_sender_hw_addr(mac);
        pkt.set_sender_proto_addr(req.target_ip);
        pkt.set_target_hw_addr(requester_hw);
        pkt.set_target_proto_addr(req.sender_ip);
    }
}
