//! Upstream's cases (`network_policy.go`), one test each; the module docs map them.

use std::net::Ipv4Addr;

use super::*;

#[test]
fn default_deny_ingress() {
    let deny = policy("x", "deny-ingress", Sel::All).ingress("[]");
    let t = Table::all(&MODEL).peer(ANY, ns("x"), false);
    run_case(
        "default_deny_ingress",
        vec![step(
            vec![deny],
            vec![
                grid(Tcp, 80, t.clone()),
                grid(Udp, 80, t.clone()),
                grid(Sctp, 80, t),
            ],
        )],
    );
    // Node <-> local pod is always allowed: node-a's host-network client reaches x/a (on
    // node-a) through its Service although x is isolated.
    let deny = policy("x", "deny-ingress", Sel::All).ingress("[]");
    let cluster = step_cluster("default_deny_ingress_host", &[deny], &Labels::default(), 1);
    if let Err(e) = host_probe(&cluster, pod_index("x", "a")) {
        panic!("node-a's host to x/a through its Service under default deny: {e}");
    }
}

#[test]
fn default_deny_all() {
    let deny = policy("x", "deny-all", Sel::All).ingress("[]").egress("[]");
    let t = Table::all(&MODEL)
        .peer(ANY, ns("x"), false)
        .peer(ns("x"), ANY, false);
    run_case(
        "default_deny_all",
        vec![step(vec![deny], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn allow_from_same_namespace_pod_selector() {
    let p = policy("x", "x-a-allows-x-b", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {matchLabels: {pod: b}}}]}]");
    let t = Table::all(&MODEL)
        .all_ingress(XA, false)
        .expect(XB, XA, true);
    run_case(
        "allow_from_same_namespace_pod_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn allow_ingress_for_a_target() {
    let deny = policy("x", "deny-all", Sel::All).ingress("[]");
    let allow = policy("x", "allow-all-to-a", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {}, namespaceSelector: {}}]}]");
    let t = Table::all(&MODEL)
        .peer(ANY, ns("x"), false)
        .all_ingress(XA, true);
    run_case(
        "allow_ingress_for_a_target",
        vec![step(vec![deny, allow], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn allow_from_all_namespaces() {
    let p = policy("x", "allow-from-another-ns", Sel::Pod("a"))
        .ingress("[{from: [{namespaceSelector: {matchLabels: {}}}]}]");
    run_case(
        "allow_from_all_namespaces",
        vec![step(vec![p], vec![grid(Tcp, 80, Table::all(&MODEL))])],
    );
}

#[test]
fn allow_from_namespace_selector() {
    let p = policy("x", "allow-client-a-via-ns-selector", Sel::Pod("a"))
        .ingress("[{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]");
    let t =
        Table::all(&MODEL)
            .peer(ns("x"), pod("x", "a"), false)
            .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "allow_from_namespace_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_selector_match_expressions() {
    let p = policy("x", "x-a-allows-x-b", Sel::Pod("a")).ingress(
        "[{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}]",
    );
    let t = Table::all(&MODEL)
        .all_ingress(XA, false)
        .expect(XB, XA, true);
    run_case(
        "pod_selector_match_expressions",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn namespace_selector_match_expressions() {
    let p = policy("x", "allow-ns-y-match-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y]}]}}]}]",
    );
    let t =
        Table::all(&MODEL)
            .peer(ns("x"), pod("x", "a"), false)
            .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "namespace_selector_match_expressions",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_selector_or_namespace_selector() {
    let p = policy("x", "allow-ns-y-match-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}, \
         {podSelector: {matchLabels: {pod: b}}}]}]",
    );
    let t = Table::all(&MODEL)
        .expect(XA, XA, false)
        .expect(XC, XA, false);
    run_case(
        "pod_selector_or_namespace_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_selector_and_namespace_selector() {
    let p = policy("x", "allow-ns-y-podselector-and-nsselector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}, \
         podSelector: {matchLabels: {pod: b}}}]}]",
    );
    let t = Table::all(&MODEL)
        .all_ingress(XA, false)
        .expect(YB, XA, true)
        .expect(ZB, XA, true);
    run_case(
        "pod_selector_and_namespace_selector",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn multiple_pod_selectors_and_namespace_selectors() {
    let p = policy("x", "allow-ns-y-z-pod-b-c", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}, \
         podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]",
    );
    let t = Table::all(&MODEL)
        .peer(ns("x"), pod("x", "a"), false)
        .expect(YA, XA, false)
        .expect(("z", "a"), XA, false);
    run_case(
        "multiple_pod_selectors_and_namespace_selectors",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn any_pod_selectors() {
    let p = policy("x", "allow-ns-x-pod-b-c", Sel::Pod("a")).ingress(
        "[{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]",
    );
    let t = Table::all(&MODEL)
        .all_ingress(XA, false)
        .expect(XB, XA, true)
        .expect(XC, XA, true);
    run_case(
        "any_pod_selectors",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn pod_in_other_namespace_and() {
    let p = policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let t = Table::all(&MODEL)
        .all_ingress(XA, false)
        .expect(YA, XA, true);
    run_case(
        "pod_in_other_namespace_and",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 80, t.clone()),
                grid(Udp, 80, t.clone()),
                grid(Sctp, 80, t),
            ],
        )],
    );
}

/// The same selectors as two items: ORed, so all of y, and pod=a of x itself.
#[test]
fn pod_in_other_namespace_or() {
    let p = policy("x", "allow-ns-y-or-pod-a", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let t = Table::all(&MODEL)
        .all_ingress(XA, false)
        .peer(ns("y"), pod("x", "a"), true)
        .expect(XA, XA, true);
    run_case(
        "pod_in_other_namespace_or",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn ports() {
    let mut grids = Vec::new();
    let mut policies = Vec::new();
    for proto in PROTOS {
        // One case per protocol in upstream; one policy per protocol here, on x/a, x/b, x/c
        // (so the three do not mix): x/a for TCP, x/b for UDP, x/c for SCTP.
        let (target, name) = match proto {
            Tcp => ("a", "allow-port-81-tcp"),
            Udp => ("b", "allow-port-81-udp"),
            Sctp => ("c", "allow-port-81-sctp"),
        };
        policies.push(policy("x", name, Sel::Pod(target)).ingress(&format!(
            "[{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 81, protocol: {}}}]}}]",
            proto.k8s()
        )));
        let allow81 = Table::all(&MODEL)
            .peer(ns("x"), pod("x", target), false)
            .peer(ns("z"), pod("x", target), false);
        let deny80 = Table::all(&MODEL).peer(ANY, pod("x", target), false);
        // The other two targets are isolated for this protocol too (their policy allows
        // only their own protocol).
        let others = |mut t: Table| {
            for o in ["a", "b", "c"] {
                if o != target {
                    t = t.peer(ANY, pod("x", o), false);
                }
            }
            t
        };
        grids.push(grid(proto, 81, others(allow81)));
        grids.push(grid(proto, 80, others(deny80)));
    }
    run_case("ports", vec![step(policies, grids)]);
}

#[test]
fn stacked_policies() {
    let p81 = policy("x", "allow-client-a-via-ns-selector", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81, protocol: TCP}]}]",
    );
    let p80 = policy("x", "allow-client-a-via-ns-selector-80", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80, protocol: TCP}]}]",
    );
    let allow = Table::all(&MODEL)
        .peer(ns("x"), pod("x", "a"), false)
        .peer(ns("y"), pod("x", "a"), true)
        .peer(ns("z"), pod("x", "a"), false);
    let deny = Table::all(&MODEL).all_ingress(XA, false);
    run_case(
        "stacked_policies",
        vec![
            step(
                vec![p81.clone()],
                vec![grid(Tcp, 81, allow.clone()), grid(Tcp, 80, deny)],
            ),
            step(
                vec![p81, p80],
                vec![grid(Tcp, 81, allow.clone()), grid(Tcp, 80, allow)],
            ),
        ],
    );
}

#[test]
fn allow_all() {
    let p = policy("x", "allow-all", Sel::All).ingress("[{}]");
    run_case(
        "allow_all",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 80, Table::all(&MODEL)),
                grid(Tcp, 81, Table::all(&MODEL)),
            ],
        )],
    );
}

#[test]
fn named_port_ingress() {
    let p = policy("x", "allow-all", Sel::All).ingress("[{ports: [{port: serve-81-tcp}]}]");
    run_case(
        "named_port_ingress",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 81, Table::all(&MODEL)),
                grid(Tcp, 80, Table::all(&MODEL).peer(ANY, ns("x"), false)),
                // The name is serve-81-tcp: UDP 81 is not it.
                grid(Udp, 81, Table::all(&MODEL).peer(ANY, ns("x"), false)),
            ],
        )],
    );
}

#[test]
fn named_port_ingress_from_namespace() {
    let p = policy("x", "allow-client-a-via-ns-selector-80", Sel::Pod("a")).ingress(
        "[{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: serve-80-tcp, protocol: TCP}]}]",
    );
    let t80 =
        Table::all(&MODEL)
            .peer(ns("x"), pod("x", "a"), false)
            .peer(ns("z"), pod("x", "a"), false);
    let t81 = Table::all(&MODEL).all_ingress(XA, false);
    run_case(
        "named_port_ingress_from_namespace",
        vec![step(vec![p], vec![grid(Tcp, 80, t80), grid(Tcp, 81, t81)])],
    );
}

#[test]
fn named_port_egress() {
    let p = policy("x", "allow-egress", Sel::All).egress("[{ports: [{port: serve-80-tcp}]}]");
    run_case(
        "named_port_egress",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 80, Table::all(&MODEL)),
                grid(Tcp, 81, Table::all(&MODEL).peer(ns("x"), ANY, false)),
            ],
        )],
    );
}

#[test]
fn updated_policy() {
    let allow = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[{}]");
    let deny = policy("x", "allow-all-mutate-to-deny-all", Sel::All).ingress("[]");
    run_case(
        "updated_policy",
        vec![
            step(vec![allow], vec![grid(Tcp, 81, Table::all(&MODEL))]),
            step(
                vec![deny],
                vec![grid(Tcp, 81, Table::all(&MODEL).peer(ANY, ns("x"), false))],
            ),
        ],
    );
}

#[test]
fn updated_namespace_labels() {
    let p = policy("x", "allow-client-a-via-ns-selector", Sel::Pod("a"))
        .ingress("[{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]");
    run_case(
        "updated_namespace_labels",
        vec![
            step(
                vec![p.clone()],
                vec![grid(Tcp, 80, Table::all(&MODEL).all_ingress(XA, false))],
            ),
            step_labels(
                vec![p],
                Labels {
                    namespaces: vec![("y", "ns2", "updated")],
                    pods: vec![],
                },
                vec![grid(
                    Tcp,
                    80,
                    Table::all(&MODEL)
                        .all_ingress(XA, false)
                        .peer(ns("y"), ANY, true),
                )],
            ),
        ],
    );
}

#[test]
fn updated_pod_labels() {
    let p = policy("x", "allow-client-a-via-pod-selector", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}]");
    run_case(
        "updated_pod_labels",
        vec![
            step(
                vec![p.clone()],
                vec![grid(Tcp, 80, Table::all(&MODEL).all_ingress(XA, false))],
            ),
            step_labels(
                vec![p],
                Labels {
                    namespaces: vec![],
                    pods: vec![("x/b", "pod2", "updated")],
                },
                vec![grid(
                    Tcp,
                    80,
                    Table::all(&MODEL)
                        .all_ingress(XA, false)
                        .expect(XB, XA, true),
                )],
            ),
        ],
    );
}

#[test]
fn deny_ingress_from_other_namespaces() {
    let p = policy("x", "deny-empty-policy", Sel::All)
        .ingress("[{from: [{podSelector: {matchLabels: {}}}]}]");
    let t = Table::all(&MODEL)
        .peer(ns("y"), ns("x"), false)
        .peer(ns("z"), ns("x"), false);
    run_case(
        "deny_ingress_from_other_namespaces",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn deny_ingress_to_updated_pod() {
    let p = policy("x", "deny-ingress-via-label-selector", Sel::TargetIsolated).ingress("[]");
    run_case(
        "deny_ingress_to_updated_pod",
        vec![
            step(vec![p.clone()], vec![grid(Tcp, 80, Table::all(&MODEL))]),
            step_labels(
                vec![p],
                Labels {
                    namespaces: vec![],
                    pods: vec![("x/a", "target", "isolated")],
                },
                vec![grid(Tcp, 80, Table::all(&MODEL).all_ingress(XA, false))],
            ),
        ],
    );
}

#[test]
fn deny_egress_pod_selector() {
    let p = policy("x", "deny-egress-pod-a", Sel::Pod("a")).egress("[]");
    run_case(
        "deny_egress_pod_selector",
        vec![step(
            vec![p],
            vec![grid(Tcp, 80, Table::all(&MODEL).all_egress(XA, false))],
        )],
    );
}

#[test]
fn deny_egress_namespace() {
    let p = policy("x", "deny-egress-ns-x", Sel::All).egress("[]");
    run_case(
        "deny_egress_namespace",
        vec![step(
            vec![p],
            vec![grid(Tcp, 80, Table::all(&MODEL).peer(ns("x"), ANY, false))],
        )],
    );
}

#[test]
fn ingress_and_egress_together() {
    let p = policy("x", "allow-client-a-via-pod-selector", Sel::Pod("a"))
        .ingress("[{from: [{podSelector: {matchLabels: {pod: b}}}]}]")
        .egress("[{ports: [{port: 80}]}]");
    let t80 = Table::all(&MODEL)
        .all_ingress(XA, false)
        .expect(XB, XA, true);
    let t81 = Table::all(&MODEL)
        .all_ingress(XA, false)
        .all_egress(XA, false)
        .expect(XB, XA, true);
    run_case(
        "ingress_and_egress_together",
        vec![step(vec![p], vec![grid(Tcp, 80, t80), grid(Tcp, 81, t81)])],
    );
}

#[test]
fn egress_deny_beats_ingress_allow() {
    let egress = policy("x", "allow-to-ns-y-pod-a", Sel::Pod("a")).egress(
        "[{to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let from_xa = "[{from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]}]";
    let on_ya = policy("y", "allow-from-xa-on-ya-match-selector", Sel::Pod("a")).ingress(from_xa);
    let on_yb = policy("y", "allow-from-xa-on-yb-match-selector", Sel::Pod("b")).ingress(from_xa);
    let t = Table::all(&MODEL)
        .peer(pod("x", "a"), ANY, false)
        .peer(ANY, pod("y", "a"), false)
        .peer(pod("x", "a"), pod("y", "a"), true)
        .peer(ANY, pod("y", "b"), false);
    run_case(
        "egress_deny_beats_ingress_allow",
        vec![step(vec![egress, on_ya, on_yb], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn egress_to_pod_in_other_namespace() {
    let p = policy("x", "allow-to-ns-y-pod-a", Sel::Pod("a")).egress(
        "[{to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]",
    );
    let t = Table::all(&MODEL)
        .all_egress(XA, false)
        .expect(XA, YA, true);
    run_case(
        "egress_to_pod_in_other_namespace",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn protocol_only_port() {
    let p = policy("x", "allow-ingress-by-proto", Sel::Pod("a"))
        .ingress("[{ports: [{protocol: TCP}]}]");
    run_case(
        "protocol_only_port",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 80, Table::all(&MODEL)),
                grid(Tcp, 81, Table::all(&MODEL)),
                grid(Udp, 80, Table::all(&MODEL).all_ingress(XA, false)),
            ],
        )],
    );
}

#[test]
fn ingress_allow_all_takes_precedence() {
    let p80 = policy("x", "allow-ingress-port-80", Sel::All).ingress("[{ports: [{port: 80}]}]");
    let all = policy("x", "allow-ingress", Sel::All).ingress("[{}]");
    run_case(
        "ingress_allow_all_takes_precedence",
        vec![
            step(
                vec![p80.clone()],
                vec![grid(Tcp, 81, Table::all(&MODEL).peer(ANY, ns("x"), false))],
            ),
            step(vec![p80, all], vec![grid(Tcp, 81, Table::all(&MODEL))]),
        ],
    );
}

#[test]
fn egress_allow_all_takes_precedence() {
    let p80 = policy("x", "allow-egress-port-80", Sel::All).egress("[{ports: [{port: 80}]}]");
    let all = policy("x", "allow-egress", Sel::All).egress("[{}]");
    run_case(
        "egress_allow_all_takes_precedence",
        vec![
            step(
                vec![p80.clone()],
                vec![grid(Tcp, 81, Table::all(&MODEL).peer(ns("x"), ANY, false))],
            ),
            step(vec![p80, all], vec![grid(Tcp, 81, Table::all(&MODEL))]),
        ],
    );
}

#[test]
fn deleted_policies() {
    let deny = policy("x", "deny-all", Sel::All).ingress("[]").egress("[]");
    run_case(
        "deleted_policies",
        vec![
            step(
                vec![deny],
                vec![grid(
                    Tcp,
                    80,
                    Table::all(&MODEL)
                        .peer(ns("x"), ANY, false)
                        .peer(ANY, ns("x"), false),
                )],
            ),
            step(vec![], vec![grid(Tcp, 80, Table::all(&MODEL))]),
        ],
    );
}

#[test]
fn egress_cidr() {
    let cidr = format!("{}/32", ip_of(YB));
    let p = policy("x", "allow-client-a-via-cidr-egress-rule", Sel::Pod("a"))
        .egress(&format!("[{{to: [{{ipBlock: {{cidr: {cidr}}}}}]}}]"));
    let t = Table::all(&MODEL)
        .all_egress(XA, false)
        .expect(XA, YB, true);
    run_case("egress_cidr", vec![step(vec![p], vec![grid(Tcp, 80, t)])]);
}

/// Upstream's `makeLargeCIDRForIP`: the /4 around the address.
fn large_cidr(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.0.0.0/4", o[0] & 0xf0)
}

fn cidr_except_policy() -> Policy {
    let b = ip_of(XB);
    policy("x", "allow-client-a-via-cidr-egress-rule", Sel::Pod("a")).egress(&format!(
        "[{{to: [{{ipBlock: {{cidr: {}, except: [{b}/32]}}}}]}}]",
        large_cidr(b)
    ))
}

#[test]
fn egress_cidr_except() {
    let t = Table::all(&MODEL).expect(XA, XB, false);
    run_case(
        "egress_cidr_except",
        vec![step(vec![cidr_except_policy()], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn egress_cidr_overlapping_except() {
    let b = ip_of(XB);
    // The same policy updated to allow x/b alone.
    let updated = policy("x", "allow-client-a-via-cidr-egress-rule", Sel::Pod("a"))
        .egress(&format!("[{{to: [{{ipBlock: {{cidr: {b}/32}}}}]}}]"));
    run_case(
        "egress_cidr_overlapping_except",
        vec![
            step(
                vec![cidr_except_policy()],
                vec![grid(Tcp, 80, Table::all(&MODEL).expect(XA, XB, false))],
            ),
            step(
                vec![updated],
                vec![grid(
                    Tcp,
                    80,
                    Table::all(&MODEL)
                        .all_egress(XA, false)
                        .expect(XA, XB, true),
                )],
            ),
        ],
    );
}

#[test]
fn ingress_and_egress_independent() {
    let egress = policy("x", "allow-egress-for-target", Sel::Pod("a")).egress("[{}]");
    let deny = policy("x", "deny-ingress-via-label-selector", Sel::Pod("a")).ingress("[]");
    run_case(
        "ingress_and_egress_independent",
        vec![
            step(
                vec![egress.clone()],
                vec![grid(Tcp, 80, Table::all(&MODEL))],
            ),
            step(
                vec![egress, deny],
                vec![grid(Tcp, 80, Table::all(&MODEL).all_ingress(XA, false))],
            ),
        ],
    );
}

#[test]
fn sctp_is_not_tcp() {
    let deny = policy("x", "deny-ingress", Sel::All).ingress("[]");
    let sctp = policy("x", "allow-only-sctp-ingress-on-port-81", Sel::Pod("a"))
        .ingress("[{ports: [{port: 81, protocol: SCTP}]}]");
    let isolated = Table::all(&MODEL).peer(ANY, ns("x"), false);
    run_case(
        "sctp_is_not_tcp",
        vec![step(
            vec![deny, sctp],
            vec![
                grid(Tcp, 81, isolated.clone()),
                // Ours: SCTP 81 does reach x/a.
                grid(Sctp, 81, isolated.all_ingress(XA, true)),
            ],
        )],
    );
}

#[test]
fn sctp_policy_isolates_tcp() {
    let p = policy("x", "allow-only-sctp-ingress-on-port-80", Sel::Pod("a"))
        .ingress("[{ports: [{port: 80, protocol: SCTP}]}]");
    run_case(
        "sctp_policy_isolates_tcp",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 81, Table::all(&MODEL).all_ingress(XA, false)),
                grid(Tcp, 80, Table::all(&MODEL).all_ingress(XA, false)),
                grid(Sctp, 80, Table::all(&MODEL)),
                grid(Sctp, 81, Table::all(&MODEL).all_ingress(XA, false)),
            ],
        )],
    );
}

#[test]
fn udp_only_policy() {
    let p = policy("x", "allow-only-udp-ingress-on-port-81", Sel::Pod("a"))
        .ingress("[{ports: [{port: 81, protocol: UDP}]}]");
    run_case(
        "udp_only_policy",
        vec![step(
            vec![p],
            vec![
                grid(Tcp, 81, Table::all(&MODEL).all_ingress(XA, false)),
                grid(Udp, 81, Table::all(&MODEL)),
                grid(Udp, 80, Table::all(&MODEL).all_ingress(XA, false)),
            ],
        )],
    );
}

#[test]
fn default_namespace_label_match_labels() {
    let p = policy(
        "x",
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        Sel::Pod("a"),
    )
    .ingress("[{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]");
    let t =
        Table::all(&MODEL)
            .peer(ns("x"), pod("x", "a"), false)
            .peer(ns("z"), pod("x", "a"), false);
    run_case(
        "default_namespace_label_match_labels",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}

#[test]
fn default_namespace_label_match_expressions() {
    let p = policy(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        Sel::Pod("a"),
    )
    .egress(
        "[{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, \
         operator: NotIn, values: [y]}]}}]}]",
    );
    let t = Table::all(&MODEL).peer(pod("x", "a"), ns("y"), false);
    run_case(
        "default_namespace_label_match_expressions",
        vec![step(vec![p], vec![grid(Tcp, 80, t)])],
    );
}
