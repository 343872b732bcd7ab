//! Underlay next hops from the kernel (ARCHITECTURE.md §2, walk 7): the MAC the datapath
//! writes on VXLAN towards a node is the MAC of the kernel's next hop to that node's
//! address, so nodes behind a router work. The Node annotation `kxdp.io/underlay-mac`
//! (what `replay` uses) stays the fallback while the kernel has not resolved a next hop.
//!
//! For each next hop the agent keeps a *managed* neighbour entry on the uplink: the kernel
//! resolves it and keeps it fresh by itself (no traffic of ours needed), and the agent only
//! reads it. Entries the agent created are removed when it stops.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

use datapath::MacAddr;
use datapath::tables::Tables;

use super::netdev;

/// What the kernel says about the underlay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// The uplink's MAC: the source of the VXLAN we send (the own Node's annotation is
    /// what other nodes are told; the interface is the truth).
    pub uplink_mac: Option<MacAddr>,
    /// Next-hop MAC towards each other node's address.
    pub next_hops: BTreeMap<[u8; 4], MacAddr>,
}

#[derive(Debug)]
pub struct Underlay {
    uplink: String,
    /// Next hops we put a managed entry on.
    managed: BTreeSet<Ipv4Addr>,
}

impl Underlay {
    pub fn new(uplink: &str) -> Underlay {
        Underlay {
            uplink: uplink.to_string(),
            managed: BTreeSet::new(),
        }
    }

    /// The uplink's own MAC and the kernel's next-hop MAC for every remote node it has
    /// resolved, by node address.
    pub fn resolve(&mut self, tables: &Tables) -> KernelView {
        let mut macs = BTreeMap::new();
        for node in &tables.remote_nodes {
            let addr = Ipv4Addr::from(node.underlay_ip);
            let Some(next_hop) = self.next_hop(addr) else {
                continue;
            };
            if self.managed.insert(next_hop)
                && let Err(e) = netdev::ip(&[
                    "neigh",
                    "replace",
                    &next_hop.to_string(),
                    "dev",
                    &self.uplink,
                    "managed",
                ])
            {
                tracing::warn!("node {}: next hop {next_hop}: {e}", node.name);
            }
            if let Some(mac) = neighbour_mac(next_hop, &self.uplink) {
                macs.insert(node.underlay_ip, mac);
            }
        }
        KernelView {
            uplink_mac: netdev::mac_of(&self.uplink)
                .ok()
                .and_then(|m| m.parse().ok()),
            next_hops: macs,
        }
    }

    /// The next hop towards `addr` if the kernel routes it out of the uplink (itself when
    /// on-link, the gateway otherwise); `None` (with a warning) for any other interface:
    /// the datapath only transmits VXLAN on the uplink.
    fn next_hop(&self, addr: Ipv4Addr) -> Option<Ipv4Addr> {
        let out = Command::new("ip")
            .args(["-o", "route", "get", &addr.to_string()])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
        };
        if after("dev").copied() != Some(self.uplink.as_str()) {
            tracing::debug!("node address {addr} is not routed out of {}", self.uplink);
            return None;
        }
        match after("via") {
            Some(gateway) => gateway.parse().ok(),
            None => Some(addr),
        }
    }

    /// Removes the managed neighbour entries this agent created.
    pub fn cleanup(&mut self) {
        for next_hop in std::mem::take(&mut self.managed) {
            let _ = netdev::ip(&["neigh", "del", &next_hop.to_string(), "dev", &self.uplink]);
        }
    }
}

/// The resolved MAC of `addr` on `dev`, if the kernel has one (any state but
/// incomplete/failed).
fn neighbour_mac(addr: Ipv4Addr, dev: &str) -> Option<MacAddr> {
    let out = Command::new("ip")
        .args(["neigh", "get", &addr.to_string(), "dev", dev])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("FAILED") || text.contains("INCOMPLETE") {
        return None;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "lladdr")?;
    words.get(i + 1)?.parse().ok()
}

/// `tables` with the uplink's MAC and each remote node's next-hop MAC replaced by the
/// kernel's where they differ, or `None` when nothing differs (no new generation needed).
pub fn with_kernel_macs(tables: &Tables, kernel: &KernelView) -> Option<Tables> {
    let own_differs = kernel
        .uplink_mac
        .is_some_and(|m| m != tables.node.underlay_mac);
    let remote_differs = tables.remote_nodes.iter().any(|n| {
        kernel
            .next_hops
            .get(&n.underlay_ip)
            .is_some_and(|m| *m != n.underlay_mac)
    });
    if !own_differs && !remote_differs {
        return None;
    }
    let mut next = tables.clone();
    if let Some(mac) = kernel.uplink_mac
        && mac != next.node.underlay_mac
    {
        tracing::warn!(
            annotation = %next.node.underlay_mac,
            uplink = %mac,
            "this Node's kxdp.io/underlay-mac is not the uplink's MAC: sending from the uplink's"
        );
        next.node.underlay_mac = mac;
    }
    for node in &mut next.remote_nodes {
        if let Some(mac) = kernel.next_hops.get(&node.underlay_ip)
            && *mac != node.underlay_mac
        {
            tracing::info!(
                node = node.name,
                annotation = %node.underlay_mac,
                kernel = %mac,
                "underlay next hop MAC from the kernel's neighbour table"
            );
            node.underlay_mac = *mac;
        }
    }
    Some(next)
}
