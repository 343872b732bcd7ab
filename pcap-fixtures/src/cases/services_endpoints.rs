//! Endpoints changing under running flows (`kxdp replay --update`), KEP-1669's rules:
//! a deleted endpoint ends its flows (TCP: a RST from the VIP; UDP: the next datagram
//! starts a new flow at once, so it is never blackholed); a terminating endpoint keeps
//! its flows but takes no new ones while another is ready; serving terminating
//! endpoints take new flows when nothing is ready; endpoints that are not serving are
//! as good as none (ICMP port unreachable, kube-proxy's REJECT).

use super::services_kit::*;
use super::world::*;
use crate::case::{Case, forward};
use crate::packet::{IcmpError, L4, V4, eth_v4, eth_v4_window, icmpv4_error, ipv4_packet};
use crate::packet::{mapped, tcp_flags};
use testkit::manifests::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec};

const WEB_VIP: [u8; 4] = [10, 96, 0, 40];
const DNS_VIP: [u8; 4] = [10, 96, 0, 41];
const TERM_VIP: [u8; 4] = [10, 96, 0, 42];
const FALLBACK_VIP: [u8; 4] = [10, 96, 0, 43];
const GONE_VIP: [u8; 4] = [10, 96, 0, 44];

pub fn cases() -> Vec<Case> {
    vec![deleted_mid_flow(), terminating_keeps_flows()]
}

fn dns(endpoints: Vec<EndpointSpec>) -> ServiceSpec {
    ServiceSpec::cluster_ip(
        "dns",
        "10.96.0.41",
        vec![PortSpec::new("dns", 53, "UDP", 5353)],
    )
    .endpoints(endpoints)
}

/// A frame the client's node tunnels to node-b for `ip`/`l4` (already translated).
fn to_node_b(ip: V4, l4: L4, payload: &[u8]) -> Vec<u8> {
    let inner = eth_v4(a_to_b_inner(), ip, l4, payload);
    a_to_b_outer(mapped(ip.src), mapped(ip.dst), l4, false, VXLAN_PORT, VNI).wrap(&inner)
}

fn deleted_mid_flow() -> Case {
    let before = state(vec![
        web_service("web", "10.96.0.40", vec![web0(Conditions::READY)]),
        dns(vec![web0(Conditions::READY)]),
    ]);
    let after = state(vec![
        web_service("web", "10.96.0.40", vec![web1(Conditions::READY)]),
        dns(vec![web1(Conditions::READY)]),
    ]);
    let mut c = Case::new(
        "endpoint-deleted-mid-flow",
        "A TCP flow client -> demo/web (10.96.0.40:80) is established with web-0 (SYN, \
         SYN-ACK reverse-NATed, ACK) and a UDP flow to demo/dns (10.96.0.41:53) reaches \
         web-0:5353; then an update deletes web-0 from both EndpointSlices and adds web-1 \
         (node-b). The client's next segment of the old TCP flow is answered with a RST from \
         10.96.0.40:80 (seq = the segment's ack, flags RST, window 0, from the gateway MAC) \
         sent back to the client; the next datagram of the old UDP flow goes straight to \
         web-1 (no blackhole); a new SYN goes to web-1, encapsulated.",
        before,
    );
    let web = "demo/web:80";
    let syn = L4::tcp(40000, 80, 1000, 0, tcp_flags::SYN);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, WEB_VIP), syn, b""),
        forward(
            WEB0_PORT,
            eth_v4(
                to_pod(WEB0),
                V4::new(CLIENT, WEB0).ttl(63),
                syn.with_ports(40000, 8080),
                b"",
            ),
        ),
    )
    .via(web, Some(WEB0_8080));
    let syn_ack = L4::tcp(8080, 40000, 5000, 1001, tcp_flags::SYN | tcp_flags::ACK);
    c.send(
        WEB0_PORT,
        eth_v4(from_pod(WEB0), V4::new(WEB0, CLIENT), syn_ack, b""),
        forward(
            CLIENT_PORT,
            eth_v4(
                to_pod(CLIENT),
                V4::new(WEB_VIP, CLIENT).ttl(63),
                syn_ack.with_ports(80, 40000),
                b"",
            ),
        ),
    )
    .via(web, Some(WEB0_8080));
    let ack = L4::tcp(40000, 80, 1001, 5001, tcp_flags::ACK);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, WEB_VIP), ack, b""),
        forward(
            WEB0_PORT,
            eth_v4(
                to_pod(WEB0),
                V4::new(CLIENT, WEB0).ttl(63),
                ack.with_ports(40000, 8080),
                b"",
            ),
        ),
    )
    .via(web, Some(WEB0_8080));
    let query = L4::udp(41000, 53);
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, DNS_VIP),
            query,
            b"query 1",
        ),
        forward(
            WEB0_PORT,
            eth_v4(
                to_pod(WEB0),
                V4::new(CLIENT, WEB0).ttl(63),
                query.with_ports(41000, 5353),
                b"query 1",
            ),
        ),
    )
    .via("demo/dns:53", Some("10.244.1.6:5353"));

    c.update(after);

    // RFC 9293 §3.10.7.1: the segment carries ACK, so the RST's sequence number is its
    // acknowledgment number and the RST itself carries no ACK.
    let data = L4::tcp(40000, 80, 1001, 5001, tcp_flags::ACK);
    let rst = L4::tcp(80, 40000, 5001, 0, tcp_flags::RST);
    let rst_ip = V4 {
        ttl: 64,
        ident: 0,
        df: true,
        ..V4::new(WEB_VIP, CLIENT)
    };
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, WEB_VIP),
            data,
            b"GET / HTTP/1.1\r\n\r\n",
        ),
        forward(
            CLIENT_PORT,
            eth_v4_window(answer_to_pod(CLIENT), rst_ip, rst, 0, b""),
        ),
    )
    .via(web, None);
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, DNS_VIP),
            query,
            b"query 2",
        ),
        forward(
            UPLINK,
            to_node_b(
                V4::new(CLIENT, WEB1).ttl(63),
                query.with_ports(41000, 5353),
                b"query 2",
            ),
        ),
    )
    .via("demo/dns:53", Some("10.244.2.7:5353"));
    let syn = L4::tcp(40001, 80, 2000, 0, tcp_flags::SYN);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, WEB_VIP), syn, b""),
        forward(
            UPLINK,
            to_node_b(
                V4::new(CLIENT, WEB1).ttl(63),
                syn.with_ports(40001, 8080),
                b"",
            ),
        ),
    )
    .via(web, Some(WEB1_8080));
    c
}

fn terminating_keeps_flows() -> Case {
    // Present in both generations: the fallback and not-serving Services.
    let steady = || {
        vec![
            web_service(
                "fallback",
                "10.96.0.43",
                vec![web0(Conditions::SERVING_TERMINATING)],
            ),
            web_service(
                "gone",
                "10.96.0.44",
                vec![web0(Conditions::TERMINATING_NOT_SERVING)],
            ),
        ]
    };
    let mut before = vec![web_service(
        "term",
        "10.96.0.42",
        vec![web0(Conditions::READY)],
    )];
    before.extend(steady());
    let mut after = vec![web_service(
        "term",
        "10.96.0.42",
        vec![
            web0(Conditions::SERVING_TERMINATING),
            web1(Conditions::READY),
        ],
    )];
    after.extend(steady());
    let mut c = Case::new(
        "endpoint-terminating-keeps-flows",
        "client -> demo/term (10.96.0.42:80) is established with web-0; an update marks \
         web-0 terminating (serving, not ready) and adds web-1 ready: the old flow keeps \
         going to web-0 both ways, a new flow goes to web-1. demo/fallback (10.96.0.43), whose \
         only endpoint is serving and terminating, still takes new flows (KEP-1669); \
         demo/gone (10.96.0.44), whose only endpoint is terminating and not serving, answers \
         with ICMP port unreachable from its VIP.",
        state(before),
    );
    let term = "demo/term:80";
    let to_web0 = |c: &mut Case, l4: L4, payload: &[u8], vip: [u8; 4], svc: &str| {
        let (sport, _) = l4.ports();
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), V4::new(CLIENT, vip), l4, payload),
            forward(
                WEB0_PORT,
                eth_v4(
                    to_pod(WEB0),
                    V4::new(CLIENT, WEB0).ttl(63),
                    l4.with_ports(sport, 8080),
                    payload,
                ),
            ),
        )
        .via(svc, Some(WEB0_8080));
    };
    let from_web0 = |c: &mut Case, l4: L4, payload: &[u8]| {
        let (_, dport) = l4.ports();
        c.send(
            WEB0_PORT,
            eth_v4(from_pod(WEB0), V4::new(WEB0, CLIENT), l4, payload),
            forward(
                CLIENT_PORT,
                eth_v4(
                    to_pod(CLIENT),
                    V4::new(TERM_VIP, CLIENT).ttl(63),
                    l4.with_ports(80, dport),
                    payload,
                ),
            ),
        )
        .via(term, Some(WEB0_8080));
    };
    to_web0(
        &mut c,
        L4::tcp(40000, 80, 1000, 0, tcp_flags::SYN),
        b"",
        TERM_VIP,
        term,
    );
    from_web0(
        &mut c,
        L4::tcp(8080, 40000, 5000, 1001, tcp_flags::SYN | tcp_flags::ACK),
        b"",
    );
    to_web0(
        &mut c,
        L4::tcp(40000, 80, 1001, 5001, tcp_flags::ACK),
        b"",
        TERM_VIP,
        term,
    );

    c.update(state(after));

    to_web0(
        &mut c,
        L4::tcp(40000, 80, 1001, 5001, tcp_flags::ACK),
        b"GET /slow HTTP/1.1\r\n\r\n",
        TERM_VIP,
        term,
    );
    from_web0(
        &mut c,
        L4::tcp(8080, 40000, 5001, 1023, tcp_flags::ACK),
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    let syn = L4::tcp(40001, 80, 3000, 0, tcp_flags::SYN);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, TERM_VIP), syn, b""),
        forward(
            UPLINK,
            to_node_b(
                V4::new(CLIENT, WEB1).ttl(63),
                syn.with_ports(40001, 8080),
                b"",
            ),
        ),
    )
    .via(term, Some(WEB1_8080));
    to_web0(
        &mut c,
        L4::tcp(40002, 80, 4000, 0, tcp_flags::SYN),
        b"",
        FALLBACK_VIP,
        "demo/fallback:80",
    );
    let syn = L4::tcp(40003, 80, 6000, 0, tcp_flags::SYN);
    let ip = V4::new(CLIENT, GONE_VIP);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip, syn, b""),
        forward(
            CLIENT_PORT,
            icmpv4_error(
                answer_to_pod(CLIENT),
                GONE_VIP,
                CLIENT,
                IcmpError::PortUnreachable,
                &ipv4_packet(ip, syn, b""),
            ),
        ),
    )
    .via("demo/gone:80", None);
    c
}
