//! The kernel baseline kxdp is compared against: kube-proxy's rules and Flannel's VXLAN,
//! configured into a node's network namespace.
//!
//! Paths (c) and (d) of `kxdp-bench` switch node A from kxdp to the kernel within one run,
//! so everything here can be applied and removed again, leaving the namespace as it was.
//!
//! * kube-proxy, iptables mode: the chains a current kube-proxy writes for ClusterIP
//!   Services (`KUBE-SERVICES` -> `KUBE-SVC-*` with `statistic` spreading -> `KUBE-SEP-*`
//!   doing DNAT, `KUBE-MARK-MASQ`, `KUBE-POSTROUTING`, filter `KUBE-FORWARD` and friends),
//!   loaded with `iptables-restore --noflush` as kube-proxy does.
//! * kube-proxy, nftables mode: the `ip kube-proxy` table (base chains at kube-proxy's
//!   priorities, the `service-ips` verdict map, per-service chains with `numgen random mod
//!   N vmap` to per-endpoint chains doing DNAT), loaded with `nft -f -` as one transaction.
//! * Flannel, vxlan backend: `flannel.1` (VNI, port, local underlay IP, no learning, MTU
//!   underlay - 50, the node's VTEP MAC, the PodCIDR's network address as a /32), per remote
//!   node a route via its network address `onlink`, a permanent neighbour and an FDB entry;
//!   the `cni0` bridge (what Flannel's bridge CNI delegate makes) holding the gateway.
//!
//! Chain names are computed the way kube-proxy computes them (SHA-256 of the name, RFC 4648
//! base32, truncated), so `iptables-save` here reads like a real node's.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use lab::LabError;
use lab::cmd::{in_netns, run, run_with_stdin as run_with_input};

/// Which of kube-proxy's backends to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Iptables,
    Nftables,
}

/// A Service port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Udp,
    Tcp,
}

impl L4 {
    /// The lower-case name kube-proxy uses in chain names, hashes and matches.
    pub fn name(self) -> &'static str {
        match self {
            L4::Udp => "udp",
            L4::Tcp => "tcp",
        }
    }
}

/// One port of a ClusterIP Service and its ready endpoints (kube-proxy's "service port").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub namespace: String,
    pub name: String,
    /// The Service port's name; may be empty (a single unnamed port).
    pub port_name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: L4,
    pub endpoints: Vec<SocketAddrV4>,
}

impl ServicePlan {
    /// kube-proxy's `ServicePortName.String()`: `ns/name` or `ns/name:port`.
    fn port_name_string(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// The mark kube-proxy uses for "masquerade this" (`--iptables-masquerade-bit` 14).
const MASQ_MARK: &str = "0x4000";
/// kube-proxy's nftables table: `ip kube-proxy`.
pub const NFT_TABLE: &str = "kube-proxy";
/// Flannel's VXLAN device and the bridge its CNI delegate makes.
pub const FLANNEL_DEV: &str = "flannel.1";
pub const CNI_BRIDGE: &str = "cni0";
/// VXLAN over IPv4 costs 50 bytes of the underlay MTU (outer Ethernet is not counted).
const VXLAN_OVERHEAD: u32 = 50;

/// The rules text for `mode`: `iptables-restore --noflush` input or `nft -f` input.
/// `cluster_cidr` (kube-proxy's `--cluster-cidr`) is used as written, e.g. "10.244.0.0/16".
pub fn kube_proxy_rules(mode: ProxyMode, cluster_cidr: &str, services: &[ServicePlan]) -> String {
    match mode {
        ProxyMode::Iptables => iptables::rules(cluster_cidr, services),
        ProxyMode::Nftables => nftables::rules(cluster_cidr, services),
    }
}

/// Installs kube-proxy's rules for `services` in namespace `netns`, replacing any that an
/// earlier call installed (in either mode) and touching nothing else there.
pub fn apply_kube_proxy(
    netns: &str,
    mode: ProxyMode,
    cluster_cidr: &str,
    services: &[ServicePlan],
) -> Result<(), LabError> {
    check_cidr(cluster_cidr)?;
    check_services(services)?;
    remove_kube_proxy(netns, ProxyMode::Iptables)?;
    remove_kube_proxy(netns, ProxyMode::Nftables)?;
    let rules = kube_proxy_rules(mode, cluster_cidr, services);
    match mode {
        ProxyMode::Iptables => {
            run_with_input(in_netns(netns, "iptables-restore").arg("--noflush"), &rules)?
        }
        ProxyMode::Nftables => run_with_input(in_netns(netns, "nft").args(["-f", "-"]), &rules)?,
    };
    Ok(())
}

/// Removes every kube-proxy chain (iptables: the `KUBE-*` chains of every table and the
/// rules jumping to them; nftables: the `ip kube-proxy` table). Safe to repeat.
///
/// iptables-nft keeps the `ip filter` / `ip nat` tables it created, their built-in chains
/// still hooked into every packet's path even when empty; when removing kube-proxy leaves
/// one of them with no rule, no other chain and accepting policies, it is deleted too, so
/// the nftables-mode measurement that follows does not pay for them.
pub fn remove_kube_proxy(netns: &str, mode: ProxyMode) -> Result<(), LabError> {
    match mode {
        ProxyMode::Iptables => {
            let saved = run(&mut in_netns(netns, "iptables-save"))?;
            if let Some(input) = iptables::removal(&saved) {
                run_with_input(in_netns(netns, "iptables-restore").arg("--noflush"), &input)?;
                for table in ["filter", "nat"] {
                    delete_if_empty(netns, table)?;
                }
            }
        }
        ProxyMode::Nftables => {
            if nft_table_exists(netns, NFT_TABLE)? {
                run(in_netns(netns, "nft").args(["delete", "table", "ip", NFT_TABLE]))?;
            }
        }
    }
    Ok(())
}

/// Which backend the `iptables` binary drives: "nf_tables" or "legacy" (from `iptables
/// --version`, e.g. "iptables v1.8.9 (nf_tables)").
pub fn iptables_backend() -> Result<String, LabError> {
    let version = run(Command::new("iptables").arg("--version"))?;
    version
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(backend, _)| backend.to_string())
        .ok_or_else(|| LabError::Setup(format!("iptables --version said {version:?}")))
}

fn nft_table_exists(netns: &str, table: &str) -> Result<bool, LabError> {
    let tables = run(in_netns(netns, "nft").args(["list", "tables", "ip"]))?;
    let wanted = format!("table ip {table}");
    Ok(tables.lines().any(|l| l.trim() == wanted))
}

/// Deletes `ip <table>` when `nft list table` shows nothing but built-in chains with
/// accepting policies.
fn delete_if_empty(netns: &str, table: &str) -> Result<(), LabError> {
    if !nft_table_exists(netns, table)? {
        return Ok(());
    }
    let listing = run(in_netns(netns, "nft").args(["list", "table", "ip", table]))?;
    if table_is_empty(&listing) {
        run(in_netns(netns, "nft").args(["delete", "table", "ip", table]))?;
    }
    Ok(())
}

/// Whether an `nft list table` listing holds only chain headers and built-in chains'
/// `type ... policy accept;` lines.
fn table_is_empty(listing: &str) -> bool {
    listing.lines().map(str::trim).all(|l| {
        l.is_empty()
            || l.starts_with('#')
            || l == "}"
            || (l.starts_with("table ") && l.ends_with('{'))
            || (l.starts_with("chain ") && l.ends_with('{'))
            || (l.starts_with("type ") && l.ends_with("policy accept;"))
    })
}

/// Why `mode` cannot be measured on this machine (its tool is missing), or None.
pub fn unavailable(mode: ProxyMode) -> Option<String> {
    let tool = match mode {
        ProxyMode::Iptables => "iptables-restore",
        ProxyMode::Nftables => "nft",
    };
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("{tool} --version: {}", out.status)),
        Err(e) => Some(format!("{tool}: {e}")),
    }
}

/// `a.b.c.d/len` with len <= 32, or a clear error.
fn check_cidr(cidr: &str) -> Result<(), LabError> {
    let bad = || LabError::Setup(format!("cluster CIDR {cidr:?} is not an IPv4 a.b.c.d/len"));
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    addr.parse::<Ipv4Addr>().map_err(|_| bad())?;
    match len.parse::<u8>() {
        Ok(l) if l <= 32 => Ok(()),
        _ => Err(bad()),
    }
}

/// Names kube-proxy would accept (they go into chain names and comments unquoted).
fn check_services(services: &[ServicePlan]) -> Result<(), LabError> {
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    for s in services {
        if !dns_label(&s.namespace)
            || !dns_label(&s.name)
            || !(s.port_name.is_empty() || dns_label(&s.port_name))
        {
            return Err(LabError::Setup(format!(
                "service {}/{} port {:?}: names must be DNS labels",
                s.namespace, s.name, s.port_name
            )));
        }
    }
    Ok(())
}

/// The network address of `addr/len`, or an error for a length over 32.
fn network_address(addr: Ipv4Addr, len: u8) -> Result<Ipv4Addr, LabError> {
    if len > 32 {
        return Err(LabError::Setup(format!("prefix length {len} is over 32")));
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ok(Ipv4Addr::from(u32::from(addr) & mask))
}

mod flannel;
mod iptables;
mod names;
mod nftables;

pub use flannel::{
    FlannelNode, FlannelPeer, apply_flannel, enslave_pod_veth, release_pod_veth, remove_flannel,
};
pub use names::chain_names;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(protocol: L4, port: u16, endpoints: &[&str]) -> ServicePlan {
        ServicePlan {
            namespace: "demo".into(),
            name: "web".into(),
            port_name: protocol.name().into(),
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            port,
            protocol,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn two_backends() -> ServicePlan {
        plan(L4::Udp, 5353, &["10.244.2.2:8081", "10.244.2.3:8081"])
    }

    #[test]
    fn chain_names_are_the_ones_real_clusters_show() {
        // Well-known names from any cluster: default/kubernetes:https and kube-dns.
        let mut s = plan(L4::Tcp, 443, &[]);
        s.namespace = "default".into();
        s.name = "kubernetes".into();
        s.port_name = "https".into();
        assert_eq!(
            chain_names::iptables_service(&s),
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        );
        s.namespace = "kube-system".into();
        s.name = "kube-dns".into();
        s.port_name = "dns".into();
        s.protocol = L4::Udp;
        assert_eq!(
            chain_names::iptables_service(&s),
            "KUBE-SVC-TCOU7JCQXEZGVUNU"
        );
        // kube-proxy's nftables unit tests' ns1/svc1 port p80.
        let mut n = plan(L4::Tcp, 80, &[]);
        n.namespace = "ns1".into();
        n.name = "svc1".into();
        n.port_name = "p80".into();
        assert_eq!(
            chain_names::nft_service(&n),
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            chain_names::nft_endpoint(&n, "10.180.0.1:80".parse().unwrap()),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
    }

    #[test]
    fn iptables_rules_spread_then_dnat() {
        let s = two_backends();
        let text = kube_proxy_rules(
            ProxyMode::Iptables,
            "10.244.0.0/16",
            std::slice::from_ref(&s),
        );
        let svc = chain_names::iptables_service(&s);
        let sep: Vec<String> = s
            .endpoints
            .iter()
            .map(|&e| chain_names::iptables_endpoint(&s, e))
            .collect();
        assert_ne!(sep[0], sep[1]);
        let lines: Vec<&str> = text.lines().collect();
        // Both tables, each committed.
        assert_eq!(lines.iter().filter(|l| **l == "COMMIT").count(), 2);
        for c in [&svc, &sep[0], &sep[1]] {
            assert!(lines.contains(&format!(":{c} - [0:0]").as_str()), "{c}");
        }
        for jump in [
            "-I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-I OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-I FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
        ] {
            assert!(lines.contains(&jump), "{jump}");
        }
        let dispatch = format!(
            "-A KUBE-SERVICES -m comment --comment \"demo/web:udp cluster IP\" -m udp -p udp -d 10.96.0.10/32 --dport 5353 -j {svc}"
        );
        assert!(lines.contains(&dispatch.as_str()));
        // The svc chain: masquerade off-cluster sources, then 1/2, then the rest (1/1).
        let svc_rules: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!("-A {svc} ")))
            .collect();
        assert_eq!(svc_rules.len(), 3);
        assert!(svc_rules[0].ends_with("! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"));
        assert!(svc_rules[1].contains("-m statistic --mode random --probability 0.5000000000"));
        assert!(svc_rules[1].ends_with(&format!("-j {}", sep[0])));
        assert!(!svc_rules[2].contains("statistic"));
        assert!(svc_rules[2].ends_with(&format!("-j {}", sep[1])));
        for (chain, ep) in sep.iter().zip(&s.endpoints) {
            let dnat = format!(
                "-A {chain} -m comment --comment demo/web:udp -m udp -p udp -j DNAT --to-destination {ep}"
            );
            assert!(lines.contains(&dnat.as_str()), "{dnat}");
            let hairpin = format!(
                "-A {chain} -m comment --comment demo/web:udp -s {}/32 -j KUBE-MARK-MASQ",
                ep.ip()
            );
            assert!(lines.contains(&hairpin.as_str()));
        }
        // The nodeports jump stays last in KUBE-SERVICES.
        let last = lines
            .iter()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES "))
            .unwrap();
        assert!(last.ends_with("-j KUBE-NODEPORTS"));
        assert!(text.contains("-j MASQUERADE --random-fully"));
    }

    #[test]
    fn probabilities_follow_one_over_remaining() {
        assert_eq!(iptables::probability(2), "0.5000000000");
        assert_eq!(iptables::probability(3), "0.3333333333");
        let s = plan(
            L4::Tcp,
            80,
            &["10.244.2.2:80", "10.244.2.3:80", "10.244.2.4:80"],
        );
        let text = kube_proxy_rules(ProxyMode::Iptables, "10.244.0.0/16", &[s]);
        let probs: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split("--probability ").nth(1))
            .map(|p| p.split(' ').next().unwrap())
            .collect();
        assert_eq!(probs, ["0.3333333333", "0.5000000000"]);
    }

    #[test]
    fn a_service_without_endpoints_is_rejected() {
        let s = plan(L4::Tcp, 80, &[]);
        let ipt = kube_proxy_rules(
            ProxyMode::Iptables,
            "10.244.0.0/16",
            std::slice::from_ref(&s),
        );
        assert!(ipt.contains(
            "\"demo/web:tcp has no endpoints\" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 -j REJECT"
        ));
        assert!(!ipt.contains("KUBE-SVC-"));
        let nft = kube_proxy_rules(ProxyMode::Nftables, "10.244.0.0/16", &[s]);
        assert!(nft.contains("no-endpoint-services { 10.96.0.10 . tcp . 80 comment \"demo/web:tcp\" : goto reject-chain }"));
        assert!(!nft.contains("add element ip kube-proxy service-ips"));
    }

    #[test]
    fn nftables_rules_map_then_numgen_then_dnat() {
        let s = two_backends();
        let text = kube_proxy_rules(
            ProxyMode::Nftables,
            "10.244.0.0/16",
            std::slice::from_ref(&s),
        );
        let svc = chain_names::nft_service(&s);
        let eps: Vec<String> = s
            .endpoints
            .iter()
            .map(|&e| chain_names::nft_endpoint(&s, e))
            .collect();
        assert!(svc.starts_with("service-") && svc.ends_with("-demo/web/udp/udp"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }"
        );
        for needed in [
            "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }"
                .to_string(),
            "add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }"
                .to_string(),
            "add rule ip kube-proxy nat-prerouting jump services".to_string(),
            "add rule ip kube-proxy nat-output jump services".to_string(),
            "add rule ip kube-proxy nat-postrouting jump masquerading".to_string(),
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips"
                .to_string(),
            format!(
                "add element ip kube-proxy service-ips {{ 10.96.0.10 . udp . 5353 : goto {svc} }}"
            ),
            format!(
                "add rule ip kube-proxy {svc} ip daddr 10.96.0.10 udp dport 5353 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
            ),
            format!(
                "add rule ip kube-proxy {svc} numgen random mod 2 vmap {{ 0 : goto {} , 1 : goto {} }}",
                eps[0], eps[1]
            ),
            format!(
                "add rule ip kube-proxy {} meta l4proto udp dnat to 10.244.2.2:8081",
                eps[0]
            ),
            format!(
                "add rule ip kube-proxy {} meta l4proto udp dnat to 10.244.2.3:8081",
                eps[1]
            ),
            format!(
                "add rule ip kube-proxy {} ip saddr 10.244.2.3 jump mark-for-masquerade",
                eps[1]
            ),
            "add rule ip kube-proxy masquerading masquerade fully-random".to_string(),
        ] {
            assert!(
                lines.contains(&needed.as_str()),
                "missing: {needed}\n{text}"
            );
        }
        // A chain is added before a rule or element refers to it.
        let first = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        for chain in [&svc, &eps[0], &eps[1]] {
            assert!(
                first(&format!("add chain ip kube-proxy {chain}"))
                    < first(&format!("goto {chain}"))
            );
        }
    }

    #[test]
    fn removal_deletes_jumps_and_chains_only() {
        let saved = "\
*mangle
:PREROUTING ACCEPT [0:0]
-A PREROUTING -j MARK --set-mark 1
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
:OTHER - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A PREROUTING -j OTHER
-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-ABC
COMMIT
";
        let input = iptables::removal(saved).unwrap();
        assert_eq!(
            input,
            "\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-X KUBE-SERVICES
-X KUBE-SVC-ABC
COMMIT
"
        );
        assert_eq!(
            iptables::removal("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"),
            None
        );
    }

    #[test]
    fn only_tables_without_rules_count_as_empty() {
        let empty = "# Warning: table ip nat is managed by iptables-nft, do not touch!
table ip nat {
\tchain PREROUTING {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t}
}
";
        assert!(table_is_empty(empty));
        let with_rule = empty.replace(
            "policy accept;\n",
            "policy accept;\n\t\tip daddr 10.0.0.1 counter drop\n",
        );
        assert!(!table_is_empty(&with_rule));
        assert!(!table_is_empty(&empty.replace("accept", "drop")));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(check_cidr("10.244.0.0/16").is_ok());
        for bad in ["10.244.0.0", "10.244.0.0/33", "x/16", ""] {
            assert!(check_cidr(bad).is_err(), "{bad}");
        }
        let mut s = two_backends();
        s.name = "Web; drop".into();
        assert!(check_services(&[s]).is_err());
        assert_eq!(
            network_address(Ipv4Addr::new(10, 244, 1, 1), 24).unwrap(),
            Ipv4Addr::new(10, 244, 1, 0)
        );
        assert_eq!(
            network_address(Ipv4Addr::new(10, 244, 1, 1), 0).unwrap(),
            Ipv4Addr::UNSPECIFIED
        );
        assert!(network_address(Ipv4Addr::new(10, 244, 1, 1), 33).is_err());
    }
}
