//! The worker thread's loop: the state it owns (sockets, UMEM, ledger) and how it moves
//! frames between the rings and `datapath::process`. Adding and removing ports is in
//! `port`, counting and publishing stats in `stats`.
//!
//! One round: reap tx completions, read up to `batch` frames from the rx rings (round
//! robin over sockets), process them under one flow-table lock, queue the results on the
//! destination sockets' tx rings, kick the kernel to transmit, restock the fill rings,
//! finish removals. Every ~100 ms, busy or idle: apply a new table generation if there is
//! one, age flows, read XDP_STATISTICS and publish stats.
//!
//! With [`Pipeline::MacSwapTo`] a batch skips `process` and the flow table: see
//! [`mac_swap`].

mod mac_swap;

use std::ptr::NonNull;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use datapath::counters::DropCounters;
use datapath::frame::DEFAULT_HEADROOM;
use datapath::pipeline::end_flows_to_deleted_endpoints;
use datapath::tables::HOST_MAC;
use datapath::{DropReason, Frame, NoObserver, PortId, Tables, Verdict, process};
use mio::{Events, Poll, Token, Waker};

use super::port::{CLOSE_DEADLINE_NS, Closing, PortSocket};
use super::stats::{Counters, WorkerStats};
use super::{Command, Pipeline, SharedFlows, SharedState, WorkerConfig, WorkerError};
use crate::xsk::ledger::Ledger;
use crate::xsk::socket::{Kick, RxFrame, TxFrame};
use crate::xsk::sys::{monotonic_ns, thread_id};
use crate::xsk::umem::UmemArea;

/// The port whose socket re-injects `Pass` verdicts into the kernel.
const HOST_PORT: &str = "host";
const WAKER: Token = Token(usize::MAX);
/// Generation pickup, flow ageing, XDP_STATISTICS and stats publishing happen this often.
const MAINTAIN_EVERY_NS: u64 = 100_000_000;
/// Longest sleep: an idle worker still notices a new table generation this fast.
const IDLE_TIMEOUT: Duration = Duration::from_millis(100);
/// Sleep while transmissions are outstanding (completions do not wake epoll).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Stopping gives up on draining after this long.
const STOP_DEADLINE_NS: u64 = 3_000_000_000;
/// `sendto()` calls per socket per round (each moves up to the TX budget).
const MAX_KICKS: u32 = 16;
/// Flow-table slots examined for expiry per batch and per maintenance tick.
const EXPIRE_PER_BATCH: usize = 256;
const EXPIRE_PER_MAINTAIN: usize = 16_384;
/// Most frames an idle socket's fill ring is kept stocked with (see `retarget_fills`).
const IDLE_FILL: u32 = 256;

/// A worker thread's state. Its methods are spread by concern: the loop here, adding and
/// removing ports in `port`, counting and publishing in `stats` (hence the fields'
/// visibility in `worker`).
pub(super) struct Worker {
    pub(super) cfg: WorkerConfig,
    pub(super) shared: SharedState,
    pub(super) commands: Receiver<Command>,
    pub(super) published: Arc<Mutex<WorkerStats>>,
    // Drop order is declaration order: the sockets, then the UMEM registration (whose fd
    // is the anchor socket), then the memory they point into.
    pub(super) sockets: Vec<Option<PortSocket>>,
    pub(super) umem: Option<xdpilone::Umem>,
    /// The slot whose socket is the UMEM's own fd.
    pub(super) anchor: Option<u16>,
    pub(super) area: UmemArea,
    pub(super) ledger: Ledger,
    pub(super) poll: Poll,
    pub(super) events: Events,
    /// The table generation `slot_of_port` was built for.
    pub(super) mapped_generation: Option<u64>,
    /// `PortId.0` -> slot of this worker's open socket for that port.
    pub(super) slot_of_port: Vec<Option<u16>>,
    pub(super) host_slot: Option<u16>,
    /// `Pipeline::MacSwapTo`: the slot of the open socket of the port frames go out of.
    pub(super) swap_slot: Option<u16>,
    pub(super) rx_batch: Vec<RxFrame>,
    /// Per slot: frames to queue on that socket's tx ring after the batch.
    pub(super) tx_queues: Vec<Vec<TxFrame>>,
    pub(super) c: Counters,
    pub(super) drops: DropCounters,
    pub(super) started: u64,
    pub(super) last_maintain: u64,
    /// Socket the next round reads first (fairness between ports).
    pub(super) rr: usize,
    pub(super) stopping: bool,
    pub(super) budget_warned: bool,
    pub(super) tid: i32,
}

/// A received frame's socket and bytes, counted as received (every pipeline counts the
/// same way); None (the frame given back to the ledger) when its slot has no socket any
/// more or the frame lies outside the UMEM.
#[inline]
fn accept_rx<'a>(
    sockets: &'a mut [Option<PortSocket>],
    ledger: &mut Ledger,
    area: &UmemArea,
    c: &mut Counters,
    rx: &RxFrame,
) -> Option<(&'a mut PortSocket, NonNull<[u8]>)> {
    let Some(sock) = sockets.get_mut(rx.slot as usize).and_then(Option::as_mut) else {
        ledger.release(rx.frame);
        return None;
    };
    // `receive` only passes frames inside the UMEM; the check keeps that local.
    let Some(ptr) = area.frame_ptr(rx.frame) else {
        sock.xsk.bad.rx += 1;
        ledger.release(rx.frame);
        return None;
    };
    sock.counters.rx_packets += 1;
    sock.counters.rx_bytes += u64::from(rx.len);
    c.rx_packets += 1;
    c.rx_bytes += u64::from(rx.len);
    if (rx.offset as usize) < DEFAULT_HEADROOM {
        c.low_headroom += 1;
    }
    Some((sock, ptr))
}

fn lock_flows(flows: &Mutex<SharedFlows>) -> MutexGuard<'_, SharedFlows> {
    // A worker that panicked while holding the lock left a table that is still
    // structurally sound (process never leaves it half-updated across a panic point that
    // matters more than losing the node's datapath); keep going.
    flows
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Worker {
    pub(super) fn new(
        cfg: WorkerConfig,
        shared: SharedState,
        commands: Receiver<Command>,
        published: Arc<Mutex<WorkerStats>>,
    ) -> Result<(Worker, Arc<Waker>), WorkerError> {
        if let Some(cpu) = cfg.cpu
            && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
        {
            return Err(WorkerError::Pin(cpu));
        }
        let area = UmemArea::new(&cfg.umem).map_err(WorkerError::Umem)?;
        let ledger = Ledger::new(area.frames());
        let poll = Poll::new().map_err(WorkerError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(WorkerError::Poll)?);
        let now = monotonic_ns();
        let batch = cfg.batch;
        let worker = Worker {
            cfg,
            shared,
            commands,
            published,
            sockets: Vec::new(),
            umem: None,
            anchor: None,
            area,
            ledger,
            poll,
            events: Events::with_capacity(64),
            mapped_generation: None,
            slot_of_port: Vec::new(),
            host_slot: None,
            swap_slot: None,
            rx_batch: Vec::with_capacity(batch),
            tx_queues: Vec::new(),
            c: Counters::default(),
            drops: DropCounters::default(),
            started: now,
            last_maintain: now,
            rr: 0,
            stopping: false,
            budget_warned: false,
            tid: thread_id(),
        };
        worker.publish();
        Ok((worker, waker))
    }

    pub(super) fn run(mut self) -> Result<WorkerStats, WorkerError> {
        let mut empty_rounds = 0u32;
        loop {
            self.handle_commands();
            if self.stopping {
                break;
            }
            if self.round() {
                empty_rounds = 0;
            } else {
                empty_rounds += 1;
                if empty_rounds >= self.cfg.idle_after_empty_polls {
                    self.sleep();
                    empty_rounds = 0;
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        Ok(self.shutdown())
    }

    fn handle_commands(&mut self) {
        loop {
            match self.commands.try_recv() {
                Ok(Command::AddPort(spec, reply)) => {
                    let _ = reply.send(self.add_port(spec));
                }
                Ok(Command::RemovePort(name, queue, reply)) => {
                    if let Err(e) = self.start_removal(&name, queue, reply.clone()) {
                        let _ = reply.send(Err(e));
                    }
                }
                Ok(Command::Stats(reply)) => {
                    self.refresh_xdp_stats();
                    let _ = reply.send(self.snapshot());
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    /// One pass over the rings. True when it moved any frame.
    fn round(&mut self) -> bool {
        let now = monotonic_ns();
        self.c.polls += 1;
        let completed = self.reap_completions();
        let received = self.receive();
        if received > 0 {
            // One branch per batch; the pipeline never changes, so it is always predicted.
            if matches!(self.cfg.pipeline, Pipeline::Datapath) {
                self.process_batch(now);
            } else {
                self.swap_batch();
            }
            self.transmit();
        }
        let sent = self.kick_all();
        self.refill();
        if self.sockets.iter().flatten().any(|s| s.closing.is_some()) {
            self.finish_closing(now);
        }
        if now.saturating_sub(self.last_maintain) >= MAINTAIN_EVERY_NS {
            self.maintain(now);
        }
        let worked = completed > 0 || received > 0 || sent > 0;
        if worked {
            self.c.busy_ns += monotonic_ns().saturating_sub(now);
        } else {
            self.c.empty_polls += 1;
        }
        worked
    }

    fn reap_completions(&mut self) -> u32 {
        let comp_size = self.cfg.umem.comp_size;
        let mut total = 0;
        for (slot, s) in self.sockets.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            if s.in_tx == 0 {
                continue;
            }
            let n = s
                .xsk
                .complete(&mut self.ledger, &self.area, slot as u16, comp_size);
            s.in_tx = s.in_tx.saturating_sub(n);
            total += n;
        }
        total
    }

    fn receive(&mut self) -> usize {
        self.rx_batch.clear();
        let n = self.sockets.len();
        for k in 0..n {
            let room = self.cfg.batch - self.rx_batch.len();
            if room == 0 {
                break;
            }
            let slot = (self.rr + k) % n;
            let Some(s) = &mut self.sockets[slot] else {
                continue;
            };
            let before = self.rx_batch.len();
            s.xsk.receive(
                &mut self.ledger,
                &self.area,
                slot as u16,
                room as u32,
                &mut self.rx_batch,
            );
            s.in_fill = s
                .in_fill
                .saturating_sub((self.rx_batch.len() - before) as u32);
        }
        self.rr = self.rr.wrapping_add(1);
        self.rx_batch.len()
    }

    /// Runs the batch through `process` under one flow-table lock and sorts the frames into
    /// per-socket tx queues (or back to the free list).
    fn process_batch(&mut self, now: u64) {
        let tables = self.shared.tables.load_full();
        self.sync_ports(&tables);
        let flows_lock = self.shared.flows.clone();
        let mut shared = self.lock_measured(&flows_lock);
        self.apply_generation(&tables, &mut shared);
        self.c.batches += 1;

        let Worker {
            sockets,
            ledger,
            area,
            rx_batch,
            tx_queues,
            c,
            drops,
            slot_of_port,
            host_slot,
            ..
        } = self;
        for rx in rx_batch.drain(..) {
            let Some((sock, mut ptr)) = accept_rx(sockets, ledger, area, c, &rx) else {
                continue;
            };
            // SAFETY: `receive` moved this frame to the worker in the ledger; the kernel no
            // longer touches it and nothing else borrows it until it is queued for
            // transmission or released below, after `frame` is gone.
            let buf = unsafe { ptr.as_mut() };
            let mut frame = Frame::new(buf, rx.offset as usize, rx.len as usize);
            let verdict = match sock.port_id {
                Some(port) => process(
                    &tables,
                    &mut shared.flows,
                    now,
                    port,
                    &mut frame,
                    &mut NoObserver,
                ),
                None => Verdict::Drop(DropReason::UnknownPort),
            };
            let out = match verdict {
                Verdict::Forward(port) => {
                    c.forwarded += 1;
                    let slot = slot_of_port.get(port.0 as usize).copied().flatten();
                    if slot.is_none() {
                        c.io.no_tx_socket += 1;
                    }
                    slot
                }
                Verdict::Pass => {
                    c.passed += 1;
                    // The XDP program already took it from the kernel: give it back through
                    // the host veth, addressed to the kernel's side of it.
                    if let Some(dst) = frame.data_mut().get_mut(..6) {
                        dst.copy_from_slice(&HOST_MAC.0);
                    }
                    if host_slot.is_none() {
                        c.io.no_host_socket += 1;
                    }
                    *host_slot
                }
                Verdict::Drop(_) => {
                    c.dropped += 1;
                    drops.record(verdict, None);
                    None
                }
            };
            match out {
                Some(slot) => tx_queues[slot as usize].push(TxFrame {
                    frame: rx.frame,
                    offset: frame.offset() as u32,
                    len: frame.len() as u32,
                }),
                None => ledger.release(rx.frame),
            }
        }
        self.c.flows_expired += shared.flows.expire(now, EXPIRE_PER_BATCH) as u64;
    }

    fn lock_measured<'a>(&mut self, flows: &'a Mutex<SharedFlows>) -> MutexGuard<'a, SharedFlows> {
        let t0 = monotonic_ns();
        let guard = lock_flows(flows);
        let waited = monotonic_ns().saturating_sub(t0);
        self.c.lock_acquisitions += 1;
        self.c.lock_wait_ns += waited;
        self.c.lock_wait_max_ns = self.c.lock_wait_max_ns.max(waited);
        guard
    }

    /// The first worker to run a batch with a new generation ends the flows to endpoints
    /// that generation deleted (checked under the lock, so exactly one does).
    fn apply_generation(&mut self, tables: &Tables, shared: &mut SharedFlows) {
        if tables.generation > shared.generation_seen {
            let t0 = monotonic_ns();
            let ended = end_flows_to_deleted_endpoints(tables, &mut shared.flows);
            shared.generation_seen = tables.generation;
            self.c.generation_sweeps += 1;
            self.c.generation_sweep_ns += monotonic_ns().saturating_sub(t0);
            self.c.flows_ended += ended as u64;
        }
    }

    /// Port ids are per generation (pods renumber): map sockets to ports by name again
    /// whenever the generation or the set of sockets changes.
    pub(super) fn sync_ports(&mut self, tables: &Tables) {
        if self.mapped_generation == Some(tables.generation) {
            return;
        }
        self.slot_of_port.clear();
        self.slot_of_port.resize(tables.ports.len(), None);
        self.host_slot = None;
        self.swap_slot = None;
        let swap_to = match &self.cfg.pipeline {
            Pipeline::Datapath => None,
            Pipeline::MacSwapTo(name) => Some(name.as_str()),
        };
        for (slot, s) in self.sockets.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            s.port_id = tables.port_by_name(&s.name);
            if !s.is_open() {
                continue;
            }
            // A port with several sockets here (several of its queues) transmits on the
            // first: any queue of the device will do, and one keeps its tx batches whole.
            if let Some(PortId(id)) = s.port_id
                && let Some(entry) = self.slot_of_port.get_mut(id as usize)
            {
                entry.get_or_insert(slot as u16);
            }
            if s.name == HOST_PORT {
                self.host_slot.get_or_insert(slot as u16);
            }
            if swap_to == Some(s.name.as_str()) {
                self.swap_slot.get_or_insert(slot as u16);
            }
        }
        self.mapped_generation = Some(tables.generation);
        self.c.generation = tables.generation;
    }

    fn transmit(&mut self) {
        for (slot, queue) in self.tx_queues.iter_mut().enumerate() {
            if queue.is_empty() {
                continue;
            }
            let Some(s) = self.sockets.get_mut(slot).and_then(Option::as_mut) else {
                for f in queue.iter() {
                    self.ledger.release(f.frame);
                }
                self.c.io.no_tx_socket += queue.len() as u64;
                queue.clear();
                continue;
            };
            let queued = s
                .xsk
                .transmit(&mut self.ledger, &self.area, slot as u16, queue);
            for f in &queue[..queued] {
                s.counters.tx_packets += 1;
                s.counters.tx_bytes += u64::from(f.len);
            }
            s.in_tx += queued as u32;
            self.c.tx_packets += queued as u64;
            for f in &queue[queued..] {
                self.ledger.release(f.frame);
                s.counters.tx_ring_full += 1;
                self.c.io.tx_ring_full += 1;
            }
            queue.clear();
        }
    }

    /// Kicks every socket with descriptors waiting in its tx ring. Returns how many
    /// descriptors the kernel consumed.
    fn kick_all(&mut self) -> u32 {
        let comp_size = self.cfg.umem.comp_size;
        let mut consumed = 0;
        for (slot, s) in self.sockets.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            for _ in 0..MAX_KICKS {
                let before = s.xsk.tx_pending();
                if before == 0 {
                    break;
                }
                let kick = s.xsk.kick();
                // Reap right away: a full completion ring stops the next kick.
                let n = s
                    .xsk
                    .complete(&mut self.ledger, &self.area, slot as u16, comp_size);
                s.in_tx = s.in_tx.saturating_sub(n);
                let after = s.xsk.tx_pending();
                consumed += before.saturating_sub(after);
                match kick {
                    Kick::Idle => break,
                    Kick::Sent if after == 0 || after == before => break,
                    Kick::Sent | Kick::Again => {}
                    Kick::Failed(e) => {
                        s.counters.tx_errors += 1;
                        if !s.kick_error_logged {
                            s.kick_error_logged = true;
                            tracing::warn!(
                                worker = self.cfg.id,
                                port = %s.name,
                                error = %e,
                                "AF_XDP transmit failed (logged once per port)"
                            );
                        }
                        break;
                    }
                }
            }
        }
        consumed
    }

    fn refill(&mut self) {
        let n = self.sockets.len();
        for k in 0..n {
            if self.ledger.free_count() == 0 {
                return;
            }
            let slot = (self.rr + k) % n;
            let Some(s) = &mut self.sockets[slot] else {
                continue;
            };
            if !s.is_open() || s.in_fill >= s.fill_target {
                continue;
            }
            let want = s.fill_target - s.in_fill;
            s.in_fill += s.xsk.fill(&mut self.ledger, &self.area, slot as u16, want);
        }
    }

    /// Half the frames are for receiving. Every open socket keeps a small floor (its
    /// equal share, at most `IDLE_FILL`) so traffic starting on it is not dropped before
    /// the next tick; the rest goes to the sockets that received in the last tick, in
    /// proportion to what they received (at most a full fill ring each). A new socket
    /// starts at the floor. One busy pod
    /// among a hundred idle ones then gets the frames, not a hundredth of them. The rest
    /// of the UMEM is for frames in flight to tx.
    pub(super) fn retarget_fills(&mut self) {
        let open: Vec<usize> = (0..self.sockets.len())
            .filter(|&i| self.sockets[i].as_ref().is_some_and(PortSocket::is_open))
            .collect();
        for s in self.sockets.iter_mut().flatten() {
            if !s.is_open() {
                s.fill_target = 0;
            }
        }
        if open.is_empty() {
            return;
        }
        let budget = u64::from(self.area.frames() / 2);
        let floor = (budget / open.len() as u64).min(u64::from(IDLE_FILL));
        let spare = budget.saturating_sub(floor * open.len() as u64);
        let recent_total: u64 = open
            .iter()
            .filter_map(|&i| self.sockets[i].as_ref())
            .map(|s| s.recent_rx)
            .sum();
        let fill_size = u64::from(self.cfg.umem.fill_size);
        for &i in &open {
            let Some(s) = self.sockets[i].as_mut() else {
                continue;
            };
            // Idle sockets get the floor only: frames in an idle fill ring are stuck there
            // until that port receives.
            let extra = (spare * s.recent_rx).checked_div(recent_total).unwrap_or(0);
            s.fill_target = (floor + extra).clamp(1, fill_size) as u32;
        }
    }

    /// Notes what each socket received since the last tick (for `retarget_fills`).
    fn measure_recent_rx(&mut self) {
        for s in self.sockets.iter_mut().flatten() {
            s.recent_rx = s.counters.rx_packets - s.rx_at_last_tick;
            s.rx_at_last_tick = s.counters.rx_packets;
        }
    }

    fn maintain(&mut self, now: u64) {
        self.last_maintain = now;
        let tables = self.shared.tables.load_full();
        self.sync_ports(&tables);
        let flows_lock = self.shared.flows.clone();
        let mut shared = self.lock_measured(&flows_lock);
        self.apply_generation(&tables, &mut shared);
        self.c.flows_expired += shared.flows.expire(now, EXPIRE_PER_MAINTAIN) as u64;
        drop(shared);
        self.measure_recent_rx();
        self.retarget_fills();
        self.refresh_xdp_stats();
        self.publish();
    }

    fn sleep(&mut self) {
        let outstanding = self
            .sockets
            .iter()
            .flatten()
            .any(|s| s.in_tx > 0 || s.xsk.tx_pending() > 0 || s.closing.is_some());
        let timeout = if outstanding {
            DRAIN_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        self.c.sleeps += 1;
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            tracing::warn!(worker = self.cfg.id, error = %e, "epoll_wait failed");
            std::thread::sleep(timeout);
        }
    }

    /// Stops: every socket drains and closes (anchor last), then the final stats.
    fn shutdown(mut self) -> WorkerStats {
        let start = monotonic_ns();
        for s in self.sockets.iter_mut().flatten() {
            if s.closing.is_none() {
                s.closing = Some(Closing {
                    deadline: start + CLOSE_DEADLINE_NS,
                    reply: None,
                });
            }
        }
        self.remap_now();
        while self.sockets.iter().any(Option::is_some) {
            if monotonic_ns().saturating_sub(start) > STOP_DEADLINE_NS {
                let anchor = self.anchor.map(usize::from);
                for slot in 0..self.sockets.len() {
                    if Some(slot) != anchor {
                        self.close_slot(slot);
                    }
                }
                if let Some(slot) = anchor {
                    self.close_slot(slot);
                }
                break;
            }
            if !self.round() {
                self.sleep();
            }
        }
        self.umem = None;
        let stats = self.snapshot();
        self.publish_stats(stats.clone());
        stats
    }
}
