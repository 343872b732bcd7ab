//! Links, addresses, routes and neighbours, done by running iproute2's `ip` and `ethtool`
//! (installed by scripts/install-deps.sh): in the node's network namespace directly (the
//! runtime runs us there), in the pod's through `nsenter --net=<CNI_NETNS>`.
//!
//! Reads use `ip -j` so nothing depends on the human-readable output; only `ethtool -k`,
//! which has no JSON form in ethtool 6.1, is parsed as text.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::spec::{CniError, IpPrefix, code};

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns<'a> {
    /// The namespace kxdp-cni was started in: the node's.
    Node,
    /// A pod's network namespace, by path (`CNI_NETNS`).
    Pod(&'a Path),
}

/// An `ip`/`ethtool`/`nsenter` failure, with the command line and what it said.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "{tool} not found (looked in PATH and the sbin directories); install iproute2, ethtool and util-linux"
    )]
    NotFound { tool: String },
    #[error("running `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("`{cmd}` printed something unexpected: {why}")]
    Parse { cmd: String, why: String },
}

impl From<LinkError> for CniError {
    fn from(e: LinkError) -> CniError {
        CniError::new(
            code::LINK_FAILED,
            "setting up the pod's network failed",
            e.to_string(),
        )
    }
}

/// The tools, located once per invocation.
#[derive(Debug, Clone)]
pub struct Tools {
    ip: PathBuf,
    ethtool: PathBuf,
    nsenter: PathBuf,
}

/// Runtimes do not always pass a PATH with the sbin directories; look there too.
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

fn locate(tool: &str) -> Result<PathBuf, LinkError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| LinkError::NotFound {
            tool: tool.to_string(),
        })
}

/// One link as `ip -d -j link show` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LinkInfo {
    pub ifname: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub num_tx_queues: u32,
    #[serde(default)]
    pub num_rx_queues: u32,
    #[serde(default)]
    pub linkinfo: Option<LinkKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LinkKind {
    #[serde(default)]
    pub info_kind: String,
}

impl LinkInfo {
    /// Administratively up.
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    pub fn is_veth(&self) -> bool {
        self.linkinfo
            .as_ref()
            .is_some_and(|k| k.info_kind == "veth")
    }
}

#[derive(Debug, Deserialize)]
struct AddrLink {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

/// Optional fields: iproute2 6.1 prints `{}` for entries a filter (`scope`) left out.
#[derive(Debug, Deserialize)]
struct AddrInfo {
    #[serde(default)]
    local: Option<IpAddr>,
    #[serde(default)]
    prefixlen: Option<u8>,
}

/// One route as `ip -j route show` describes it, destination normalised to a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: IpPrefix,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    dev: Option<String>,
}

/// One neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NeighInfo {
    pub dst: IpAddr,
    #[serde(default)]
    pub lladdr: String,
    #[serde(default)]
    pub state: Vec<String>,
}

impl NeighInfo {
    pub fn is_permanent(&self) -> bool {
        self.state.iter().any(|s| s == "PERMANENT")
    }
}

/// Everything one ADD creates with a single `ip link add`: both ends, their MACs, MTU and
/// queue counts, the peer already inside the pod under its final name. One netlink request,
/// so there is never a half-made pair or a temporary name in the node's namespace.
#[derive(Debug, Clone)]
pub struct VethPlan<'a> {
    pub host: &'a str,
    pub host_mac: &'a str,
    pub pod_ifname: &'a str,
    pub pod_mac: &'a str,
    pub netns: &'a Path,
    pub mtu: u32,
    pub queues: u32,
}

/// `0a:58:<IPv4 bytes>`: the locally administered MAC kxdp derives from an address (pods and
/// gateways alike), so nobody ever has to learn one.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

impl Tools {
    pub fn locate() -> Result<Tools, LinkError> {
        Ok(Tools {
            ip: locate("ip")?,
            ethtool: locate("ethtool")?,
            nsenter: locate("nsenter")?,
        })
    }

    /// Runs `tool args` in `ns`; stdout on success.
    fn run(&self, ns: Ns<'_>, tool: &Path, args: &[&str]) -> Result<String, LinkError> {
        let mut cmd = match ns {
            Ns::Node => Command::new(tool),
            Ns::Pod(netns) => {
                let mut c = Command::new(&self.nsenter);
                c.arg(format!("--net={}", netns.display()))
                    .arg("--")
                    .arg(tool);
                c
            }
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = describe(ns, tool, args);
        let out = cmd.output().map_err(|source| LinkError::Spawn {
            cmd: line.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(LinkError::Failed {
                cmd: line,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        String::from_utf8(out.stdout).map_err(|e| LinkError::Parse {
            cmd: line,
            why: e.to_string(),
        })
    }

    fn ip(&self, ns: Ns<'_>, args: &[&str]) -> Result<String, LinkError> {
        self.run(ns, &self.ip, args)
    }

    fn ip_json<T: serde::de::DeserializeOwned>(
        &self,
        ns: Ns<'_>,
        args: &[&str],
    ) -> Result<T, LinkError> {
        let text = self.ip(ns, args)?;
        // `ip -j` prints nothing at all (not `[]`) for some empty listings.
        let text = if text.trim().is_empty() {
            "[]"
        } else {
            text.as_str()
        };
        serde_json::from_str(text).map_err(|e| LinkError::Parse {
            cmd: describe(ns, &self.ip, args),
            why: e.to_string(),
        })
    }

    /// Every link in `ns`, with details (kind, queue counts).
    pub fn links(&self, ns: Ns<'_>) -> Result<Vec<LinkInfo>, LinkError> {
        self.ip_json(ns, &["-d", "-j", "link", "show"])
    }

    /// The link called `name` in `ns`, if there is one. Listing everything rather than
    /// asking for one device keeps "absent" an answer instead of an error message to parse.
    pub fn link(&self, ns: Ns<'_>, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        Ok(self.links(ns)?.into_iter().find(|l| l.ifname == name))
    }

    pub fn create_veth(&self, plan: &VethPlan<'_>) -> Result<(), LinkError> {
        let mtu = plan.mtu.to_string();
        let queues = plan.queues.to_string();
        let netns = plan.netns.to_string_lossy();
        #[rustfmt::skip]
        let args = [
            "link", "add", plan.host, "mtu", &mtu, "address", plan.host_mac,
            "numtxqueues", &queues, "numrxqueues", &queues,
            "type", "veth", "peer", "name", plan.pod_ifname, "mtu", &mtu, "address", plan.pod_mac,
            "numtxqueues", &queues, "numrxqueues", &queues, "netns", &netns,
        ];
        self.ip(Ns::Node, &args).map(drop)
    }

    /// Deletes `name` in `ns` (a veth takes its peer with it); false when it was not there.
    /// A link that vanishes on its own meanwhile counts as not there: the kernel tears a
    /// deleted namespace's veths down asynchronously, so a pod's host veth can still be
    /// listed just after the runtime removed the pod's namespace, and gone a moment later.
    pub fn delete_link(&self, ns: Ns<'_>, name: &str) -> Result<bool, LinkError> {
        if self.link(ns, name)?.is_none() {
            return Ok(false);
        }
        match self.ip(ns, &["link", "del", "dev", name]) {
            Ok(_) => Ok(true),
            Err(e) => match self.link(ns, name) {
                Ok(None) => Ok(false),
                _ => Err(e),
            },
        }
    }

    pub fn set_up(&self, ns: Ns<'_>, name: &str) -> Result<(), LinkError> {
        self.ip(ns, &["link", "set", "dev", name, "up"]).map(drop)
    }

    /// Adds `addr` to `dev`; IPv6 without duplicate address detection (the address is ours
    /// by IPAM, and a tentative address would not be usable for a second or so).
    pub fn add_addr(&self, ns: Ns<'_>, dev: &str, addr: IpPrefix) -> Result<(), LinkError> {
        let a = addr.to_string();
        let mut args = vec!["addr", "add", a.as_str(), "dev", dev];
        if addr.ip.is_ipv6() {
            args.push("nodad");
        }
        self.ip(ns, &args).map(drop)
    }

    /// The addresses on `dev`.
    pub fn addrs(&self, ns: Ns<'_>, dev: &str) -> Result<Vec<IpPrefix>, LinkError> {
        let links: Vec<AddrLink> = self.ip_json(ns, &["-j", "addr", "show", "dev", dev])?;
        Ok(links
            .into_iter()
            .flat_map(|l| l.addr_info)
            .filter_map(|a| IpPrefix::new(a.local?, a.prefixlen?))
            .collect())
    }

    /// `ip route replace dst [via gw onlink] dev dev`. `onlink` because the gateway need not
    /// be inside the pod's prefix (an IPAM may hand out /32s).
    pub fn replace_route(
        &self,
        ns: Ns<'_>,
        dst: IpPrefix,
        via: Option<IpAddr>,
        dev: &str,
    ) -> Result<(), LinkError> {
        let d = dst.to_string();
        let family = if dst.ip.is_ipv4() { "-4" } else { "-6" };
        let gw = via.map(|g| g.to_string());
        let mut args = vec![family, "route", "replace", d.as_str()];
        if let Some(gw) = &gw {
            args.extend(["via", gw.as_str(), "onlink"]);
        }
        args.extend(["dev", dev]);
        self.ip(ns, &args).map(drop)
    }

    /// The main table's routes of one family.
    pub fn routes(&self, ns: Ns<'_>, v6: bool) -> Result<Vec<RouteInfo>, LinkError> {
        let family = if v6 { "-6" } else { "-4" };
        let raw: Vec<RawRoute> = self.ip_json(ns, &[family, "-j", "route", "show"])?;
        raw.into_iter()
            .map(|r| {
                let dst = parse_route_dst(&r.dst, v6).ok_or_else(|| LinkError::Parse {
                    cmd: format!("ip {family} -j route show"),
                    why: format!("route destination {:?}", r.dst),
                })?;
                Ok(RouteInfo {
                    dst,
                    gateway: r.gateway,
                    dev: r.dev,
                })
            })
            .collect()
    }

    /// A permanent neighbour entry: `ip neigh replace ip lladdr mac nud permanent dev dev`.
    pub fn set_neigh(&self, ns: Ns<'_>, ip: IpAddr, mac: &str, dev: &str) -> Result<(), LinkError> {
        let a = ip.to_string();
        self.ip(
            ns,
            &[
                "neigh",
                "replace",
                &a,
                "lladdr",
                mac,
                "nud",
                "permanent",
                "dev",
                dev,
            ],
        )
        .map(drop)
    }

    pub fn neighs(&self, ns: Ns<'_>, dev: &str) -> Result<Vec<NeighInfo>, LinkError> {
        self.ip_json(ns, &["-j", "neigh", "show", "dev", dev])
    }

    /// Turns tx checksum offload off: the kernel's veth traffic would otherwise carry
    /// CHECKSUM_PARTIAL (only the pseudo-header sum in the L4 checksum), which the datapath
    /// receives as a wrong checksum (ARCHITECTURE.md §5).
    pub fn tx_checksum_off(&self, ns: Ns<'_>, dev: &str) -> Result<(), LinkError> {
        self.run(ns, &self.ethtool, &["-K", dev, "tx", "off"])
            .map(drop)
    }

    /// Whether `tx-checksumming` is on for `dev` (`ethtool -k`).
    pub fn tx_checksum_on(&self, ns: Ns<'_>, dev: &str) -> Result<bool, LinkError> {
        let text = self.run(ns, &self.ethtool, &["-k", dev])?;
        parse_tx_checksumming(&text).ok_or_else(|| LinkError::Parse {
            cmd: format!("ethtool -k {dev}"),
            why: "no tx-checksumming line".to_string(),
        })
    }
}

/// `ethtool -k` prints `tx-checksumming: on` (or `off`, maybe with ` [fixed]`).
pub fn parse_tx_checksumming(text: &str) -> Option<bool> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("tx-checksumming:")?;
        Some(rest.trim().starts_with("on"))
    })
}

/// `ip -j route` destinations: `default`, a bare address (a host route) or a prefix.
pub fn parse_route_dst(dst: &str, v6: bool) -> Option<IpPrefix> {
    if dst == "default" {
        let any: IpAddr = if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        return Some(IpPrefix::default_for(any));
    }
    if dst.contains('/') {
        return dst.parse().ok();
    }
    let ip: IpAddr = dst.parse().ok()?;
    IpPrefix::new(ip, if ip.is_ipv4() { 32 } else { 128 })
}

fn describe(ns: Ns<'_>, tool: &Path, args: &[&str]) -> String {
    let name = tool
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = match ns {
        Ns::Node => String::new(),
        Ns::Pod(p) => format!("nsenter --net={} ", p.display()),
    };
    format!("{prefix}{name} {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_from_addresses() {
        assert_eq!(mac_for(Ipv4Addr::new(10, 244, 1, 5)), "0a:58:0a:f4:01:05");
        assert_eq!(mac_for(Ipv4Addr::new(10, 244, 1, 1)), "0a:58:0a:f4:01:01");
    }

    #[test]
    fn route_destinations() {
        assert_eq!(
            parse_route_dst("default", false).unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            parse_route_dst("default", true).unwrap().to_string(),
            "::/0"
        );
        assert_eq!(
            parse_route_dst("10.244.1.5", false).unwrap().to_string(),
            "10.244.1.5/32"
        );
        assert_eq!(
            parse_route_dst("fd00::5", true).unwrap().to_string(),
            "fd00::5/128"
        );
        assert_eq!(
            parse_route_dst("10.244.1.0/24", false).unwrap().to_string(),
            "10.244.1.0/24"
        );
        assert_eq!(parse_route_dst("nonsense", false), None);
    }

    #[test]
    fn ethtool_features() {
        let off = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: off\n\ttx-checksum-ipv4: off [fixed]\n";
        assert_eq!(parse_tx_checksumming(off), Some(false));
        let on = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: on\n";
        assert_eq!(parse_tx_checksumming(on), Some(true));
        assert_eq!(parse_tx_checksumming("Features for x:\n"), None);
    }

    #[test]
    fn addr_json_with_filtered_entries() {
        let links: Vec<AddrLink> = serde_json::from_str(
            r#"[{"ifname":"eth0","addr_info":[{"family":"inet6","local":"fd00::2","prefixlen":64},{}]}]"#,
        )
        .unwrap();
        let addrs: Vec<String> = links
            .into_iter()
            .flat_map(|l| l.addr_info)
            .filter_map(|a| IpPrefix::new(a.local?, a.prefixlen?))
            .map(|p| p.to_string())
            .collect();
        assert_eq!(addrs, vec!["fd00::2/64".to_string()]);
    }

    #[test]
    fn link_json() {
        let links: Vec<LinkInfo> = serde_json::from_str(
            r#"[{"ifindex":2,"ifname":"kxprobe","flags":["BROADCAST","MULTICAST","UP"],"mtu":1450,
                "address":"0a:58:0a:f4:01:01","linkinfo":{"info_kind":"veth"},
                "num_tx_queues":2,"num_rx_queues":2},
               {"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"address":"00:00:00:00:00:00"}]"#,
        )
        .unwrap();
        assert!(links[0].is_veth() && links[0].is_up());
        assert_eq!((links[0].num_tx_queues, links[0].num_rx_queues), (2, 2));
        assert!(!links[1].is_veth() && !links[1].is_up());
    }
}
