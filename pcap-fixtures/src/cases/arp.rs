//! Walk 7: ARP from pods (and the host) is answered in place with the gateway MAC; what
//! the datapath does not stand in for is dropped as `arp_not_for_gateway`.

use super::world::*;
use crate::case::{Case, StateSource, drop, forward};
use crate::packet::{ARP_REPLY, ARP_REQUEST, BROADCAST, L2, arp, mac_for};

/// A pod's broadcast who-has.
fn who_has(sender: [u8; 4], target: [u8; 4], pad_to: usize) -> Vec<u8> {
    let l2 = L2 {
        src: mac_for(sender),
        dst: BROADCAST,
    };
    arp(
        l2,
        ARP_REQUEST,
        mac_for(sender),
        sender,
        [0; 6],
        target,
        pad_to,
    )
}

/// The reply "`target` is at the gateway MAC", addressed back to `sender`; the frame keeps
/// the request's length (padding included), since it is the request rewritten in place.
fn gateway_reply(sender: [u8; 4], target: [u8; 4], pad_to: usize) -> Vec<u8> {
    let l2 = L2 {
        src: mac_for(GW_A),
        dst: mac_for(sender),
    };
    arp(
        l2,
        ARP_REPLY,
        mac_for(GW_A),
        target,
        mac_for(sender),
        sender,
        pad_to,
    )
}

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();

    let mut c = Case::new(
        "arp-gateway",
        "A pod's ARP request for its gateway 10.244.1.1 is answered in place on the pod's port: \
         op reply, sender 10.244.1.1 at 0a:58:0a:f4:01:01, target the requester; unpadded and \
         60-byte padded requests keep their length.",
        StateSource::TwoNodeExample,
    );
    c.send(
        CLIENT_PORT,
        who_has(CLIENT, GW_A, 0),
        forward(CLIENT_PORT, gateway_reply(CLIENT, GW_A, 0)),
    );
    c.send(
        CLIENT_PORT,
        who_has(CLIENT, GW_A, 60),
        forward(CLIENT_PORT, gateway_reply(CLIENT, GW_A, 60)),
    );
    c.send(
        WEB0_PORT,
        who_has(WEB0, GW_A, 60),
        forward(WEB0_PORT, gateway_reply(WEB0, GW_A, 60)),
    );
    out.push(c);

    let mut c = Case::new(
        "arp-podcidr-neighbour",
        "A pod's ARP for another address of its /24 (a local pod, or a free address) is answered \
         with the gateway MAC: traffic between pods always goes through the datapath.",
        StateSource::TwoNodeExample,
    );
    c.send(
        CLIENT_PORT,
        who_has(CLIENT, WEB0, 60),
        forward(CLIENT_PORT, gateway_reply(CLIENT, WEB0, 60)),
    );
    let free = [10, 244, 1, 200];
    c.send(
        CLIENT_PORT,
        who_has(CLIENT, free, 60),
        forward(CLIENT_PORT, gateway_reply(CLIENT, free, 60)),
    );
    c.send(
        WEB0_PORT,
        who_has(WEB0, CLIENT, 0),
        forward(WEB0_PORT, gateway_reply(WEB0, CLIENT, 0)),
    );
    out.push(c);

    let mut c = Case::new(
        "arp-not-for-gateway",
        "ARP the datapath does not answer: gratuitous ARP (sender = target), a request for an \
         address outside the PodCIDR (the underlay router, a remote pod), a request for the \
         pod's own address, and an ARP reply from a pod; all dropped as arp_not_for_gateway.",
        StateSource::TwoNodeExample,
    );
    c.send(
        CLIENT_PORT,
        who_has(CLIENT, CLIENT, 60),
        drop("arp_not_for_gateway"),
    );
    c.send(
        CLIENT_PORT,
        who_has(CLIENT, [192, 168, 50, 1], 60),
        drop("arp_not_for_gateway"),
    );
    c.send(
        CLIENT_PORT,
        who_has(CLIENT, WEB1, 60),
        drop("arp_not_for_gateway"),
    );
    let own = arp(
        L2 {
            src: mac_for(CLIENT),
            dst: BROADCAST,
        },
        ARP_REQUEST,
        mac_for(CLIENT),
        [0, 0, 0, 0],
        [0; 6],
        CLIENT,
        60,
    );
    // An address-conflict probe (RFC 5227: sender 0.0.0.0) for the pod's own address.
    c.send(CLIENT_PORT, own, drop("arp_not_for_gateway"));
    let reply = arp(
        L2 {
            src: mac_for(CLIENT),
            dst: mac_for(GW_A),
        },
        ARP_REPLY,
        mac_for(CLIENT),
        CLIENT,
        mac_for(GW_A),
        GW_A,
        60,
    );
    c.send(CLIENT_PORT, reply, drop("arp_not_for_gateway"));
    out.push(c);

    let mut c = Case::new(
        "arp-from-host",
        "The host routes cluster and Service ranges into the host port and ARPs for each \
         destination: answered with the gateway MAC for anything that is not the node's own \
         address; ARP for the node's own InternalIP is dropped.",
        StateSource::TwoNodeExample,
    );
    let host_req = |target: [u8; 4]| {
        arp(
            L2 {
                src: HOST_MAC,
                dst: BROADCAST,
            },
            ARP_REQUEST,
            HOST_MAC,
            HOST_SIDE_IP,
            [0; 6],
            target,
            0,
        )
    };
    let host_reply = |target: [u8; 4]| {
        arp(
            L2 {
                src: mac_for(GW_A),
                dst: HOST_MAC,
            },
            ARP_REPLY,
            mac_for(GW_A),
            target,
            HOST_MAC,
            HOST_SIDE_IP,
            0,
        )
    };
    c.send(HOST, host_req(VIP), forward(HOST, host_reply(VIP)));
    c.send(HOST, host_req(WEB0), forward(HOST, host_reply(WEB0)));
    c.send(HOST, host_req(NODE_A_IP), drop("arp_not_for_gateway"));
    out.push(c);

    out
}
