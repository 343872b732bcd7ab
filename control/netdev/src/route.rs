//! Routes of the main table, and the kernel's route lookup (`ip route get`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::Netlink;
use crate::error::{NetdevError, Result};

/// One route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix (`0.0.0.0/0` for the default route).
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// The output link's index.
    pub oif: Option<u32>,
}

/// A route to add or replace (`ip route replace dst [via gw [onlink]] dev oif [src src]`).
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    /// The gateway need not be inside any prefix of the link (an IPAM may hand out /32s).
    pub onlink: bool,
    pub oif: u32,
    /// The source address the node uses on this route.
    pub src: Option<IpAddr>,
}

/// Where the kernel sends packets for an address: out of `oif`, to `gateway` or (when
/// none) straight to the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub oif: u32,
    pub gateway: Option<IpAddr>,
}

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Netlink {
    /// Adds `spec`, replacing a route to the same prefix.
    pub fn replace_route(&self, spec: &RouteSpec) -> Result<()> {
        let v6 = spec.dst.addr().is_ipv6();
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(v6);
        msg.header.destination_prefix_length = spec.dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        // As iproute2: a route without a gateway reaches its destination on the link.
        msg.header.scope = if spec.via.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if spec.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        msg.attributes
            .push(RouteAttribute::Destination(spec.dst.network().into()));
        if let Some(gw) = spec.via {
            msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
        if let Some(src) = spec.src {
            msg.attributes.push(RouteAttribute::PrefSource(src.into()));
        }
        msg.attributes.push(RouteAttribute::Oif(spec.oif));
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &|| {
                let via = spec.via.map(|g| format!(" via {g}")).unwrap_or_default();
                format!(
                    "replacing route {}{via} dev #{}",
                    spec.dst.trunc(),
                    spec.oif
                )
            },
        )
    }

    /// Removes the main table's route to `dst` out of link `oif` (`ip route del dst dev
    /// oif`); false when there was none.
    pub fn delete_route(&self, dst: IpNet, oif: u32) -> Result<bool> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst.addr().is_ipv6());
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        // Scope "nowhere" (RT_SCOPE_NOWHERE) matches a route of any scope, as iproute2
        // sends a delete.
        msg.header.scope = RouteScope::NoWhere;
        msg.attributes
            .push(RouteAttribute::Destination(dst.network().into()));
        msg.attributes.push(RouteAttribute::Oif(oif));
        match self.ack(RouteNetlinkMessage::DelRoute(msg), 0, &|| {
            format!("deleting route {} dev #{oif}", dst.trunc())
        }) {
            Ok(()) => Ok(true),
            // The kernel's "no such route".
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The main table's routes of one family.
    pub fn routes(&self, v6: bool) -> Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(v6);
        let answers = self.dump(RouteNetlinkMessage::GetRoute(msg), &|| {
            format!("listing the IPv{} routes", if v6 { 6 } else { 4 })
        })?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewRoute(m) => main_table_route(m, v6),
                _ => None,
            })
            .collect())
    }

    /// The kernel's route towards `addr` (RTM_GETROUTE for one address): which link and
    /// which next hop.
    pub fn route_to(&self, addr: IpAddr) -> Result<NextHop> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(addr.is_ipv6());
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(addr.into()));
        let request = || format!("looking up the route to {addr}");
        let answer = self.get(RouteNetlinkMessage::GetRoute(msg), &request)?;
        let RouteNetlinkMessage::NewRoute(m) = answer else {
            return Err(NetdevError::Decode {
                request: request(),
                why: format!("answered with {answer:?}"),
            });
        };
        let mut oif = None;
        let mut gateway = None;
        for attr in &m.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(a) => gateway = route_address(a),
                _ => {}
            }
        }
        let oif = oif.ok_or_else(|| NetdevError::Decode {
            request: request(),
            why: "the route names no output link".to_string(),
        })?;
        Ok(NextHop { oif, gateway })
    }
}

/// A route message's destination prefix and output link, as far as it names them.
pub(crate) fn destination_and_oif(m: &RouteMessage) -> (Option<IpNet>, Option<u32>) {
    let mut dst = None;
    let mut oif = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_address(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let any = if m.header.address_family == AddressFamily::Inet6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let dst = IpNet::new(dst.unwrap_or(any), m.header.destination_prefix_length).ok();
    (dst, oif)
}

fn main_table_route(m: &RouteMessage, v6: bool) -> Option<Route> {
    let mut table = u32::from(m.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = route_address(a),
            RouteAttribute::Gateway(a) => gateway = route_address(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let any = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let dst = IpNet::new(dst.unwrap_or(any), m.header.destination_prefix_length).ok()?;
    Some(Route { dst, gateway, oif })
}
