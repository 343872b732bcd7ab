//! Links: read, create (veth pairs, the peer straight into another namespace), bring up,
//! delete.

use std::os::fd::AsRawFd;
use std::path::Path;

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};

use crate::Netlink;
use crate::error::{NetdevError, Result};
use crate::mac::Mac;

/// IFLA_INET_CONF in IFLA_AF_SPEC's AF_INET entry (linux/if_link.h).
const IFLA_INET_CONF: u16 = 1;
/// IPV4_DEVCONF_RP_FILTER (linux/ip.h): the index of rp_filter among the IPv4 devconf.
const IPV4_DEVCONF_RP_FILTER: u16 = 8;

/// One link as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// None for links without an Ethernet address.
    pub mac: Option<Mac>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// `veth`, `vxlan`, ...; None for a device without a link kind (a physical NIC, lo).
    pub kind: Option<String>,
    pub tx_queues: u32,
    pub rx_queues: u32,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    fn from_message(m: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
            tx_queues: 0,
            rx_queues: 0,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(bytes) => link.mac = Mac::from_slice(bytes),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::NumTxQueues(n) => link.tx_queues = *n,
                LinkAttribute::NumRxQueues(n) => link.rx_queues = *n,
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }
}

/// One end of a veth pair to create. What is `None` is the kernel's default (a random MAC,
/// MTU 1500, one queue each way).
#[derive(Debug, Clone, Copy)]
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    /// Rx and tx queues (an XDP program on a veth wants the receiving end to have as many
    /// rx queues as the sending end has tx queues).
    pub queues: Option<u32>,
}

impl VethEnd<'_> {
    fn attributes(&self) -> Result<Vec<LinkAttribute>> {
        let mut attrs = vec![LinkAttribute::IfName(valid_name(self.name)?.to_string())];
        if let Some(mac) = self.mac {
            attrs.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(mtu) = self.mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(q) = self.queues {
            attrs.extend([LinkAttribute::NumTxQueues(q), LinkAttribute::NumRxQueues(q)]);
        }
        Ok(attrs)
    }
}

/// The kernel's rule for interface names (dev_valid_name), checked before asking so the
/// error names the problem rather than EINVAL.
pub fn valid_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(name)
    } else {
        Err(NetdevError::InvalidName(name.to_string()))
    }
}

const ENODEV: i32 = libc::ENODEV;

impl Netlink {
    /// Every link in the namespace.
    pub fn links(&self) -> Result<Vec<Link>> {
        let answers = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            &|| "listing links".to_string(),
        )?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewLink(m) => Link::from_message(m),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, if there is one.
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(valid_name(name)?.to_string()));
        self.get_link(msg, &|| format!("reading link {name}"))
    }

    /// The link with index `index`, if there is one.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, &|| format!("reading link #{index}"))
    }

    fn get_link(&self, msg: LinkMessage, request: &dyn Fn() -> String) -> Result<Option<Link>> {
        match self.get(RouteNetlinkMessage::GetLink(msg), request) {
            Ok(RouteNetlinkMessage::NewLink(m)) => Ok(Link::from_message(&m)),
            Ok(other) => Err(NetdevError::Decode {
                request: request(),
                why: format!("answered with {other:?}"),
            }),
            Err(e) if e.errno() == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of `name`; [`NetdevError::NoSuchInterface`] when it is not there.
    pub fn ifindex(&self, name: &str) -> Result<u32> {
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| NetdevError::NoSuchInterface(name.to_string()))
    }

    /// Creates the veth pair `end`/`peer` in one request; with `peer_netns` the peer is
    /// born in that namespace under its final name, so there is never a half-made pair or
    /// a temporary name here.
    pub fn create_veth(
        &self,
        end: &VethEnd<'_>,
        peer: &VethEnd<'_>,
        peer_netns: Option<&Path>,
    ) -> Result<()> {
        // Held open until the kernel has answered: the request names it by descriptor.
        let netns_file = peer_netns.map(crate::netns::open).transpose()?;
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes = peer.attributes()?;
        if let Some(file) = &netns_file {
            peer_msg
                .attributes
                .push(LinkAttribute::NetNsFd(file.as_raw_fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes = end.attributes()?;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        let request = || {
            let place = peer_netns
                .map(|p| format!(" in {}", p.display()))
                .unwrap_or_default();
            format!("creating veth {} (peer {}{place})", end.name, peer.name)
        };
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &request,
        )
    }

    /// Deletes `name` (a veth takes its peer with it); false when it was not there. A link
    /// that vanishes on its own meanwhile counts as not there: the kernel tears a deleted
    /// namespace's veths down asynchronously.
    pub fn delete_link(&self, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(valid_name(name)?.to_string()));
        match self.ack(RouteNetlinkMessage::DelLink(msg), 0, &|| {
            format!("deleting link {name}")
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets `name` administratively up.
    pub fn set_up(&self, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(valid_name(name)?.to_string()));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, &|| {
            format!("setting {name} up")
        })
    }

    /// Sets `name`'s IPv4 reverse-path filter (net.ipv4.conf.<name>.rp_filter: 0 off, 1
    /// strict, 2 loose) through rtnetlink (IFLA_AF_SPEC, AF_INET, IFLA_INET_CONF) rather than
    /// /proc/sys: a container that is not privileged sees /proc/sys read-only, while
    /// CAP_NET_ADMIN is enough for this message. Only rp_filter is sent: the crate's
    /// DevConfRequest would write every other devconf value too.
    pub fn set_rp_filter(&self, name: &str, mode: u32) -> Result<()> {
        // One nested attribute: type IPV4_DEVCONF_RP_FILTER, a native-endian u32.
        let mut conf = Vec::with_capacity(8);
        conf.extend_from_slice(&8u16.to_ne_bytes());
        conf.extend_from_slice(&IPV4_DEVCONF_RP_FILTER.to_ne_bytes());
        conf.extend_from_slice(&mode.to_ne_bytes());
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(valid_name(name)?.to_string()));
        msg.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::Other(DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, conf)),
            ])]));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, &|| {
            format!("setting {name}'s rp_filter to {mode}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["eth0", "kx0123456789a", "kxdp-host", "a.b"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "kx0123456789abcd",
            "a/b",
            "a:b",
            "a b",
            ".",
            "..",
            "a\0",
        ] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }
}
