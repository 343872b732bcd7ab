//! Isolation and rules: what isolates a pod in which direction, ipBlocks, ports (named,
//! ranges, protocol-only), and how policies selecting one pod add up.

use super::*;

#[test]
fn no_policy_no_isolation() {
    let c = compile(cluster(&[]));
    assert!(!c.tables.any_isolation());
    assert!(c.ingress("dev/client", "prod/web", TCP, 1));
    assert!(c.warnings.is_empty());
}

#[test]
fn default_deny_ingress() {
    let c = compile(cluster(&[DENY_ALL]));
    for p in ["prod/web", "prod/client", "prod/other"] {
        assert!(!c.ingress("prod/client", p, TCP, 80), "{p}");
        assert!(!c.ingress("192.0.2.1", p, UDP, 53), "{p}");
        assert_eq!(
            c.selecting(p, PolicyDirection::Ingress),
            vec!["prod/deny-all"]
        );
        // Egress is not covered.
        assert!(c.egress(p, "192.0.2.1", TCP, 443));
    }
    // Other namespaces are not selected.
    assert!(c.ingress("prod/client", "dev/web", TCP, 80));
    assert!(c.selecting("dev/web", PolicyDirection::Ingress).is_empty());
}

#[test]
fn ip_block_with_except() {
    let c = compile(cluster(&["
metadata: {namespace: prod, name: cidr}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
  egress:
  - to:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.1.0/24]}
    ports: [{port: 443}]
"]));
    assert!(c.ingress("192.0.2.1", "prod/web", TCP, 80));
    assert!(!c.ingress("192.0.2.200", "prod/web", TCP, 80));
    assert!(!c.ingress("198.51.100.1", "prod/web", TCP, 80));
    // ipBlocks match pod addresses too.
    assert!(c.egress("prod/web", "prod/client", TCP, 443));
    assert!(!c.egress("prod/web", "prod/client", TCP, 80));
    assert!(!c.egress("prod/web", "dev/client", TCP, 443));
}

#[test]
fn named_ports_ingress_resolved_egress_kept() {
    let c = compile(cluster(&[
        "
metadata: {namespace: prod, name: named-in}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}, {port: dns, protocol: UDP}, {port: metrics}]
",
        "
metadata: {namespace: prod, name: named-out}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: http}]
",
    ]));
    // Ingress: resolved against each selected pod's own ports.
    assert!(c.ingress("prod/client", "prod/web", TCP, 8080));
    assert!(c.ingress("prod/client", "prod/web", UDP, 53));
    assert!(!c.ingress("prod/client", "prod/web", UDP, 8080));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 53));
    let web = c.endpoint("prod/web");
    let d = c.tables.endpoints[web].ingress.as_ref().unwrap();
    assert_eq!(d.any_peer.ranges, vec![(TCP, 8080, 8080), (UDP, 53, 53)]);
    assert!(d.any_peer.named.is_empty());
    // prod/other has no such ports: isolated, nothing admitted.
    assert!(!c.ingress("prod/client", "prod/other", TCP, 8080));
    // Egress: kept by name, resolved against whichever pod is the destination.
    let client = c.endpoint("prod/client");
    let e = c.tables.endpoints[client].egress.as_ref().unwrap();
    assert_eq!(e.any_peer.named, vec![(TCP, "http".to_string())]);
    assert!(c.egress("prod/client", "prod/web", TCP, 8080));
    assert!(c.egress("prod/client", "dev/web", TCP, 9090));
    assert!(!c.egress("prod/client", "dev/web", TCP, 8080));
    assert!(!c.egress("prod/client", "192.0.2.1", TCP, 8080));
}

#[test]
fn end_port_range_and_protocol_only() {
    let c = compile(cluster(&["
metadata: {namespace: prod, name: ranges}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports:
    - {port: 32000, endPort: 32768}
    - {protocol: UDP}
"]));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 31999));
    assert!(c.ingress("prod/client", "prod/web", TCP, 32000));
    assert!(c.ingress("prod/client", "prod/web", TCP, 32500));
    assert!(c.ingress("prod/client", "prod/web", TCP, 32768));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 32769));
    assert!(!c.ingress("prod/client", "prod/web", SCTP, 32000));
    // Protocol-only: every UDP port.
    assert!(c.ingress("prod/client", "prod/web", UDP, 1));
    assert!(c.ingress("prod/client", "prod/web", UDP, 65535));
}

#[test]
fn policy_types_defaults() {
    // Egress only by policyTypes: ingress stays open.
    let c = compile(cluster(&["
metadata: {namespace: prod, name: egress-only}
spec:
  podSelector: {}
  policyTypes: [Egress]
"]));
    assert!(c.ingress("dev/client", "prod/web", TCP, 80));
    assert!(!c.egress("prod/web", "dev/client", TCP, 80));
    // policyTypes unset with egress rules: Ingress AND Egress (the API default).
    let c = compile(cluster(&["
metadata: {namespace: prod, name: implied}
spec:
  podSelector: {}
  egress:
  - ports: [{port: 53, protocol: UDP}]
"]));
    assert!(!c.ingress("dev/client", "prod/web", TCP, 80));
    assert!(c.egress("prod/web", "dev/client", UDP, 53));
    assert!(!c.egress("prod/web", "dev/client", TCP, 80));
    // policyTypes unset, egress: [] -> Ingress only (upstream: len(egress) != 0).
    let c = compile(cluster(&["
metadata: {namespace: prod, name: empty-egress}
spec:
  podSelector: {}
  egress: []
"]));
    assert!(!c.ingress("dev/client", "prod/web", TCP, 80));
    assert!(c.egress("prod/web", "dev/client", TCP, 80));
}

#[test]
fn stacked_policies_add_up() {
    let c = compile(cluster(&[
        DENY_ALL,
        ALLOW_CLIENT,
        "
metadata: {namespace: prod, name: allow-other-8443}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]
    ports: [{port: 8443}]
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 1, protocol: SCTP}]
",
    ]));
    assert!(c.ingress("prod/client", "prod/web", TCP, 80));
    assert!(c.ingress("prod/other", "prod/web", TCP, 8443));
    assert!(!c.ingress("prod/other", "prod/web", TCP, 80));
    assert!(!c.ingress("prod/client", "prod/other", TCP, 80));
    assert_eq!(
        c.selecting("prod/web", PolicyDirection::Ingress),
        vec![
            "prod/allow-client",
            "prod/allow-other-8443",
            "prod/deny-all"
        ]
    );
    assert_eq!(
        c.selecting("prod/other", PolicyDirection::Ingress),
        vec!["prod/deny-all"]
    );
}

#[test]
fn empty_rule_allows_all_empty_list_denies_all() {
    let c = compile(cluster(&[
        DENY_ALL,
        "
metadata: {namespace: prod, name: allow-all}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]
",
    ]));
    assert!(c.ingress("192.0.2.1", "prod/web", SCTP, 9));
    assert!(c.ingress("dev/client", "prod/web", TCP, 80));
    assert!(!c.ingress("dev/client", "prod/client", TCP, 80));
    let c = compile(cluster(&["
metadata: {namespace: prod, name: none}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: []
"]));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
    assert!(c.ingress("prod/client", "prod/other", TCP, 80));
}

#[test]
fn udp_or_sctp_only_policies_still_isolate_tcp() {
    let c = compile(cluster(&["
metadata: {namespace: prod, name: udp-sctp}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 53, protocol: UDP}, {port: 9999, protocol: SCTP}]
"]));
    assert!(c.ingress("prod/client", "prod/web", UDP, 53));
    assert!(c.ingress("prod/client", "prod/web", SCTP, 9999));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 53));
    assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
}

#[test]
fn malformed_rules_are_skipped_naming_the_field() {
    let c = compile(cluster(&["
metadata: {namespace: prod, name: bad}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress, Sideways]
  ingress:
  - ports: [{port: 80, protocol: ICMP}]
  - ports: [{port: 90, endPort: 89}]
  - ports: [{port: http, endPort: 90}]
  - ports: [{endPort: 90}]
  - ports: [{port: 0}]
  - from: [{ipBlock: {cidr: 192.0.2.0/24}, podSelector: {}}]
  - from: [{}]
  - from: [{podSelector: {matchLabels: {app: client}}}]
  egress:
  - to: [{ipBlock: {cidr: 192.0.2.0/33}}]
  - to: [{ipBlock: {cidr: 192.0.2.0/24, except: [nope]}}]
  - to: [{namespaceSelector: {matchExpressions: [{key: team, operator: Exists, values: [a]}]}}]
"]));
    let w: Vec<&str> = c.warnings.iter().map(String::as_str).collect();
    let at = "NetworkPolicy prod/bad: spec.";
    assert_eq!(w.len(), 11, "{w:#?}");
    assert_eq!(
        w[0],
        format!("{at}policyTypes[2]: \"Sideways\" is not Ingress or Egress: ignored")
    );
    let rule_skipped = [
        "ingress[0].ports[0].protocol: \"ICMP\" is not a protocol",
        "ingress[1].ports[0].endPort: 89 is below port 90: rule skipped",
        "ingress[2].ports[0].endPort: needs a numeric port: rule skipped",
        "ingress[3].ports[0].endPort: needs a numeric port: rule skipped",
        "ingress[4].ports[0].port: 0 is not a port number",
        "ingress[5].from[0]: ipBlock cannot be combined with podSelector or namespaceSelector: \
         rule skipped",
        "ingress[6].from[0]: needs podSelector, namespaceSelector or ipBlock: rule skipped",
        "egress[0].to[0]: ipBlock.cidr: ",
        "egress[1].to[0]: ipBlock.except[0]: ",
        "egress[2].to[0]: namespaceSelector: matchExpressions[0]: operator Exists takes no \
         values: rule skipped",
    ];
    for (got, want) in w[1..].iter().zip(rule_skipped) {
        assert!(
            got.starts_with(&format!("{at}{want}")),
            "{got}\n  vs {want}"
        );
        assert!(got.ends_with(": rule skipped"), "{got}");
    }
    // Only the one good rule is left: prod/client may reach web, no one else.
    assert!(c.ingress("prod/client", "prod/web", TCP, 80));
    assert!(!c.ingress("prod/other", "prod/web", TCP, 80));
    // Every egress rule was skipped: egress is isolated with nothing admitted.
    assert!(!c.egress("prod/web", "192.0.2.1", TCP, 80));
}
