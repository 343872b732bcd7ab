//! kube-proxy's nftables mode.

use std::fmt::Write;

use super::names::base32_sha256;
use super::{MASQ_MARK, NFT_TABLE, ServicePlan};

/// kube-proxy's `hashAndTruncate`: the first 8 base32 characters of the name's
/// SHA-256, a dash, the name (never long enough here to need truncating).
fn hash_and_name(name: &str) -> String {
    format!("{}-{name}", &base32_sha256(name)[..8])
}

fn service_base(s: &ServicePlan) -> String {
    format!(
        "{}/{}/{}/{}",
        s.namespace,
        s.name,
        s.protocol.name(),
        s.port_name
    )
}

/// `service-<hash>-ns/name/proto/port`.
pub fn service_chain(s: &ServicePlan) -> String {
    format!("service-{}", hash_and_name(&service_base(s)))
}

/// `endpoint-<hash>-ns/name/proto/port__ip/port`.
pub fn endpoint_chain(s: &ServicePlan, ep: std::net::SocketAddrV4) -> String {
    let base = format!("{}__{}/{}", service_base(s), ep.ip(), ep.port());
    format!("endpoint-{}", hash_and_name(&base))
}

pub fn rules(cluster_cidr: &str, services: &[ServicePlan]) -> String {
    let t = format!("ip {NFT_TABLE}");
    let mut o = String::new();
    let _ = writeln!(o, "add table {t} {{ comment \"rules for kube-proxy\" ; }}");
    // Base chains: filtering before DNAT (dstnat - 10), then NAT. Numbers, not the
    // names: this nft accepts "dstnat" for prerouting only, and the kernel keeps the
    // numbers either way (dstnat = -100, srcnat = 100).
    for (name, kind, hook, prio) in [
        ("filter-prerouting", "filter", "prerouting", "-110"),
        ("filter-input", "filter", "input", "-110"),
        ("filter-forward", "filter", "forward", "-110"),
        ("filter-output", "filter", "output", "-110"),
        ("filter-output-post-dnat", "filter", "output", "-90"),
        ("nat-prerouting", "nat", "prerouting", "-100"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "100"),
    ] {
        let _ = writeln!(
            o,
            "add chain {t} {name} {{ type {kind} hook {hook} priority {prio} ; }}"
        );
    }
    for chain in [
        "service-endpoints-check",
        "firewall-check",
        "cluster-ips-check",
        "services",
        "masquerading",
        "mark-for-masquerade",
    ] {
        let _ = writeln!(o, "add chain {t} {chain}");
    }
    let _ = writeln!(
        o,
        "add chain {t} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    );
    for (src, extra, dst) in [
        ("filter-input", "ct state new ", "service-endpoints-check"),
        ("filter-forward", "ct state new ", "service-endpoints-check"),
        ("filter-output", "ct state new ", "service-endpoints-check"),
        ("filter-prerouting", "ct state new ", "firewall-check"),
        ("filter-output", "ct state new ", "firewall-check"),
        ("filter-forward", "ct state new ", "cluster-ips-check"),
        (
            "filter-output-post-dnat",
            "ct state new ",
            "cluster-ips-check",
        ),
        ("nat-output", "", "services"),
        ("nat-prerouting", "", "services"),
        ("nat-postrouting", "", "masquerading"),
    ] {
        let _ = writeln!(o, "add rule {t} {src} {extra}jump {dst}");
    }
    let _ = writeln!(
        o,
        "add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}"
    );
    let _ = writeln!(
        o,
        "add rule {t} masquerading mark and {MASQ_MARK} == 0 return"
    );
    let _ = writeln!(o, "add rule {t} masquerading mark set mark xor {MASQ_MARK}");
    let _ = writeln!(o, "add rule {t} masquerading masquerade fully-random");
    let _ = writeln!(o, "add rule {t} reject-chain reject");

    let vmap = "ipv4_addr . inet_proto . inet_service : verdict";
    for (name, comment) in [
        (
            "no-endpoint-services",
            "vmap to drop or reject packets to services with no endpoints",
        ),
        (
            "firewall-ips",
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
        (
            "service-ips",
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
    ] {
        let _ = writeln!(
            o,
            "add map {t} {name} {{ type {vmap} ; comment \"{comment}\" ; }}"
        );
    }
    for (name, comment) in [
        (
            "no-endpoint-nodeports",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        ("service-nodeports", "NodePort traffic"),
    ] {
        let _ = writeln!(
            o,
            "add map {t} {name} {{ type inet_proto . inet_service : verdict ; comment \"{comment}\" ; }}"
        );
    }
    let _ = writeln!(
        o,
        "add set {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    let _ = writeln!(
        o,
        "add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services"
    );
    let _ = writeln!(
        o,
        "add rule {t} service-endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports"
    );
    let _ = writeln!(
        o,
        "add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips"
    );
    let _ = writeln!(
        o,
        "add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
    );
    let _ = writeln!(
        o,
        "add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips"
    );
    let _ = writeln!(
        o,
        "add rule {t} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"
    );

    for s in services {
        let p = s.protocol.name();
        let _ = writeln!(o, "add element {t} cluster-ips {{ {} }}", s.cluster_ip);
        if s.endpoints.is_empty() {
            let _ = writeln!(
                o,
                "add element {t} no-endpoint-services {{ {} . {p} . {} comment \"{}\" : goto reject-chain }}",
                s.cluster_ip,
                s.port,
                s.port_name_string()
            );
            continue;
        }
        // Every chain exists before a rule or element names it (kube-proxy, too,
        // ensures the endpoint chains first).
        let svc = service_chain(s);
        let _ = writeln!(o, "add chain {t} {svc}");
        for &ep in &s.endpoints {
            let _ = writeln!(o, "add chain {t} {}", endpoint_chain(s, ep));
        }
        let _ = writeln!(
            o,
            "add rule {t} {svc} ip daddr {} {p} dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade",
            s.cluster_ip, s.port
        );
        let arms: Vec<String> = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, &ep)| format!("{i} : goto {}", endpoint_chain(s, ep)))
            .collect();
        let _ = writeln!(
            o,
            "add rule {t} {svc} numgen random mod {} vmap {{ {} }}",
            s.endpoints.len(),
            arms.join(" , ")
        );
        for &ep in &s.endpoints {
            let chain = endpoint_chain(s, ep);
            let _ = writeln!(
                o,
                "add rule {t} {chain} ip saddr {} jump mark-for-masquerade",
                ep.ip()
            );
            let _ = writeln!(o, "add rule {t} {chain} meta l4proto {p} dnat to {ep}");
        }
        let _ = writeln!(
            o,
            "add element {t} service-ips {{ {} . {p} . {} : goto {svc} }}",
            s.cluster_ip, s.port
        );
    }
    o
}
