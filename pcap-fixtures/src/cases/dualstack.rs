//! Dual stack: pods with an IPv4 and an IPv6 address. IPv6 takes the same walks as IPv4
//! (local delivery, VXLAN over the IPv4 underlay, ICMPv6 errors from the node's IPv6
//! gateway), with the MACs still derived from the IPv4 addresses.

use super::world::*;
use crate::case::{Case, StateSource, drop, forward};
use crate::packet::{
    L2, L4, V4, V6, eth_v4, eth_v6, icmpv6_time_exceeded, ipv6_packet, mac_for, mapped, ndp_frame,
};
use crate::state::{NodeDef, PodDef, StateDef};

const CONFIG: &str = "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56\n";

const CLIENT6: [u8; 16] = v6(1, 5);
const WEB0_6: [u8; 16] = v6(1, 6);
const WEB1_6: [u8; 16] = v6(2, 7);
const GW_A6: [u8; 16] = v6(1, 1);

/// `fd00:10:244:<subnet>::<host>`.
const fn v6(subnet: u8, host: u8) -> [u8; 16] {
    [
        0xfd, 0, 0, 0x10, 0x02, 0x44, 0, subnet, 0, 0, 0, 0, 0, 0, 0, host,
    ]
}

fn state() -> StateDef {
    StateDef {
        config: Some(CONFIG),
        nodes: vec![
            NodeDef {
                name: "node-a",
                internal_ip: "192.168.50.10",
                underlay_mac: "02:00:c0:a8:32:0a",
                pod_cidrs: vec!["10.244.1.0/24", "fd00:10:244:1::/64"],
            },
            NodeDef {
                name: "node-b",
                internal_ip: "192.168.50.11",
                underlay_mac: "02:00:c0:a8:32:0b",
                pod_cidrs: vec!["10.244.2.0/24", "fd00:10:244:2::/64"],
            },
        ],
        pods: vec![
            PodDef {
                name: "client",
                node: "node-a",
                ips: vec!["10.244.1.5", "fd00:10:244:1::5"],
                labels: Vec::new(),
            },
            PodDef {
                name: "web-0",
                node: "node-a",
                ips: vec!["10.244.1.6", "fd00:10:244:1::6"],
                labels: Vec::new(),
            },
            PodDef {
                name: "web-1",
                node: "node-b",
                ips: vec!["10.244.2.7", "fd00:10:244:2::7"],
                labels: Vec::new(),
            },
        ],
        services: vec![],
        network_policies: Vec::new(),
    }
}

pub fn cases() -> Vec<Case> {
    let mut c = Case::new(
        "dual-stack",
        "Dual-stack pods (fd00:10:244:<n>::/64 beside the IPv4 /24s): IPv6 client -> web-0 is \
         delivered with hop limit - 1 and the IPv4-derived MACs; IPv6 client -> web-1 is \
         encapsulated in IPv4 VXLAN (inner dst MAC node-b's gateway); hop limit 1 gets ICMPv6 \
         time exceeded from fd00:10:244:1::1; IPv6 from node-b is decapsulated and delivered; \
         IPv4 keeps working beside it.",
        StateSource::Own(state()),
    );
    let l4 = L4::udp(5000, 8080);
    let ip = V6::new(CLIENT6, WEB0_6);
    c.send(
        CLIENT_PORT,
        eth_v6(from_pod(CLIENT), ip, l4, b"v6 local"),
        forward(
            WEB0_PORT,
            eth_v6(to_pod(WEB0), ip.hop_limit(63), l4, b"v6 local"),
        ),
    );

    let ip = V6::new(CLIENT6, WEB1_6);
    let inner = eth_v6(a_to_b_inner(), ip.hop_limit(63), l4, b"v6 remote");
    let outer = a_to_b_outer(CLIENT6, WEB1_6, l4, true, VXLAN_PORT, VNI);
    c.send(
        CLIENT_PORT,
        eth_v6(from_pod(CLIENT), ip, l4, b"v6 remote"),
        forward(UPLINK, outer.wrap(&inner)),
    );

    let echo = L4::Echo { id: 11, seq: 1 };
    let ip = V6::new(CLIENT6, WEB1_6).hop_limit(1);
    let sent = ipv6_packet(ip, echo, b"hop limit 1");
    let back = L2 {
        src: mac_for(GW_A),
        dst: mac_for(CLIENT),
    };
    c.send(
        CLIENT_PORT,
        eth_v6(from_pod(CLIENT), ip, echo, b"hop limit 1"),
        forward(
            CLIENT_PORT,
            icmpv6_time_exceeded(back, GW_A6, CLIENT6, &sent),
        ),
    );

    let reply = L4::udp(8080, 5000);
    let ip = V6::new(WEB1_6, CLIENT6).hop_limit(63);
    let inner = eth_v6(b_to_a_inner(), ip, reply, b"v6 from node-b");
    c.send(
        UPLINK,
        b_to_a(50200, VNI).wrap(&inner),
        forward(
            CLIENT_PORT,
            eth_v6(to_pod(CLIENT), ip.hop_limit(62), reply, b"v6 from node-b"),
        ),
    );

    let ip4 = V4::new(CLIENT, WEB1);
    let inner = eth_v4(a_to_b_inner(), ip4.ttl(63), l4, b"v4 beside v6");
    let outer = a_to_b_outer(mapped(CLIENT), mapped(WEB1), l4, false, VXLAN_PORT, VNI);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip4, l4, b"v4 beside v6"),
        forward(UPLINK, outer.wrap(&inner)),
    );
    vec![c, ndp_case()]
}

/// Neighbour discovery: IPv6 pods find their gateway (and on-link neighbours) the way
/// IPv4 pods do with ARP.
fn ndp_case() -> Case {
    let mut c = Case::new(
        "ndp-gateway",
        "IPv6 neighbour solicitations from a pod (hop limit 255, to the solicited-node \
         multicast address) for the gateway fd00:10:244:1::1 and for a PodCIDR neighbour are \
         answered in place with a neighbour advertisement from the gateway MAC (flags \
         Router+Solicited+Override for the gateway, Solicited+Override for a neighbour, with \
         the target link-layer address option); duplicate address detection (source ::) and \
         a solicitation for the pod's own address are ndp_not_for_gateway; hop limit 64 is \
         malformed_l4 (RFC 4861 7.1.1: it may come from off-link).",
        StateSource::Own(state()),
    );
    let solicited_node = |t: [u8; 16]| -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = 0xff;
        a[1] = 0x02;
        a[11] = 0x01;
        a[12] = 0xff;
        a[13..].copy_from_slice(&t[13..]);
        a
    };
    let ns = |src: [u8; 16], target: [u8; 16], hop_limit: u8| {
        let dst = solicited_node(target);
        let l2 = L2 {
            src: mac_for(CLIENT),
            dst: [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]],
        };
        let mut body = target.to_vec();
        // Source link-layer address option.
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&mac_for(CLIENT));
        let ip = V6 {
            src,
            dst,
            hop_limit,
        };
        ndp_frame(l2, ip, 135, [0; 4], &body)
    };
    let na = |target: [u8; 16], flags: [u8; 4]| {
        let l2 = L2 {
            src: mac_for(GW_A),
            dst: mac_for(CLIENT),
        };
        let mut body = target.to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&mac_for(GW_A));
        let ip = V6 {
            src: target,
            dst: CLIENT6,
            hop_limit: 255,
        };
        ndp_frame(l2, ip, 136, flags, &body)
    };
    c.send(
        CLIENT_PORT,
        ns(CLIENT6, GW_A6, 255),
        forward(CLIENT_PORT, na(GW_A6, [0xe0, 0, 0, 0])),
    );
    c.send(
        CLIENT_PORT,
        ns(CLIENT6, WEB0_6, 255),
        forward(CLIENT_PORT, na(WEB0_6, [0x60, 0, 0, 0])),
    );
    c.send(
        CLIENT_PORT,
        ns([0; 16], CLIENT6, 255),
        drop("ndp_not_for_gateway"),
    );
    c.send(
        CLIENT_PORT,
        ns(CLIENT6, CLIENT6, 255),
        drop("ndp_not_for_gateway"),
    );
    c.send(CLIENT_PORT, ns(CLIENT6, GW_A6, 64), drop("malformed_l4"));
    c
}
