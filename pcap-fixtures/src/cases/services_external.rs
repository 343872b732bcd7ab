//! Walk 5: Services reached from outside the cluster on the uplink (NodePort, external
//! IPs, load-balancer ingress IPs), with both external traffic policies, the same
//! frontends reached from a pod, and the reject for a NodePort without endpoints.
//!
//! The outside client (192.168.50.200) shares the underlay's L2, so every reply leaves
//! node-a's uplink from its underlay MAC to the client's own MAC.

use super::services_kit::*;
use super::world::*;
use crate::case::{Case, Expect, drop, forward};
use crate::packet::tcp_flags;
use crate::packet::{IcmpError, L2, L4, V4, eth_v4, icmpv4_error, ipv4_packet, mac_for, mapped};
use testkit::manifests::service::{Conditions, PortSpec, ServiceSpec};

const EXT_IP: [u8; 4] = [192, 168, 50, 100];
const LB_IP: [u8; 4] = [192, 168, 50, 101];
const PROXY_LB_IP: [u8; 4] = [192, 168, 50, 102];
const EXT_LOCAL_IP: [u8; 4] = [192, 168, 50, 103];
const LB_LOCAL_IP: [u8; 4] = [192, 168, 50, 104];

pub fn cases() -> Vec<Case> {
    vec![
        node_port_cluster(),
        node_port_local(),
        external_and_lb_ips(),
        node_port_no_endpoints(),
    ]
}

fn syn(sport: u16, dport: u16) -> L4 {
    L4::tcp(sport, dport, 100, 0, tcp_flags::SYN)
}

fn syn_ack(sport: u16, dport: u16) -> L4 {
    L4::tcp(sport, dport, 900, 101, tcp_flags::SYN | tcp_flags::ACK)
}

/// The outside client's packet to `dst:dport` on the uplink.
fn outside_in(dst: [u8; 4], l4: L4) -> Vec<u8> {
    eth_v4(from_outside(), V4::new(OUTSIDE, dst), l4, b"")
}

/// What web-0 receives: `src` (the gateway when SNATed, else the client) to 8080.
fn at_web0(src: [u8; 4], l4: L4) -> Expect {
    let (sport, _) = l4.ports();
    forward(
        WEB0_PORT,
        eth_v4(
            to_pod(WEB0),
            V4::new(src, WEB0).ttl(63),
            l4.with_ports(sport, 8080),
            b"",
        ),
    )
}

/// What node-a tunnels to web-1 on node-b: `src` to 8080.
fn at_web1(src: [u8; 4], l4: L4) -> Expect {
    let (sport, _) = l4.ports();
    let ip = V4::new(src, WEB1).ttl(63);
    let l4 = l4.with_ports(sport, 8080);
    let inner = eth_v4(a_to_b_inner(), ip, l4, b"");
    let outer = a_to_b_outer(mapped(src), mapped(WEB1), l4, false, VXLAN_PORT, VNI);
    forward(UPLINK, outer.wrap(&inner))
}

/// A reply leaving by the uplink for the outside client, from `frontend:fport`, `ttl`.
fn to_client(frontend: [u8; 4], l4: L4, ttl: u8) -> Expect {
    forward(
        UPLINK,
        eth_v4(to_outside(), V4::new(frontend, OUTSIDE).ttl(ttl), l4, b""),
    )
}

fn node_port_cluster() -> Case {
    let mut c = Case::new(
        "nodeport-cluster",
        "Outside client 192.168.50.200 -> 192.168.50.10:30080 (demo/np, NodePort, \
         externalTrafficPolicy Cluster, backend web-0 here): DNAT to 10.244.1.6:8080 and SNAT \
         to the gateway 10.244.1.1 (client port kept); web-0's SYN-ACK leaves by the uplink \
         from 192.168.50.10:30080, underlay MAC to the client's MAC. To :30081 (demo/np-remote, \
         backend web-1 on node-b) the SNATed SYN is tunnelled to node-b, and web-1's SYN-ACK, \
         arriving over VXLAN for 10.244.1.1, leaves by the uplink to the client. Verdicts name \
         the Service port (:80), not the node port.",
        state(vec![
            node_port_service(
                "np",
                "10.96.0.60",
                30080,
                "Cluster",
                vec![web0(Conditions::READY)],
            ),
            node_port_service(
                "np-remote",
                "10.96.0.61",
                30081,
                "Cluster",
                vec![web1(Conditions::READY)],
            ),
        ]),
    );
    c.send(
        UPLINK,
        outside_in(NODE_A_IP, syn(50000, 30080)),
        at_web0(GW_A, syn(50000, 30080)),
    )
    .via("demo/np:80", Some(WEB0_8080));
    c.send(
        WEB0_PORT,
        eth_v4(
            from_pod(WEB0),
            V4::new(WEB0, GW_A),
            syn_ack(8080, 50000),
            b"",
        ),
        to_client(NODE_A_IP, syn_ack(30080, 50000), 63),
    )
    .via("demo/np:80", Some(WEB0_8080));
    let ack = L4::tcp(50000, 30080, 101, 901, tcp_flags::ACK);
    c.send(UPLINK, outside_in(NODE_A_IP, ack), at_web0(GW_A, ack))
        .via("demo/np:80", Some(WEB0_8080));

    c.send(
        UPLINK,
        outside_in(NODE_A_IP, syn(50001, 30081)),
        at_web1(GW_A, syn(50001, 30081)),
    )
    .via("demo/np-remote:80", Some(WEB1_8080));
    let reply = eth_v4(
        b_to_a_inner(),
        V4::new(WEB1, GW_A).ttl(63),
        syn_ack(8080, 50001),
        b"",
    );
    c.send(
        UPLINK,
        b_to_a(51234, VNI).wrap(&reply),
        to_client(NODE_A_IP, syn_ack(30081, 50001), 62),
    )
    .via("demo/np-remote:80", Some(WEB1_8080));
    c
}

fn node_port_local() -> Case {
    let mut c = Case::new(
        "nodeport-local",
        "externalTrafficPolicy Local: outside -> 192.168.50.10:30090 (demo/np-local, \
         endpoints web-0 here and web-1 on node-b) reaches web-0 with the client's own address \
         (no SNAT), every flow; web-0's reply to 192.168.50.200 leaves by the uplink from \
         192.168.50.10:30090. Outside -> :30091 (demo/np-local-remote, only web-1) is dropped \
         no_local_endpoints.",
        state(vec![
            node_port_service(
                "np-local",
                "10.96.0.65",
                30090,
                "Local",
                vec![web0(Conditions::READY), web1(Conditions::READY)],
            ),
            node_port_service(
                "np-local-remote",
                "10.96.0.66",
                30091,
                "Local",
                vec![web1(Conditions::READY)],
            ),
        ]),
    );
    let svc = "demo/np-local:80";
    c.send(
        UPLINK,
        outside_in(NODE_A_IP, syn(50010, 30090)),
        at_web0(OUTSIDE, syn(50010, 30090)),
    )
    .via(svc, Some(WEB0_8080));
    c.send(
        WEB0_PORT,
        eth_v4(
            from_pod(WEB0),
            V4::new(WEB0, OUTSIDE),
            syn_ack(8080, 50010),
            b"",
        ),
        to_client(NODE_A_IP, syn_ack(30090, 50010), 63),
    )
    .via(svc, Some(WEB0_8080));
    for sport in 50011..50014 {
        c.send(
            UPLINK,
            outside_in(NODE_A_IP, syn(sport, 30090)),
            at_web0(OUTSIDE, syn(sport, 30090)),
        )
        .via(svc, Some(WEB0_8080));
    }
    c.send(
        UPLINK,
        outside_in(NODE_A_IP, syn(50020, 30091)),
        drop("no_local_endpoints"),
    )
    .via("demo/np-local-remote:80", None);
    c
}

fn external_and_lb_ips() -> Case {
    let ext = ServiceSpec::cluster_ip("ext", "10.96.0.62", vec![http(80).node_port(30100)])
        .kind("LoadBalancer")
        .external_traffic_policy("Cluster")
        .external_ips(&["192.168.50.100"])
        .ingress(&[("192.168.50.101", None), ("192.168.50.102", Some("Proxy"))])
        .endpoints(vec![web0(Conditions::READY)]);
    let ext_local =
        ServiceSpec::cluster_ip("ext-local", "10.96.0.63", vec![http(80).node_port(30101)])
            .kind("LoadBalancer")
            .external_traffic_policy("Local")
            .external_ips(&["192.168.50.103"])
            .ingress(&[("192.168.50.104", Some("VIP"))])
            .endpoints(vec![web1(Conditions::READY)]);
    let mut c = Case::new(
        "external-and-lb-ips",
        "demo/ext (LoadBalancer, eTP Cluster, backend web-0): from outside, externalIP \
         192.168.50.100:80 and ingress IP 192.168.50.101:80 are served like a NodePort (DNAT + \
         SNAT to 10.244.1.1, reply out the uplink from the address the client used); ingress \
         192.168.50.102 has ipMode Proxy and is not programmed (outside: pass; from a pod: \
         routed out the host port untouched). From the client pod, the external and ingress \
         IPs are DNATed without SNAT and the reply comes from the external IP. demo/ext-local \
         (eTP Local, only web-1 on node-b): from outside its external IP is \
         no_local_endpoints, from a pod its external and ingress IPs use every endpoint \
         (tunnelled to web-1), as kube-proxy short-circuits in-cluster traffic.",
        state(vec![ext, ext_local]),
    );
    let svc = "demo/ext:80";
    c.send(
        UPLINK,
        outside_in(EXT_IP, syn(50030, 80)),
        at_web0(GW_A, syn(50030, 80)),
    )
    .via(svc, Some(WEB0_8080));
    c.send(
        WEB0_PORT,
        eth_v4(
            from_pod(WEB0),
            V4::new(WEB0, GW_A),
            syn_ack(8080, 50030),
            b"",
        ),
        to_client(EXT_IP, syn_ack(80, 50030), 63),
    )
    .via(svc, Some(WEB0_8080));
    c.send(
        UPLINK,
        outside_in(LB_IP, syn(50031, 80)),
        at_web0(GW_A, syn(50031, 80)),
    )
    .via(svc, Some(WEB0_8080));
    c.send(
        WEB0_PORT,
        eth_v4(
            from_pod(WEB0),
            V4::new(WEB0, GW_A),
            syn_ack(8080, 50031),
            b"",
        ),
        to_client(LB_IP, syn_ack(80, 50031), 63),
    )
    .via(svc, Some(WEB0_8080));
    c.send(
        UPLINK,
        outside_in(PROXY_LB_IP, syn(50032, 80)),
        Expect::Pass,
    );

    let pod_syn = |dst: [u8; 4], sport: u16| {
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, dst), syn(sport, 80), b"")
    };
    c.send(
        CLIENT_PORT,
        pod_syn(EXT_IP, 40000),
        at_web0(CLIENT, syn(40000, 80)),
    )
    .via(svc, Some(WEB0_8080));
    c.send(
        WEB0_PORT,
        eth_v4(
            from_pod(WEB0),
            V4::new(WEB0, CLIENT),
            syn_ack(8080, 40000),
            b"",
        ),
        forward(
            CLIENT_PORT,
            eth_v4(
                to_pod(CLIENT),
                V4::new(EXT_IP, CLIENT).ttl(63),
                syn_ack(80, 40000),
                b"",
            ),
        ),
    )
    .via(svc, Some(WEB0_8080));
    c.send(
        CLIENT_PORT,
        pod_syn(LB_IP, 40001),
        at_web0(CLIENT, syn(40001, 80)),
    )
    .via(svc, Some(WEB0_8080));
    let to_host = L2 {
        src: mac_for(GW_A),
        dst: HOST_MAC,
    };
    c.send(
        CLIENT_PORT,
        pod_syn(PROXY_LB_IP, 40002),
        forward(
            HOST,
            eth_v4(
                to_host,
                V4::new(CLIENT, PROXY_LB_IP).ttl(63),
                syn(40002, 80),
                b"",
            ),
        ),
    );

    let local = "demo/ext-local:80";
    c.send(
        UPLINK,
        outside_in(EXT_LOCAL_IP, syn(50033, 80)),
        drop("no_local_endpoints"),
    )
    .via(local, None);
    c.send(
        CLIENT_PORT,
        pod_syn(EXT_LOCAL_IP, 40003),
        at_web1(CLIENT, syn(40003, 80)),
    )
    .via(local, Some(WEB1_8080));
    c.send(
        CLIENT_PORT,
        pod_syn(LB_LOCAL_IP, 40004),
        at_web1(CLIENT, syn(40004, 80)),
    )
    .via(local, Some(WEB1_8080));
    c
}

fn node_port_no_endpoints() -> Case {
    let empty = ServiceSpec::cluster_ip(
        "np-empty",
        "10.96.0.64",
        vec![
            http(80).node_port(30200),
            PortSpec::new("dns", 53, "UDP", 5353).node_port(30201),
        ],
    )
    .kind("NodePort")
    .external_traffic_policy("Cluster");
    let mut c = Case::new(
        "nodeport-no-endpoints",
        "Outside -> 192.168.50.10:30200/TCP and :30201/UDP of demo/np-empty (NodePort, no \
         endpoints) are rejected as kube-proxy does: ICMP port unreachable from 192.168.50.10 \
         (the address the client used), sent back out the uplink from the underlay MAC to the \
         client's MAC, quoting the packet as it arrived.",
        state(vec![empty]),
    );
    for (l4, payload, name) in [
        (syn(50040, 30200), &b""[..], "demo/np-empty:80"),
        (
            L4::udp(50041, 30201),
            &b"\x00\x01query"[..],
            "demo/np-empty:53",
        ),
    ] {
        let ip = V4::new(OUTSIDE, NODE_A_IP);
        c.send(
            UPLINK,
            eth_v4(from_outside(), ip, l4, payload),
            forward(
                UPLINK,
                icmpv4_error(
                    to_outside(),
                    NODE_A_IP,
                    OUTSIDE,
                    IcmpError::PortUnreachable,
                    &ipv4_packet(ip, l4, payload),
                ),
            ),
        )
        .via(name, None);
    }
    c
}
