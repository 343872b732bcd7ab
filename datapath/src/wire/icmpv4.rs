//! ICMPv4 messages (RFC 792): echo for ping through Services, and the error messages the
//! datapath sends (port unreachable for a Service without endpoints, time exceeded,
//! fragmentation needed) or reverse-NATs (their quoted packet sits in [`Icmpv4Packet::data`]).
//!
//! The view wraps the whole ICMP message; the checksum covers all of it.

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
    /// RFC 1191: the MTU of the next hop in a "fragmentation needed" message.
    pub const NEXT_HOP_MTU: Field = 6..8;
}

pub const HEADER_LEN: usize = field::REST.end;

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const TYPE_SOURCE_QUENCH: u8 = 4;
pub const TYPE_REDIRECT: u8 = 5;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_TIME_EXCEEDED: u8 = 11;
pub const TYPE_PARAMETER_PROBLEM: u8 = 12;

/// Destination unreachable: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Destination unreachable: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time exceeded: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

/// Whether a message type is an error that quotes the offending packet: never answer one
/// with another error (RFC 1122 3.2.2), and reverse-NAT its quoted header.
pub const fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        TYPE_DEST_UNREACHABLE
            | TYPE_SOURCE_QUENCH
            | TYPE_REDIRECT
            | TYPE_TIME_EXCEEDED
            | TYPE_PARAMETER_PROBLEM
    )
}

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes (any type and code).
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>, WireError> {
        let packet = Icmpv4Packet::new_unchecked(buffer);
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

    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Everything after the 8-byte header: echo data, or an error's quoted packet.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum over the whole message is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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

    pub fn set_next_hop_mtu(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU, value);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and writes the checksum over the whole buffer the view wraps.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The ICMPv4 header fields. `emit` leaves the checksum zero: write the data, then call
/// [`Icmpv4Packet::fill_checksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Repr {
    pub msg_type: u8,
    pub code: u8,
    /// Bytes 4..8: echo ident and sequence, next-hop MTU, or zero.
    pub rest_of_header: u32,
}

impl Icmpv4Repr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv4Packet<T>) -> Result<Icmpv4Repr, WireError> {
        packet.check_len()?;
        Ok(Icmpv4Repr {
            msg_type: packet.msg_type(),
            code: packet.code(),
            rest_of_header: packet.rest_of_header(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
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

    /// An echo request, ident 0x1234, seq 1, payload "abcd"; checksum computed by hand:
    /// 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364 = 0xdefb, stored inverted as 0x2104.
    static ECHO_BYTES: [u8; 12] = [
        0x08, 0x00, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn getters_read_static_echo() {
        let p = Icmpv4Packet::new_checked(&ECHO_BYTES[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (TYPE_ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.data(), b"abcd");
        assert_eq!(p.checksum(), 0x2104);
        assert!(p.verify_checksum());
        assert!(!is_error(p.msg_type()));
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let repr = Icmpv4Repr {
            msg_type: TYPE_ECHO_REQUEST,
            code: 0,
            rest_of_header: 0x1234_0001,
        };
        let mut buf = [0xa5u8; 12];
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        p.data_mut().copy_from_slice(b"abcd");
        p.fill_checksum();
        assert_eq!(buf, ECHO_BYTES);
        assert_eq!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn frag_needed_carries_mtu() {
        let mut buf = [0xa5u8; 36];
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(TYPE_DEST_UNREACHABLE);
        p.set_code(CODE_FRAG_NEEDED);
        p.set_rest_of_header(0);
        p.set_next_hop_mtu(1450);
        p.data_mut().fill(0);
        p.fill_checksum();
        assert_eq!(&buf[4..8], &[0, 0, 0x05, 0xaa]);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum() && is_error(p.msg_type()));
        assert_eq!(p.next_hop_mtu(), 1450);
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        p.set_echo_ident(1);
        p.set_echo_seq(2);
        assert_eq!(p.rest_of_header(), 0x0001_0002);
    }

    #[test]
    fn is_error_classifies_types() {
        for t in 0..=255u8 {
            assert_eq!(is_error(t), matches!(t, 3 | 4 | 5 | 11 | 12), "type {t}");
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&ECHO_BYTES, HEADER_LEN, |b| {
            Icmpv4Packet::new_checked(b).is_ok()
        });
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let mut rng = XorShift::new(0x1c);
        for round in 0..200 {
            let payload: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u8()).collect();
            let (id, seq) = (rng.next_u16(), rng.next_u16());
            let ip = PacketBuilder::ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64);
            let mut pkt = Vec::new();
            if round % 2 == 0 {
                ip.icmpv4_echo_request(id, seq)
                    .write(&mut pkt, &payload)
                    .unwrap();
            } else {
                ip.icmpv4_echo_reply(id, seq)
                    .write(&mut pkt, &payload)
                    .unwrap();
            }
            let sliced = SlicedPacket::from_ip(&pkt).unwrap();
            let Some(TransportSlice::Icmpv4(icmp)) = sliced.transport else {
                panic!("no icmp")
            };
            let p = Icmpv4Packet::new_checked(&pkt[20..]).unwrap();
            assert_eq!(p.msg_type(), icmp.type_u8());
            assert_eq!(p.code(), icmp.code_u8());
            assert_eq!(p.checksum(), icmp.checksum());
            assert_eq!((p.echo_ident(), p.echo_seq()), (id, seq));
            assert_eq!(p.data(), &payload[..]);
            assert!(p.verify_checksum());
            let mut copy = pkt[20..].to_vec();
            Icmpv4Packet::new_unchecked(&mut copy[..]).fill_checksum();
            assert_eq!(copy, &pkt[20..]);
        }
    }

    #[test]
    fn no_panic() {
        fuzz(0x1c4, &[&ECHO_BYTES], 40, FUZZ_ROUNDS, |b| {
            let accepted = Icmpv4Packet::new_checked(b).is_ok();
            if let Ok(p) = Icmpv4Packet::new_checked(b) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header());
                let _ = (
                    p.echo_ident(),
                    p.echo_seq(),
                    p.next_hop_mtu(),
                    p.data().len(),
                );
                let _ = (p.verify_checksum(), is_error(p.msg_type()));
                let _ = Icmpv4Repr::parse(&p).unwrap();
            }
            accepted
        });
    }
}
