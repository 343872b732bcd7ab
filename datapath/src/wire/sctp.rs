//! SCTP common headers (RFC 9260, formerly 4960): ports for Service load balancing and NAT,
//! and the CRC32c checksum NAT must recompute (it cannot be updated incrementally the way
//! the Internet checksum can, and it covers no pseudo header, so an address rewrite alone
//! leaves it valid; a port rewrite does not).
//!
//! The checksum is stored in the byte order RFC 4960 appendix B transmits it: the CRC's low
//! byte first. [`SctpPacket::checksum`] reads it as a little-endian `u32`, so it compares
//! equal to [`compute_checksum`]. The view should wrap exactly the IP payload: the checksum
//! covers the whole buffer.

use super::{Field, WireError, checksum, read_u16, read_u32, write_u16, write_u32};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const VERIFICATION_TAG: Field = 4..8;
    pub const CHECKSUM: Field = 8..12;
}

pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// The CRC32c of a whole SCTP packet with its checksum field taken as zero, without copying
/// it. Buffers shorter than the header are summed as they are (no panic).
pub fn compute_checksum(packet: &[u8]) -> u32 {
    if packet.len() < HEADER_LEN {
        return checksum::crc32c(packet);
    }
    let crc = checksum::crc32c(&packet[..field::CHECKSUM.start]);
    let crc = checksum::crc32c_append(crc, &[0; 4]);
    checksum::crc32c_append(crc, &packet[field::CHECKSUM.end..])
}

/// A view of an SCTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SctpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> SctpPacket<T> {
        SctpPacket { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes; chunks are not looked at.
    pub fn new_checked(buffer: T) -> Result<SctpPacket<T>, WireError> {
        let packet = SctpPacket::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn verification_tag(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VERIFICATION_TAG)
    }

    /// The stored CRC32c, read little-endian (see the module docs).
    pub fn checksum(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The chunks.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The type of the first chunk (INIT = 1 starts an association), if there is one.
    pub fn first_chunk_type(&self) -> Option<u8> {
        self.payload().first().copied()
    }

    pub fn verify_checksum(&self) -> bool {
        compute_checksum(self.buffer.as_ref()) == self.checksum()
    }
}

impl SctpPacket<&[u8]> {
    /// [`compute_checksum`], reachable as `SctpPacket::compute_checksum(bytes)` too.
    pub fn compute_checksum(packet: &[u8]) -> u32 {
        compute_checksum(packet)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpPacket<T> {
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    pub fn set_verification_tag(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::VERIFICATION_TAG, value);
    }

    /// Stores a CRC32c value little-endian (see the module docs).
    pub fn set_checksum(&mut self, value: u32) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_le_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and writes the CRC32c over the whole buffer.
    pub fn fill_checksum(&mut self) {
        let crc = compute_checksum(self.buffer.as_ref());
        self.set_checksum(crc);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for SctpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The SCTP common-header fields. `emit` writes a zero checksum: write the chunks, then
/// call [`SctpPacket::fill_checksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SctpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub verification_tag: u32,
}

impl SctpRepr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn parse<T: AsRef<[u8]>>(packet: &SctpPacket<T>) -> Result<SctpRepr, WireError> {
        packet.check_len()?;
        Ok(SctpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            verification_tag: packet.verification_tag(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut SctpPacket<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_verification_tag(self.verification_tag);
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, XorShift, assert_truncations_fail, fuzz};

    /// A known-good SCTP INIT (53600 -> 80) with its checksum, as masscan's self-test ships it
    /// (`sctp_selftest`, a packet its scanner sends to real stacks): the stored bytes
    /// 58 e4 5d 36 are the CRC32c 0x365de458 low byte first.
    static INIT_BYTES: [u8; 32] = [
        0xd1, 0x60, 0x00, 0x50, // ports
        0x00, 0x00, 0x00, 0x00, // verification tag
        0x58, 0xe4, 0x5d, 0x36, // checksum
        0x01, 0x00, 0x00, 0x14, // INIT, flags 0, length 20
        0x9e, 0x8d, 0x52, 0x25, // initiate tag
        0x00, 0x00, 0x80, 0x00, // a_rwnd
        0x00, 0x0a, 0x08, 0x00, // outbound / inbound streams
        0x46, 0x1a, 0xdf, 0x3d, // initial TSN
    ];

    #[test]
    fn getters_read_static_init() {
        let b = INIT_BYTES;
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.verification_tag()),
            (53600, 80, 0)
        );
        assert_eq!(p.checksum(), 0x365d_e458);
        assert_eq!(p.first_chunk_type(), Some(1));
        assert_eq!(p.payload().len(), 20);
        assert!(p.verify_checksum());
        // The stored bytes are the CRC low byte first.
        assert_eq!(&b[8..12], &compute_checksum(&b).to_le_bytes());
        let mut bad = b;
        bad[3] = 8;
        assert!(!SctpPacket::new_checked(&bad[..]).unwrap().verify_checksum());
    }

    /// Cross-check against an independent bitwise CRC32c over a copy with the field zeroed.
    #[test]
    fn compute_checksum_matches_bitwise_crc() {
        fn bitwise(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0x82f6_3b78
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut rng = XorShift::new(0x5c7);
        for _ in 0..300 {
            let len = HEADER_LEN + rng.below(100);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u8()).collect();
            let got = compute_checksum(&b);
            b[8..12].fill(0);
            assert_eq!(got, bitwise(&b));
        }
        assert_eq!(compute_checksum(&[1, 2, 3]), checksum::crc32c(&[1, 2, 3]));
        assert_eq!(SctpPacket::compute_checksum(&INIT_BYTES), 0x365d_e458);
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let repr = SctpRepr {
            src_port: 53600,
            dst_port: 80,
            verification_tag: 0,
        };
        let mut buf = [0xa5u8; 32];
        let mut p = SctpPacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        p.payload_mut().copy_from_slice(&INIT_BYTES[12..]);
        p.fill_checksum();
        assert_eq!(buf, INIT_BYTES);
        assert_eq!(
            SctpRepr::parse(&SctpPacket::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
        let mut p = SctpPacket::new_unchecked(&mut buf[..]);
        p.set_verification_tag(0xdead_beef);
        p.set_src_port(1);
        p.set_dst_port(2);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.src_port(), p.dst_port(), p.verification_tag()),
            (1, 2, 0xdead_beef)
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&INIT_BYTES, HEADER_LEN, |b| {
            SctpPacket::new_checked(b).is_ok()
        });
    }

    #[test]
    fn no_panic() {
        let init = INIT_BYTES;
        fuzz(0x5c, &[&init], 48, FUZZ_ROUNDS, |b| {
            let _ = compute_checksum(b);
            let accepted = SctpPacket::new_checked(b).is_ok();
            if let Ok(p) = SctpPacket::new_checked(b) {
                let _ = (
                    p.src_port(),
                    p.dst_port(),
                    p.verification_tag(),
                    p.checksum(),
                );
                let _ = (p.payload().len(), p.first_chunk_type(), p.verify_checksum());
                let _ = SctpRepr::parse(&p).unwrap();
            }
            accepted
        });
    }
}
