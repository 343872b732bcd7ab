//! ClusterIP Services from inside the node: several ports and protocols on one Service,
//! a pod reaching itself through its Service (walk 4), a host-network client (walk 8)
//! and `internalTrafficPolicy: Local`.

use super::services_kit::*;
use super::world::*;
use crate::case::{Case, drop, forward};
use crate::packet::{L2, L4, V4, eth_v4, ethernet, ipv4_raw, mac_for, tcp_flags};
use crate::sctp;
use testkit::manifests::service::{Conditions, PortSpec, ServiceSpec};

const MULTI_VIP: [u8; 4] = [10, 96, 0, 50];
const HAIRPIN_VIP: [u8; 4] = [10, 96, 0, 51];
const HOSTSVC_VIP: [u8; 4] = [10, 96, 0, 52];
const ITP_VIP: [u8; 4] = [10, 96, 0, 54];
const ITP_REMOTE_VIP: [u8; 4] = [10, 96, 0, 55];

const DNS_QUERY: &[u8] =
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01";
const DNS_ANSWER: &[u8] =
    b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01";

pub fn cases() -> Vec<Case> {
    vec![multiport(), hairpin(), host_client(), internal_local()]
}

/// An SCTP packet in an IPv4 frame.
fn eth_sctp(l2: L2, ip: V4, sctp_packet: &[u8]) -> Vec<u8> {
    ethernet(l2, 0x0800, &ipv4_raw(ip, 132, sctp_packet))
}

fn multiport() -> Case {
    let multi = ServiceSpec::cluster_ip(
        "multi",
        "10.96.0.50",
        vec![
            PortSpec::new("http", 80, "TCP", 8080),
            PortSpec::new("dns", 53, "UDP", 5353),
            PortSpec::new("assoc", 9000, "SCTP", 9090),
        ],
    )
    .endpoints(vec![web0(Conditions::READY)]);
    let mut c = Case::new(
        "clusterip-multiport",
        "demo/multi (10.96.0.50) has TCP 80 -> 8080, UDP 53 -> 5353 and SCTP 9000 -> 9090, \
         one backend web-0: each port is its own Service port (verdicts name :80, :53, :9000) \
         and is DNATed to web-0 at its own target port with valid checksums (TCP/UDP over the \
         new pseudo-header; SCTP's CRC32c, which has no incremental form, recomputed). \
         web-0's UDP and SCTP answers are reverse-NATed to the VIP's ports.",
        state(vec![multi]),
    );
    let ip = V4::new(CLIENT, MULTI_VIP);
    let dnat = V4::new(CLIENT, WEB0).ttl(63);

    let syn = L4::tcp(40000, 80, 1000, 0, tcp_flags::SYN);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip, syn, b""),
        forward(
            WEB0_PORT,
            eth_v4(to_pod(WEB0), dnat, syn.with_ports(40000, 8080), b""),
        ),
    )
    .via("demo/multi:80", Some(WEB0_8080));

    let query = L4::udp(41000, 53);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip, query, DNS_QUERY),
        forward(
            WEB0_PORT,
            eth_v4(to_pod(WEB0), dnat, query.with_ports(41000, 5353), DNS_QUERY),
        ),
    )
    .via("demo/multi:53", Some("10.244.1.6:5353"));
    let answer = L4::udp(5353, 41000);
    c.send(
        WEB0_PORT,
        eth_v4(from_pod(WEB0), V4::new(WEB0, CLIENT), answer, DNS_ANSWER),
        forward(
            CLIENT_PORT,
            eth_v4(
                to_pod(CLIENT),
                V4::new(MULTI_VIP, CLIENT).ttl(63),
                answer.with_ports(53, 41000),
                DNS_ANSWER,
            ),
        ),
    )
    .via("demo/multi:53", Some("10.244.1.6:5353"));

    // The INIT goes out with the VIP's port; the backend sees its own, with a fresh CRC.
    c.send(
        CLIENT_PORT,
        eth_sctp(
            from_pod(CLIENT),
            ip,
            &sctp::init_packet(42000, 9000, 0x0a0b_0c0d),
        ),
        forward(
            WEB0_PORT,
            eth_sctp(
                to_pod(WEB0),
                dnat,
                &sctp::init_packet(42000, 9090, 0x0a0b_0c0d),
            ),
        ),
    )
    .via("demo/multi:9000", Some("10.244.1.6:9090"));
    c.send(
        WEB0_PORT,
        eth_sctp(
            from_pod(WEB0),
            V4::new(WEB0, CLIENT),
            &sctp::init_ack_packet(9090, 42000, 0x0a0b_0c0d, 0x5566_7788),
        ),
        forward(
            CLIENT_PORT,
            eth_sctp(
                to_pod(CLIENT),
                V4::new(MULTI_VIP, CLIENT).ttl(63),
                &sctp::init_ack_packet(9000, 42000, 0x0a0b_0c0d, 0x5566_7788),
            ),
        ),
    )
    .via("demo/multi:9000", Some("10.244.1.6:9090"));
    c
}

fn hairpin() -> Case {
    let svc = web_service("hairpin", "10.96.0.51", vec![web0(Conditions::READY)]);
    let mut c = Case::new(
        "hairpin",
        "web-0 -> its own Service demo/hairpin (10.96.0.51:80, only backend web-0): DNAT to \
         10.244.1.6:8080 plus SNAT to the gateway 10.244.1.1 with web-0's source port kept \
         (it is free), delivered back to web-0's own port; web-0's SYN-ACK to 10.244.1.1 is \
         reverse-translated to come from 10.96.0.51:80 to web-0's port; the ACK takes the \
         flow's translation again.",
        state(vec![svc]),
    );
    let name = "demo/hairpin:80";
    let syn = L4::tcp(43000, 80, 7000, 0, tcp_flags::SYN);
    let translated = V4::new(GW_A, WEB0).ttl(63);
    c.send(
        WEB0_PORT,
        eth_v4(from_pod(WEB0), V4::new(WEB0, HAIRPIN_VIP), syn, b""),
        forward(
            WEB0_PORT,
            eth_v4(to_pod(WEB0), translated, syn.with_ports(43000, 8080), b""),
        ),
    )
    .via(name, Some(WEB0_8080));
    let syn_ack = L4::tcp(8080, 43000, 9000, 7001, tcp_flags::SYN | tcp_flags::ACK);
    c.send(
        WEB0_PORT,
        eth_v4(from_pod(WEB0), V4::new(WEB0, GW_A), syn_ack, b""),
        forward(
            WEB0_PORT,
            eth_v4(
                to_pod(WEB0),
                V4::new(HAIRPIN_VIP, WEB0).ttl(63),
                syn_ack.with_ports(80, 43000),
                b"",
            ),
        ),
    )
    .via(name, Some(WEB0_8080));
    let ack = L4::tcp(43000, 80, 7001, 9001, tcp_flags::ACK);
    c.send(
        WEB0_PORT,
        eth_v4(from_pod(WEB0), V4::new(WEB0, HAIRPIN_VIP), ack, b"ping"),
        forward(
            WEB0_PORT,
            eth_v4(
                to_pod(WEB0),
                translated,
                ack.with_ports(43000, 8080),
                b"ping",
            ),
        ),
    )
    .via(name, Some(WEB0_8080));
    c
}

fn host_client() -> Case {
    let svc = web_service("hostsvc", "10.96.0.52", vec![web0(Conditions::READY)]);
    let mut c = Case::new(
        "host-client-to-service",
        "Walk 8: a host-network client (192.168.50.10, through kxdp-host, to the gateway MAC) \
         -> ClusterIP 10.96.0.52:80 (demo/hostsvc, backend web-0): DNAT plus SNAT to the \
         gateway 10.244.1.1 (source port kept), so web-0's reply comes back through the \
         datapath; it leaves by the host port (dst MAC 0a:58:a9:fe:00:01) from 10.96.0.52:80 \
         to 192.168.50.10.",
        state(vec![svc]),
    );
    let name = "demo/hostsvc:80";
    let from_host = L2 {
        src: HOST_MAC,
        dst: mac_for(GW_A),
    };
    let to_host = L2 {
        src: mac_for(GW_A),
        dst: HOST_MAC,
    };
    let syn = L4::tcp(45000, 80, 300, 0, tcp_flags::SYN);
    c.send(
        HOST,
        eth_v4(from_host, V4::new(NODE_A_IP, HOSTSVC_VIP), syn, b""),
        forward(
            WEB0_PORT,
            eth_v4(
                to_pod(WEB0),
                V4::new(GW_A, WEB0).ttl(63),
                syn.with_ports(45000, 8080),
                b"",
            ),
        ),
    )
    .via(name, Some(WEB0_8080));
    let syn_ack = L4::tcp(8080, 45000, 800, 301, tcp_flags::SYN | tcp_flags::ACK);
    c.send(
        WEB0_PORT,
        eth_v4(from_pod(WEB0), V4::new(WEB0, GW_A), syn_ack, b""),
        forward(
            HOST,
            eth_v4(
                to_host,
                V4::new(HOSTSVC_VIP, NODE_A_IP).ttl(63),
                syn_ack.with_ports(80, 45000),
                b"",
            ),
        ),
    )
    .via(name, Some(WEB0_8080));
    c
}

fn internal_local() -> Case {
    let both = ServiceSpec::cluster_ip("itp", "10.96.0.54", vec![http(80)])
        .internal_traffic_policy("Local")
        .endpoints(vec![web0(Conditions::READY), web1(Conditions::READY)]);
    let remote = ServiceSpec::cluster_ip("itp-remote", "10.96.0.55", vec![http(80)])
        .internal_traffic_policy("Local")
        .endpoints(vec![web1(Conditions::READY)]);
    let mut c = Case::new(
        "internal-traffic-policy-local",
        "internalTrafficPolicy Local: client -> demo/itp (10.96.0.54, endpoints web-0 here \
         and web-1 on node-b) always reaches web-0, whatever the flow (four source ports); \
         client -> demo/itp-remote (10.96.0.55, only web-1) is dropped no_local_endpoints \
         rather than sent to another node.",
        state(vec![both, remote]),
    );
    for sport in 40000..40004 {
        let syn = L4::tcp(sport, 80, 1, 0, tcp_flags::SYN);
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), V4::new(CLIENT, ITP_VIP), syn, b""),
            forward(
                WEB0_PORT,
                eth_v4(
                    to_pod(WEB0),
                    V4::new(CLIENT, WEB0).ttl(63),
                    syn.with_ports(sport, 8080),
                    b"",
                ),
            ),
        )
        .via("demo/itp:80", Some(WEB0_8080));
    }
    let syn = L4::tcp(40010, 80, 1, 0, tcp_flags::SYN);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, ITP_REMOTE_VIP), syn, b""),
        drop("no_local_endpoints"),
    )
    .via("demo/itp-remote:80", None);
    c
}
