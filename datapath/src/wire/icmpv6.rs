//! ICMPv6 messages (RFC 4443): echo, the errors the datapath sends or reverse-NATs, and the
//! type numbers of neighbour discovery (RFC 4861), which the datapath answers for pod gateways.
//!
//! The view wraps the whole ICMPv6 message; the checksum covers an IPv6 pseudo header plus
//! all of it, so filling and verifying take the addresses.

use super::ipv4::protocol;
use super::{Field, WireError, checksum, read_u16, read_u32, write_u16, write_u32};

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// The 4 "rest of header" bytes, whose meaning depends on the type.
    pub const REST: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    /// Packet too big: the MTU of the next hop, 32 bits.
    pub const MTU: Field = 4..8;
}

pub const HEADER_LEN: usize = field::REST.end;

pub const TYPE_DEST_UNREACHABLE: u8 = 1;
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const TYPE_TIME_EXCEEDED: u8 = 3;
pub const TYPE_PARAMETER_PROBLEM: u8 = 4;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
pub const TYPE_ROUTER_ADVERT: u8 = 134;
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;

/// Destination unreachable: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 4;
/// Time exceeded: hop limit exceeded in transit.
pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;

/// Whether a message type is an error (RFC 4443: types 0..=127), which quotes the offending
/// packet and must never be answered with another error.
pub const fn is_error(msg_type: u8) -> bool {
    msg_type < 128
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Icmpv6Packet<T> {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes (any type and code).
    pub fn new_checked(buffer: T) -> Result<Icmpv6Packet<T>, WireError> {
        let packet = Icmpv6Packet::new_unchecked(buffer);
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

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 4..8 as one word, whatever the type.
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
    }

    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// The MTU of a packet-too-big message.
    pub fn mtu(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MTU)
    }

    /// Everything after the 8-byte header: echo data, an error's quoted packet, or an ND
    /// message's target address and options.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    fn sum(&self, src: &[u8; 16], dst: &[u8; 16]) -> u16 {
        let msg = self.buffer.as_ref();
        checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, protocol::ICMPV6, msg.len() as u32),
            checksum::data(msg),
        ])
    }

    /// Whether the checksum over pseudo header and the whole message is right.
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        self.sum(src, dst) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST, value);
    }

    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    pub fn set_echo_seq(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQ, value);
    }

    pub fn set_mtu(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::MTU, value);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and writes the checksum over the pseudo header and the whole buffer.
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let sum = self.sum(src, dst);
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The ICMPv6 header fields. `emit` leaves the checksum zero: write the data, then call
/// [`Icmpv6Packet::fill_checksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Repr {
    pub msg_type: u8,
    pub code: u8,
    /// Bytes 4..8: echo ident and sequence, MTU, pointer, ND flags, or zero.
    pub rest_of_header: u32,
}

impl Icmpv6Repr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv6Packet<T>) -> Result<Icmpv6Repr, WireError> {
        packet.check_len()?;
        Ok(Icmpv6Repr {
            msg_type: packet.msg_type(),
            code: packet.code(),
            rest_of_header: packet.rest_of_header(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv6Packet<T>) {
        packet.set_msg_type(self.msg_type);
        packet.set_code(self.code);
        packet.set_checksum(0);
        packet.set_rest_of_header(self.rest_of_header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, XorShift, assert_truncations_fail, fuzz};

    const SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x05];
    const DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x07];

    /// Echo request ident 0x0102 seq 3, "hi"; checksum filled in `echo_bytes`.
    static ECHO_BYTES: [u8; 10] = [128, 0, 0, 0, 0x01, 0x02, 0x00, 0x03, b'h', b'i'];

    fn echo_bytes() -> [u8; 10] {
        let mut b = ECHO_BYTES;
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(&SRC, &DST);
        b
    }

    #[test]
    fn getters_read_static_echo() {
        let b = echo_bytes();
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (TYPE_ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x0102, 3));
        assert_eq!(p.mtu(), 0x0102_0003);
        assert_eq!(p.data(), b"hi");
        assert!(p.verify_checksum(&SRC, &DST));
        assert!(!p.verify_checksum(&DST, &DST));
        assert!(!is_error(p.msg_type()));
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let repr = Icmpv6Repr {
            msg_type: TYPE_PACKET_TOO_BIG,
            code: 0,
            rest_of_header: 1450,
        };
        let mut buf = [0xa5u8; 48];
        let mut p = Icmpv6Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        p.data_mut().fill(0);
        p.fill_checksum(&SRC, &DST);
        let p = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.mtu(), 1450);
        assert!(p.verify_checksum(&SRC, &DST) && is_error(p.msg_type()));
        assert_eq!(Icmpv6Repr::parse(&p).unwrap(), repr);
        let mut p = Icmpv6Packet::new_unchecked(&mut buf[..]);
        p.set_mtu(9000);
        p.set_echo_seq(7);
        // 9000 fits the low half, which set_echo_seq overwrote.
        assert_eq!(p.rest_of_header(), 7);
        p.set_echo_ident(1);
        p.set_rest_of_header(5);
        assert_eq!((p.echo_ident(), p.echo_seq()), (0, 5));
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&echo_bytes(), HEADER_LEN, |b| {
            Icmpv6Packet::new_checked(b).is_ok()
        });
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let mut rng = XorShift::new(0x3a);
        for round in 0..200 {
            let s: [u8; 16] = core::array::from_fn(|_| rng.next_u8());
            let d: [u8; 16] = core::array::from_fn(|_| rng.next_u8());
            let payload: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u8()).collect();
            let (id, seq) = (rng.next_u16(), rng.next_u16());
            let ip = PacketBuilder::ipv6(s, d, 64);
            let mut pkt = Vec::new();
            if round % 2 == 0 {
                ip.icmpv6_echo_request(id, seq)
                    .write(&mut pkt, &payload)
                    .unwrap();
            } else {
                ip.icmpv6_echo_reply(id, seq)
                    .write(&mut pkt, &payload)
                    .unwrap();
            }
            let sliced = SlicedPacket::from_ip(&pkt).unwrap();
            let Some(TransportSlice::Icmpv6(icmp)) = sliced.transport else {
                panic!("no icmpv6")
            };
            let p = Icmpv6Packet::new_checked(&pkt[40..]).unwrap();
            assert_eq!(p.msg_type(), icmp.type_u8());
            assert_eq!(p.code(), icmp.code_u8());
            assert_eq!(p.checksum(), icmp.checksum());
            assert_eq!((p.echo_ident(), p.echo_seq()), (id, seq));
            assert_eq!(p.data(), &payload[..]);
            assert!(p.verify_checksum(&s, &d));
            let mut copy = pkt[40..].to_vec();
            Icmpv6Packet::new_unchecked(&mut copy[..]).fill_checksum(&s, &d);
            assert_eq!(copy, &pkt[40..]);
        }
    }

    #[test]
    fn no_panic() {
        let echo = echo_bytes();
        fuzz(0x3a6, &[&echo], 40, FUZZ_ROUNDS, |b| {
            let accepted = Icmpv6Packet::new_checked(b).is_ok();
            if let Ok(p) = Icmpv6Packet::new_checked(b) {
                let _ = (
                    p.msg_type(),
                    p.code(),
                    p.checksum(),
                    p.rest_of_header(),
                    p.mtu(),
                );
                let _ = (
                    p.echo_ident(),
                    p.echo_seq(),
                    p.data().len(),
                    is_error(p.msg_type()),
                );
                let _ = p.verify_checksum(&SRC, &DST);
                let _ = Icmpv6Repr::parse(&p).unwrap();
            }
            accepted
        });
    }
}
