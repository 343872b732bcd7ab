//! Walk 3: ClusterIP Services. Each Service here has exactly one backend, so the exact
//! output is known without the backend choice (which the datapath's own tests cover).

use super::world::*;
use crate::case::{Case, StateSource, drop, forward};
use crate::packet::{IcmpError, L2, L4, V4, eth_v4, icmpv4_error, ipv4_packet, mac_for, tcp_flags};
use crate::state::ServiceDef;

const LOCAL_VIP: [u8; 4] = [10, 96, 0, 20];
const REMOTE_VIP: [u8; 4] = [10, 96, 0, 21];
const EMPTY_VIP: [u8; 4] = [10, 96, 0, 22];

fn one_backend(
    name: &'static str,
    vip: &'static str,
    backend: (&'static str, &'static str),
) -> ServiceDef {
    ServiceDef {
        name,
        cluster_ip: vip,
        port: 80,
        protocol: "TCP",
        target_port: 8080,
        backends: vec![backend],
    }
}

fn state() -> StateSource {
    StateSource::Own(two_node_state(
        None,
        vec![
            one_backend("web-local", "10.96.0.20", ("10.244.1.6", "node-a")),
            one_backend("web-remote", "10.96.0.21", ("10.244.2.7", "node-b")),
            ServiceDef {
                name: "empty",
                cluster_ip: "10.96.0.22",
                port: 80,
                protocol: "TCP",
                target_port: 8080,
                backends: vec![],
            },
            ServiceDef {
                name: "empty-dns",
                cluster_ip: "10.96.0.22",
                port: 53,
                protocol: "UDP",
                target_port: 53,
                backends: vec![],
            },
        ],
    ))
}

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let tcp = |sport, dport, seq, ack, flags| L4::tcp(sport, dport, seq, ack, flags);

    let mut c = Case::new(
        "clusterip-local-backend",
        "client -> ClusterIP 10.96.0.20:80 (demo/web-local, one backend web-0 10.244.1.6:8080 on \
         this node): the SYN is DNATed to the backend and delivered to web-0 (TTL-1, checksums \
         recomputed); web-0's SYN-ACK (second input) is reverse-NATed so it comes from \
         10.96.0.20:80 again; the client's ACK keeps the conntrack entry's backend.",
        state(),
    );
    let svc = "demo/web-local:80";
    let backend = "10.244.1.6:8080";
    let syn = tcp(40000, 80, 1000, 0, tcp_flags::SYN);
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, LOCAL_VIP), syn, b""),
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
    .via(svc, Some(backend));
    let syn_ack = tcp(8080, 40000, 5000, 1001, tcp_flags::SYN | tcp_flags::ACK);
    c.send(
        WEB0_PORT,
        eth_v4(from_pod(WEB0), V4::new(WEB0, CLIENT), syn_ack, b""),
        forward(
            CLIENT_PORT,
            eth_v4(
                to_pod(CLIENT),
                V4::new(LOCAL_VIP, CLIENT).ttl(63),
                syn_ack.with_ports(80, 40000),
                b"",
            ),
        ),
    )
    .via(svc, Some(backend));
    let ack = tcp(40000, 80, 1001, 5001, tcp_flags::ACK);
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, LOCAL_VIP),
            ack,
            b"GET / HTTP/1.1\r\n\r\n",
        ),
        forward(
            WEB0_PORT,
            eth_v4(
                to_pod(WEB0),
                V4::new(CLIENT, WEB0).ttl(63),
                ack.with_ports(40000, 8080),
                b"GET / HTTP/1.1\r\n\r\n",
            ),
        ),
    )
    .via(svc, Some(backend));
    out.push(c);

    let mut c = Case::new(
        "clusterip-remote-backend",
        "client -> ClusterIP 10.96.0.21:80 (demo/web-remote, one backend web-1 10.244.2.7:8080 on \
         node-b): DNAT, then VXLAN to node-b with the outer source port hashed from the \
         translated flow. web-1's SYN-ACK arrives over VXLAN and is reverse-NATed on this node \
         (the client's) before delivery.",
        state(),
    );
    let svc = "demo/web-remote:80";
    let backend = "10.244.2.7:8080";
    let dnat_l4 = syn.with_ports(40000, 8080);
    let inner_ip = V4::new(CLIENT, WEB1);
    let inner = eth_v4(a_to_b_inner(), inner_ip.ttl(63), dnat_l4, b"");
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, REMOTE_VIP), syn, b""),
        forward(UPLINK, a_to_b(inner_ip, dnat_l4).wrap(&inner)),
    )
    .via(svc, Some(backend));
    let reply_inner = eth_v4(b_to_a_inner(), V4::new(WEB1, CLIENT).ttl(63), syn_ack, b"");
    c.send(
        UPLINK,
        b_to_a(55555, VNI).wrap(&reply_inner),
        forward(
            CLIENT_PORT,
            eth_v4(
                to_pod(CLIENT),
                V4::new(REMOTE_VIP, CLIENT).ttl(62),
                syn_ack.with_ports(80, 40000),
                b"",
            ),
        ),
    )
    .via(svc, Some(backend));
    out.push(c);

    let mut c = Case::new(
        "service-no-endpoints",
        "client -> a Service port with no endpoints (demo/empty 10.96.0.22:80 TCP, \
         demo/empty-dns :53 UDP) is rejected as kube-proxy does: ICMP port unreachable from the \
         VIP to the client, from the gateway MAC, quoting the packet as it was sent.",
        state(),
    );
    let back = L2 {
        src: mac_for(GW_A),
        dst: mac_for(CLIENT),
    };
    for (l4, payload, name) in [
        (syn, &b""[..], "demo/empty:80"),
        (
            L4::udp(41000, 53),
            &b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"[..],
            "demo/empty-dns:53",
        ),
    ] {
        let ip = V4::new(CLIENT, EMPTY_VIP);
        let sent = ipv4_packet(ip, l4, payload);
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), ip, l4, payload),
            forward(
                CLIENT_PORT,
                icmpv4_error(back, EMPTY_VIP, CLIENT, IcmpError::PortUnreachable, &sent),
            ),
        )
        .via(name, None);
    }
    out.push(c);

    let mut c = Case::new(
        "no-service",
        "client -> the Service CIDR where no Service port matches (a VIP no Service has, \
         demo/web's VIP on port 81, UDP to its TCP port, ICMP echo to it): no_service.",
        StateSource::TwoNodeExample,
    );
    for (dst, l4) in [
        ([10, 96, 0, 99], tcp(40000, 80, 1, 0, tcp_flags::SYN)),
        (VIP, tcp(40000, 81, 1, 0, tcp_flags::SYN)),
        (VIP, L4::udp(40000, 80)),
        (VIP, L4::Echo { id: 1, seq: 1 }),
    ] {
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), V4::new(CLIENT, dst), l4, b""),
            drop("no_service"),
        );
    }
    out.push(c);

    out
}
