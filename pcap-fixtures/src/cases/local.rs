//! Walks 1 and 6 on one node: pod -> local pod (L2 rewrite, TTL-1), pod -> outside (the
//! host port), pod -> node (the kernel's), and what a pod port refuses.

use super::world::*;
use crate::case::{Case, StateSource, drop, forward};
use crate::packet::{BROADCAST, L2, L4, V4, eth_v4, mac_for, tcp_flags};

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();

    let mut c = Case::new(
        "pod-to-pod-same-node",
        "client -> web-0 on the same node (UDP, TCP SYN, ICMP echo, both directions): delivered to \
         the destination pod's port with src MAC = gateway 0a:58:0a:f4:01:01, dst MAC = \
         0a:58:<dst IPv4>, TTL-1 and every checksum valid.",
        StateSource::TwoNodeExample,
    );
    let flows = [
        (CLIENT, WEB0, L4::udp(5000, 8080), &b"hello web-0"[..]),
        (
            CLIENT,
            WEB0,
            L4::tcp(40000, 8080, 1000, 0, tcp_flags::SYN),
            &b""[..],
        ),
        (CLIENT, WEB0, L4::Echo { id: 7, seq: 1 }, &b"ping"[..]),
        (WEB0, CLIENT, L4::udp(8080, 5000), &b"hello client"[..]),
    ];
    for (src, dst, l4, payload) in flows {
        let ip = V4::new(src, dst);
        let in_port = if src == CLIENT {
            CLIENT_PORT
        } else {
            WEB0_PORT
        };
        let out_port = if dst == CLIENT {
            CLIENT_PORT
        } else {
            WEB0_PORT
        };
        c.send(
            in_port,
            eth_v4(from_pod(src), ip, l4, payload),
            forward(out_port, eth_v4(to_pod(dst), ip.ttl(63), l4, payload)),
        );
    }
    out.push(c);

    let mut c = Case::new(
        "pod-to-outside",
        "client -> addresses outside the cluster (8.8.8.8 TCP, 1.1.1.1 UDP DNS, node-b's \
         InternalIP) leave by the host port with dst MAC 0a:58:a9:fe:00:01 (kxdp-host) and \
         src MAC the gateway, TTL-1: the kernel routes and masquerades them.",
        StateSource::TwoNodeExample,
    );
    let host_l2 = L2 {
        src: mac_for(GW_A),
        dst: HOST_MAC,
    };
    for (dst, l4) in [
        ([8, 8, 8, 8], L4::tcp(41000, 443, 5, 0, tcp_flags::SYN)),
        ([1, 1, 1, 1], L4::udp(41001, 53)),
        (NODE_B_IP, L4::tcp(41002, 10250, 9, 0, tcp_flags::SYN)),
    ] {
        let ip = V4::new(CLIENT, dst);
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), ip, l4, b"out"),
            forward(HOST, eth_v4(host_l2, ip.ttl(63), l4, b"out")),
        );
    }
    out.push(c);

    let mut c = Case::new(
        "pod-to-node",
        "client -> the node's own addresses (InternalIP 192.168.50.10, gateway 10.244.1.1) is \
         passed to the kernel untouched (the XDP program's job live; kubelet probes and the \
         like never depend on the datapath).",
        StateSource::TwoNodeExample,
    );
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, NODE_A_IP),
            L4::tcp(42000, 10250, 1, 0, tcp_flags::SYN),
            b"",
        ),
        crate::case::Expect::Pass,
    );
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, GW_A),
            L4::Echo { id: 9, seq: 1 },
            b"gw?",
        ),
        crate::case::Expect::Pass,
    );
    out.push(c);

    let mut c = Case::new(
        "source-spoofed",
        "A pod sending from an address that is not its own (a free address of its PodCIDR, \
         another local pod's, an outside one) is dropped as source_spoofed.",
        StateSource::TwoNodeExample,
    );
    for src in [[10, 244, 1, 99], WEB0, [8, 8, 4, 4]] {
        let frame = eth_v4(
            from_pod(CLIENT),
            V4::new(src, WEB0),
            L4::udp(5000, 8080),
            b"spoof",
        );
        c.send(CLIENT_PORT, frame, drop("source_spoofed"));
    }
    out.push(c);

    let mut c = Case::new(
        "no-route",
        "client -> an address inside the cluster CIDR that no node or pod owns (another /24 of \
         10.244.0.0/16, a free address of our own PodCIDR) is dropped as no_route.",
        StateSource::TwoNodeExample,
    );
    for dst in [[10, 244, 9, 9], [10, 244, 1, 99]] {
        let frame = eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, dst),
            L4::udp(5000, 8080),
            b"x",
        );
        c.send(CLIENT_PORT, frame, drop("no_route"));
    }
    out.push(c);

    let mut c = Case::new(
        "pod-l2-refused",
        "IP frames from a pod that are not addressed to the gateway MAC: broadcast \
         (broadcast_not_forwarded) and another unicast MAC (not_our_mac).",
        StateSource::TwoNodeExample,
    );
    let ip = V4::new(CLIENT, WEB0);
    let to = |dst| L2 {
        src: mac_for(CLIENT),
        dst,
    };
    c.send(
        CLIENT_PORT,
        eth_v4(to(BROADCAST), ip, L4::udp(5000, 8080), b"b"),
        drop("broadcast_not_forwarded"),
    );
    c.send(
        CLIENT_PORT,
        eth_v4(to(mac_for(WEB0)), ip, L4::udp(5000, 8080), b"u"),
        drop("not_our_mac"),
    );
    out.push(c);

    out
}
