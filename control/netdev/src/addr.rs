//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::Netlink;
use crate::error::Result;

/// One address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The address with its prefix length (host bits kept: `10.244.1.2/24`).
    pub net: IpNet,
    /// Global scope (not link-local, host or site).
    pub global: bool,
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl Netlink {
    /// Adds `net` to the link `index`; IPv6 without duplicate address detection (the
    /// address is ours by IPAM, and a tentative address would not be usable for a second
    /// or so).
    pub fn add_address(&self, index: u32, net: IpNet) -> Result<()> {
        let ip = net.addr();
        let mut msg = AddressMessage::default();
        msg.header.family = family(ip);
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        if ip.is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("adding address {net} to link #{index}"),
        )
    }

    /// The addresses of link `index`, in the kernel's order (primary first).
    pub fn addresses(&self, index: u32) -> Result<Vec<Address>> {
        let all = self.dump_addresses(&|| format!("listing the addresses of link #{index}"))?;
        Ok(all
            .into_iter()
            .filter(|(link, _)| *link == index)
            .map(|(_, a)| a)
            .collect())
    }

    /// Every address of the namespace with its link's index, in one dump (asking link by
    /// link would dump them all once per link).
    pub fn all_addresses(&self) -> Result<Vec<(u32, Address)>> {
        self.dump_addresses(&|| "listing the addresses".to_string())
    }

    fn dump_addresses(&self, request: &dyn Fn() -> String) -> Result<Vec<(u32, Address)>> {
        let answers = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            request,
        )?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewAddress(m) => address(m).map(|a| (m.header.index, a)),
                _ => None,
            })
            .collect())
    }
}

/// IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on point-to-point
/// links); IPv6 addresses often carry only IFA_ADDRESS.
fn address(m: &AddressMessage) -> Option<Address> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Address {
        net: IpNet::new(ip, m.header.prefix_len).ok()?,
        global: m.header.scope == AddressScope::Universe,
    })
}
