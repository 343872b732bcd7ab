//! One AF_XDP socket bound to one (device, queue), with its four rings: fill and
//! completion (its own pair, as the kernel requires for a shared UMEM on another device or
//! queue), rx and tx. Frames move through it under the ledger's eye.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::RawFd;

use xdpilone::xdp::XdpDesc;
use xdpilone::{CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, User};

use super::ledger::Ledger;
use super::sys::{self, XdpSocketStats};
use super::umem::{UmemArea, UmemConfig, errno};

/// The TX budget asked for (the kernel caps it at the tx ring size).
const TX_BUDGET: u32 = 256;
/// The kernel's minimum (and default) budget, `TX_BATCH_SIZE`.
const TX_BUDGET_MIN: u32 = 32;

/// A frame read from an rx ring: which frame, where its packet starts, how long it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxFrame {
    pub slot: u16,
    pub frame: u32,
    pub offset: u32,
    pub len: u32,
}

/// A frame to transmit (`offset`/`len` after `process` moved the packet around).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxFrame {
    pub frame: u32,
    pub offset: u32,
    pub len: u32,
}

/// Why opening a socket failed, and at which step.
#[derive(Debug)]
pub(crate) struct OpenError {
    pub step: &'static str,
    pub source: io::Error,
}

fn step(step: &'static str) -> impl FnOnce(xdpilone::Errno) -> OpenError {
    move |e| OpenError {
        step,
        source: errno(e),
    }
}

/// What a TX kick did.
#[derive(Debug)]
pub(crate) enum Kick {
    /// Nothing was waiting in the tx ring.
    Idle,
    /// The kernel took what it could.
    Sent,
    /// The kernel could not take more now (budget used, completion ring or device queue
    /// full): reap completions and try again.
    Again,
    /// The device refused (down, gone).
    Failed(io::Error),
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BadDescs {
    /// Rx descriptors outside any frame.
    pub rx: u64,
    /// Completions outside any frame.
    pub comp: u64,
}

pub(crate) struct XskSocket {
    fd: RawFd,
    // Field order is drop order: the rings unmap before the User drops the last fd ref.
    fill: FillQueue,
    comp: CompletionQueue,
    rx: RingRx,
    tx: RingTx,
    _user: User,
    tx_budget: Result<u32, io::Error>,
    pub(crate) bad: BadDescs,
}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("fd", &self.fd)
            .field("tx_budget", &self.tx_budget)
            .finish_non_exhaustive()
    }
}

impl XskSocket {
    /// Opens and binds a socket on (`ifindex`, `queue`). The UMEM's anchor (the first
    /// socket of a UMEM) binds on the UMEM's own fd and picks copy/zero-copy and
    /// need_wakeup; the others bind with XDP_SHARED_UMEM and inherit those (the kernel
    /// refuses mode flags on shared binds).
    pub(crate) fn open(
        umem: &xdpilone::Umem,
        anchor: bool,
        ifindex: u32,
        queue: u32,
        cfg: &UmemConfig,
    ) -> Result<XskSocket, OpenError> {
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(step("interface lookup"))?;
        info.set_queue(queue);
        let socket = if anchor {
            Socket::with_shared(&info, umem)
        } else {
            Socket::new(&info)
        }
        .map_err(step("socket"))?;
        let device = umem.fq_cq(&socket).map_err(step("fill/completion rings"))?;
        let bind_flags = if anchor {
            let mode = if cfg.zero_copy {
                SocketConfig::XDP_BIND_ZEROCOPY
            } else {
                SocketConfig::XDP_BIND_COPY
            };
            mode | SocketConfig::XDP_BIND_NEED_WAKEUP
        } else {
            0
        };
        let ring_cfg = SocketConfig {
            rx_size: NonZeroU32::new(cfg.rx_size),
            tx_size: NonZeroU32::new(cfg.tx_size),
            bind_flags,
        };
        let user = umem
            .rx_tx(&socket, &ring_cfg)
            .map_err(step("rx/tx rings"))?;
        let rx = user.map_rx().map_err(step("mmap rx ring"))?;
        let tx = user.map_tx().map_err(step("mmap tx ring"))?;
        let fd = user.as_raw_fd();
        let budget = TX_BUDGET.min(cfg.tx_size).max(TX_BUDGET_MIN);
        let tx_budget = sys::set_tx_budget(fd, budget).map(|()| budget);
        umem.bind(&user).map_err(step("bind"))?;
        let (fill, comp) = device.into_parts();
        Ok(XskSocket {
            fd,
            fill,
            comp,
            rx,
            tx,
            _user: user,
            tx_budget,
            bad: BadDescs::default(),
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// The TX budget in force, or why the kernel refused to raise it.
    pub(crate) fn tx_budget(&self) -> Result<u32, &io::Error> {
        self.tx_budget.as_ref().copied()
    }

    /// Moves up to `want` free frames into the fill ring. Returns how many.
    ///
    /// xdpilone serves a request from its cached view of the kernel's ring head and
    /// refreshes it only when that view is exhausted, so a short first pass is followed by
    /// a second one with a fresh view. The same holds for every ring below.
    pub(crate) fn fill(
        &mut self,
        ledger: &mut Ledger,
        area: &UmemArea,
        slot: u16,
        want: u32,
    ) -> u32 {
        let mut n = 0;
        for _ in 0..2 {
            if n == want || ledger.free_count() == 0 {
                break;
            }
            let mut writer = self.fill.fill(want - n);
            let capacity = writer.capacity();
            let mut written = 0;
            while written < capacity {
                let Some(idx) = ledger.take_for_fill(slot) else {
                    break;
                };
                if !writer.insert_once(area.addr(idx)) {
                    ledger.untake_fill(idx, slot);
                    break;
                }
                written += 1;
            }
            writer.commit();
            n += written;
            if written < capacity || capacity == 0 {
                break;
            }
        }
        if n > 0 && self.fill.needs_wakeup() {
            sys::wake_rx(self.fd);
        }
        n
    }

    /// Reads up to `max` received frames into `out`. Returns how many were read.
    pub(crate) fn receive(
        &mut self,
        ledger: &mut Ledger,
        area: &UmemArea,
        slot: u16,
        max: u32,
        out: &mut Vec<RxFrame>,
    ) -> u32 {
        let mut n = 0;
        for _ in 0..2 {
            if n == max {
                break;
            }
            let mut reader = self.rx.receive(max - n);
            let capacity = reader.capacity();
            while let Some(desc) = reader.read() {
                match area.locate(desc.addr, desc.len) {
                    Some((frame, offset)) => {
                        // A frame the ledger did not have on this socket is counted there
                        // and not touched.
                        if ledger.received(frame, slot) {
                            out.push(RxFrame {
                                slot,
                                frame,
                                offset,
                                len: desc.len,
                            });
                        }
                    }
                    None => self.bad.rx += 1,
                }
            }
            reader.release();
            n += capacity;
            if capacity == 0 {
                break;
            }
        }
        n
    }

    /// Reaps up to `max` completions. Returns how many frames came back.
    pub(crate) fn complete(
        &mut self,
        ledger: &mut Ledger,
        area: &UmemArea,
        slot: u16,
        max: u32,
    ) -> u32 {
        let (mut read, mut n) = (0, 0);
        for _ in 0..2 {
            if read == max {
                break;
            }
            let mut reader = self.comp.complete(max - read);
            let capacity = reader.capacity();
            while let Some(addr) = reader.read() {
                match area.frame_of(addr) {
                    Some(frame) => {
                        if ledger.completed(frame, slot) {
                            n += 1;
                        }
                    }
                    None => self.bad.comp += 1,
                }
            }
            reader.release();
            read += capacity;
            if capacity == 0 {
                break;
            }
        }
        n
    }

    /// Queues `frames` on the tx ring, as many as fit. Returns how many were queued (the
    /// first ones); the caller keeps the rest.
    pub(crate) fn transmit(
        &mut self,
        ledger: &mut Ledger,
        area: &UmemArea,
        slot: u16,
        frames: &[TxFrame],
    ) -> usize {
        let mut queued = 0;
        for _ in 0..2 {
            let rest = &frames[queued..];
            if rest.is_empty() {
                break;
            }
            let want = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            let mut writer = self.tx.transmit(want);
            let fits = (writer.capacity() as usize).min(rest.len());
            let mut written = 0;
            for f in &rest[..fits] {
                let desc = XdpDesc {
                    addr: area.addr(f.frame) + u64::from(f.offset),
                    len: f.len,
                    options: 0,
                };
                if !writer.insert_once(desc) {
                    break;
                }
                ledger.queued_tx(f.frame, slot);
                written += 1;
            }
            writer.commit();
            queued += written;
            if written == 0 {
                break;
            }
        }
        queued
    }

    /// Descriptors in the tx ring the kernel has not consumed yet.
    pub(crate) fn tx_pending(&self) -> u32 {
        self.tx.pending()
    }

    /// Frames the kernel put on the rx ring that we have not read (advisory).
    pub(crate) fn rx_available(&self) -> u32 {
        self.rx.available()
    }

    /// Asks the kernel to transmit. Copy mode transmits only inside this call.
    pub(crate) fn kick(&mut self) -> Kick {
        if self.tx.pending() == 0 {
            return Kick::Idle;
        }
        if !self.tx.needs_wakeup() {
            // Zero-copy driver still running: it will pick the ring up by itself.
            return Kick::Sent;
        }
        match sys::kick_tx(self.fd) {
            Ok(()) => Kick::Sent,
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => Kick::Again,
                _ => Kick::Failed(e),
            },
        }
    }

    pub(crate) fn statistics(&self) -> io::Result<XdpSocketStats> {
        sys::xdp_statistics(self.fd)
    }
}
