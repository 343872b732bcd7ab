//! NetworkPolicy on one node: a pod isolated for ingress or egress, rules allowing a
//! labelled peer on one port, and the replies of allowed connections.
//!
//! What each case expects is Kubernetes' NetworkPolicy contract (ARCHITECTURE.md §3), not
//! what the compiler happens to build: isolation only for selected pods and only in the
//! directions their policies name; rules add up; a drop is `policy_denied` naming the
//! policies that select the pod on the side that refused (`policy`, `direction` in
//! verdicts.jsonl); a reply of an allowed connection is never judged, whatever the other
//! side's isolation. The states are the two-node example with the client labelled
//! `role=client` and each case's policies (its own `state/`).
//!
//! Cases where policy meets Services, generations and the node are in `policy_flows`.

use super::world::*;
use crate::case::{Case, StateSource, drop, forward};
use crate::packet::{L2, L4, V4, eth_v4, mac_for, tcp_flags};
use crate::state::StateDef;
use testkit::manifests::service::ServiceSpec;

pub fn cases() -> Vec<Case> {
    vec![default_deny_ingress(), allow_from_label(), egress_deny()]
}

/// What verdicts.jsonl says for a drop on each side.
pub(super) const INGRESS: &str = "ingress";
pub(super) const EGRESS: &str = "egress";

/// A NetworkPolicy of namespace `demo` with this `spec` (YAML, indented by two spaces).
pub(super) fn netpol(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  \
         namespace: demo\nspec:\n{spec}"
    )
}

/// Ingress isolation of web-0 with no rule: nothing may connect to it.
pub(super) fn deny_all_ingress_web0(name: &str) -> String {
    netpol(
        name,
        "  podSelector:\n    matchLabels:\n      app: web-0\n  policyTypes:\n    - Ingress\n",
    )
}

/// Ingress to web-0 from pods labelled `role=client`, TCP 8080 only.
pub(super) fn allow_client_to_web0_8080(name: &str) -> String {
    netpol(
        name,
        "  podSelector:\n    matchLabels:\n      app: web-0\n  policyTypes:\n    - Ingress\n  \
         ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n              \
         role: client\n      ports:\n        - protocol: TCP\n          port: 8080\n",
    )
}

/// Egress isolation of the `role=client` pods with no rule: they may start nothing.
pub(super) fn deny_egress_client(name: &str) -> String {
    netpol(
        name,
        "  podSelector:\n    matchLabels:\n      role: client\n  policyTypes:\n    - Egress\n",
    )
}

/// The two-node example with the client labelled `role=client`, these Services and these
/// NetworkPolicies.
pub(super) fn policy_state(services: Vec<ServiceSpec>, policies: Vec<String>) -> StateSource {
    let mut def: StateDef = two_node_with(None, services);
    for pod in &mut def.pods {
        if pod.name == "client" {
            pod.labels.push(("role", "client"));
        }
    }
    def.network_policies = policies;
    StateSource::Own(def)
}

/// A frame from local pod `src` to local pod `dst` and what node-a delivers to `dst`'s
/// port (gateway MAC -> pod MAC, TTL-1): (input, expected output).
pub(super) fn local(src: [u8; 4], dst: [u8; 4], l4: L4, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ip = V4::new(src, dst);
    (
        eth_v4(from_pod(src), ip, l4, payload),
        eth_v4(to_pod(dst), ip.ttl(63), l4, payload),
    )
}

/// The port of a local pod of the example.
pub(super) fn port_of(ip: [u8; 4]) -> &'static str {
    match ip {
        CLIENT => CLIENT_PORT,
        WEB0 => WEB0_PORT,
        _ => panic!("{ip:?} is not a pod of node-a"),
    }
}

/// Sends `l4` from local pod `src` to local pod `dst` and expects it delivered.
pub(super) fn allowed(c: &mut Case, src: [u8; 4], dst: [u8; 4], l4: L4, payload: &[u8]) {
    let (input, output) = local(src, dst, l4, payload);
    c.send(port_of(src), input, forward(port_of(dst), output));
}

/// Sends `l4` from local pod `src` to `dst` and expects a policy drop by `policies` on
/// `direction`.
pub(super) fn denied(
    c: &mut Case,
    src: [u8; 4],
    dst: [u8; 4],
    l4: L4,
    policies: &[&str],
    direction: &'static str,
) {
    let frame = eth_v4(from_pod(src), V4::new(src, dst), l4, b"");
    c.send(port_of(src), frame, drop("policy_denied"))
        .denied_by(policies, direction);
}

/// web-1 (node-b) -> `dst` on node-a as node-b's kxdp tunnels it (TTL already 63).
pub(super) fn from_web1_tunnelled(dst: [u8; 4], l4: L4, sport: u16) -> Vec<u8> {
    let inner = eth_v4(b_to_a_inner(), V4::new(WEB1, dst).ttl(63), l4, b"");
    b_to_a(sport, VNI).wrap(&inner)
}

pub(super) fn syn(sport: u16, dport: u16, seq: u32) -> L4 {
    L4::tcp(sport, dport, seq, 0, tcp_flags::SYN)
}

pub(super) fn syn_ack(sport: u16, dport: u16, seq: u32, ack: u32) -> L4 {
    L4::tcp(sport, dport, seq, ack, tcp_flags::SYN | tcp_flags::ACK)
}

pub(super) fn ack(sport: u16, dport: u16, seq: u32, ack: u32) -> L4 {
    L4::tcp(sport, dport, seq, ack, tcp_flags::ACK)
}

fn default_deny_ingress() -> Case {
    let deny = "demo/deny-all";
    let mut c = Case::new(
        "policy-default-deny-ingress",
        "demo/deny-all selects web-0 for Ingress with no rule. client -> web-0 (TCP SYN to \
         8080, UDP 8080, ICMP echo) and web-1 -> web-0 over the overlay are dropped \
         policy_denied, naming demo/deny-all on ingress. web-0 is not isolated for egress and \
         the client not at all: web-0 -> client (TCP SYN) is delivered, and the client's \
         SYN-ACK back to the isolated web-0 passes as the reply of an allowed connection.",
        policy_state(vec![], vec![deny_all_ingress_web0("deny-all")]),
    );
    denied(
        &mut c,
        CLIENT,
        WEB0,
        syn(40000, 8080, 1000),
        &[deny],
        INGRESS,
    );
    denied(&mut c, CLIENT, WEB0, L4::udp(40001, 8080), &[deny], INGRESS);
    denied(
        &mut c,
        CLIENT,
        WEB0,
        L4::Echo { id: 3, seq: 1 },
        &[deny],
        INGRESS,
    );
    c.send(
        UPLINK,
        from_web1_tunnelled(WEB0, syn(41000, 8080, 7000), 50100),
        drop("policy_denied"),
    )
    .denied_by(&[deny], INGRESS);
    allowed(&mut c, WEB0, CLIENT, syn(45000, 9090, 2000), b"");
    allowed(&mut c, CLIENT, WEB0, syn_ack(9090, 45000, 6000, 2001), b"");
    allowed(&mut c, WEB0, CLIENT, ack(45000, 9090, 2001, 6001), b"hello");
    c
}

fn allow_from_label() -> Case {
    let allow = "demo/allow-client";
    let isolated = "demo/client-no-ingress";
    let client_no_ingress = netpol(
        "client-no-ingress",
        "  podSelector:\n    matchLabels:\n      role: client\n  policyTypes:\n    - Ingress\n",
    );
    let mut c = Case::new(
        "policy-allow-from-label",
        "demo/allow-client admits pods labelled role=client to web-0 on TCP 8080 only; \
         demo/client-no-ingress isolates the client for ingress with no rule. client -> \
         web-0:8080 is delivered and web-0's SYN-ACK passes back to the client although the \
         client admits no ingress (the reply of an allowed connection), and so does the rest \
         of the handshake. client -> web-0 on TCP 9090 and on UDP 8080 are dropped on web-0's \
         ingress (demo/allow-client); web-1 (no role label) -> web-0:8080 over the overlay \
         likewise; a new connection web-0 -> client is dropped on the client's ingress \
         (demo/client-no-ingress).",
        policy_state(
            vec![],
            vec![allow_client_to_web0_8080("allow-client"), client_no_ingress],
        ),
    );
    allowed(&mut c, CLIENT, WEB0, syn(40000, 8080, 1000), b"");
    allowed(&mut c, WEB0, CLIENT, syn_ack(8080, 40000, 5000, 1001), b"");
    allowed(&mut c, CLIENT, WEB0, ack(40000, 8080, 1001, 5001), b"GET /");
    allowed(
        &mut c,
        WEB0,
        CLIENT,
        ack(8080, 40000, 5001, 1006),
        b"200 OK",
    );
    denied(
        &mut c,
        CLIENT,
        WEB0,
        syn(40001, 9090, 3000),
        &[allow],
        INGRESS,
    );
    denied(
        &mut c,
        CLIENT,
        WEB0,
        L4::udp(40002, 8080),
        &[allow],
        INGRESS,
    );
    c.send(
        UPLINK,
        from_web1_tunnelled(WEB0, syn(41000, 8080, 7000), 50200),
        drop("policy_denied"),
    )
    .denied_by(&[allow], INGRESS);
    denied(
        &mut c,
        WEB0,
        CLIENT,
        syn(46000, 7000, 9000),
        &[isolated],
        INGRESS,
    );
    c
}

fn egress_deny() -> Case {
    let deny = "demo/deny-egress";
    let mut c = Case::new(
        "policy-egress-deny",
        "demo/deny-egress isolates the client (role=client) for Egress with no rule. client -> \
         web-0 (same node), -> web-1 (node-b) and -> 8.8.8.8 (outside) are dropped \
         policy_denied on egress, naming demo/deny-egress; client -> its node's InternalIP is \
         still passed to the kernel (node traffic is always allowed). web-0 -> client is not \
         the client's egress: delivered, and the client's SYN-ACK passes as its reply.",
        policy_state(vec![], vec![deny_egress_client("deny-egress")]),
    );
    denied(
        &mut c,
        CLIENT,
        WEB0,
        syn(40000, 8080, 1000),
        &[deny],
        EGRESS,
    );
    denied(
        &mut c,
        CLIENT,
        WEB1,
        syn(40001, 8080, 1000),
        &[deny],
        EGRESS,
    );
    denied(
        &mut c,
        CLIENT,
        [8, 8, 8, 8],
        syn(40002, 443, 1000),
        &[deny],
        EGRESS,
    );
    denied(
        &mut c,
        CLIENT,
        [1, 1, 1, 1],
        L4::udp(40003, 53),
        &[deny],
        EGRESS,
    );
    c.send(
        CLIENT_PORT,
        eth_v4(
            from_pod(CLIENT),
            V4::new(CLIENT, NODE_A_IP),
            syn(40004, 10250, 1000),
            b"",
        ),
        crate::case::Expect::Pass,
    );
    allowed(&mut c, WEB0, CLIENT, syn(45000, 9090, 2000), b"");
    allowed(&mut c, CLIENT, WEB0, syn_ack(9090, 45000, 6000, 2001), b"");
    c
}

/// The host port's peer (`kxdp-host`) sending to the gateway MAC.
pub(super) fn from_host() -> L2 {
    L2 {
        src: HOST_MAC,
        dst: mac_for(GW_A),
    }
}
