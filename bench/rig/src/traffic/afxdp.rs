//! The AF_XDP generator: one TX-only socket on (interface, queue) with its own UMEM, every
//! frame pre-built from the [`PacketSpec`] and re-addressed to the next flow each time it
//! goes out. Copy mode on veth (zero-copy where the driver has it: the kernel picks), so
//! each batch is kicked with `sendto()` and the TX budget is raised to 256.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xdpilone::xdp::XdpDesc;
use xdpilone::{CompletionQueue, FillQueue, IfInfo, RingTx, Socket, SocketConfig, User};

use super::pace::{Next, Pacer, RunLimit};
use super::packet::{PacketSpec, set_flow};
use super::{GenMode, GenReport, PktgenError};
use xdp_redirect::Interface;
use xdp_redirect::xsk::sys;
use xdp_redirect::xsk::umem::{UmemArea, UmemConfig, errno};

/// Frames in the generator's UMEM (each 2048 bytes): enough to keep the 2048-entry tx
/// ring full while completions come back.
const FRAMES: u32 = 4096;
const TX_RING: u32 = 2048;
/// Descriptors queued per kick; also the TX budget asked for.
const BATCH: u32 = 256;
/// How long to wait for the last completions after the run.
const DRAIN: Duration = Duration::from_secs(1);
/// A run in which the kernel neither takes nor completes anything for this long has
/// stalled (a count would otherwise never be reached).
const STALL: Duration = Duration::from_secs(2);

/// A bound TX socket, ready to [`AfXdpGenerator::run`].
pub struct AfXdpGenerator {
    // Field order is drop order: rings and socket before the UMEM, the UMEM before its
    // memory.
    tx: RingTx,
    comp: CompletionQueue,
    _fill: FillQueue,
    user: User,
    _umem: xdpilone::Umem,
    area: UmemArea,
    free: Vec<u32>,
    spec: PacketSpec,
    next_flow: u64,
    tx_budget: Result<u32, std::io::Error>,
}

impl std::fmt::Debug for AfXdpGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpGenerator")
            .field("fd", &self.user.as_raw_fd())
            .field("spec", &self.spec)
            .field("tx_budget", &self.tx_budget)
            .finish_non_exhaustive()
    }
}

fn step(what: &'static str) -> impl FnOnce(xdpilone::Errno) -> PktgenError {
    move |e| PktgenError::Io {
        what,
        source: errno(e),
    }
}

impl AfXdpGenerator {
    /// Opens and binds the socket on `queue` of `interface` (of the calling thread's
    /// network namespace) and writes every frame. Needs CAP_NET_RAW and CAP_IPC_LOCK.
    pub fn new(
        interface: &Interface,
        queue: u32,
        spec: &PacketSpec,
    ) -> Result<AfXdpGenerator, PktgenError> {
        spec.validate()?;
        let cfg = UmemConfig {
            frames: FRAMES,
            frame_size: 2048,
            fill_size: 64,
            comp_size: TX_RING,
            rx_size: 64,
            tx_size: TX_RING,
            zero_copy: false,
        };
        let area = UmemArea::new(&cfg).map_err(|source| PktgenError::Io {
            what: "mapping the UMEM",
            source,
        })?;
        let frame = spec.frame();
        for idx in 0..area.frames() {
            let Some(ptr) = area.frame_ptr(idx) else {
                continue;
            };
            // SAFETY: no socket exists yet, so nothing else reads or writes the frame.
            let bytes = unsafe { &mut *ptr.as_ptr() };
            bytes[..frame.len()].copy_from_slice(&frame);
        }
        // SAFETY: `AfXdpGenerator` declares the rings, socket and UMEM before `area`, so
        // they drop first.
        let umem = unsafe { area.register(&cfg) }.map_err(|source| PktgenError::Io {
            what: "registering the UMEM",
            source,
        })?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(interface.index())
            .map_err(step("interface lookup"))?;
        info.set_queue(queue);
        let socket = Socket::with_shared(&info, &umem).map_err(step("AF_XDP socket"))?;
        let device = umem.fq_cq(&socket).map_err(step("fill/completion rings"))?;
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: None,
                    tx_size: NonZeroU32::new(TX_RING),
                    bind_flags: SocketConfig::XDP_BIND_NEED_WAKEUP,
                },
            )
            .map_err(step("tx ring"))?;
        let tx = user.map_tx().map_err(step("mmap tx ring"))?;
        let tx_budget = sys::set_tx_budget(user.as_raw_fd(), BATCH).map(|()| BATCH);
        umem.bind(&user).map_err(step("bind"))?;
        let (fill, comp) = device.into_parts();
        Ok(AfXdpGenerator {
            tx,
            comp,
            _fill: fill,
            user,
            _umem: umem,
            free: (0..area.frames()).rev().collect(),
            area,
            spec: spec.clone(),
            next_flow: 0,
            tx_budget,
        })
    }

    /// The TX budget in force, or why the kernel refused to raise it (older kernels).
    pub fn tx_budget(&self) -> Result<u32, &std::io::Error> {
        self.tx_budget.as_ref().copied()
    }

    /// Sends until `limit` says stop, then waits (up to a second) for the kernel to
    /// complete what it took. `packets` counts descriptors the kernel consumed; in copy
    /// mode a packet the device could not take is completed all the same (dropped), so
    /// compare with what the receiver counted.
    pub fn run(&mut self, limit: &RunLimit) -> Result<GenReport, PktgenError> {
        self.run_until(limit, &AtomicBool::new(false))
    }

    /// [`AfXdpGenerator::run`] that also ends once `stop` is set.
    pub fn run_until(
        &mut self,
        limit: &RunLimit,
        stop: &AtomicBool,
    ) -> Result<GenReport, PktgenError> {
        limit.check_bounded()?;
        let pacer = Pacer::new(*limit, u64::from(BATCH));
        let (mut queued, mut completed, mut failures) = (0u64, 0u64, 0u64);
        let mut progress = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let reaped = self.reap();
            completed += reaped;
            let now = Instant::now();
            if reaped > 0 {
                progress = now;
            } else if now.duration_since(progress) > STALL {
                return Err(PktgenError::Stalled {
                    queued,
                    completed,
                    pending: self.tx.pending(),
                });
            }
            match pacer.next(queued, now) {
                Next::Done => break,
                Next::WaitUntil(at) => {
                    failures += self.kick()?;
                    pacer.wait_until(at);
                    // Waiting for the pacer is not a stall.
                    progress = Instant::now();
                }
                Next::Send(n) => {
                    queued += self.queue(n);
                    failures += self.kick()?;
                }
            }
        }
        let elapsed = pacer.start().elapsed();
        let deadline = Instant::now() + DRAIN;
        while completed < queued && Instant::now() < deadline {
            failures += self.kick()?;
            completed += self.reap();
        }
        Ok(GenReport {
            mode: GenMode::AfXdp,
            packets: completed,
            bytes: completed * u64::from(self.spec.size),
            elapsed,
            tx_retries: failures,
        })
    }

    /// Queues up to `n` frames (as many as there are free ones and room in the ring),
    /// each re-addressed to the next flow. Returns how many.
    fn queue(&mut self, n: u64) -> u64 {
        let want = u32::try_from(n).unwrap_or(u32::MAX).min(BATCH);
        let want = want.min(u32::try_from(self.free.len()).unwrap_or(u32::MAX));
        if want == 0 {
            return 0;
        }
        let len = u32::from(self.spec.size);
        let mut writer = self.tx.transmit(want);
        let mut written = 0;
        while written < writer.capacity() {
            let Some(idx) = self.free.pop() else {
                break;
            };
            if let Some(ptr) = self.area.frame_ptr(idx) {
                // SAFETY: the frame is on our free list: the kernel holds no descriptor
                // of it, and nothing else in this process borrows it.
                let bytes = unsafe { &mut *ptr.as_ptr() };
                set_flow(
                    &mut bytes[..len as usize],
                    self.spec.protocol,
                    self.spec.flow(self.next_flow),
                );
            }
            let desc = XdpDesc {
                addr: self.area.addr(idx),
                len,
                options: 0,
            };
            if !writer.insert_once(desc) {
                self.free.push(idx);
                break;
            }
            self.next_flow += 1;
            written += 1;
        }
        writer.commit();
        u64::from(written)
    }

    /// Returns completed frames to the free list; how many.
    fn reap(&mut self) -> u64 {
        let mut n = 0;
        for _ in 0..2 {
            let mut reader = self.comp.complete(TX_RING);
            let capacity = reader.capacity();
            while let Some(addr) = reader.read() {
                if let Some(idx) = self.area.frame_of(addr) {
                    self.free.push(idx);
                    n += 1;
                }
            }
            reader.release();
            if capacity == 0 {
                break;
            }
        }
        n
    }

    /// Asks the kernel to transmit what is queued. Returns 1 when it could not take
    /// everything now (counted, retried on the next round); an error when the device
    /// refuses for good.
    fn kick(&mut self) -> Result<u64, PktgenError> {
        if self.tx.pending() == 0 || !self.tx.needs_wakeup() {
            return Ok(0);
        }
        match sys::kick_tx(self.user.as_raw_fd()) {
            Ok(()) => Ok(0),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => Ok(1),
                _ => Err(PktgenError::Io {
                    what: "sendto (TX kick)",
                    source: e,
                }),
            },
        }
    }
}
