//! Selector semantics: own-namespace pod selectors, namespace selectors, AND within a peer
//! item and OR across items, matchExpressions operators, and unusable selectors.

use super::*;

#[test]
fn allow_from_same_namespace_pod_selector() {
    let c = compile(cluster(&[ALLOW_CLIENT]));
    assert!(c.ingress("prod/client", "prod/web", TCP, 80));
    assert!(c.ingress("prod/client", "prod/web", UDP, 5000));
    // Same labels in another namespace: a bare podSelector is the policy's namespace.
    assert!(!c.ingress("dev/client", "prod/web", TCP, 80));
    assert!(!c.ingress("prod/other", "prod/web", TCP, 80));
    assert!(!c.ingress("192.0.2.1", "prod/web", TCP, 80));
    // Pods the policy does not select stay open.
    assert!(c.ingress("dev/client", "prod/other", TCP, 80));
}

#[test]
fn namespace_selector() {
    let c = compile(cluster(&[
        "
metadata: {namespace: prod, name: from-dev}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: b}}
",
        "
metadata: {namespace: dev, name: from-prod-by-name}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: prod}}
",
    ]));
    assert!(c.ingress("dev/client", "prod/web", TCP, 80));
    assert!(c.ingress("dev/web", "prod/web", TCP, 80));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
    // The implied metadata.name label selects the namespace.
    assert!(c.ingress("prod/client", "dev/web", TCP, 80));
    assert!(!c.ingress("dev/client", "dev/web", TCP, 80));
}

#[test]
fn and_vs_or_peers() {
    // One item: pods labelled client IN namespaces of team b.
    let and = compile(cluster(&["
metadata: {namespace: prod, name: and}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: b}}
      podSelector: {matchLabels: {app: client}}
"]));
    assert!(and.ingress("dev/client", "prod/web", TCP, 80));
    assert!(!and.ingress("dev/web", "prod/web", TCP, 80));
    assert!(!and.ingress("prod/client", "prod/web", TCP, 80));
    // Two items: any pod in team b namespaces, OR client pods of prod.
    let or = compile(cluster(&["
metadata: {namespace: prod, name: or}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: b}}
    - podSelector: {matchLabels: {app: client}}
"]));
    assert!(or.ingress("dev/client", "prod/web", TCP, 80));
    assert!(or.ingress("dev/web", "prod/web", TCP, 80));
    assert!(or.ingress("prod/client", "prod/web", TCP, 80));
    assert!(!or.ingress("prod/other", "prod/web", TCP, 80));
}

#[test]
fn match_expressions_operators() {
    let mut cl = cluster(&[]);
    cl.pods.push(pod(
        "prod/canary",
        &[("app", "client"), ("track", "canary")],
        "10.0.0.5",
        "b",
        &[],
    ));
    let rule = |expr: &str| {
        format!(
            "
metadata: {{namespace: prod, name: expr}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{expr}]
"
        )
    };
    let check = |expr: &str, expect: &[(&str, bool)]| {
        let c = compile(cluster_with(&cl, &[&rule(expr)]));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        for (from, ok) in expect {
            assert_eq!(c.ingress(from, "prod/web", TCP, 80), *ok, "{expr}: {from}");
        }
    };
    check(
        "{key: app, operator: In, values: [client, other]}",
        &[
            ("prod/client", true),
            ("prod/other", true),
            ("prod/web", false),
        ],
    );
    // NotIn matches pods lacking the key, too.
    check(
        "{key: track, operator: NotIn, values: [canary]}",
        &[("prod/client", true), ("prod/canary", false)],
    );
    check(
        "{key: track, operator: Exists}",
        &[("prod/client", false), ("prod/canary", true)],
    );
    check(
        "{key: track, operator: DoesNotExist}",
        &[("prod/client", true), ("prod/canary", false)],
    );
    // ANDed with matchLabels.
    let c = compile(cluster_with(
        &cl,
        &["
metadata: {namespace: prod, name: both}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: client}
        matchExpressions: [{key: track, operator: Exists}]
"],
    ));
    assert!(c.ingress("prod/canary", "prod/web", TCP, 80));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
}

#[test]
fn unknown_operator_skips_the_rule_with_a_warning() {
    let c = compile(cluster(&["
metadata: {namespace: prod, name: bad}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: app, operator: Near, values: [client]}]
  - from:
    - podSelector: {matchLabels: {app: other}}
"]));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("NetworkPolicy prod/bad: spec.ingress[0].from[0]: podSelector: matchExpressions[0]: unknown operator \"Near\""), "{}", c.warnings[0]);
    // The pod is still isolated; the good rule still applies.
    assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
    assert!(c.ingress("prod/other", "prod/web", TCP, 80));

    // A bad podSelector of the policy itself: it selects nothing.
    let c = compile(cluster(&["
metadata: {namespace: prod, name: bad}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In}]}
  ingress: []
"]));
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("spec.podSelector"),
        "{}",
        c.warnings[0]
    );
    assert!(!c.tables.any_isolation());
}
