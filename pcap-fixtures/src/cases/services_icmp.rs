//! ICMP errors about translated flows (RFC 5508 §4.2): a client must see the error as
//! coming from the address it talked to, quoting the packet it sent, or its stack cannot
//! match the error to its socket.

use super::services_kit::*;
use super::world::*;
use crate::case::{Case, forward};
use crate::packet::{IcmpError, L4, V4, eth_v4, icmpv4_error_with, ipv4_packet, mapped};
use testkit::manifests::service::{Conditions, PortSpec, ServiceSpec};

const DNS_VIP: [u8; 4] = [10, 96, 0, 53];

pub fn cases() -> Vec<Case> {
    vec![error_about_nat()]
}

fn error_about_nat() -> Case {
    let svc = ServiceSpec::cluster_ip(
        "dns-remote",
        "10.96.0.53",
        vec![PortSpec::new("dns", 53, "UDP", 5353)],
    )
    .endpoints(vec![web1(Conditions::READY)]);
    let mut c = Case::new(
        "icmp-error-about-nat",
        "client -> demo/dns-remote (10.96.0.53:53/UDP) is DNATed to web-1 10.244.2.7:5353 on \
         node-b. web-1 has nothing on 5353: node-b tunnels back its ICMP port unreachable from \
         10.244.2.7 to the client, quoting client -> 10.244.2.7:5353 as web-1 received it. The \
         client receives it from 10.96.0.53, quoting client -> 10.96.0.53:53 (quoted IPv4 \
         checksum and UDP checksum updated, ICMP checksum over the rewritten quote), TTL-1.",
        state(vec![svc]),
    );
    let name = "demo/dns-remote:53";
    let backend = "10.244.2.7:5353";
    let payload = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01";
    let query = L4::udp(41000, 53);
    let translated = query.with_ports(41000, 5353);
    let inner_ip = V4::new(CLIENT, WEB1).ttl(63);
    let inner = eth_v4(a_to_b_inner(), inner_ip, translated, payload);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, DNS_VIP), query, payload),
        forward(
            UPLINK,
            a_to_b_outer(
                mapped(CLIENT),
                mapped(WEB1),
                translated,
                false,
                VXLAN_PORT,
                VNI,
            )
            .wrap(&inner),
        ),
    )
    .via(name, Some(backend));

    // web-1 received the query with TTL 62 (node-a and node-b each took one); its kernel
    // answers from its own address with an identification of its own, and node-b's hop
    // leaves TTL 63 in the tunnel.
    let received = ipv4_packet(V4::new(CLIENT, WEB1).ttl(62), translated, payload);
    let error_ip = V4 {
        src: WEB1,
        dst: CLIENT,
        ttl: 63,
        ident: 0x0abc,
        df: false,
    };
    let error = icmpv4_error_with(
        b_to_a_inner(),
        error_ip,
        IcmpError::PortUnreachable,
        &received,
    );
    // What the client sent, exactly: its own header (TTL as web-1 saw it) and checksums.
    let as_sent = ipv4_packet(V4::new(CLIENT, DNS_VIP).ttl(62), query, payload);
    let expected = icmpv4_error_with(
        to_pod(CLIENT),
        V4 {
            src: DNS_VIP,
            ttl: 62,
            ..error_ip
        },
        IcmpError::PortUnreachable,
        &as_sent,
    );
    c.send(
        UPLINK,
        b_to_a(50123, VNI).wrap(&error),
        forward(CLIENT_PORT, expected),
    )
    .via(name, Some(backend));
    c
}
