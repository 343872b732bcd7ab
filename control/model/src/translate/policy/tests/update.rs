//! Incremental updates give the answers a full compile gives.

use super::*;

/// Every (local pod, direction, peer, port) answer of two tables.
fn matrix(c: &Compiled, tables: &PolicyTables) -> Vec<bool> {
    let peers = [
        "prod/web",
        "prod/client",
        "prod/other",
        "dev/client",
        "dev/web",
        "192.0.2.1",
    ];
    let mut out = Vec::new();
    for (i, l) in c.local.iter().enumerate() {
        for peer in peers {
            for (proto, port) in [(TCP, 80), (TCP, 8080), (TCP, 9090), (UDP, 53)] {
                for dir in [PolicyDirection::Ingress, PolicyDirection::Egress] {
                    let (peer, dst) = match dir {
                        PolicyDirection::Ingress => (c.addr(peer), l.ips[0]),
                        PolicyDirection::Egress => (c.addr(peer), c.addr(peer)),
                    };
                    let q = PolicyQuery {
                        peer,
                        dst,
                        proto,
                        dst_port: port,
                    };
                    out.push(tables.allows(i, dir, &q));
                }
            }
        }
    }
    out
}

const LABEL_POLICIES: [&str; 3] = [
        ALLOW_CLIENT,
        "
metadata: {namespace: dev, name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: admin}}}]
    ports: [{port: http}]
  egress:
  - to: [{podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [client]}]}, namespaceSelector: {}}]
",
        "
metadata: {namespace: prod, name: other}
spec:
  podSelector: {matchLabels: {app: other}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
",
    ];

/// Applies `pod`'s new labels incrementally and checks the answers equal a full compile.
fn check_update(who: &str, labels: &[(&str, &str)], expect_new: bool) {
    let mut c = compile(cluster(&LABEL_POLICIES));
    let mut changed = c.cluster.clone();
    let p = changed
        .pods
        .iter_mut()
        .find(|p| format!("{}/{}", namespace_of(&p.metadata), name_of(&p.metadata)) == who)
        .unwrap();
    p.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let pod = p.clone();
    let mut tables = c.tables.clone();
    let up = c.compiler.update_pod(&pod, &mut tables).unwrap();
    assert_eq!(up.new_identity, expect_new);
    let full = compile(changed);
    assert_eq!(
        matrix(&full, &tables),
        matrix(&full, &full.tables),
        "{who} -> {labels:?}"
    );
    // And the compiler's state keeps working for a second update back.
    let orig = c
        .cluster
        .pods
        .iter()
        .find(|p| format!("{}/{}", namespace_of(&p.metadata), name_of(&p.metadata)) == who)
        .unwrap()
        .clone();
    c.compiler.update_pod(&orig, &mut tables).unwrap();
    assert_eq!(matrix(&c, &tables), matrix(&c, &c.tables), "{who} back");
}

#[test]
fn incremental_label_change_equals_full_compile() {
    // A remote pod becoming an admin (new identity, joins the dev/web peer set).
    check_update("dev/client", &[("app", "client"), ("role", "admin")], true);
    // A remote pod moving to an existing identity... (prod/client -> other: exists).
    check_update("prod/client", &[("app", "other")], false);
    // A local selected pod changing labels (its own endpoint is rebuilt).
    check_update("prod/web", &[("app", "client")], false);
    check_update("dev/web", &[("app", "web"), ("role", "admin")], true);
    check_update("prod/other", &[], true);
}

#[test]
fn update_of_unknown_pod_needs_full_compile() {
    let mut c = compile(cluster(&[]));
    let p = pod("prod/new", &[], "10.0.0.9", "a", &[]);
    let err = c.compiler.update_pod(&p, &mut c.tables).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Pod prod/new: not known to the last compile: a full compile is needed"
    );
}
