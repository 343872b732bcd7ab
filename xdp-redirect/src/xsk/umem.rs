//! The UMEM: one mapping of equal frames that every socket of a worker receives into and
//! transmits from, so a packet moves from any of the worker's ports to any other without a
//! copy in userspace.

use std::io;
use std::ptr::NonNull;

use super::sys::Mapping;

/// `XDP_PACKET_HEADROOM`: the kernel writes received data this far into a frame (after the
/// UMEM headroom, which we leave at 0), so rx data already has
/// `datapath::frame::DEFAULT_HEADROOM` (256) bytes in front of it for encapsulation.
pub const XDP_PACKET_HEADROOM: u32 = 256;

const _: () = assert!(XDP_PACKET_HEADROOM as usize >= datapath::frame::DEFAULT_HEADROOM);

/// Sizes of a worker's UMEM and of each socket's rings. Ring sizes must be powers of two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmemConfig {
    /// Frames in the UMEM, shared by all of the worker's sockets.
    pub frames: u32,
    /// Bytes per frame: a power of two in 2048..=page size.
    pub frame_size: u32,
    /// Fill ring entries per socket (each socket is stocked with a share of the frames).
    pub fill_size: u32,
    /// Completion ring entries per socket.
    pub comp_size: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    /// Bind in zero-copy mode (needs driver support; veth has none) instead of copy mode.
    pub zero_copy: bool,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frames: 8192,
            frame_size: 2048,
            fill_size: 2048,
            comp_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            zero_copy: false,
        }
    }
}

impl UmemConfig {
    /// Explains what is wrong with these sizes, if anything.
    pub fn validate(&self) -> Result<(), UmemConfigError> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
        if !self.frame_size.is_power_of_two() || self.frame_size < 2048 || self.frame_size > page {
            return Err(UmemConfigError::FrameSize {
                frame_size: self.frame_size,
                page,
            });
        }
        for (ring, size) in [
            ("fill_size", self.fill_size),
            ("comp_size", self.comp_size),
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
        ] {
            if !size.is_power_of_two() {
                return Err(UmemConfigError::RingSize { ring, size });
            }
        }
        if self.frames < 64 {
            return Err(UmemConfigError::TooFewFrames(self.frames));
        }
        if u64::from(self.frames) * u64::from(self.frame_size) > 1 << 34 {
            return Err(UmemConfigError::TooLarge {
                frames: self.frames,
                frame_size: self.frame_size,
            });
        }
        Ok(())
    }
}

/// What is wrong with a [`UmemConfig`]; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UmemConfigError {
    #[error("frame_size {frame_size} must be a power of two in 2048..={page}")]
    FrameSize { frame_size: u32, page: u32 },
    /// `ring` is the field: `fill_size`, `comp_size`, `rx_size` or `tx_size`.
    #[error("{ring} {size} must be a power of two")]
    RingSize { ring: &'static str, size: u32 },
    #[error("frames {0} is fewer than 64")]
    TooFewFrames(u32),
    #[error("frames * frame_size ({frames} * {frame_size}) exceeds 16 GiB")]
    TooLarge { frames: u32, frame_size: u32 },
}

/// The mapping behind a UMEM and how it divides into frames (aligned mode: equal frames
/// of `frame_size` bytes, frame `i` at UMEM address `i * frame_size`). It owns the
/// memory only: who may touch which frame is the user's bookkeeping (the worker's
/// ledger, the rig generator's free list).
#[derive(Debug)]
pub struct UmemArea {
    map: Mapping,
    frame_size: u32,
    frames: u32,
}

impl UmemArea {
    /// Maps `cfg.frames * cfg.frame_size` bytes (page aligned, prefaulted). The ring
    /// sizes of `cfg` matter only to [`UmemArea::register`].
    pub fn new(cfg: &UmemConfig) -> io::Result<UmemArea> {
        let len = cfg.frames as usize * cfg.frame_size as usize;
        Ok(UmemArea {
            map: Mapping::anonymous(len)?,
            frame_size: cfg.frame_size,
            frames: cfg.frames,
        })
    }

    /// How many frames the area holds.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The UMEM address of frame `idx`'s first byte.
    pub fn addr(&self, idx: u32) -> u64 {
        u64::from(idx) * u64::from(self.frame_size)
    }

    /// The frame index of a UMEM address (aligned mode: any address inside a frame).
    pub fn frame_of(&self, addr: u64) -> Option<u32> {
        let idx = addr / u64::from(self.frame_size);
        u32::try_from(idx).ok().filter(|&i| i < self.frames)
    }

    /// Splits an rx descriptor into (frame, offset in frame), if it lies inside one frame.
    pub fn locate(&self, addr: u64, len: u32) -> Option<(u32, u32)> {
        let idx = self.frame_of(addr)?;
        let offset = (addr - self.addr(idx)) as u32;
        (offset.checked_add(len)? <= self.frame_size).then_some((idx, offset))
    }

    /// Registers the area with the kernel: a fresh xdpilone UMEM (its fd is the first
    /// socket to bind). xdpilone sizes every socket's fill/completion pair from it.
    ///
    /// # Safety
    ///
    /// The returned UMEM, and every socket and ring made from it, must be dropped before
    /// `self`: the kernel and xdpilone keep using the area's memory until then.
    pub unsafe fn register(&self, rings: &UmemConfig) -> io::Result<xdpilone::Umem> {
        let cfg = xdpilone::UmemConfig {
            fill_size: rings.fill_size,
            complete_size: rings.comp_size,
            frame_size: self.frame_size,
            headroom: 0,
            flags: 0,
        };
        let area = NonNull::slice_from_raw_parts(self.map.base(), self.map.len());
        // SAFETY: the area is page aligned (mmap), `len` bytes long, and outlives the
        // returned UMEM (the caller's contract).
        unsafe { xdpilone::Umem::new(cfg, area) }.map_err(errno)
    }

    /// The bytes of frame `idx`, as a raw slice pointer. Turning it into a reference is
    /// only sound while the caller owns the frame (the ledger has it with the worker, so
    /// neither the kernel nor any other borrow touches it).
    pub fn frame_ptr(&self, idx: u32) -> Option<NonNull<[u8]>> {
        if idx >= self.frames {
            return None;
        }
        let offset = idx as usize * self.frame_size as usize;
        // SAFETY: idx < frames, so `offset` and the frame after it lie inside the mapping.
        let start = unsafe { self.map.base().add(offset) };
        Some(NonNull::slice_from_raw_parts(
            start,
            self.frame_size as usize,
        ))
    }
}

/// xdpilone's errno as an io::Error (it sometimes stores the negated value).
pub fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}
