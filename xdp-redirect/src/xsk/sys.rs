//! The few raw syscalls the AF_XDP code needs beyond what xdpilone wraps: the anonymous
//! mapping behind a UMEM, the TX kick, XDP_STATISTICS, the TX budget, the clock. Each
//! takes the raw fd of a bound AF_XDP socket (xdpilone's `User::as_raw_fd`).

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// `SOL_XDP` (linux/socket.h); libc does not define it for every target.
const SOL_XDP: libc::c_int = 283;
/// `XDP_STATISTICS` (linux/if_xdp.h).
const XDP_STATISTICS: libc::c_int = 7;
/// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, Linux 6.17+): how many descriptors one
/// `sendto()` moves in copy mode (default 32). Accepted range 32..=tx ring size.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// `struct xdp_statistics` as Linux 5.9+ fills it. Older kernels fill a prefix; the rest
/// stays zero.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawXdpStatistics {
    rx_dropped: u64,
    rx_invalid_descs: u64,
    tx_invalid_descs: u64,
    rx_ring_full: u64,
    rx_fill_ring_empty_descs: u64,
    tx_ring_empty_descs: u64,
}

/// The kernel's per-socket counters (`getsockopt(SOL_XDP, XDP_STATISTICS)`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XdpSocketStats {
    /// Dropped for reasons other than a full rx ring or an empty fill ring.
    pub rx_dropped: u64,
    /// Rx descriptors the kernel found invalid.
    pub rx_invalid_descs: u64,
    /// Tx descriptors the kernel rejected (bad address or length).
    pub tx_invalid: u64,
    /// Packets dropped because our rx ring was full (we did not keep up).
    pub rx_ring_full: u64,
    /// Packets dropped because our fill ring was empty (no frame to receive into).
    pub fill_ring_empty: u64,
    /// Times the kernel found our tx ring empty when asked to send.
    pub tx_ring_empty: u64,
}

impl XdpSocketStats {
    /// Adds another socket's counters (for totals).
    pub fn add(&mut self, other: &XdpSocketStats) {
        self.rx_dropped += other.rx_dropped;
        self.rx_invalid_descs += other.rx_invalid_descs;
        self.tx_invalid += other.tx_invalid;
        self.rx_ring_full += other.rx_ring_full;
        self.fill_ring_empty += other.fill_ring_empty;
        self.tx_ring_empty += other.tx_ring_empty;
    }
}

/// Reads the kernel's counters of the AF_XDP socket `fd`.
pub fn xdp_statistics(fd: RawFd) -> io::Result<XdpSocketStats> {
    let mut raw = RawXdpStatistics::default();
    let mut len = size_of::<RawXdpStatistics>() as libc::socklen_t;
    // SAFETY: `raw` is a plain repr(C) struct of `len` bytes that outlives the call; the
    // kernel writes at most `len` bytes and reports how many.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_STATISTICS,
            (&raw mut raw).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(XdpSocketStats {
        rx_dropped: raw.rx_dropped,
        rx_invalid_descs: raw.rx_invalid_descs,
        tx_invalid: raw.tx_invalid_descs,
        rx_ring_full: raw.rx_ring_full,
        fill_ring_empty: raw.rx_fill_ring_empty_descs,
        tx_ring_empty: raw.tx_ring_empty_descs,
    })
}

/// Raises how many descriptors one `sendto()` transmits in copy mode on socket `fd`
/// (32..=its tx ring size). Kernels before 6.17 refuse (the budget stays 32): callers
/// report that and carry on.
pub fn set_tx_budget(fd: RawFd, budget: u32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live u32 and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&raw const budget).cast::<libc::c_void>(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to transmit what the tx ring holds (copy mode transmits only inside
/// this call, at most the TX budget per call). EAGAIN, EBUSY and ENOBUFS mean "not now,
/// reap completions and try again"; other errors, that the device refuses.
pub fn kick_tx(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length send with null buffers is the documented AF_XDP wakeup.
    let rc = unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Wakes a driver that stopped consuming the fill ring (zero-copy with need_wakeup).
pub(crate) fn wake_rx(fd: RawFd) {
    // SAFETY: a zero-length receive with null buffers is the documented AF_XDP wakeup;
    // errors (EAGAIN) carry no information here.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the `now` the datapath runs on.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a live timespec; cannot fail for CLOCK_MONOTONIC.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The calling thread's kernel id (for /proc/self/task/<tid>).
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// A private anonymous mapping, page aligned, prefaulted; unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    pub(crate) fn anonymous(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { base, len })
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `anonymous` mapped; nothing borrows it any more (the
        // owner drops the sockets that registered it first).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
