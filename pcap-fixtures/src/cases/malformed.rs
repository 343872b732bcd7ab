//! Broken frames: every one is dropped with the reason naming what is wrong, and nothing
//! panics. Each frame is a valid packet with exactly one thing broken, so the reason
//! can only come from that one thing.

use super::world::*;
use crate::case::{Case, Expect, StateSource, drop};
use crate::packet::{L4, V4, V6, eth_v4, eth_v6, ethernet, ipv4_raw, tcp_flags};

/// An IPv4 header claiming `total_len` (checksum valid for that claim) over `payload`.
fn ipv4_claiming(total_len: u16, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber(proto), CLIENT, WEB0)
        .expect("header");
    h.total_len = total_len;
    h.header_checksum = h.calc_header_checksum();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// An Ethernet frame padded to the 60-byte minimum, as it would arrive from a NIC.
fn padded(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

pub fn cases() -> Vec<Case> {
    let mut c = Case::new(
        "malformed-frames",
        "Broken frames from a pod, each dropped with its reason: runt (malformed_ethernet), bad \
         IPv4 header checksum, IHL 4, version 6 in an IPv4 EtherType, total length beyond the \
         frame (malformed_ipv4), TCP and UDP headers cut short by the IP length, a TCP data \
         offset below 5, a 4-byte ICMP header (malformed_l4), IPv6 with version 4 or a payload \
         length beyond the frame (malformed_ipv6), a truncated ARP packet (malformed_arp), a \
         VLAN tag on a pod port (vlan_unsupported), an unknown EtherType \
         (unsupported_ethertype). A broken IPv4 header on the uplink is not VXLAN for us: the \
         kernel's (pass).",
        StateSource::TwoNodeExample,
    );
    let l2 = from_pod(CLIENT);
    let good = eth_v4(
        l2,
        V4::new(CLIENT, WEB0),
        L4::udp(5000, 8080),
        b"good packet",
    );
    let mut send = |frame: Vec<u8>, reason: &'static str| {
        c.send(CLIENT_PORT, frame, drop(reason));
    };

    send(good[..10].to_vec(), "malformed_ethernet");

    let mut bad_sum = good.clone();
    bad_sum[24] ^= 0xff;
    send(bad_sum, "malformed_ipv4");

    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    send(ihl4, "malformed_ipv4");

    let mut version6 = good.clone();
    version6[14] = 0x65;
    send(version6, "malformed_ipv4");

    let udp = &good[34..];
    let too_long = ipv4_claiming(
        u16::try_from(20 + udp.len() + 100).unwrap_or(u16::MAX),
        17,
        udp,
    );
    send(ethernet(l2, 0x0800, &too_long), "malformed_ipv4");

    let tcp_frag = [0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0];
    send(
        padded(ethernet(
            l2,
            0x0800,
            &ipv4_raw(V4::new(CLIENT, WEB0), 6, &tcp_frag),
        )),
        "malformed_l4",
    );

    let udp_frag = [0x13, 0x88, 0x1f, 0x90];
    send(
        padded(ethernet(
            l2,
            0x0800,
            &ipv4_raw(V4::new(CLIENT, WEB0), 17, &udp_frag),
        )),
        "malformed_l4",
    );

    let syn = eth_v4(
        l2,
        V4::new(CLIENT, WEB0),
        L4::tcp(40000, 8080, 1, 0, tcp_flags::SYN),
        b"",
    );
    let mut short_offset = syn.clone();
    short_offset[14 + 20 + 12] = 0x40;
    send(short_offset, "malformed_l4");

    send(
        padded(ethernet(
            l2,
            0x0800,
            &ipv4_raw(V4::new(CLIENT, WEB0), 1, &[8, 0, 0, 0]),
        )),
        "malformed_l4",
    );

    let v6 = V6::new(
        [0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5],
        [0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 6],
    );
    let good6 = eth_v6(l2, v6, L4::udp(5000, 8080), b"v6");
    let mut version4 = good6.clone();
    version4[14] = 0x40 | (version4[14] & 0x0f);
    send(version4, "malformed_ipv6");
    let mut long6 = good6.clone();
    long6[18..20].copy_from_slice(&500u16.to_be_bytes());
    send(long6, "malformed_ipv6");

    send(
        ethernet(l2, 0x0806, &[0, 1, 8, 0, 6, 4, 0, 1, 0x0a, 0x58]),
        "malformed_arp",
    );

    let mut tagged = good[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    tagged.extend_from_slice(&good[12..]);
    send(tagged, "vlan_unsupported");

    send(
        padded(ethernet(l2, 0x88b5, b"local experimental")),
        "unsupported_ethertype",
    );

    let mut uplink_bad = good.clone();
    uplink_bad[24] ^= 0xff;
    c.send(UPLINK, uplink_bad, Expect::Pass);
    vec![c]
}
