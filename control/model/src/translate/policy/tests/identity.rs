//! Identities: per (namespace, labels), numbered independently of input order, shared by
//! replicas; selectors interned by content.

use super::*;

#[test]
fn identities_are_per_label_set_and_deterministic() {
    let mut cl = cluster(&[]);
    // A replica of prod/client shares its identity.
    cl.pods.push(pod(
        "prod/client2",
        &[("app", "client")],
        "10.0.0.4",
        "b",
        &[],
    ));
    let c = compile(cl.clone());
    let t = &c.tables;
    let id = |ip: &str| t.identity(parse_ip_key(ip).unwrap());
    assert_eq!(id("10.0.0.2"), id("10.0.0.4"));
    // dev/client and prod/client differ by namespace only.
    assert_ne!(id("10.0.0.2"), id("10.0.1.2"));
    // Sorted by (namespace, labels): dev/client, dev/web, prod/client, prod/other, prod/web.
    let got: Vec<u32> = ["10.0.1.2", "10.0.1.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"]
        .iter()
        .map(|ip| id(ip).0)
        .collect();
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    assert_eq!(id("192.0.2.1"), IdentityId::WORLD);
    assert_eq!(
        t.named_ports_by_ip[&parse_ip_key("10.0.0.1").unwrap()],
        vec![
            ("dns".to_string(), UDP, 53),
            ("http".to_string(), TCP, 8080)
        ]
    );

    // Input order does not matter.
    let mut shuffled = cl.clone();
    shuffled.pods.reverse();
    shuffled.namespaces.reverse();
    let a = compile(cluster_with(&cl, &[DENY_ALL, ALLOW_CLIENT]));
    let b = compile(cluster_with(&shuffled, &[ALLOW_CLIENT, DENY_ALL]));
    assert_eq!(canonical_dump(&a.tables), canonical_dump(&b.tables));
}

#[test]
fn replicas_and_selectors_are_shared() {
    let c = compile(cluster(&[
        ALLOW_CLIENT,
        "
metadata: {namespace: prod, name: same-selector}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
",
    ]));
    // matchLabels {app: web} and `app In (web)` are one selector; so are the peers.
    assert_eq!(c.compiler.selectors.keys.len(), 2);
}
