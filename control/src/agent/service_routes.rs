//! The Service CIDRs the node routes into the host port (walk 8), following the tables:
//! the CIDRs in effect change at runtime with the cluster's ServiceCIDR objects (a new one
//! is routed when the generation that admits its Services is published, a removed one is
//! unrouted), so host-network clients reach Services from every range.
//!
//! Only IPv4 ranges are routed: the host port carries IPv4 (its address is the node's
//! IPv4 pod gateway), as for the cluster CIDRs `netdev::create_host_port` routes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ::netdev::{Netlink, RouteSpec};
use datapath::Cidr;
use datapath::tables::Tables;
use ipnet::{IpNet, Ipv4Net};

use super::netdev::{HOST_VETH, NetdevError};

/// The IPv4 ranges of `cidrs` as routes.
pub fn ipv4_nets(cidrs: &[Cidr]) -> BTreeSet<Ipv4Net> {
    cidrs
        .iter()
        .filter_map(|c| Ipv4Net::new(Ipv4Addr::from(c.addr.as_v4()?), c.prefix_len()).ok())
        .map(|n| n.trunc())
        .collect()
}

/// What one sync must do: routes to add and to remove, each sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub add: Vec<Ipv4Net>,
    pub remove: Vec<Ipv4Net>,
}

/// From what is routed to what is wanted. A prefix in `fixed` (a cluster CIDR, routed
/// with the host port and never removed) is neither added nor removed here.
pub fn plan(
    routed: &BTreeSet<Ipv4Net>,
    wanted: &BTreeSet<Ipv4Net>,
    fixed: &BTreeSet<Ipv4Net>,
) -> RoutePlan {
    RoutePlan {
        add: wanted
            .difference(routed)
            .filter(|n| !fixed.contains(n))
            .copied()
            .collect(),
        remove: routed.difference(wanted).copied().collect(),
    }
}

/// The Service CIDR routes this agent installed into `kxdp-host`.
#[derive(Debug)]
pub struct ServiceRoutes {
    /// The host port's address: the node's source towards Services (walk 8).
    gateway: Ipv4Addr,
    /// The cluster CIDRs, routed with the host port: never touched here.
    fixed: BTreeSet<Ipv4Net>,
    /// Installed and not removed since: what the next sync compares against.
    routed: BTreeSet<Ipv4Net>,
}

impl ServiceRoutes {
    pub fn new(gateway: Ipv4Addr, fixed: BTreeSet<Ipv4Net>) -> ServiceRoutes {
        ServiceRoutes {
            gateway,
            fixed,
            routed: BTreeSet::new(),
        }
    }

    /// Routes every IPv4 Service CIDR of `tables` into the host port and removes the
    /// routes of ranges that are no longer there, logging each. Stops at the first
    /// refusal: what was done is remembered, so the next call retries only the rest.
    pub fn sync(&mut self, tables: &Tables) -> Result<(), NetdevError> {
        let wanted = ipv4_nets(&tables.service_cidrs);
        let todo = plan(&self.routed, &wanted, &self.fixed);
        if todo == RoutePlan::default() {
            return Ok(());
        }
        let nl = Netlink::open()?;
        let host = nl.ifindex(HOST_VETH)?;
        for net in todo.remove {
            // Gone already (someone removed it by hand) is as good as removed.
            nl.delete_route(IpNet::V4(net), host)?;
            self.routed.remove(&net);
            tracing::info!(
                cidr = %net,
                dev = HOST_VETH,
                generation = tables.generation,
                "Service CIDR route removed"
            );
        }
        for net in todo.add {
            nl.replace_route(&RouteSpec {
                dst: IpNet::V4(net),
                via: None,
                onlink: false,
                oif: host,
                src: Some(self.gateway.into()),
            })?;
            self.routed.insert(net);
            tracing::info!(
                cidr = %net,
                dev = HOST_VETH,
                generation = tables.generation,
                "Service CIDR route added"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<Ipv4Net> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn adds_what_is_new_removes_what_went_and_leaves_cluster_cidrs_alone() {
        let fixed = nets(&["10.244.0.0/16"]);
        let routed = nets(&["10.96.0.0/12", "10.201.0.0/24"]);
        let wanted = nets(&["10.96.0.0/12", "10.200.0.0/24", "10.244.0.0/16"]);
        assert_eq!(
            plan(&routed, &wanted, &fixed),
            RoutePlan {
                add: nets(&["10.200.0.0/24"]).into_iter().collect(),
                remove: nets(&["10.201.0.0/24"]).into_iter().collect(),
            }
        );
        assert_eq!(plan(&wanted, &wanted, &fixed).remove, Vec::new());
    }

    #[test]
    fn only_ipv4_ranges_become_routes() {
        let cidrs: Vec<Cidr> = ["10.96.0.0/12", "fd00:96::/112", "10.200.0.0/24"]
            .iter()
            .map(|c| model::k8s::parse_cidr(c).unwrap())
            .collect();
        assert_eq!(ipv4_nets(&cidrs), nets(&["10.96.0.0/12", "10.200.0.0/24"]));
    }
}
