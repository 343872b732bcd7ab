//! Neighbour (ARP/NDP) entries.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage,
    NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::Netlink;
use crate::error::{NetdevError, Result};
use crate::mac::Mac;

/// One neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub ifindex: u32,
    /// The link-layer address, when the entry has one.
    pub mac: Option<Mac>,
    pub state: NeighbourState,
    /// Kept resolved by the kernel itself (NTF_EXT_MANAGED).
    pub managed: bool,
}

impl Neighbour {
    pub fn is_permanent(&self) -> bool {
        self.state == NeighbourState::Permanent
    }

    /// The MAC, unless the entry is still being resolved or resolution failed (any other
    /// state's MAC is the kernel's current belief, as `ip neigh get` shows it).
    pub fn resolved_mac(&self) -> Option<Mac> {
        match self.state {
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None => None,
            _ => self.mac,
        }
    }

    /// From a kernel message (a dump answer or a notification); None for entries that are
    /// not about an IP address (bridge FDB entries) or are proxy entries.
    pub fn from_message(m: &NeighbourMessage) -> Option<Neighbour> {
        if m.header.flags.contains(NeighbourFlags::Proxy) {
            return None;
        }
        let mut ip = None;
        let mut mac = None;
        let mut managed = false;
        for attr in &m.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    ip = Some(IpAddr::V4(*v4));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    ip = Some(IpAddr::V6(*v6));
                }
                NeighbourAttribute::LinkLayerAddress(bytes) => mac = Mac::from_slice(bytes),
                NeighbourAttribute::ExtFlags(flags) => {
                    managed = flags.contains(NeighbourExtFlags::Managed);
                }
                _ => {}
            }
        }
        Some(Neighbour {
            ip: ip?,
            ifindex: m.header.ifindex,
            mac,
            state: m.header.state,
            managed,
        })
    }
}

fn message(ifindex: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.header.ifindex = ifindex;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
    msg
}

impl Netlink {
    /// A permanent entry `ip` -> `mac` on link `ifindex` (`ip neigh replace ... nud
    /// permanent`): the node reaches the address without ever resolving it.
    pub fn set_permanent_neighbour(&self, ifindex: u32, ip: IpAddr, mac: Mac) -> Result<()> {
        let mut msg = message(ifindex, ip);
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        self.ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &|| format!("setting neighbour {ip} lladdr {mac} permanent on link #{ifindex}"),
        )
    }

    /// A managed entry for `ip` on link `ifindex` (`ip neigh replace ... managed`): the
    /// kernel resolves it and keeps it fresh by itself, without traffic of ours. It is
    /// created without a state (a managed entry cannot be permanent) and resolved from
    /// there.
    pub fn set_managed_neighbour(&self, ifindex: u32, ip: IpAddr) -> Result<()> {
        let mut msg = message(ifindex, ip);
        msg.header.state = NeighbourState::None;
        msg.attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        self.ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &|| format!("setting neighbour {ip} managed on link #{ifindex}"),
        )
    }

    /// Removes the entry for `ip` on link `ifindex`; false when there was none.
    pub fn delete_neighbour(&self, ifindex: u32, ip: IpAddr) -> Result<bool> {
        let msg = message(ifindex, ip);
        match self.ack(RouteNetlinkMessage::DelNeighbour(msg), 0, &|| {
            format!("deleting neighbour {ip} on link #{ifindex}")
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entry for `ip` on link `ifindex`, if there is one (`ip neigh get`).
    pub fn neighbour(&self, ifindex: u32, ip: IpAddr) -> Result<Option<Neighbour>> {
        let msg = message(ifindex, ip);
        let request = || format!("reading neighbour {ip} on link #{ifindex}");
        match self.get(RouteNetlinkMessage::GetNeighbour(msg), &request) {
            Ok(RouteNetlinkMessage::NewNeighbour(m)) => Ok(Neighbour::from_message(&m)),
            Ok(other) => Err(NetdevError::Decode {
                request: request(),
                why: format!("answered with {other:?}"),
            }),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every IPv4 and IPv6 neighbour entry on link `ifindex`.
    pub fn neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>> {
        let answers = self.dump(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            &|| format!("listing the neighbours of link #{ifindex}"),
        )?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewNeighbour(m) if m.header.ifindex == ifindex => {
                    Neighbour::from_message(m)
                }
                _ => None,
            })
            .collect())
    }
}
