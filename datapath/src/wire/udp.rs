//! UDP datagrams (RFC 768), with IPv4 and IPv6 pseudo-header checksums.
//!
//! `new_checked` requires `8 <= length field <= buffer length`; the payload ends at the length
//! field, so trailing bytes (padding) are ignored. The view should wrap the IP payload.
//! A zero checksum means "not computed" over IPv4 and is accepted; over IPv6 it is invalid
//! (RFC 8200 section 8.1) and does not verify.

use super::ipv4::protocol;
use super::{Field, WireError, checksum, clamp, read_u16, write_u16};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// `Truncated` if the buffer is shorter than 8 bytes or than the length field;
    /// `Malformed` if the length field is below 8.
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, WireError> {
        let packet = UdpPacket::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let claimed = usize::from(self.len());
        if claimed < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if claimed > len {
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

    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the datagram carries no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Header and payload as the length field bounds them (clamped to the buffer).
    fn datagram(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(0, usize::from(self.len()), buf.len())]
    }

    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(HEADER_LEN, usize::from(self.len()), buf.len())]
    }

    /// The ones'-complement sum over pseudo header and datagram (checksum field included).
    fn sum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> u16 {
        let d = self.datagram();
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, protocol::UDP, d.len() as u32),
            checksum::data(d),
        ])
    }

    fn sum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> u16 {
        let d = self.datagram();
        checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, protocol::UDP, d.len() as u32),
            checksum::data(d),
        ])
    }

    /// Whether the checksum is right for these IPv4 addresses; 0 (none) is accepted.
    pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        self.checksum() == 0 || self.sum_v4(src, dst) == !0
    }

    /// Whether the checksum is right for these IPv6 addresses; 0 is rejected.
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        self.checksum() != 0 && self.sum_v6(src, dst) == !0
    }
}

/// A computed UDP checksum of 0 goes on the wire as 0xffff: 0 would mean "none".
fn stored(sum: u16) -> u16 {
    match !sum {
        0 => 0xffff,
        c => c,
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = clamp(
            HEADER_LEN,
            usize::from(self.len()),
            self.buffer.as_ref().len(),
        );
        &mut self.buffer.as_mut()[range]
    }

    /// Computes and writes the checksum over the datagram (as the length field bounds it).
    pub fn fill_checksum_v4(&mut self, src: [u8; 4], dst: [u8; 4]) {
        self.set_checksum(0);
        let sum = self.sum_v4(src, dst);
        self.set_checksum(stored(sum));
    }

    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let sum = self.sum_v6(src, dst);
        self.set_checksum(stored(sum));
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The UDP header fields; the checksum needs the addresses and payload, so `emit` leaves it
/// zero and the caller fills it once the payload is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<UdpRepr, WireError> {
        packet.check()?;
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes ports, length (`8 + payload_len`, which must fit 16 bits) and a zero checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>) {
        debug_assert!(HEADER_LEN + self.payload_len <= usize::from(u16::MAX));
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, XorShift, assert_truncations_fail, fuzz};

    const SRC: [u8; 4] = [10, 244, 1, 5];
    const DST: [u8; 4] = [10, 96, 0, 10];

    /// DNS-ish query 40000 -> 53 with 4 payload bytes and 2 trailing padding bytes; the
    /// checksum 0x48f8 is correct for SRC -> DST (computed by hand from the pseudo header).
    static DATAGRAM_BYTES: [u8; 14] = [
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0x48, 0xf8, 0x01, 0x02, 0x03, 0x04, 0xee, 0xee,
    ];

    #[test]
    fn getters_read_static_datagram() {
        let p = UdpPacket::new_checked(&DATAGRAM_BYTES[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (40000, 53, 12));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(!p.is_empty());
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(SRC, [10, 96, 0, 11]));
        let mut no_ck = DATAGRAM_BYTES;
        no_ck[6..8].copy_from_slice(&[0, 0]);
        assert!(
            UdpPacket::new_checked(&no_ck[..])
                .unwrap()
                .verify_checksum_v4(SRC, DST)
        );
        assert!(
            !UdpPacket::new_checked(&no_ck[..])
                .unwrap()
                .verify_checksum_v6(&[0; 16], &[0; 16])
        );
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let repr = UdpRepr {
            src_port: 40000,
            dst_port: 53,
            payload_len: 4,
        };
        let mut buf = [0xa5u8; 12];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        p.fill_checksum_v4(SRC, DST);
        assert_eq!(buf, DATAGRAM_BYTES[..12]);
        assert_eq!(
            UdpRepr::parse(&UdpPacket::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn zero_sum_is_written_as_ffff() {
        // Find a payload word that makes the computed checksum 0, then check it is sent as 0xffff.
        let mut buf = [0u8; 10];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        }
        .emit(&mut p);
        p.fill_checksum_v4(SRC, DST);
        let ck = p.checksum();
        // Adding the current checksum as payload makes the total sum 0xffff -> checksum 0.
        p.payload_mut().copy_from_slice(&ck.to_be_bytes());
        p.fill_checksum_v4(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn check_errors() {
        let mut b = DATAGRAM_BYTES;
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        b[5] = 15;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
        b[5] = 14;
        assert!(UdpPacket::new_checked(&b[..]).is_ok());
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&DATAGRAM_BYTES, 12, |b| UdpPacket::new_checked(b).is_ok());
    }

    /// Random datagrams built by etherparse over IPv4 and IPv6: our getters and checksums agree.
    #[test]
    fn matches_etherparse() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let mut rng = XorShift::new(0x17);
        for round in 0..300 {
            let payload: Vec<u8> = (0..rng.below(100)).map(|_| rng.next_u8()).collect();
            let (sp, dp) = (rng.next_u16(), rng.next_u16());
            let mut pkt = Vec::new();
            let (s4, d4): ([u8; 4], [u8; 4]) = (
                core::array::from_fn(|_| rng.next_u8()),
                core::array::from_fn(|_| rng.next_u8()),
            );
            let (s6, d6): ([u8; 16], [u8; 16]) = (
                core::array::from_fn(|_| rng.next_u8()),
                core::array::from_fn(|_| rng.next_u8()),
            );
            let v6 = round % 2 == 1;
            if v6 {
                PacketBuilder::ipv6(s6, d6, 64)
                    .udp(sp, dp)
                    .write(&mut pkt, &payload)
                    .unwrap();
            } else {
                PacketBuilder::ipv4(s4, d4, 64)
                    .udp(sp, dp)
                    .write(&mut pkt, &payload)
                    .unwrap();
            }
            let sliced = SlicedPacket::from_ip(&pkt).unwrap();
            let Some(TransportSlice::Udp(udp)) = sliced.transport else {
                panic!("no udp")
            };
            let l4 = &pkt[pkt.len() - payload.len() - HEADER_LEN..];
            let p = UdpPacket::new_checked(l4).unwrap();
            assert_eq!(p.src_port(), udp.source_port());
            assert_eq!(p.dst_port(), udp.destination_port());
            assert_eq!(p.len(), udp.length());
            assert_eq!(p.checksum(), udp.checksum());
            assert_eq!(p.payload(), &payload[..]);
            let mut copy = l4.to_vec();
            let mut q = UdpPacket::new_unchecked(&mut copy[..]);
            if v6 {
                assert!(p.verify_checksum_v6(&s6, &d6));
                q.fill_checksum_v6(&s6, &d6);
            } else {
                assert!(p.verify_checksum_v4(s4, d4));
                q.fill_checksum_v4(s4, d4);
            }
            assert_eq!(q.checksum(), udp.checksum());
        }
    }

    #[test]
    fn no_panic() {
        fuzz(0x11, &[&DATAGRAM_BYTES], 40, FUZZ_ROUNDS, |b| {
            let accepted = UdpPacket::new_checked(b).is_ok();
            if let Ok(p) = UdpPacket::new_checked(b) {
                let _ = (
                    p.src_port(),
                    p.dst_port(),
                    p.len(),
                    p.is_empty(),
                    p.checksum(),
                );
                let _ = p.payload().len();
                let _ = p.verify_checksum_v4([1, 2, 3, 4], [5, 6, 7, 8]);
                let _ = p.verify_checksum_v6(&[1; 16], &[2; 16]);
                let _ = UdpRepr::parse(&p).unwrap();
            }
            accepted
        });
    }
}
