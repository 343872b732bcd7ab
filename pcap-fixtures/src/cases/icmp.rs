//! The checks that answer the sender: TTL running out (ICMP time exceeded from the
//! gateway) and packets too big for the tunnel (ICMP fragmentation needed, or a drop
//! when DF is clear: kxdp does not fragment on a pod's behalf).

use super::world::*;
use crate::case::{Case, StateSource, drop, forward};
use crate::packet::{
    IcmpError, L2, L4, V4, eth_v4, icmpv4_error, ipv4_packet, ipv4_raw, mac_for, tcp_flags,
};

/// The gateway's reply path to the client.
fn to_client() -> L2 {
    L2 {
        src: mac_for(GW_A),
        dst: mac_for(CLIENT),
    }
}

/// A UDP payload that makes the IPv4 packet exactly `ip_len` bytes.
fn payload_for(ip_len: usize) -> Vec<u8> {
    (0..ip_len - 28).map(|i| (i % 251) as u8).collect()
}

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();

    let mut c = Case::new(
        "ttl-exceeded",
        "TTL 1 (and 0) on a packet the datapath would route (to a local pod, a remote pod, the \
         outside) is answered with ICMP time exceeded from the gateway 10.244.1.1 (TTL 64, \
         quoting the packet as sent) on the sender's port; TTL 1 to the node itself is the \
         kernel's; an ICMP error with TTL 1 is never answered with another one (ttl_exceeded).",
        StateSource::TwoNodeExample,
    );
    for (dst, ttl, l4) in [
        (WEB0, 1, L4::udp(33434, 33435)),
        (WEB1, 1, L4::udp(33434, 33436)),
        ([8, 8, 8, 8], 1, L4::Echo { id: 77, seq: 1 }),
        (WEB0, 0, L4::tcp(40000, 8080, 1, 0, tcp_flags::SYN)),
    ] {
        let ip = V4::new(CLIENT, dst).ttl(ttl);
        let sent = ipv4_packet(ip, l4, b"traceroute");
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), ip, l4, b"traceroute"),
            forward(
                CLIENT_PORT,
                icmpv4_error(to_client(), GW_A, CLIENT, IcmpError::TimeExceeded, &sent),
            ),
        );
    }
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, NODE_A_IP).ttl(1),
            L4::udp(33434, 33437),
            b"x",
        ),
        crate::case::Expect::Pass,
    );
    // The client reporting port unreachable to web-0 with TTL 1: an error about an error.
    let quoted = ipv4_packet(V4::new(WEB0, CLIENT), L4::udp(8080, 5000), b"q");
    let unreachable = etherparse::Icmpv4Header::with_checksum(
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ),
        &quoted,
    );
    let mut icmp = unreachable.to_bytes().to_vec();
    icmp.extend_from_slice(&quoted);
    let err = crate::packet::ethernet(
        from_pod(CLIENT),
        0x0800,
        &ipv4_raw(V4::new(CLIENT, WEB0).ttl(1), 1, &icmp),
    );
    c.send(CLIENT_PORT, err, drop("ttl_exceeded"));
    out.push(c);

    let mut c = Case::new(
        "mtu-frag-needed",
        "client -> web-1 (tunnelled) with DF set: a 1450-byte IP packet fits underlayMTU 1500 \
         after the 50 bytes of VXLAN and is encapsulated (outer IP 1500 bytes); 1451 and 1500 \
         bytes are answered with ICMP fragmentation needed, MTU 1450 (underlayMTU - 50), from \
         the gateway, quoting the first 548 bytes. A local destination has no such limit.",
        StateSource::TwoNodeExample,
    );
    let l4 = L4::udp(5000, 8080);
    let ip = V4::new(CLIENT, WEB1);
    let fits = payload_for(1450);
    let inner = eth_v4(a_to_b_inner(), ip.ttl(63), l4, &fits);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip, l4, &fits),
        forward(UPLINK, a_to_b(ip, l4).wrap(&inner)),
    );
    for len in [1451, 1500] {
        let p = payload_for(len);
        let sent = ipv4_packet(ip, l4, &p);
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), ip, l4, &p),
            forward(
                CLIENT_PORT,
                icmpv4_error(
                    to_client(),
                    GW_A,
                    CLIENT,
                    IcmpError::FragNeeded { mtu: 1450 },
                    &sent,
                ),
            ),
        );
    }
    let local = V4::new(CLIENT, WEB0);
    let big = payload_for(1500);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), local, l4, &big),
        forward(WEB0_PORT, eth_v4(to_pod(WEB0), local.ttl(63), l4, &big)),
    );
    out.push(c);

    let mut c = Case::new(
        "mtu-exceeded-no-df",
        "client -> web-1 (tunnelled) with DF clear: 1450 bytes is encapsulated (inner DF stays \
         clear, outer DF set); 1451 bytes is dropped as mtu_exceeded (kxdp does not fragment, \
         and without DF no ICMP is due).",
        StateSource::TwoNodeExample,
    );
    let ip = V4::new(CLIENT, WEB1).df(false);
    let inner = eth_v4(a_to_b_inner(), ip.ttl(63), l4, &fits);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip, l4, &fits),
        forward(UPLINK, a_to_b(ip, l4).wrap(&inner)),
    );
    let p = payload_for(1451);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip, l4, &p),
        drop("mtu_exceeded"),
    );
    out.push(c);

    out
}
