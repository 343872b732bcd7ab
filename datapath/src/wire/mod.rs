//! Zero-copy views and `Repr`s for every header the datapath reads or writes.
//!
//! # What this module owns
//!
//! Byte layouts, and nothing else: which bytes of a buffer are which field of which header, and
//! the checksums over them. It decides nothing about packets (that is the pipeline's job), keeps
//! no state, never calls the OS and never allocates.
//!
//! # Two layers per protocol (the smoltcp shape)
//!
//! * A view, `Packet<T: AsRef<[u8]>>`, wraps a buffer: getters read fields in place, setters
//!   (in `impl<T: AsRef<[u8]> + AsMut<[u8]>>`) write them in place. A view over `&[u8]` reads,
//!   one over `&mut [u8]` rewrites a frame in the UMEM without copying it.
//! * A small `Copy` `Repr` holds the fields the datapath reasons about, with `parse` (from a
//!   checked view) and `emit` (into a view over a buffer at least `header_len()` long).
//!
//! Field offsets live in a private `mod field` per header; there are no magic numbers inline.
//!
//! # The contract
//!
//! * `new_unchecked(buffer)` wraps anything; accessors on it may panic if the buffer is short.
//!   Use it only for buffers the datapath sized itself (emitting a header).
//! * `new_checked(buffer)` validates the length fields (and the few invariants named in each
//!   view's docs) and returns [`WireError::Truncated`] when the buffer ends too early, or
//!   [`WireError::Malformed`] when a field contradicts the format.
//! * **After `new_checked` succeeds, no accessor panics** on that view, for any byte sequence.
//!   Variable-length accessors (`payload`, `options`, ...) also clamp to the buffer, so even a
//!   setter that writes a nonsensical length afterwards cannot make a later getter panic.
//! * Checksums are never verified implicitly: the pipeline decides what a bad checksum means.
//! * Errors are a unit-like enum: cheap on the hot path, no strings.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

#[cfg(test)]
mod test_util;

use core::fmt;
use core::ops::Range;

/// Why a buffer is not a valid header. Deliberately tiny: the pipeline maps it to a
/// `DropReason` together with the protocol it was parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before the header (or the length its fields claim) does.
    Truncated,
    /// A field contradicts the format (wrong version, length below the minimum, ...).
    Malformed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
        })
    }
}

impl std::error::Error for WireError {}

/// A field as a byte range within its header.
pub(crate) type Field = Range<usize>;

/// `start..end` cut down to a buffer of `len` bytes and never inverted, so slicing with it
/// cannot panic whatever a length field says.
#[inline]
pub(crate) fn clamp(start: usize, end: usize, len: usize) -> Range<usize> {
    let end = end.min(len);
    start.min(end)..end
}

/// Reads a big-endian `u16` at `field`.
#[inline]
pub(crate) fn read_u16(buf: &[u8], field: Field) -> u16 {
    let b = &buf[field];
    u16::from_be_bytes([b[0], b[1]])
}

/// Reads a big-endian `u32` at `field`.
#[inline]
pub(crate) fn read_u32(buf: &[u8], field: Field) -> u32 {
    let b = &buf[field];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
pub(crate) fn write_u16(buf: &mut [u8], field: Field, value: u16) {
    buf[field].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(buf: &mut [u8], field: Field, value: u32) {
    buf[field].copy_from_slice(&value.to_be_bytes());
}

/// Copies a fixed-size field out of a buffer.
#[inline]
pub(crate) fn read_array<const N: usize>(buf: &[u8], field: Field) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[field]);
    out
}
