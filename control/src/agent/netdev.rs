//! The agent's changes to the node's network stack through the `netdev` crate
//! (rtnetlink, the ethtool ioctl, procfs), shared with kxdp-cni: the host veth pair, its
//! address and routes, and the sysctls the walks depend on (ARCHITECTURE.md §2, walks 6
//! and 8). The masquerade rule is the one thing still run as a program (`nft`): nftables'
//! netlink protocol is a far bigger thing than one rule is worth.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::process::Command;

use ::netdev::{Netlink, RouteSpec, VethEnd, sysctl};
use datapath::MacAddr;
use datapath::tables::HOST_MAC;
use ipnet::{IpNet, Ipv4Net};

/// The kernel side of the host port: the node stack routes the Service and cluster CIDRs
/// into it, and receives what the datapath forwards to `host`.
pub const HOST_VETH: &str = "kxdp-host";
/// The datapath side of the host port: its AF_XDP sockets are the `host` port.
pub const DATAPATH_VETH: &str = "kxdp-dp";

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// A request to the kernel (rtnetlink, ethtool, a sysctl) failed; it names itself.
    #[error(transparent)]
    Kernel(#[from] ::netdev::NetdevError),
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("interface {0:?} does not exist in this network namespace")]
    NoSuchInterface(String),
    #[error("interface {name:?} has no Ethernet address")]
    NoMac { name: String },
}

/// The interface's index in the current network namespace. `if_nametoindex` asks the
/// kernel of this namespace; /sys/class/net would show the namespace sysfs was mounted in.
/// One ioctl, cheap enough for the once-a-second check of every pod port.
pub fn ifindex(name: &str) -> Result<u32, NetdevError> {
    let c = CString::new(name).map_err(|_| NetdevError::NoSuchInterface(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(NetdevError::NoSuchInterface(name.to_string()))
    } else {
        Ok(index)
    }
}

pub fn exists(name: &str) -> bool {
    ifindex(name).is_ok()
}

/// What the host port needs from the tables.
#[derive(Debug, Clone)]
pub struct HostPortPlan {
    /// The node's pod gateway (first address of its PodCIDR): the node's own source
    /// address towards pods and the overlay, since other nodes accept overlay traffic
    /// only from inside our PodCIDR.
    pub gateway: Ipv4Addr,
    /// The cluster CIDRs (the IPv4 ones), fixed for the agent's life. The Service CIDRs
    /// change with the cluster's ServiceCIDR objects: `service_routes` keeps them.
    pub routed: Vec<Ipv4Net>,
    /// Pod MTU: underlay MTU minus VXLAN overhead (host clients' traffic may be encapsulated).
    pub mtu: u32,
    /// One queue per worker: worker i binds queue i of every port.
    pub queues: u32,
}

/// Creates the host veth pair and routes the cluster CIDRs into it (the Service CIDRs are
/// `service_routes`'). A pair left behind by an agent that died is replaced: nothing else
/// creates these names.
pub fn create_host_port(plan: &HostPortPlan) -> Result<(), NetdevError> {
    let nl = Netlink::open()?;
    if nl.delete_link(HOST_VETH)? {
        tracing::warn!("{HOST_VETH} existed (left by an earlier agent?): replaced it");
    }
    nl.create_veth(
        &VethEnd {
            name: HOST_VETH,
            mac: Some(::netdev::Mac(HOST_MAC.0)),
            mtu: Some(plan.mtu),
            queues: Some(plan.queues),
        },
        &VethEnd {
            name: DATAPATH_VETH,
            mac: None,
            mtu: Some(plan.mtu),
            queues: Some(plan.queues),
        },
        None,
    )?;
    let result = configure_host_port(&nl, plan);
    if result.is_err() {
        let _ = nl.delete_link(HOST_VETH);
    }
    result
}

fn configure_host_port(nl: &Netlink, plan: &HostPortPlan) -> Result<(), NetdevError> {
    // The kernel leaves L4 checksums of what it sends over a veth partial; the datapath
    // rewrites headers and must be handed whole checksums (ARCHITECTURE §5).
    nl.set_tx_checksum(HOST_VETH, false)?;
    let host = nl.ifindex(HOST_VETH)?;
    let gateway = IpNet::V4(Ipv4Net::from(plan.gateway));
    nl.add_address(host, gateway)?;
    nl.set_up(DATAPATH_VETH)?;
    nl.set_up(HOST_VETH)?;
    for cidr in &plan.routed {
        nl.replace_route(&RouteSpec {
            dst: IpNet::V4(cidr.trunc()),
            via: None,
            onlink: false,
            oif: host,
            src: Some(plan.gateway.into()),
        })?;
    }
    // Replies to what the node sent through kxdp-host may come back on other
    // interfaces (and the reverse): strict reverse-path filtering would drop them.
    // Loose (2), through rtnetlink: the agent's container sees /proc/sys read-only.
    nl.set_rp_filter(HOST_VETH, 2)?;
    // Node-wide: on Kubernetes the DaemonSet's privileged init container sets it (the agent
    // only reads it then); an agent run by hand with the right to write it writes it.
    sysctl::ensure("net.ipv4.ip_forward", "1")?;
    Ok(())
}

/// Removes the host veth pair (its address and routes go with it).
pub fn remove_host_port() -> Result<(), NetdevError> {
    Netlink::open()?.delete_link(HOST_VETH)?;
    Ok(())
}

/// The nftables table holding the agent's NAT rules: the masquerade (walk 6) and the node's
/// own traffic to its frontends.
pub const NFT_TABLE: &str = "kxdp";

/// Pods reaching outside the cluster leave through the host port and the node's routing;
/// the node masquerades them (walk 6), as Flannel's ipMasq does: source inside the cluster
/// CIDR, destination outside it. The node's own processes reaching its NodePorts, external
/// and LoadBalancer IPs are rewritten to the Service's ClusterIP (host_frontends.rs). The
/// rules live in a table of their own, replaced whole, so they never touch anyone else's
/// rules and removing them is one command.
pub fn install_nat(
    cluster_cidrs: &[(bool, String)],
    host_frontends: &[super::host_frontends::HostFrontend],
) -> Result<(), NetdevError> {
    let mut rules = String::new();
    for (v4, cidr) in cluster_cidrs {
        let family = if *v4 { "ip" } else { "ip6" };
        rules.push_str(&format!(
            "    {family} saddr {cidr} {family} daddr != {cidr} oifname != \"{HOST_VETH}\" masquerade\n"
        ));
    }
    // The node's own traffic that the output chain rewrote leaves into kxdp-host from the
    // node's gateway address, as all node traffic into the datapath does: NetworkPolicy
    // lets the node's gateways in, and answers come back there. Matched by a local source
    // (fib saddr type local), so a NATed forward (a hostPort from outside) keeps its client.
    rules.push_str(&format!(
        "    oifname \"{HOST_VETH}\" ct status dnat fib saddr type local masquerade\n"
    ));
    // The node's own traffic to its frontends, rewritten to the Service's ClusterIP (see
    // host_frontends.rs). The output hook's NAT priority (-100), as kube-proxy's nat OUTPUT.
    let output = super::host_frontends::output_rules(host_frontends);
    let output_chain = if output.is_empty() {
        String::new()
    } else {
        format!(
            "  chain output {{\n    type nat hook output priority -100; policy accept;\n{output}  }}\n"
        )
    };
    // Replaced whole in one transaction: declaring the table first makes the delete succeed
    // when it is not there yet.
    let script = format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n  chain postrouting {{\n    \
         type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n{output_chain}}}\n"
    );
    nft_script(&script)
}

pub fn remove_masquerade() -> Result<(), NetdevError> {
    // Declaring the table first makes the delete succeed when it is already gone.
    nft_script(&format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
    ))
}

fn nft_script(script: &str) -> Result<(), NetdevError> {
    use std::io::Write as _;
    let command = "nft -f -".to_string();
    let fail = |message: String| NetdevError::Command {
        command: command.clone(),
        message,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run nft (is nftables installed?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The interface's MAC (the source of the VXLAN the datapath sends from the uplink).
pub fn mac_of(name: &str) -> Result<MacAddr, NetdevError> {
    let link = Netlink::open()?
        .link(name)?
        .ok_or_else(|| NetdevError::NoSuchInterface(name.to_string()))?;
    link.mac.map(|m| MacAddr(m.0)).ok_or(NetdevError::NoMac {
        name: name.to_string(),
    })
}

pub fn mtu_of(name: &str) -> Result<u32, NetdevError> {
    Netlink::open()?
        .link(name)?
        .map(|l| l.mtu)
        .ok_or_else(|| NetdevError::NoSuchInterface(name.to_string()))
}

/// The rx queues the interface has now (a NIC's rx and combined channels, `ethtool -l`; a
/// device without channels, its link's queue count): the datapath serves each with an
/// AF_XDP socket.
pub fn rx_queues(name: &str) -> Result<u32, NetdevError> {
    Ok(Netlink::open()?.rx_queues(name)?)
}

/// The interface's global-scope IPv4 addresses, in the kernel's order (primary first).
pub fn ipv4_addresses(name: &str) -> Result<Vec<Ipv4Addr>, NetdevError> {
    let nl = Netlink::open()?;
    let index = nl.ifindex(name)?;
    Ok(nl
        .addresses(index)?
        .into_iter()
        .filter(|a| a.global)
        .filter_map(|a| match a.net {
            IpNet::V4(v4) => Some(v4.addr()),
            IpNet::V6(_) => None,
        })
        .collect())
}
