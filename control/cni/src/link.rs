//! The node's and the pod's network stacks, through `netdev` (rtnetlink and the ethtool
//! ioctl): the node's namespace is the one the runtime started us in, the pod's is reached
//! by a socket opened inside `CNI_NETNS`. Nothing is run: kxdp-cni needs no `ip`,
//! `ethtool` or `nsenter` on the host, only its IPAM plugin.

use std::cell::OnceCell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netdev::{Mac, NetdevError, Netlink, RouteSpec, VethEnd};

use super::spec::{CniError, IpPrefix, code};

/// Where a change is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns<'a> {
    /// The namespace kxdp-cni was started in: the node's.
    Node,
    /// A pod's network namespace, by path (`CNI_NETNS`).
    Pod(&'a Path),
}

impl From<NetdevError> for CniError {
    fn from(e: NetdevError) -> CniError {
        CniError::new(
            code::LINK_FAILED,
            "setting up the pod's network failed",
            e.to_string(),
        )
    }
}

/// The rtnetlink sockets of one invocation: the node's, opened at once, and the pod's,
/// opened when first needed (DEL and GC mostly never need it).
#[derive(Debug)]
pub struct Stacks {
    node: Netlink,
    pod: OnceCell<(PathBuf, Netlink)>,
}

/// Everything one ADD creates with a single request: both ends, their MACs, MTU and queue
/// counts, the peer already inside the pod under its final name, so there is never a
/// half-made pair or a temporary name in the node's namespace.
#[derive(Debug, Clone)]
pub struct VethPlan<'a> {
    pub host: &'a str,
    pub host_mac: Mac,
    pub pod_ifname: &'a str,
    pub pod_mac: Mac,
    pub netns: &'a Path,
    pub mtu: u32,
    pub queues: u32,
}

impl Stacks {
    pub fn open() -> Result<Stacks, CniError> {
        Ok(Stacks {
            node: Netlink::open()?,
            pod: OnceCell::new(),
        })
    }

    /// The socket of `ns`. One invocation serves one attachment, so one pod namespace.
    pub fn of(&self, ns: Ns<'_>) -> Result<&Netlink, CniError> {
        let path = match ns {
            Ns::Node => return Ok(&self.node),
            Ns::Pod(path) => path,
        };
        if let Some((opened, netlink)) = self.pod.get() {
            return if opened == path {
                Ok(netlink)
            } else {
                Err(CniError::new(
                    code::LINK_FAILED,
                    "one pod namespace per invocation",
                    format!("{} after {}", path.display(), opened.display()),
                ))
            };
        }
        let netlink = Netlink::open_in(path)?;
        Ok(&self.pod.get_or_init(|| (path.to_path_buf(), netlink)).1)
    }

    pub fn create_veth(&self, plan: &VethPlan<'_>) -> Result<(), CniError> {
        let end = |name, mac| VethEnd {
            name,
            mac: Some(mac),
            mtu: Some(plan.mtu),
            queues: Some(plan.queues),
        };
        self.node.create_veth(
            &end(plan.host, plan.host_mac),
            &end(plan.pod_ifname, plan.pod_mac),
            Some(plan.netns),
        )?;
        Ok(())
    }

    /// Deletes `name` in `ns` (a veth takes its peer with it); false when it was not there.
    pub fn delete_link(&self, ns: Ns<'_>, name: &str) -> Result<bool, CniError> {
        Ok(self.of(ns)?.delete_link(name)?)
    }

    /// `ip route replace dst [via gw onlink] dev dev`: `onlink` because the gateway need
    /// not be inside the pod's prefix (an IPAM may hand out /32s).
    pub fn replace_route(
        &self,
        ns: Ns<'_>,
        dst: IpPrefix,
        via: Option<IpAddr>,
        oif: u32,
    ) -> Result<(), CniError> {
        let dst = to_net(dst)?;
        self.of(ns)?.replace_route(&RouteSpec {
            dst,
            via,
            onlink: via.is_some(),
            oif,
            src: None,
        })?;
        Ok(())
    }

    /// The addresses of `dev` in `ns`, as prefixes with their host bits.
    pub fn addrs(&self, ns: Ns<'_>, index: u32) -> Result<Vec<IpPrefix>, CniError> {
        Ok(self
            .of(ns)?
            .addresses(index)?
            .iter()
            .filter_map(|a| IpPrefix::new(a.net.addr(), a.net.prefix_len()))
            .collect())
    }
}

/// The prefix as ipnet has it (IpPrefix::new already bounds the length; this keeps an
/// impossible one an error rather than a panic).
pub fn to_net(p: IpPrefix) -> Result<ipnet::IpNet, CniError> {
    ipnet::IpNet::new(p.ip, p.len)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, "invalid prefix", format!("{p}: {e}")))
}
