//! The kernel baseline kxdp is compared against: kube-proxy's rules and Flannel's VXLAN,
//! configured into a node's network namespace.
//!
//! Paths (c) and (d) of `kxdp bench` switch node A from kxdp to the kernel within one run,
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

use crate::lab::LabError;
use crate::lab::cmd::{in_netns, ip_in, run, run_with_stdin as run_with_input};
use crate::lab::layout::Mac;

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

/// A remote node as Flannel learns it from the Node's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelPeer {
    /// The node's PodCIDR: network address and prefix length.
    pub pod_cidr: (Ipv4Addr, u8),
    pub underlay_ip: Ipv4Addr,
    /// `flannel.alpha.coreos.com/backend-data`'s VtepMAC.
    pub vtep_mac: Mac,
}

/// What Flannel (vxlan backend, bridge CNI delegate) configures on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelNode {
    pub netns: String,
    /// The underlay interface (`eth0`) VXLAN packets leave by.
    pub uplink: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: Mac,
    /// The node's pod gateway (`10.244.N.1`), held by cni0; the PodCIDR is its network.
    pub gateway: Ipv4Addr,
    pub pod_prefix_len: u8,
    pub bridge_mac: Mac,
    pub vni: u32,
    pub port: u16,
    pub underlay_mtu: u32,
    pub peers: Vec<FlannelPeer>,
}

impl FlannelNode {
    /// The node's PodCIDR network address: Flannel puts it on flannel.1 as a /32.
    fn pod_network(&self) -> Result<Ipv4Addr, LabError> {
        network_address(self.gateway, self.pod_prefix_len)
    }
}

/// Configures Flannel on the node: ip_forward, flannel.1 with its peers, cni0. On failure
/// what was made is removed again.
pub fn apply_flannel(node: &FlannelNode) -> Result<(), LabError> {
    let ns = node.netns.as_str();
    let network = node.pod_network()?;
    for p in &node.peers {
        network_address(p.pod_cidr.0, p.pod_cidr.1)?;
    }
    if node.underlay_mtu <= VXLAN_OVERHEAD + 68 {
        return Err(LabError::Setup(format!(
            "underlay MTU {} leaves no room for VXLAN",
            node.underlay_mtu
        )));
    }
    if link_exists(ns, FLANNEL_DEV)? || link_exists(ns, CNI_BRIDGE)? {
        return Err(LabError::Setup(format!(
            "{ns} already has {FLANNEL_DEV} or {CNI_BRIDGE}: remove_flannel first"
        )));
    }
    let result = flannel_steps(node, network);
    if result.is_err() {
        let _ = remove_flannel(node);
    }
    result
}

fn flannel_steps(node: &FlannelNode, network: Ipv4Addr) -> Result<(), LabError> {
    let ns = node.netns.as_str();
    // /proc/sys/net is the writer's namespace's; sh rather than sysctl(8), which is in
    // procps, not always installed.
    run(in_netns(ns, "sh").args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]))?;

    let vni = node.vni.to_string();
    let port = node.port.to_string();
    let local = node.underlay_ip.to_string();
    ip_in(
        ns,
        &[
            "link",
            "add",
            FLANNEL_DEV,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            &local,
            "dev",
            &node.uplink,
            "dstport",
            &port,
            "nolearning",
        ],
    )?;
    let mac = node.vtep_mac.to_string();
    let mtu = (node.underlay_mtu - VXLAN_OVERHEAD).to_string();
    ip_in(
        ns,
        &["link", "set", FLANNEL_DEV, "address", &mac, "mtu", &mtu],
    )?;
    ip_in(
        ns,
        &["addr", "add", &format!("{network}/32"), "dev", FLANNEL_DEV],
    )?;
    ip_in(ns, &["link", "set", FLANNEL_DEV, "up"])?;
    for p in &node.peers {
        add_flannel_peer(ns, p)?;
    }

    ip_in(ns, &["link", "add", CNI_BRIDGE, "type", "bridge"])?;
    let bridge_mac = node.bridge_mac.to_string();
    ip_in(ns, &["link", "set", CNI_BRIDGE, "address", &bridge_mac])?;
    let gw = format!("{}/{}", node.gateway, node.pod_prefix_len);
    ip_in(ns, &["addr", "add", &gw, "dev", CNI_BRIDGE])?;
    ip_in(ns, &["link", "set", CNI_BRIDGE, "up"])?;
    Ok(())
}

/// What flanneld's vxlan backend adds when it learns a node: route, neighbour, FDB.
fn add_flannel_peer(ns: &str, p: &FlannelPeer) -> Result<(), LabError> {
    let (addr, len) = p.pod_cidr;
    let network = network_address(addr, len)?;
    let net = network.to_string();
    let mac = p.vtep_mac.to_string();
    ip_in(
        ns,
        &[
            "neigh",
            "replace",
            &net,
            "lladdr",
            &mac,
            "dev",
            FLANNEL_DEV,
            "nud",
            "permanent",
        ],
    )?;
    let dst = p.underlay_ip.to_string();
    run(in_netns(ns, "bridge").args([
        "fdb",
        "replace",
        &mac,
        "dev",
        FLANNEL_DEV,
        "dst",
        &dst,
        "self",
        "permanent",
    ]))?;
    ip_in(
        ns,
        &[
            "route",
            "replace",
            &format!("{network}/{len}"),
            "via",
            &net,
            "dev",
            FLANNEL_DEV,
            "onlink",
        ],
    )?;
    Ok(())
}

/// Deletes flannel.1 and cni0 (their addresses, routes, neighbours and FDB entries go with
/// them; enslaved pod veths are released). Safe to repeat. ip_forward is left as it is:
/// it is on for kxdp's node as well.
pub fn remove_flannel(node: &FlannelNode) -> Result<(), LabError> {
    let ns = node.netns.as_str();
    for dev in [FLANNEL_DEV, CNI_BRIDGE] {
        if link_exists(ns, dev)? {
            ip_in(ns, &["link", "del", dev])?;
        }
    }
    Ok(())
}

/// Puts a pod's host veth on cni0 with hairpin on, as the bridge CNI plugin does under
/// Flannel (`hairpinMode: true`).
pub fn enslave_pod_veth(netns: &str, host_veth: &str) -> Result<(), LabError> {
    ip_in(
        netns,
        &["link", "set", host_veth, "master", CNI_BRIDGE, "up"],
    )?;
    run(in_netns(netns, "bridge").args(["link", "set", "dev", host_veth, "hairpin", "on"]))?;
    Ok(())
}

/// Takes a pod's host veth off cni0 (it stays up, for kxdp to take over).
pub fn release_pod_veth(netns: &str, host_veth: &str) -> Result<(), LabError> {
    ip_in(netns, &["link", "set", host_veth, "nomaster"])?;
    Ok(())
}

/// kube-proxy's iptables mode.
mod iptables {
    use std::fmt::Write;

    use super::{MASQ_MARK, ServicePlan, base32_sha256};

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
}

/// kube-proxy's nftables mode.
mod nftables {
    use std::fmt::Write;

    use super::{MASQ_MARK, NFT_TABLE, ServicePlan, base32_sha256};

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
}

/// Chain names as kube-proxy builds them, for tests and for reading `iptables-save`.
pub mod chain_names {
    use std::net::SocketAddrV4;

    use super::{ServicePlan, iptables, nftables};

    pub fn iptables_service(s: &ServicePlan) -> String {
        iptables::service_chain(s)
    }

    pub fn iptables_endpoint(s: &ServicePlan, ep: SocketAddrV4) -> String {
        iptables::endpoint_chain(s, ep)
    }

    pub fn nft_service(s: &ServicePlan) -> String {
        nftables::service_chain(s)
    }

    pub fn nft_endpoint(s: &ServicePlan, ep: SocketAddrV4) -> String {
        nftables::endpoint_chain(s, ep)
    }
}

/// RFC 4648 base32 (standard alphabet, padded) of SHA-256(text), as Go's
/// `base32.StdEncoding.EncodeToString(sha256.Sum256(...))`.
fn base32_sha256(text: &str) -> String {
    base32(&sha256::digest(text.as_bytes()))
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        // 5 bytes -> 8 symbols; a short chunk yields ceil(bits/5) symbols, then '='.
        let symbols = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < symbols {
                let v = (bits >> (35 - 5 * i)) & 0x1f;
                out.push(char::from(ALPHABET[v as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-256 (FIPS 180-4), only for naming chains: a few short strings per apply.
mod sha256 {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    pub fn digest(data: &[u8]) -> [u8; 32] {
        let mut msg = data.to_vec();
        let bit_len = (data.len() as u64).wrapping_mul(8);
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bit_len.to_be_bytes());
        let mut h = H0;
        for block in msg.chunks_exact(64) {
            compress(&mut h, block);
        }
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    fn compress(h: &mut [u32; 8], block: &[u8]) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(v);
        }
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

fn link_exists(netns: &str, dev: &str) -> Result<bool, LabError> {
    let out = run(in_netns(netns, "ip").args(["-o", "link", "show"]))?;
    Ok(out.lines().any(|l| {
        l.split(':')
            .nth(1)
            .map(|name| name.trim().split('@').next() == Some(dev))
            .unwrap_or(false)
    }))
}

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
    fn sha256_and_base32_match_the_standard_vectors() {
        let hex: String = sha256::digest(b"abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // 64 bytes: the padding takes a second block.
        let two_blocks = sha256::digest(&[b'a'; 64]);
        assert_eq!(&two_blocks[..4], &[0xff, 0xe0, 0x54, 0xfe]);
        assert_eq!(two_blocks[31], 0xeb);
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI======");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"f"), "MY======");
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
