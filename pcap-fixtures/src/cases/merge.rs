//! Several `--in` files: packets are processed in timestamp order across files, each file
//! in its own order, ties going to the file named first; `index` counts within each file.

use super::world::*;
use crate::case::{BASE_NS, Case, StateSource, forward};
use crate::packet::{L4, V4, eth_v4};

pub fn cases() -> Vec<Case> {
    let mut c = Case::new(
        "merge-two-inputs",
        "Two inputs, pod-demo-client.pcap then pod-demo-web-0.pcap, whose timestamps interleave \
         (web-0's first packet is the earliest of all, and one timestamp is shared): verdicts \
         come in merged time order with each file's own 0-based index, the tie going to the \
         client's file, and each output pcap holds its packets in that order.",
        StateSource::TwoNodeExample,
    );
    c.inputs = vec![CLIENT_PORT.to_string(), WEB0_PORT.to_string()];
    let ms = |n: u64| BASE_NS + n * 1_000_000;
    let from_client = |seq: u8| {
        let ip = V4::new(CLIENT, WEB0);
        let l4 = L4::udp(5000, 8080);
        let p = [b'c', seq];
        (
            eth_v4(from_pod(CLIENT), ip, l4, &p),
            forward(WEB0_PORT, eth_v4(to_pod(WEB0), ip.ttl(63), l4, &p)),
        )
    };
    let from_web0 = |seq: u8| {
        let ip = V4::new(WEB0, CLIENT);
        let l4 = L4::udp(8080, 5000);
        let p = [b'w', seq];
        (
            eth_v4(from_pod(WEB0), ip, l4, &p),
            forward(CLIENT_PORT, eth_v4(to_pod(CLIENT), ip.ttl(63), l4, &p)),
        )
    };
    for (port, t, (frame, expect)) in [
        (WEB0_PORT, 0, from_web0(0)),
        (CLIENT_PORT, 1, from_client(0)),
        (CLIENT_PORT, 2, from_client(1)),
        (WEB0_PORT, 3, from_web0(1)),
        (CLIENT_PORT, 4, from_client(2)),
        (WEB0_PORT, 4, from_web0(2)),
        (WEB0_PORT, 5, from_web0(3)),
    ] {
        c.send_at(port, ms(t), frame, expect);
    }
    vec![c]
}
