//! kube-proxy's iptables mode.

use std::fmt::Write;

use super::names::base32_sha256;
use super::{MASQ_MARK, ServicePlan};

/// Rules in built-in chains that jump to kube-proxy's chains, in the order kube-proxy
/// ensures them (each one prepended, as kube-proxy's `EnsureRule(Prepend)` does).
const JUMPS: &[(&str, &str, &str, &str)] = &[
    // (table, built-in chain, match and comment, target)
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\"",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\"",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "INPUT",
        "-m comment --comment \"kubernetes health check service ports\"",
        "KUBE-NODEPORTS",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\"",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\"",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m comment --comment \"kubernetes forwarding rules\"",
        "KUBE-FORWARD",
    ),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\"",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\"",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\"",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment \"kubernetes service portals\"",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "PREROUTING",
        "-m comment --comment \"kubernetes service portals\"",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment \"kubernetes postrouting rules\"",
        "KUBE-POSTROUTING",
    ),
];

const FILTER_CHAINS: &[&str] = &[
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SERVICES",
];
const NAT_CHAINS: &[&str] = &[
    "KUBE-MARK-MASQ",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-SERVICES",
];

/// `KUBE-SVC-<16>`: base32(sha256(service port name + protocol)).
pub fn service_chain(s: &ServicePlan) -> String {
    let key = format!("{}{}", s.port_name_string(), s.protocol.name());
    format!("KUBE-SVC-{}", &base32_sha256(&key)[..16])
}

/// `KUBE-SEP-<16>`: base32(sha256(service port name + protocol + "ip:port")).
pub fn endpoint_chain(s: &ServicePlan, ep: std::net::SocketAddrV4) -> String {
    let key = format!("{}{}{ep}", s.port_name_string(), s.protocol.name());
    format!("KUBE-SEP-{}", &base32_sha256(&key)[..16])
}

/// kube-proxy's probability text: `%0.10f` of 1/n.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

pub fn rules(cluster_cidr: &str, services: &[ServicePlan]) -> String {
    let mut out = String::new();
    table(
        &mut out,
        "filter",
        FILTER_CHAINS,
        &[],
        &filter_rules(services),
    );
    let (chains, nat) = nat_rules(cluster_cidr, services);
    table(&mut out, "nat", NAT_CHAINS, &chains, &nat);
    out
}

/// One `*table ... COMMIT` block: chain declarations (which, under --noflush, also
/// flush them), the prepended jumps from built-in chains, then the rules.
fn table(out: &mut String, name: &str, fixed: &[&str], extra: &[String], rules: &str) {
    let _ = writeln!(out, "*{name}");
    for c in fixed
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for (t, builtin, spec, target) in JUMPS {
        if *t == name {
            let _ = writeln!(out, "-I {builtin} {spec} -j {target}");
        }
    }
    out.push_str(rules);
    out.push_str("COMMIT\n");
}

fn filter_rules(services: &[ServicePlan]) -> String {
    let mut out = String::new();
    out.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    out.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    // Services without endpoints are rejected in filter KUBE-SERVICES.
    for s in services.iter().filter(|s| s.endpoints.is_empty()) {
        let p = s.protocol.name();
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{} has no endpoints\" -m {p} -p {p} -d {}/32 --dport {} -j REJECT",
            s.port_name_string(),
            s.cluster_ip,
            s.port
        );
    }
    out
}

/// The nat table's per-service chains (to declare) and all its rules.
fn nat_rules(cluster_cidr: &str, services: &[ServicePlan]) -> (Vec<String>, String) {
    let mut chains = Vec::new();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(out, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    out.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    let _ = writeln!(out, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
    for s in services.iter().filter(|s| !s.endpoints.is_empty()) {
        let name = s.port_name_string();
        let p = s.protocol.name();
        let svc = service_chain(s);
        let matches = format!("-m {p} -p {p} -d {}/32 --dport {}", s.cluster_ip, s.port);
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" {matches} -j {svc}"
        );
        // --cluster-cidr set: traffic from outside the pod network is masqueraded.
        let _ = writeln!(
            out,
            "-A {svc} -m comment --comment \"{name} cluster IP\" {matches} ! -s {cluster_cidr} -j KUBE-MARK-MASQ"
        );
        let n = s.endpoints.len();
        for (i, &ep) in s.endpoints.iter().enumerate() {
            let sep = endpoint_chain(s, ep);
            // The last endpoint takes whatever is left: no statistic match (1/1).
            let stat = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {}",
                    probability(n - i)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"{name} -> {ep}\"{stat} -j {sep}"
            );
            let _ = writeln!(
                out,
                "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ",
                ep.ip()
            );
            let _ = writeln!(
                out,
                "-A {sep} -m comment --comment {name} -m {p} -p {p} -j DNAT --to-destination {ep}"
            );
            chains.push(sep);
        }
        chains.push(svc);
    }
    out.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    (chains, out)
}

/// `iptables-restore --noflush` input removing kube-proxy from an `iptables-save`
/// dump: per table, the jumps from built-in chains deleted, then every `KUBE-*`
/// chain flushed (declaring it does that) and deleted. None when there is nothing.
pub fn removal(saved: &str) -> Option<String> {
    let mut out = String::new();
    let mut table: Option<&str> = None;
    let mut chains: Vec<&str> = Vec::new();
    let mut deletes: Vec<String> = Vec::new();
    let mut any = false;
    let mut flush = |out: &mut String,
                     table: Option<&str>,
                     chains: &mut Vec<&str>,
                     deletes: &mut Vec<String>| {
        if let Some(t) = table
            && (!chains.is_empty() || !deletes.is_empty())
        {
            let _ = writeln!(out, "*{t}");
            for c in chains.iter() {
                let _ = writeln!(out, ":{c} - [0:0]");
            }
            for d in deletes.iter() {
                let _ = writeln!(out, "{d}");
            }
            for c in chains.iter() {
                let _ = writeln!(out, "-X {c}");
            }
            out.push_str("COMMIT\n");
            any = true;
        }
        chains.clear();
        deletes.clear();
    };
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            flush(&mut out, table, &mut chains, &mut deletes);
            table = Some(t.trim());
        } else if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next()
                && name.starts_with("KUBE-")
            {
                chains.push(name);
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            if !chain.starts_with("KUBE-") && rule.contains(" -j KUBE-") {
                deletes.push(format!("-D {rule}"));
            }
        }
    }
    flush(&mut out, table, &mut chains, &mut deletes);
    any.then_some(out)
}
