//! NetworkPolicy where it meets the rest of the walk: Service traffic is judged after DNAT
//! (the backend pod's policy, at the target port), a new table generation re-judges flows
//! already running, and the node's own traffic to its pods is always allowed (§3).

use super::policy::*;
use super::services_kit::{WEB0_8080, web0};
use super::world::*;
use crate::case::{Case, Expect, drop, forward};
use crate::packet::{L4, V4, eth_v4};
use testkit::manifests::service::{Conditions, PortSpec, ServiceSpec};

pub fn cases() -> Vec<Case> {
    vec![after_dnat(), change_rejudges(), node_always_allowed()]
}

/// demo/web: 10.96.0.10 TCP 80 -> 8080, web-0 its only endpoint.
fn web() -> ServiceSpec {
    ServiceSpec::cluster_ip(
        "web",
        "10.96.0.10",
        vec![PortSpec::new("http", 80, "TCP", 8080)],
    )
    .endpoints(vec![web0(Conditions::READY)])
}

/// demo/admin: 10.96.0.11 TCP 8080 -> 9090 on web-0: its frontend port is the one the
/// policy allows, its target port is not.
const ADMIN_VIP: [u8; 4] = [10, 96, 0, 11];

fn admin() -> ServiceSpec {
    ServiceSpec::cluster_ip(
        "admin",
        "10.96.0.11",
        vec![PortSpec::new("admin", 8080, "TCP", 9090)],
    )
    .endpoints(vec![web0(Conditions::READY)])
}

/// client -> `vip` as sent, and as delivered to web-0 after DNAT to `port`.
fn to_service(vip: [u8; 4], l4: L4, port: u16, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (sport, _) = l4.ports();
    (
        eth_v4(from_pod(CLIENT), V4::new(CLIENT, vip), l4, payload),
        eth_v4(
            to_pod(WEB0),
            V4::new(CLIENT, WEB0).ttl(63),
            l4.with_ports(sport, port),
            payload,
        ),
    )
}

/// web-0's reply to the client as sent, and reverse-NATed to come from `vip`:`vport`.
fn from_backend(vip: [u8; 4], vport: u16, l4: L4, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, dport) = l4.ports();
    (
        eth_v4(from_pod(WEB0), V4::new(WEB0, CLIENT), l4, payload),
        eth_v4(
            to_pod(CLIENT),
            V4::new(vip, CLIENT).ttl(63),
            l4.with_ports(vport, dport),
            payload,
        ),
    )
}

fn after_dnat() -> Case {
    let allow = "demo/allow-client";
    let mut c = Case::new(
        "policy-after-dnat",
        "demo/allow-client admits role=client pods to web-0 on TCP 8080 only. client -> \
         demo/web (10.96.0.10:80 -> web-0:8080) is judged on the translated flow: delivered \
         (port 80 appears in no policy, 8080 is what web-0 receives), and web-0's SYN-ACK is \
         reverse-NATed back. client -> demo/admin (10.96.0.11:8080 -> web-0:9090) is dropped \
         policy_denied on web-0's ingress although its frontend port is 8080; the verdict \
         still names the Service and the backend chosen.",
        policy_state(
            vec![web(), admin()],
            vec![allow_client_to_web0_8080("allow-client")],
        ),
    );
    let web_port = "demo/web:80";
    let (input, output) = to_service(VIP, syn(40000, 80, 1000), 8080, b"");
    c.send(CLIENT_PORT, input, forward(WEB0_PORT, output))
        .via(web_port, Some(WEB0_8080));
    let (input, output) = from_backend(VIP, 80, syn_ack(8080, 40000, 5000, 1001), b"");
    c.send(WEB0_PORT, input, forward(CLIENT_PORT, output))
        .via(web_port, Some(WEB0_8080));
    let (input, output) = to_service(VIP, ack(40000, 80, 1001, 5001), 8080, b"");
    c.send(CLIENT_PORT, input, forward(WEB0_PORT, output))
        .via(web_port, Some(WEB0_8080));
    let frame = eth_v4(
        from_pod(CLIENT),
        V4::new(CLIENT, ADMIN_VIP),
        syn(40001, 8080, 2000),
        b"",
    );
    c.send(CLIENT_PORT, frame, drop("policy_denied"))
        .via("demo/admin:8080", Some("10.244.1.6:9090"))
        .denied_by(&[allow], INGRESS);
    // The same port straight to the pod, without the Service: also its target port.
    denied(
        &mut c,
        CLIENT,
        WEB0,
        syn(40002, 9090, 3000),
        &[allow],
        INGRESS,
    );
    c
}

fn change_rejudges() -> Case {
    let before = || policy_state(vec![web()], vec![allow_client_to_web0_8080("allow-client")]);
    let after = policy_state(
        vec![web()],
        vec![
            allow_client_to_web0_8080("allow-client"),
            deny_egress_client("deny-egress"),
        ],
    );
    let deny = "demo/deny-egress";
    let mut c = Case::new(
        "policy-change-rejudges",
        "demo/allow-client admits the client to web-0:8080; two connections are established \
         (handshake both ways): one straight to web-0:8080, one through demo/web \
         (10.96.0.10:80). An update adds demo/deny-egress, which isolates the client for \
         Egress with no rule: the next segment of each connection is dropped policy_denied on \
         egress, naming demo/deny-egress (a policy change reaches running flows at their \
         next packet, not only new ones); the Service one's verdict still names its Service \
         and backend. A new SYN from the client is dropped alike.",
        before(),
    );
    allowed(&mut c, CLIENT, WEB0, syn(40000, 8080, 1000), b"");
    allowed(&mut c, WEB0, CLIENT, syn_ack(8080, 40000, 5000, 1001), b"");
    allowed(&mut c, CLIENT, WEB0, ack(40000, 8080, 1001, 5001), b"");
    let web_port = "demo/web:80";
    let (input, output) = to_service(VIP, syn(40001, 80, 2000), 8080, b"");
    c.send(CLIENT_PORT, input, forward(WEB0_PORT, output))
        .via(web_port, Some(WEB0_8080));
    let (input, output) = from_backend(VIP, 80, syn_ack(8080, 40001, 6000, 2001), b"");
    c.send(WEB0_PORT, input, forward(CLIENT_PORT, output))
        .via(web_port, Some(WEB0_8080));
    let (input, output) = to_service(VIP, ack(40001, 80, 2001, 6001), 8080, b"");
    c.send(CLIENT_PORT, input, forward(WEB0_PORT, output))
        .via(web_port, Some(WEB0_8080));

    c.update(after);

    let frame = eth_v4(
        from_pod(CLIENT),
        V4::new(CLIENT, WEB0),
        ack(40000, 8080, 1001, 5001),
        b"GET /a",
    );
    c.send(CLIENT_PORT, frame, drop("policy_denied"))
        .denied_by(&[deny], EGRESS);
    let frame = eth_v4(
        from_pod(CLIENT),
        V4::new(CLIENT, VIP),
        ack(40001, 80, 2001, 6001),
        b"GET /b",
    );
    c.send(CLIENT_PORT, frame, drop("policy_denied"))
        .via(web_port, Some(WEB0_8080))
        .denied_by(&[deny], EGRESS);
    denied(
        &mut c,
        CLIENT,
        WEB0,
        syn(40002, 8080, 3000),
        &[deny],
        EGRESS,
    );
    c
}

fn node_always_allowed() -> Case {
    let deny = "demo/deny-all";
    let mut c = Case::new(
        "policy-node-always-allowed",
        "demo/deny-all isolates web-0 for Ingress with no rule. Its own node may still reach \
         it (kubelet probes; NetworkPolicy never applies between a node and its pods): a SYN \
         from 192.168.50.10 arriving on the host port is delivered to web-0 (gateway MAC -> \
         web-0, TTL-1), and web-0's SYN-ACK to the node's address is passed to the kernel. \
         client -> web-0 on the same port is dropped policy_denied on ingress.",
        policy_state(vec![], vec![deny_all_ingress_web0("deny-all")]),
    );
    let probe = syn(50000, 8080, 1000);
    let ip = V4::new(NODE_A_IP, WEB0);
    c.send(
        HOST,
        eth_v4(from_host(), ip, probe, b""),
        forward(WEB0_PORT, eth_v4(to_pod(WEB0), ip.ttl(63), probe, b"")),
    );
    c.send(
        WEB0_PORT,
        eth_v4(
            from_pod(WEB0),
            V4::new(WEB0, NODE_A_IP),
            syn_ack(8080, 50000, 4000, 1001),
            b"",
        ),
        Expect::Pass,
    );
    denied(
        &mut c,
        CLIENT,
        WEB0,
        syn(40000, 8080, 1000),
        &[deny],
        INGRESS,
    );
    c
}
