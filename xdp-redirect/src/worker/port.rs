//! One port as a worker sees it: its socket on the worker's queue, its counters, and
//! whether it is being removed.

use std::sync::mpsc::SyncSender;

use datapath::PortId;

use super::WorkerError;
use super::stats::PortStats;
use crate::xsk::XdpSocketStats;
use crate::xsk::socket::XskSocket;

/// A removal in progress: the socket drains before it closes.
#[derive(Debug)]
pub(super) struct Closing {
    /// After this (monotonic ns) the socket closes even with transmissions outstanding.
    pub deadline: u64,
    /// Who to tell once it is closed (none when the worker itself is stopping).
    pub reply: Option<SyncSender<Result<(), WorkerError>>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_ring_full: u64,
    pub tx_errors: u64,
}

#[derive(Debug)]
pub(super) struct PortSocket {
    pub name: String,
    pub ifindex: u32,
    pub xsk: XskSocket,
    /// Frames on the fill side (fill ring or rx ring) and on the tx side.
    pub in_fill: u32,
    pub in_tx: u32,
    /// How many frames the fill ring is kept stocked with.
    pub fill_target: u32,
    /// Frames received in the last maintenance tick, and the count at its start.
    pub recent_rx: u64,
    pub rx_at_last_tick: u64,
    pub closing: Option<Closing>,
    /// This port's id in the tables the worker runs.
    pub port_id: Option<PortId>,
    pub counters: PortCounters,
    /// Last XDP_STATISTICS read (refreshed with the published stats).
    pub xdp: XdpSocketStats,
    /// A failed kick was logged already (log once per socket).
    pub kick_error_logged: bool,
}

impl PortSocket {
    pub fn new(name: String, ifindex: u32, xsk: XskSocket) -> PortSocket {
        PortSocket {
            name,
            ifindex,
            xsk,
            in_fill: 0,
            in_tx: 0,
            fill_target: 0,
            recent_rx: 0,
            rx_at_last_tick: 0,
            closing: None,
            port_id: None,
            counters: PortCounters::default(),
            xdp: XdpSocketStats::default(),
            kick_error_logged: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.closing.is_none()
    }

    /// Nothing of ours is left in its rings: it can close without losing a packet.
    pub fn drained(&self) -> bool {
        self.in_tx == 0 && self.xsk.tx_pending() == 0 && self.xsk.rx_available() == 0
    }

    pub fn stats(&self) -> PortStats {
        let c = &self.counters;
        PortStats {
            name: self.name.clone(),
            ifindex: self.ifindex,
            fd: self.xsk.fd(),
            port_id: self.port_id.map(|p| p.0),
            closing: self.closing.is_some(),
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            tx_ring_full: c.tx_ring_full,
            tx_errors: c.tx_errors,
            bad_descs: self.xsk.bad.rx + self.xsk.bad.comp,
            tx_budget: self.xsk.tx_budget().ok(),
            in_fill: self.in_fill,
            in_tx: self.in_tx,
            xdp: self.xdp,
        }
    }
}
