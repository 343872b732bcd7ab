//! What a worker reports: per-port traffic and kernel socket counters, verdicts, drops by
//! reason, idle behaviour, flow-table lock contention and where every UMEM frame is.
//! Counted in plain worker-local integers ([`Counters`], the per-port ones in `port`);
//! copied out into a [`WorkerStats`] snapshot every ~100 ms or on request, never per
//! packet, and published for readers that do not wake the worker.

use std::os::fd::RawFd;

use datapath::counters::DropCounters;

use super::engine::Worker;
use super::port::PortSocket;
use crate::xsk::sys::monotonic_ns;
use crate::xsk::{FrameLedger, XdpSocketStats};

/// Worker-wide counters (plain integers: only this thread writes them).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) generation: u64,
    pub(super) rx_packets: u64,
    pub(super) rx_bytes: u64,
    pub(super) low_headroom: u64,
    pub(super) forwarded: u64,
    pub(super) passed: u64,
    pub(super) dropped: u64,
    pub(super) tx_packets: u64,
    pub(super) io: IoDrops,
    pub(super) polls: u64,
    pub(super) empty_polls: u64,
    pub(super) sleeps: u64,
    pub(super) batches: u64,
    pub(super) busy_ns: u64,
    pub(super) lock_acquisitions: u64,
    pub(super) lock_wait_ns: u64,
    pub(super) lock_wait_max_ns: u64,
    pub(super) generation_sweeps: u64,
    pub(super) generation_sweep_ns: u64,
    pub(super) flows_ended: u64,
    pub(super) flows_expired: u64,
    /// XDP_STATISTICS of sockets already closed (so totals do not shrink).
    pub(super) closed_xdp: XdpSocketStats,
}

/// One open socket of a worker (a port has one per rx queue this worker serves).
#[derive(Debug, Clone, Default)]
pub struct PortStats {
    pub name: String,
    pub ifindex: u32,
    /// The rx queue of the port's device this socket is bound to.
    pub queue: u32,
    pub fd: RawFd,
    /// The port's id in the tables the worker runs (`None`: the tables do not know it,
    /// its frames are dropped as `unknown_port`).
    pub port_id: Option<u32>,
    /// Being removed: no new fill frames, no transmits, draining.
    pub closing: bool,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Queued on this socket's tx ring.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames for this port dropped because its tx ring was full.
    pub tx_ring_full: u64,
    /// `sendto()` kicks the kernel refused (device down or gone).
    pub tx_errors: u64,
    /// Descriptors from the kernel that pointed outside the UMEM.
    pub bad_descs: u64,
    /// The TX budget in force (`None`: the kernel refused to raise it from 32).
    pub tx_budget: Option<u32>,
    /// Frames sitting in this socket's fill ring or rx ring.
    pub in_fill: u32,
    /// Frames queued on this socket's tx ring and not yet completed.
    pub in_tx: u32,
    /// The kernel's XDP_STATISTICS for this socket.
    pub xdp: XdpSocketStats,
}

/// Frames the worker could not hand to a socket after `process` decided their fate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoDrops {
    /// Forward to a port this worker has no (open) socket for.
    pub no_tx_socket: u64,
    /// Pass with no `host` socket to re-inject it through.
    pub no_host_socket: u64,
    /// The destination socket's tx ring was full.
    pub tx_ring_full: u64,
}

impl IoDrops {
    pub fn total(&self) -> u64 {
        self.no_tx_socket + self.no_host_socket + self.tx_ring_full
    }
}

/// A worker's counters. Totals survive port removal; `ports` lists the open sockets.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    pub id: usize,
    /// Kernel thread id (for /proc/self/task/<tid>).
    pub tid: i32,
    pub cpu: Option<usize>,
    /// The table generation the worker last ran a batch (or maintenance) with.
    pub generation: u64,
    pub ports: Vec<PortStats>,
    /// Frames read from rx rings and given to `process`.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Received frames with less than `datapath::frame::DEFAULT_HEADROOM` in front of the
    /// packet (encapsulation would fail on them); the kernel's 256-byte XDP headroom
    /// makes this 0.
    pub low_headroom: u64,
    /// Verdicts: `rx_packets == forwarded + passed + dropped`.
    pub forwarded: u64,
    pub passed: u64,
    pub dropped: u64,
    /// `dropped` by reason (`unknown_port` for sockets the tables do not know).
    pub drops: DropCounters,
    /// Frames queued for transmission: `forwarded + passed == tx_packets + io.total()`.
    pub tx_packets: u64,
    pub io: IoDrops,
    /// The kernel's XDP_STATISTICS summed over every socket the worker had.
    pub xdp: XdpSocketStats,
    /// Rounds of the loop, rounds that found nothing to do, blocking waits.
    pub polls: u64,
    pub empty_polls: u64,
    pub sleeps: u64,
    /// Batches of received frames processed.
    pub batches: u64,
    /// Time spent in rounds that did work, and since the worker started.
    pub busy_ns: u64,
    pub uptime_ns: u64,
    /// The shared flow table: times locked (once per batch), total and worst wait.
    pub lock_acquisitions: u64,
    pub lock_wait_ns: u64,
    pub lock_wait_max_ns: u64,
    /// New table generations this worker applied to the shared flows
    /// (`end_flows_to_deleted_endpoints`), and the flows that ended.
    pub generation_sweeps: u64,
    /// Time spent in those sweeps (under the flow-table lock, so every worker waits it).
    pub generation_sweep_ns: u64,
    pub flows_ended: u64,
    pub flows_expired: u64,
    /// Where the UMEM's frames are.
    pub frames: FrameLedger,
}

impl WorkerStats {
    /// Share of the worker's life spent in rounds that did work.
    pub fn busy_ratio(&self) -> f64 {
        if self.uptime_ns == 0 {
            return 0.0;
        }
        self.busy_ns as f64 / self.uptime_ns as f64
    }

    /// Mean wait for the shared flow table per batch.
    pub fn mean_lock_wait_ns(&self) -> u64 {
        self.lock_wait_ns
            .checked_div(self.lock_acquisitions)
            .unwrap_or(0)
    }

    /// The first socket of port `name` (the only one, for a port with one queue per
    /// worker).
    pub fn port(&self, name: &str) -> Option<&PortStats> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Every socket of port `name` on this worker, one per queue it serves.
    pub fn port_queues<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PortStats> + 'a {
        self.ports.iter().filter(move |p| p.name == name)
    }
}

impl Worker {
    pub(super) fn refresh_xdp_stats(&mut self) {
        for s in self.sockets.iter_mut().flatten() {
            if let Ok(stats) = s.xsk.statistics() {
                s.xdp = stats;
            }
        }
    }

    pub(super) fn snapshot(&self) -> WorkerStats {
        let c = &self.c;
        let ports: Vec<_> = self
            .sockets
            .iter()
            .flatten()
            .map(PortSocket::stats)
            .collect();
        let mut xdp = c.closed_xdp;
        for p in &ports {
            xdp.add(&p.xdp);
        }
        let in_rx = self
            .sockets
            .iter()
            .flatten()
            .map(|s| s.xsk.rx_available())
            .sum();
        WorkerStats {
            id: self.cfg.id,
            tid: self.tid,
            cpu: self.cfg.cpu,
            generation: c.generation,
            ports,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            low_headroom: c.low_headroom,
            forwarded: c.forwarded,
            passed: c.passed,
            dropped: c.dropped,
            drops: self.drops.clone(),
            tx_packets: c.tx_packets,
            io: c.io.clone(),
            xdp,
            polls: c.polls,
            empty_polls: c.empty_polls,
            sleeps: c.sleeps,
            batches: c.batches,
            busy_ns: c.busy_ns,
            uptime_ns: monotonic_ns().saturating_sub(self.started),
            lock_acquisitions: c.lock_acquisitions,
            lock_wait_ns: c.lock_wait_ns,
            lock_wait_max_ns: c.lock_wait_max_ns,
            generation_sweeps: c.generation_sweeps,
            generation_sweep_ns: c.generation_sweep_ns,
            flows_ended: c.flows_ended,
            flows_expired: c.flows_expired,
            frames: self.ledger.snapshot(in_rx),
        }
    }

    pub(super) fn publish(&self) {
        self.publish_stats(self.snapshot());
    }

    pub(super) fn publish_stats(&self, stats: WorkerStats) {
        match self.published.lock() {
            Ok(mut p) => *p = stats,
            Err(poisoned) => *poisoned.into_inner() = stats,
        }
    }
}
