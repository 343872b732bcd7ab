//! Underlay next hops from the kernel (ARCHITECTURE.md §2, walk 7): the MAC the datapath
//! writes on VXLAN towards a node is the MAC of the kernel's next hop to that node's
//! address, so nodes behind a router work. The Node annotation `kxdp.io/underlay-mac`
//! (what `replay` uses) stays the fallback while the kernel has not resolved a next hop.
//!
//! For each next hop the agent keeps a *managed* neighbour entry on the uplink: the kernel
//! resolves it and keeps it fresh by itself (no traffic of ours needed), and the agent only
//! reads it. Entries the agent created are removed when it stops.
//!
//! Nothing is polled. A thread ([`watch`]) listens to the kernel's route, neighbour and
//! link notifications and wakes the control loop; the control thread then applies a
//! neighbour change as it came (its MAC is in the notification), and looks next hops up
//! again (RTM_GETROUTE, RTM_GETNEIGH) only when routes or the uplink changed, when
//! notifications were lost, or when the set of remote nodes changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::netdev::{Change, Group, Netlink, Watch};
use crossbeam::channel::Sender;
use datapath::MacAddr;
use datapath::tables::Tables;

use super::netdev::{self, NetdevError};
use super::{AgentError, Event};

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
    /// None when no rtnetlink socket could be opened (logged): the annotations stay.
    nl: Option<Netlink>,
    uplink_index: Option<u32>,
    uplink_mac: Option<MacAddr>,
    /// The remote node addresses last resolved.
    nodes: BTreeSet<[u8; 4]>,
    /// Each remote node's next hop, by node address (only those routed out of the uplink).
    next_hop_of: BTreeMap<[u8; 4], Ipv4Addr>,
    /// Each next hop's resolved MAC, as the neighbour table last said.
    macs: BTreeMap<Ipv4Addr, MacAddr>,
    /// Next hops we put a managed entry on.
    managed: BTreeSet<Ipv4Addr>,
}

impl Underlay {
    pub fn new(uplink: &str) -> Underlay {
        let nl = Netlink::open()
            .inspect_err(|e| tracing::warn!("underlay next hops from the kernel: {e}"))
            .ok();
        Underlay {
            uplink: uplink.to_string(),
            nl,
            uplink_index: None,
            uplink_mac: None,
            nodes: BTreeSet::new(),
            next_hop_of: BTreeMap::new(),
            macs: BTreeMap::new(),
            managed: BTreeSet::new(),
        }
    }

    /// Reads everything again: the uplink's MAC, every remote node's next hop, and each
    /// next hop's neighbour entry (creating the managed ones it lacks).
    pub fn resolve(&mut self, tables: &Tables) -> KernelView {
        self.nodes = remote_addresses(tables);
        self.next_hop_of.clear();
        self.macs.clear();
        let Some(nl) = &self.nl else {
            return self.view();
        };
        match nl.link(&self.uplink) {
            Ok(Some(link)) => {
                self.uplink_index = Some(link.index);
                self.uplink_mac = link.mac.map(|m| MacAddr(m.0));
            }
            Ok(None) => {
                tracing::warn!("uplink {} is gone", self.uplink);
                self.uplink_index = None;
                self.uplink_mac = None;
            }
            Err(e) => tracing::warn!("reading uplink {}: {e}", self.uplink),
        }
        let Some(uplink) = self.uplink_index else {
            return self.view();
        };
        for node in &tables.remote_nodes {
            let addr = Ipv4Addr::from(node.underlay_ip);
            let next_hop = match nl.route_to(IpAddr::V4(addr)) {
                Ok(hop) if hop.oif == uplink => match hop.gateway {
                    Some(IpAddr::V4(gw)) => gw,
                    Some(IpAddr::V6(_)) | None => addr,
                },
                Ok(_) => {
                    tracing::debug!("node address {addr} is not routed out of {}", self.uplink);
                    continue;
                }
                Err(e) => {
                    tracing::debug!("node {}: {e}", node.name);
                    continue;
                }
            };
            self.next_hop_of.insert(node.underlay_ip, next_hop);
            if !self.managed.contains(&next_hop) {
                match nl.set_managed_neighbour(uplink, IpAddr::V4(next_hop)) {
                    Ok(()) => {
                        self.managed.insert(next_hop);
                    }
                    Err(e) => tracing::warn!("node {}: next hop {next_hop}: {e}", node.name),
                }
            }
            if self.macs.contains_key(&next_hop) {
                continue;
            }
            match nl.neighbour(uplink, IpAddr::V4(next_hop)) {
                Ok(Some(entry)) => {
                    if let Some(mac) = entry.resolved_mac() {
                        self.macs.insert(next_hop, MacAddr(mac.0));
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("next hop {next_hop}: {e}"),
            }
        }
        self.view()
    }

    /// Whether `tables` name the remote nodes last resolved (else [`Underlay::resolve`]).
    pub fn knows_nodes_of(&self, tables: &Tables) -> bool {
        self.nodes == remote_addresses(tables)
    }

    /// Applies what the kernel notified. A neighbour change is taken as it came; a route
    /// that may carry a node's traffic (out of the uplink, or towards a node address), an
    /// uplink change or lost notifications mean looking everything up again. (kxdp-cni's
    /// /32 routes to pods, one per pod, are none of those.)
    pub fn apply(&mut self, changes: &[Change], tables: &Tables) -> KernelView {
        let uplink = self.uplink_index;
        let everything = changes.iter().any(|c| match c {
            Change::Lost => true,
            Change::Route { dst, oif } => {
                oif.is_none()
                    || *oif == uplink
                    || dst.is_none_or(|dst| {
                        self.nodes
                            .iter()
                            .any(|n| dst.contains(&IpAddr::V4(Ipv4Addr::from(*n))))
                    })
            }
            Change::Link { index, .. } => Some(*index) == uplink,
            Change::Neighbour { .. } => false,
        });
        if everything || !self.knows_nodes_of(tables) {
            return self.resolve(tables);
        }
        for change in changes {
            let Change::Neighbour { entry, removed } = change else {
                continue;
            };
            let IpAddr::V4(ip) = entry.ip else { continue };
            if Some(entry.ifindex) != uplink || !self.managed.contains(&ip) {
                continue;
            }
            match entry.resolved_mac() {
                Some(mac) if !removed => {
                    self.macs.insert(ip, MacAddr(mac.0));
                }
                _ => {
                    self.macs.remove(&ip);
                }
            }
            // Somebody flushed our entry: put it back, so the kernel resolves it again.
            if *removed
                && let (Some(nl), Some(index)) = (&self.nl, uplink)
                && let Err(e) = nl.set_managed_neighbour(index, IpAddr::V4(ip))
            {
                tracing::warn!("next hop {ip}: {e}");
            }
        }
        self.view()
    }

    fn view(&self) -> KernelView {
        KernelView {
            uplink_mac: self.uplink_mac,
            next_hops: self
                .next_hop_of
                .iter()
                .filter_map(|(node, hop)| Some((*node, *self.macs.get(hop)?)))
                .collect(),
        }
    }

    /// Removes the managed neighbour entries this agent created.
    pub fn cleanup(&mut self) {
        let managed = std::mem::take(&mut self.managed);
        if let (Some(nl), Some(index)) = (&self.nl, self.uplink_index) {
            for next_hop in managed {
                let _ = nl.delete_neighbour(index, IpAddr::V4(next_hop));
            }
        }
    }
}

fn remote_addresses(tables: &Tables) -> BTreeSet<[u8; 4]> {
    tables.remote_nodes.iter().map(|n| n.underlay_ip).collect()
}

/// Notifications the watch thread collected for the control thread, and whether a
/// wake-up ([`Event::Underlay`]) is queued for them: one for however many arrive before
/// the control thread takes them, so a burst (a link going down takes its routes and
/// neighbours with it) is one look-up.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    pending: Arc<Mutex<Vec<Change>>>,
    queued: Arc<AtomicBool>,
}

impl Feed {
    /// Adds `changes`; false when the control thread is gone.
    fn push(&self, changes: Vec<Change>, events: &Sender<Event>) -> bool {
        match self.pending.lock() {
            Ok(mut queue) => queue.extend(changes),
            Err(poisoned) => poisoned.into_inner().extend(changes),
        }
        self.queued.swap(true, Ordering::AcqRel) || events.send(Event::Underlay).is_ok()
    }

    /// Takes what was collected (clearing the wake-up flag first, so a change arriving
    /// meanwhile queues a new wake-up).
    pub fn take(&self) -> Vec<Change> {
        self.queued.store(false, Ordering::Release);
        match self.pending.lock() {
            Ok(mut queue) => std::mem::take(&mut *queue),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

/// Subscribes (before the first [`Underlay::resolve`], so no change falls between the
/// two) to route, neighbour and link notifications.
pub fn subscribe() -> Result<Watch, AgentError> {
    Watch::open(&[Group::Ipv4Route, Group::Neighbour, Group::Link])
        .map_err(|e| AgentError::Netdev(NetdevError::Kernel(e)))
}

/// Starts the thread that passes notifications about `uplink` (its neighbours, itself)
/// and IPv4 routes on to the control thread through the returned [`Feed`].
pub fn watch(mut watch: Watch, uplink: &str, events: Sender<Event>) -> Result<Feed, AgentError> {
    let feed = Feed::default();
    let uplink_index = netdev::ifindex(uplink).ok();
    let shared = feed.clone();
    std::thread::Builder::new()
        .name("kxdp-underlay".into())
        .spawn(move || {
            loop {
                let changes = match watch.changes() {
                    Ok(changes) => changes,
                    Err(e) => {
                        tracing::error!("underlay notifications stopped: {e}");
                        return;
                    }
                };
                let relevant: Vec<Change> = changes
                    .into_iter()
                    .filter(|c| match c {
                        Change::Route { .. } | Change::Lost => true,
                        Change::Link { index, .. } => Some(*index) == uplink_index,
                        Change::Neighbour { entry, .. } => {
                            Some(entry.ifindex) == uplink_index && entry.ip.is_ipv4()
                        }
                    })
                    .collect();
                if !relevant.is_empty() && !shared.push(relevant, &events) {
                    return;
                }
            }
        })
        .map_err(|source| AgentError::Thread {
            thread: "underlay",
            source,
        })?;
    Ok(feed)
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
