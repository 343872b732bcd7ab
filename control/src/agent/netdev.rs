//! The agent's changes to the node's network stack, done with iproute2 (`ip`) and procfs,
//! as the CNI plugin does: the host veth pair, its address and routes, and the sysctls the
//! walks depend on (ARCHITECTURE.md §2, walks 6 and 8).
//!
//! Shelling out to `ip` rather than speaking rtnetlink keeps this code small and the
//! commands visible in error messages; none of it is on a hot path.

use std::ffi::CString;
use std::path::PathBuf;
use std::process::Command;

use datapath::tables::HOST_MAC;

/// The kernel side of the host port: the node stack routes the Service and cluster CIDRs
/// into it, and receives what the datapath forwards to `host`.
pub const HOST_VETH: &str = "kxdp-host";
/// The datapath side of the host port: its AF_XDP sockets are the `host` port.
pub const DATAPATH_VETH: &str = "kxdp-dp";

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("interface {0:?} does not exist in this network namespace")]
    NoSuchInterface(String),
    #[error("writing {path}: {source}")]
    Sysctl {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `ip ARGS...`; the error carries the command line and what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), NetdevError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetdevError::Command {
            command: command.clone(),
            message: format!("cannot run ip (is iproute2 installed?): {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetdevError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `ethtool ARGS...`.
fn ethtool(args: &[&str]) -> Result<(), NetdevError> {
    let command = format!("ethtool {}", args.join(" "));
    let out = Command::new("ethtool")
        .args(args)
        .output()
        .map_err(|e| NetdevError::Command {
            command: command.clone(),
            message: format!("cannot run ethtool: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetdevError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The interface's index in the current network namespace. `if_nametoindex` asks the
/// kernel of this namespace; /sys/class/net would show the namespace sysfs was mounted in.
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

/// Writes a sysctl of the current network namespace (procfs /proc/sys/net follows the
/// reader's namespace).
pub fn sysctl(key: &str, value: &str) -> Result<(), NetdevError> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|source| NetdevError::Sysctl { path, source })
}

/// What the host port needs from the tables.
#[derive(Debug, Clone)]
pub struct HostPortPlan {
    /// The node's pod gateway (first address of its PodCIDR): the node's own source
    /// address towards pods and the overlay, since other nodes accept overlay traffic
    /// only from inside our PodCIDR.
    pub gateway: String,
    /// Service and cluster CIDRs (IPv4 ones; `a.b.c.d/n`).
    pub routed: Vec<String>,
    /// Pod MTU: underlay MTU minus VXLAN overhead (host clients' traffic may be encapsulated).
    pub mtu: u32,
    /// One queue per worker: worker i binds queue i of every port.
    pub queues: u32,
}

/// Creates the host veth pair and routes the Service and cluster CIDRs into it. A pair left
/// behind by an agent that died is replaced: nothing else creates these names.
pub fn create_host_port(plan: &HostPortPlan) -> Result<(), NetdevError> {
    if exists(HOST_VETH) {
        tracing::warn!("{HOST_VETH} exists (left by an earlier agent?): replacing it");
        ip(&["link", "del", HOST_VETH])?;
    }
    let queues = plan.queues.to_string();
    let mtu = plan.mtu.to_string();
    ip(&[
        "link",
        "add",
        HOST_VETH,
        "numtxqueues",
        &queues,
        "numrxqueues",
        &queues,
        "type",
        "veth",
        "peer",
        "name",
        DATAPATH_VETH,
        "numtxqueues",
        &queues,
        "numrxqueues",
        &queues,
    ])?;
    let host_mac = HOST_MAC.to_string();
    let result = (|| {
        ip(&["link", "set", HOST_VETH, "address", &host_mac, "mtu", &mtu])?;
        ip(&["link", "set", DATAPATH_VETH, "mtu", &mtu])?;
        // The kernel leaves L4 checksums of what it sends over a veth partial; the
        // datapath rewrites headers and must be handed whole checksums (ARCHITECTURE §5).
        ethtool(&["-K", HOST_VETH, "tx", "off"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/32", plan.gateway),
            "dev",
            HOST_VETH,
        ])?;
        ip(&["link", "set", DATAPATH_VETH, "up"])?;
        ip(&["link", "set", HOST_VETH, "up"])?;
        for cidr in &plan.routed {
            ip(&[
                "route",
                "replace",
                cidr,
                "dev",
                HOST_VETH,
                "src",
                &plan.gateway,
            ])?;
        }
        // Replies to what the node sent through kxdp-host may come back on other
        // interfaces (and the reverse): strict reverse-path filtering would drop them.
        sysctl(&format!("net.ipv4.conf.{HOST_VETH}.rp_filter"), "2")?;
        sysctl("net.ipv4.ip_forward", "1")
    })();
    if result.is_err() {
        let _ = ip(&["link", "del", HOST_VETH]);
    }
    result
}

/// Removes the host veth pair (its address and routes go with it).
pub fn remove_host_port() -> Result<(), NetdevError> {
    if exists(HOST_VETH) {
        ip(&["link", "del", HOST_VETH])?;
    }
    Ok(())
}

/// The nftables table holding the agent's masquerade rule (walk 6).
pub const NFT_TABLE: &str = "kxdp";

/// Pods reaching outside the cluster leave through the host port and the node's routing;
/// the node masquerades them (walk 6), as Flannel's ipMasq does: source inside the cluster
/// CIDR, destination outside it. The rule lives in a table of its own, replaced whole, so
/// it never touches anyone else's rules and removing it is one command.
pub fn install_masquerade(cluster_cidrs: &[(bool, String)]) -> Result<(), NetdevError> {
    let mut rules = String::new();
    for (v4, cidr) in cluster_cidrs {
        let family = if *v4 { "ip" } else { "ip6" };
        rules.push_str(&format!(
            "    {family} saddr {cidr} {family} daddr != {cidr} oifname != \"{HOST_VETH}\" masquerade\n"
        ));
    }
    let script = format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n  chain postrouting {{\n    \
         type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n}}\n"
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

/// The word after `key` in `ip -o link show dev NAME`.
fn link_field(name: &str, key: &str) -> Result<String, NetdevError> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .map_err(|e| NetdevError::Command {
            command: format!("ip -o link show dev {name}"),
            message: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != key)
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| NetdevError::NoSuchInterface(name.to_string()))
}

/// The interface's MAC (the source of the VXLAN the datapath sends from the uplink).
pub fn mac_of(name: &str) -> Result<String, NetdevError> {
    link_field(name, "link/ether")
}

pub fn mtu_of(name: &str) -> Result<u32, NetdevError> {
    link_field(name, "mtu")?
        .parse()
        .map_err(|_| NetdevError::NoSuchInterface(name.to_string()))
}

/// The interface's global-scope IPv4 addresses, in the kernel's order (primary first).
pub fn ipv4_addresses(name: &str) -> Result<Vec<std::net::Ipv4Addr>, NetdevError> {
    let command = format!("ip -o -4 addr show dev {name} scope global");
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", name, "scope", "global"])
        .output()
        .map_err(|e| NetdevError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetdevError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // `2: up0    inet 192.168.79.1/24 brd 192.168.79.255 scope global up0\ ...`
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}
