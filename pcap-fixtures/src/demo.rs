//! The README demo's inputs: `examples/two-node/client.pcap` and `uplink.pcap`, a little
//! of every walk node-a takes, for `scripts/demo.sh` to replay and print.

use crate::case::{BASE_NS, STEP_NS};
use crate::cases::world::*;
use crate::packet::{ARP_REQUEST, BROADCAST, L2, L4, V4, arp, eth_v4, mac_for, tcp_flags};

/// (file name, packets with their timestamps).
pub type DemoFile = (&'static str, Vec<(u64, Vec<u8>)>);

pub fn files() -> Vec<DemoFile> {
    let t = |n: u64| BASE_NS + n * STEP_NS;
    let c = from_pod(CLIENT);
    let who_has = arp(
        L2 {
            src: mac_for(CLIENT),
            dst: BROADCAST,
        },
        ARP_REQUEST,
        mac_for(CLIENT),
        CLIENT,
        [0; 6],
        GW_A,
        0,
    );
    let client = vec![
        (t(0), who_has),
        (
            t(1),
            eth_v4(
                c,
                V4::new(CLIENT, VIP),
                L4::tcp(40000, 80, 1, 0, tcp_flags::SYN),
                b"",
            ),
        ),
        (
            t(2),
            eth_v4(
                c,
                V4::new(CLIENT, WEB0),
                L4::udp(5000, 8080),
                b"hello web-0",
            ),
        ),
        (
            t(3),
            eth_v4(
                c,
                V4::new(CLIENT, WEB1),
                L4::udp(5000, 8080),
                b"hello web-1",
            ),
        ),
        (
            t(5),
            eth_v4(
                c,
                V4::new(CLIENT, [8, 8, 8, 8]),
                L4::Echo { id: 1, seq: 1 },
                b"outside",
            ),
        ),
        (
            t(6),
            eth_v4(
                c,
                V4::new(CLIENT, WEB1).ttl(1),
                L4::udp(33434, 33434),
                b"traceroute",
            ),
        ),
        (
            t(7),
            eth_v4(
                c,
                V4::new(CLIENT, NODE_A_IP),
                L4::tcp(40001, 10250, 1, 0, tcp_flags::SYN),
                b"",
            ),
        ),
        (
            t(8),
            eth_v4(
                c,
                V4::new([10, 244, 1, 99], WEB0),
                L4::udp(5000, 8080),
                b"spoofed",
            ),
        ),
        (
            t(9),
            eth_v4(
                c,
                V4::new(CLIENT, [10, 96, 0, 99]),
                L4::tcp(40002, 80, 1, 0, tcp_flags::SYN),
                b"",
            ),
        ),
    ];
    let reply = eth_v4(
        b_to_a_inner(),
        V4::new(WEB1, CLIENT).ttl(63),
        L4::udp(8080, 5000),
        b"hello client",
    );
    let ssh = eth_v4(
        L2 {
            src: NODE_B_MAC,
            dst: NODE_A_MAC,
        },
        V4::new(NODE_B_IP, NODE_A_IP),
        L4::tcp(50022, 22, 1, 0, tcp_flags::SYN),
        b"",
    );
    let uplink = vec![
        (t(4), b_to_a(51000, VNI).wrap(&reply)),
        (t(10), b_to_a(51000, 7).wrap(&reply)),
        (t(11), ssh),
    ];
    vec![("client.pcap", client), ("uplink.pcap", uplink)]
}
