//! One socket of a port as a worker sees it (bound to one rx queue of the port's device,
//! its counters, whether it is being removed), and how the worker adds and removes them: a
//! new socket joins the worker's UMEM (the first one anchors it), a removed one drains
//! before it closes and its frames go back to the ledger. The loop that moves frames is in `engine`.

use std::os::fd::RawFd;
use std::sync::mpsc::SyncSender;

use datapath::PortId;
use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::engine::Worker;
use super::stats::PortStats;
use super::{PortSpec, WorkerError};
use crate::xsk::XdpSocketStats;
use crate::xsk::socket::XskSocket;
use crate::xsk::sys::monotonic_ns;

/// A removed socket waits this long for its transmissions to complete.
pub(super) const CLOSE_DEADLINE_NS: u64 = 1_000_000_000;
/// Sockets per worker (ledger slots are u16).
const MAX_PORTS: usize = 4096;

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
    pub queue: u32,
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
    pub fn new(spec: PortSpec, xsk: XskSocket) -> PortSocket {
        PortSocket {
            name: spec.name,
            ifindex: spec.ifindex,
            queue: spec.queue,
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

    fn is(&self, name: &str, queue: u32) -> bool {
        self.name == name && self.queue == queue
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
            queue: self.queue,
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

impl Worker {
    pub(super) fn add_port(&mut self, spec: PortSpec) -> Result<RawFd, WorkerError> {
        if self
            .sockets
            .iter()
            .flatten()
            .any(|s| s.is(&spec.name, spec.queue))
        {
            return Err(WorkerError::PortExists(spec.name, spec.queue));
        }
        let slot = match self.sockets.iter().position(Option::is_none) {
            Some(slot) => slot,
            None if self.sockets.len() < MAX_PORTS => {
                self.sockets.push(None);
                self.tx_queues.push(Vec::new());
                self.sockets.len() - 1
            }
            None => return Err(WorkerError::TooManyPorts(MAX_PORTS)),
        };
        let socket_error = |step, source| WorkerError::Socket {
            port: spec.name.clone(),
            step,
            source,
        };
        let anchor = self.umem.is_none();
        if anchor {
            // SAFETY: `Worker` declares `sockets` and `umem` before `area`, so they drop
            // first; `close_slot` drops the UMEM only after its last socket.
            let umem = unsafe { self.area.register(&self.cfg.umem) }
                .map_err(|e| socket_error("UMEM registration", e))?;
            self.umem = Some(umem);
        }
        let opened = match &self.umem {
            Some(umem) => XskSocket::open(umem, anchor, spec.ifindex, spec.queue, &self.cfg.umem)
                .map_err(|e| socket_error(e.step, e.source)),
            None => Err(socket_error(
                "UMEM registration",
                std::io::Error::other("no UMEM"),
            )),
        };
        let xsk = match opened {
            Ok(xsk) => xsk,
            Err(e) => {
                if anchor {
                    self.umem = None;
                }
                return Err(e);
            }
        };
        if let Err(e) = xsk.tx_budget()
            && !self.budget_warned
        {
            self.budget_warned = true;
            tracing::warn!(
                worker = self.cfg.id,
                error = %e,
                "the kernel refused to raise the AF_XDP TX budget (XDP_MAX_TX_SKB_BUDGET); copy-mode transmit stays at 32 frames per sendto"
            );
        }
        let fd = xsk.fd();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE)
        {
            drop(xsk);
            if anchor {
                self.umem = None;
            }
            return Err(WorkerError::Poll(e));
        }
        self.sockets[slot] = Some(PortSocket::new(spec, xsk));
        if anchor {
            self.anchor = Some(slot as u16);
        }
        self.retarget_fills();
        self.remap_now();
        if let Some(s) = &mut self.sockets[slot] {
            let want = s.fill_target;
            s.in_fill += s.xsk.fill(&mut self.ledger, &self.area, slot as u16, want);
        }
        Ok(fd)
    }

    pub(super) fn remap_now(&mut self) {
        self.mapped_generation = None;
        let tables = self.shared.tables.load_full();
        self.sync_ports(&tables);
    }

    pub(super) fn start_removal(
        &mut self,
        name: &str,
        queue: u32,
        reply: std::sync::mpsc::SyncSender<Result<(), WorkerError>>,
    ) -> Result<(), WorkerError> {
        let slot = self
            .sockets
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.is(name, queue) && s.is_open()))
            .ok_or_else(|| WorkerError::NoSuchPort(name.to_string(), queue))?;
        let others_open = self
            .sockets
            .iter()
            .enumerate()
            .any(|(i, s)| i != slot && s.is_some());
        if self.anchor == Some(slot as u16) && others_open {
            return Err(WorkerError::AnchorInUse(name.to_string(), queue));
        }
        if let Some(s) = &mut self.sockets[slot] {
            s.closing = Some(Closing {
                deadline: monotonic_ns() + CLOSE_DEADLINE_NS,
                reply: Some(reply),
            });
        }
        self.retarget_fills();
        self.remap_now();
        Ok(())
    }

    /// Closes removed sockets that have drained (or whose deadline passed). The anchor
    /// closes only as the last socket.
    pub(super) fn finish_closing(&mut self, now: u64) {
        for slot in 0..self.sockets.len() {
            let ready = match &self.sockets[slot] {
                Some(s) => match &s.closing {
                    Some(c) => s.drained() || now >= c.deadline,
                    None => false,
                },
                None => false,
            };
            if !ready {
                continue;
            }
            let is_anchor = self.anchor == Some(slot as u16);
            let others = self
                .sockets
                .iter()
                .enumerate()
                .any(|(i, s)| i != slot && s.is_some());
            if is_anchor && others {
                continue;
            }
            self.close_slot(slot);
        }
    }

    pub(super) fn close_slot(&mut self, slot: usize) {
        let Some(s) = self.sockets.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let PortSocket {
            xsk, closing, xdp, ..
        } = s;
        self.c.closed_xdp.add(&xsk.statistics().unwrap_or(xdp));
        let fd = xsk.fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        // Closing the socket ends the kernel's use of every frame it held.
        drop(xsk);
        if self.anchor == Some(slot as u16) {
            self.umem = None;
            self.anchor = None;
        }
        self.ledger.reclaim(slot as u16);
        self.remap_now();
        if let Some(reply) = closing.and_then(|c| c.reply) {
            let _ = reply.send(Ok(()));
        }
    }
}
