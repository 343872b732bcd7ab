//! Walk 2: VXLAN encap towards the node that owns a PodCIDR, and decap on the uplink
//! (only our VNI, to our address and UDP port), with what is refused or not ours.

use super::world::*;
use crate::case::{Case, Expect, StateSource, drop, forward};
use crate::packet::{ARP_REQUEST, BROADCAST, L2, L4, V4, Vxlan, arp, eth_v4, mac_for, tcp_flags};

/// web-1 -> client as node-b tunnels it (inner TTL already decremented there).
fn from_web1(l4: L4, payload: &[u8]) -> (V4, Vec<u8>) {
    let ip = V4::new(WEB1, CLIENT).ttl(63);
    (ip, eth_v4(b_to_a_inner(), ip, l4, payload))
}

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();

    let mut c = Case::new(
        "pod-to-pod-remote-node",
        "client -> web-1 on node-b (UDP, TCP, ICMP echo): VXLAN to node-b. Outer: MACs from the \
         kxdp.io/underlay-mac annotations, 192.168.50.10 -> 192.168.50.11, TTL 64, DF, id 0, UDP \
         dst 4789 with checksum 0 and the source port from the inner flow hash (49152-65535), \
         VNI 1. Inner: src MAC our gateway, dst MAC node-b's gateway 0a:58:0a:f4:02:01, TTL-1.",
        StateSource::TwoNodeExample,
    );
    for (l4, payload) in [
        (L4::udp(5000, 8080), &b"to web-1"[..]),
        (L4::tcp(40001, 8080, 77, 0, tcp_flags::SYN), &b""[..]),
        (L4::Echo { id: 3, seq: 9 }, &b"ping web-1"[..]),
    ] {
        let ip = V4::new(CLIENT, WEB1);
        let inner = eth_v4(a_to_b_inner(), ip.ttl(63), l4, payload);
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), ip, l4, payload),
            forward(UPLINK, a_to_b(ip, l4).wrap(&inner)),
        );
    }
    out.push(c);

    let mut c = Case::new(
        "vxlan-decap-local-pod",
        "VXLAN from node-b (VNI 1, port 4789, to 192.168.50.10) carrying web-1 -> client: \
         decapsulated, TTL-1, delivered to the client's port from the gateway MAC. Outer UDP \
         checksums of 0 and computed ones are both accepted, and trailing underlay padding \
         is not delivered.",
        StateSource::TwoNodeExample,
    );
    let l4 = L4::udp(8080, 5000);
    let (ip, inner) = from_web1(l4, b"reply from web-1");
    let delivered = eth_v4(to_pod(CLIENT), ip.ttl(62), l4, b"reply from web-1");
    c.send(
        UPLINK,
        b_to_a(51000, VNI).wrap(&inner),
        forward(CLIENT_PORT, delivered.clone()),
    );
    let checksummed = Vxlan {
        udp_checksum: true,
        ..b_to_a(51001, VNI)
    };
    c.send(
        UPLINK,
        checksummed.wrap(&inner),
        forward(CLIENT_PORT, delivered.clone()),
    );
    let mut padded = b_to_a(51002, VNI).wrap(&inner);
    padded.extend_from_slice(&[0; 6]);
    c.send(UPLINK, padded, forward(CLIENT_PORT, delivered));
    let l4 = L4::tcp(8080, 40001, 500, 78, tcp_flags::SYN | tcp_flags::ACK);
    let (ip, inner) = from_web1(l4, b"");
    c.send(
        UPLINK,
        b_to_a(52000, VNI).wrap(&inner),
        forward(CLIENT_PORT, eth_v4(to_pod(CLIENT), ip.ttl(62), l4, b"")),
    );
    out.push(c);

    let mut c = Case::new(
        "vxlan-wrong-vni",
        "VXLAN to our address and port with VNI 2 or 100 instead of ours (1) is dropped as \
         vxlan_wrong_vni.",
        StateSource::TwoNodeExample,
    );
    let (_, inner) = from_web1(L4::udp(8080, 5000), b"wrong vni");
    for vni in [2, 100] {
        c.send(
            UPLINK,
            b_to_a(51000, vni).wrap(&inner),
            drop("vxlan_wrong_vni"),
        );
    }
    out.push(c);

    let mut c = Case::new(
        "vxlan-not-ours",
        "Uplink traffic that is not VXLAN for this node is the kernel's (pass): VXLAN to UDP 8472, \
         VXLAN to another address (192.168.50.99), ssh to the node, an ARP request for the \
         node, and a VLAN-tagged frame.",
        StateSource::TwoNodeExample,
    );
    let (_, inner) = from_web1(L4::udp(8080, 5000), b"not ours");
    let other_port = Vxlan {
        dport: 8472,
        ..b_to_a(51000, VNI)
    };
    c.send(UPLINK, other_port.wrap(&inner), Expect::Pass);
    let other_addr = Vxlan {
        dst: [192, 168, 50, 99],
        ..b_to_a(51000, VNI)
    };
    c.send(UPLINK, other_addr.wrap(&inner), Expect::Pass);
    let underlay = L2 {
        src: NODE_B_MAC,
        dst: NODE_A_MAC,
    };
    let ssh = eth_v4(
        underlay,
        V4::new(NODE_B_IP, NODE_A_IP),
        L4::tcp(50022, 22, 1, 0, tcp_flags::SYN),
        b"",
    );
    c.send(UPLINK, ssh.clone(), Expect::Pass);
    let who_has = arp(
        L2 {
            src: NODE_B_MAC,
            dst: BROADCAST,
        },
        ARP_REQUEST,
        NODE_B_MAC,
        NODE_B_IP,
        [0; 6],
        NODE_A_IP,
        60,
    );
    c.send(UPLINK, who_has, Expect::Pass);
    let mut tagged = ssh[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&ssh[12..]);
    c.send(UPLINK, tagged, Expect::Pass);
    out.push(c);

    let mut c = Case::new(
        "overlay-not-local",
        "Decapsulated traffic for something that is not a local pod (a free address of our \
         PodCIDR, a pod on node-b, the outside world, a Service VIP) is dropped as \
         overlay_not_local: the sending node routes and translates, we only deliver.",
        StateSource::TwoNodeExample,
    );
    for dst in [[10, 244, 1, 99], WEB1, [8, 8, 8, 8], VIP] {
        let l4 = L4::tcp(40000, 80, 1, 0, tcp_flags::SYN);
        let inner = eth_v4(b_to_a_inner(), V4::new(WEB1, dst).ttl(63), l4, b"");
        c.send(
            UPLINK,
            b_to_a(51000, VNI).wrap(&inner),
            drop("overlay_not_local"),
        );
    }
    out.push(c);

    let mut c = Case::new(
        "overlay-untrusted-sender",
        "A node speaks only for its own pods: VXLAN from an underlay address that is no node \
         (192.168.50.99) is dropped as overlay_unknown_node; VXLAN from node-b whose inner \
         source is in node-a's PodCIDR or in nobody's is dropped as overlay_source_mismatch \
         (policy trusts source addresses, so a node must not claim another node's pods). \
         node-b's gateway address (its SNAT and host traffic) is accepted.",
        StateSource::TwoNodeExample,
    );
    let l4 = L4::tcp(40000, 8080, 1, 0, tcp_flags::SYN);
    let mut stranger = b_to_a(51000, VNI);
    stranger.src = [192, 168, 50, 99];
    let inner = eth_v4(b_to_a_inner(), V4::new(WEB1, CLIENT).ttl(63), l4, b"");
    c.send(UPLINK, stranger.wrap(&inner), drop("overlay_unknown_node"));
    for src in [[10, 244, 1, 77], [10, 244, 3, 5], [192, 168, 50, 11]] {
        let inner = eth_v4(b_to_a_inner(), V4::new(src, CLIENT).ttl(63), l4, b"");
        c.send(
            UPLINK,
            b_to_a(51000, VNI).wrap(&inner),
            drop("overlay_source_mismatch"),
        );
    }
    let node_b_gateway = [10, 244, 2, 1];
    let inner = eth_v4(
        b_to_a_inner(),
        V4::new(node_b_gateway, CLIENT).ttl(63),
        l4,
        b"",
    );
    c.send(
        UPLINK,
        b_to_a(51000, VNI).wrap(&inner),
        forward(
            CLIENT_PORT,
            eth_v4(
                to_pod(CLIENT),
                V4::new(node_b_gateway, CLIENT).ttl(62),
                l4,
                b"",
            ),
        ),
    );
    out.push(c);

    let mut c = Case::new(
        "vxlan-malformed",
        "VXLAN for us that cannot be delivered: the I flag clear (malformed_vxlan), an inner \
         frame shorter than an Ethernet header (malformed_vxlan), and ARP inside the tunnel \
         (overlay_arp: kxdp nodes derive every MAC and never send it).",
        StateSource::TwoNodeExample,
    );
    let (_, inner) = from_web1(L4::udp(8080, 5000), b"flags");
    let mut no_i_flag = b_to_a(51000, VNI).wrap(&inner);
    // VXLAN header starts after Ethernet (14) + IPv4 (20) + UDP (8).
    no_i_flag[42] = 0;
    c.send(UPLINK, no_i_flag, drop("malformed_vxlan"));
    c.send(
        UPLINK,
        b_to_a(51000, VNI).wrap(&inner[..10]),
        drop("malformed_vxlan"),
    );
    let inner_arp = arp(
        L2 {
            src: mac_for(WEB1),
            dst: BROADCAST,
        },
        ARP_REQUEST,
        mac_for(WEB1),
        WEB1,
        [0; 6],
        CLIENT,
        0,
    );
    c.send(
        UPLINK,
        b_to_a(51000, VNI).wrap(&inner_arp),
        drop("overlay_arp"),
    );
    out.push(c);

    out
}
