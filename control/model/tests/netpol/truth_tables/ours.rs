//! Ours, in the same model: semantics the upstream suite covers only in part (the module
//! docs list them).

use std::net::Ipv4Addr;

use datapath::conntrack::Flows;
use testkit::offline::pod_mac;

use super::*;
use crate::grid::{Expect, Peer, check_denial};
use crate::probe::from_pod;

#[test]
fn end_port_range() {
    let range = policy("x", "allow-80-81-from-y", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80, endPort: 81, protocol: TCP}]}]",
    );
    let only80 = policy("x", "allow-80-from-y", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80, protocol: TCP}]}]",
    );
    let egress = policy("y", "egress-81-82", Sel::Pod("b"))
        .egress("[{ports: [{port: 81, endPort: 82, protocol: TCP}]}]");
    let from_y =
        Table::all(&MODEL)
            .peer(ns("x"), pod("x", "a"), false)
            .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "end_port_range",
        vec![
            step(
                vec![range],
                vec![
                    grid(Tcp, 80, from_y.clone()),
                    grid(Tcp, 81, from_y.clone()),
                    grid(Udp, 80, Table::all(&MODEL).all_ingress(XA, false)),
                ],
            ),
            step(
                vec![only80],
                vec![
                    grid(Tcp, 80, from_y),
                    grid(Tcp, 81, Table::all(&MODEL).all_ingress(XA, false)),
                ],
            ),
            step(
                vec![egress],
                vec![
                    grid(Tcp, 80, Table::all(&MODEL).all_egress(YB, false)),
                    grid(Tcp, 81, Table::all(&MODEL)),
                ],
            ),
        ],
    );
}

#[test]
fn match_expressions_exists_and_does_not_exist() {
    let exists = policy("x", "from-labelled-pods-not-c", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists}]}, \
         podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}}]}]",
    );
    let does_not_exist = policy("x", "from-unlabelled-pods", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}}]}]",
    );
    let ns_does_not_exist = policy("x", "from-unlabelled-namespaces", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: DoesNotExist}]}}]}]",
    );
    run_case(
        "match_expressions_exists_and_does_not_exist",
        vec![
            step(
                vec![exists],
                vec![grid(
                    Tcp,
                    80,
                    Table::all(&MODEL).peer(
                        Peer {
                            ns: None,
                            pod: Some("c"),
                        },
                        pod("x", "a"),
                        false,
                    ),
                )],
            ),
            step(
                vec![does_not_exist],
                vec![grid(Tcp, 80, Table::all(&MODEL).all_ingress(XA, false))],
            ),
            step(
                vec![ns_does_not_exist],
                vec![grid(Tcp, 80, Table::all(&MODEL).all_ingress(XA, false))],
            ),
        ],
    );
}

#[test]
fn egress_to_namespace() {
    let plain = policy("x", "allow-egress-to-y", Sel::Pod("a"))
        .egress("[{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]");
    let with_dns = policy("x", "allow-egress-to-y-and-dns", Sel::Pod("a")).egress(
        "[{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}, \
         {to: [{namespaceSelector: {}}], ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]}]",
    );
    let t = Table::all(&MODEL)
        .all_egress(XA, false)
        .peer(pod("x", "a"), ns("y"), true);
    run_case(
        "egress_to_namespace",
        vec![
            step(
                vec![plain],
                vec![grid(Tcp, 80, t.clone()), grid(Udp, 81, t.clone())],
            ),
            step(
                vec![with_dns],
                vec![grid(Tcp, 80, t.clone()), grid(Udp, 81, t)],
            ),
        ],
    );
}

#[test]
fn empty_ingress_list_vs_empty_rule() {
    let empty_list = policy("y", "ingress-empty-list", Sel::Pod("b")).ingress("[]");
    let empty_rule = policy("y", "ingress-empty-rule", Sel::Pod("b")).ingress("[{}]");
    run_case(
        "empty_ingress_list_vs_empty_rule",
        vec![
            step(
                vec![empty_list.clone()],
                vec![grid(Tcp, 80, Table::all(&MODEL).all_ingress(YB, false))],
            ),
            step(
                vec![empty_rule.clone()],
                vec![grid(Tcp, 80, Table::all(&MODEL))],
            ),
            // Both: rules add up, the empty rule admits everything.
            step(
                vec![empty_list, empty_rule],
                vec![grid(Tcp, 80, Table::all(&MODEL))],
            ),
        ],
    );
}

#[test]
fn egress_only_policy_types() {
    let egress_only = policy("z", "egress-only", Sel::Pod("b")).egress("[]");
    // No policyTypes, egress rules present: the API defaults to [Ingress, Egress], so zb is
    // isolated both ways, egress open on port 80 only.
    let defaulted = policy("z", "defaulted-types", Sel::Pod("b"))
        .egress("[{ports: [{port: 80}]}]")
        .types(None);
    run_case(
        "egress_only_policy_types",
        vec![
            step(
                vec![egress_only],
                vec![grid(Tcp, 80, Table::all(&MODEL).all_egress(ZB, false))],
            ),
            step(
                vec![defaulted],
                vec![
                    grid(Tcp, 80, Table::all(&MODEL).all_ingress(ZB, false)),
                    grid(
                        Tcp,
                        81,
                        Table::all(&MODEL)
                            .all_ingress(ZB, false)
                            .all_egress(ZB, false),
                    ),
                ],
            ),
        ],
    );
}

/// "should enforce updated policy" and the reverse of "should stop enforcing policies after
/// they are deleted", for connections that exist across the change: every TCP 81 connection
/// is opened (SYN, SYN-ACK) under the first generation, and the client's ACK is sent under
/// the second. kxdp judges an established flow again at its first packet after a table
/// change (README: NetworkPolicy), so the ACK must get what a new connection would.
#[test]
fn established_flows_rejudged() {
    let allow = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[{}]");
    let deny = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[]");
    let deny_all = policy("x", "deny-all", Sel::All).ingress("[]").egress("[]");
    let mut report = String::new();
    for (name, before, after, expect) in [
        (
            "updated_to_deny",
            vec![allow],
            vec![deny],
            Table::all(&MODEL).peer(ANY, ns("x"), false),
        ),
        (
            "policy_added",
            vec![],
            vec![deny_all.clone()],
            Table::all(&MODEL)
                .peer(ANY, ns("x"), false)
                .peer(ns("x"), ANY, false),
        ),
        ("policy_deleted", vec![deny_all], vec![], Table::all(&MODEL)),
    ] {
        let labels = Labels::default();
        let c1 = step_cluster(&format!("rejudge-{name}-1"), &before, &labels, 1);
        let c2 = step_cluster(&format!("rejudge-{name}-2"), &after, &labels, 2);
        let after_step = step(after, vec![]);
        for f in 0..9 {
            for t in 0..9 {
                if f == t {
                    continue;
                }
                // Only connections the first generation admits.
                let mut flows = [Flows::default(), Flows::default()];
                let Some(ack) = open_then_ack(&c1, &c2, &mut flows, f, t) else {
                    continue;
                };
                let pair = format!("{} -> {}", pod_str(f), pod_str(t));
                let want = expect.get(f, t).expect("every cell expected");
                match (&ack, want) {
                    (Outcome::Delivered { .. }, Expect::Connected) => {}
                    (Outcome::Dropped { .. }, Expect::Denied) => {
                        let explain = |j, d| explain(&after_step, j, d);
                        if let Err(e) = check_denial(&c2, f, t, &ack, want, Some(&explain)) {
                            let _ = writeln!(report, "[{name}] {pair}: ACK denied, but {e}");
                        }
                    }
                    (got, _) => {
                        let _ = writeln!(
                            report,
                            "[{name}] {pair}: the ACK after the change should be {}, got {}",
                            if want == Expect::Connected {
                                "connected"
                            } else {
                                "denied"
                            },
                            got.describe()
                        );
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "{report}");
}

/// Opens TCP 81 from `from` to `to`'s Service under `before` (None if it does not connect
/// or the SYN-ACK does not get back), then sends the client's ACK under `after`.
fn open_then_ack(
    before: &Cluster,
    after: &Cluster,
    flows: &mut [Flows; 2],
    from: usize,
    to: usize,
) -> Option<Outcome> {
    let (client, server) = (&before.model.pods[from], &before.model.pods[to]);
    let vip = service_ip(to);
    let at_server = (Ipv4Addr::from(server.ip), 81);
    let syn = from_pod(before, from, vip, Tcp, 81, Segment::First);
    let in_port = before.pod_port(from);
    let c = deliver(
        before,
        flows,
        client.node,
        in_port,
        &syn,
        Dest::Pod(to),
        at_server,
    );
    if !matches!(c, Outcome::Delivered { .. }) {
        return None;
    }
    let syn_ack = frame(
        Headers::new(
            pod_mac(server.ip),
            gateway_mac(server.node),
            server.ip,
            client.ip,
        ),
        Tcp,
        81,
        CLIENT_PORT,
        Segment::SynAck,
    );
    let at_client = (Ipv4Addr::from(client.ip), CLIENT_PORT);
    let in_port = before.pod_port(to);
    let c = deliver(
        before,
        flows,
        server.node,
        in_port,
        &syn_ack,
        Dest::Pod(from),
        at_client,
    );
    if !matches!(c, Outcome::Delivered { .. }) {
        return None;
    }
    let ack = from_pod(after, from, vip, Tcp, 81, Segment::Ack);
    let in_port = after.pod_port(from);
    Some(deliver(
        after,
        flows,
        client.node,
        in_port,
        &ack,
        Dest::Pod(to),
        at_server,
    ))
}
