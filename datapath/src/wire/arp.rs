//! ARP over Ethernet for IPv4 (RFC 826), the only flavour the datapath answers.
//!
//! `new_checked` accepts only htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4: any other
//! combination is a different packet layout, reported as `Malformed`.

use super::ethernet::ethertype;
use super::{Field, WireError, read_array, read_u16, write_u16};
use crate::addr::MacAddr;

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const HEADER_LEN: usize = field::TPA.end;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
/// Hardware type: Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
const HLEN_ETHERNET: u8 = 6;
const PLEN_IPV4: u8 = 4;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps a buffer holding an Ethernet/IPv4 ARP packet: `Truncated` below [`HEADER_LEN`]
    /// bytes, `Malformed` for any other hardware/protocol type or address length.
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, WireError> {
        let packet = ArpPacket::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != ethertype::IPV4
            || self.hardware_len() != HLEN_ETHERNET
            || self.protocol_len() != PLEN_IPV4
        {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    pub fn sender_hw_addr(&self) -> MacAddr {
        MacAddr(read_array(self.buffer.as_ref(), field::SHA))
    }

    pub fn sender_proto_addr(&self) -> [u8; 4] {
        read_array(self.buffer.as_ref(), field::SPA)
    }

    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr(read_array(self.buffer.as_ref(), field::THA))
    }

    pub fn target_proto_addr(&self) -> [u8; 4] {
        read_array(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE, value);
    }

    pub fn set_protocol_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PTYPE, value);
    }

    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    pub fn set_operation(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::OPER, value);
    }

    pub fn set_sender_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    pub fn set_sender_proto_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr);
    }

    pub fn set_target_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    pub fn set_target_proto_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr);
    }
}

/// The fields of an Ethernet/IPv4 ARP packet that vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: u16,
    pub sender_hw_addr: MacAddr,
    pub sender_proto_addr: [u8; 4],
    pub target_hw_addr: MacAddr,
    pub target_proto_addr: [u8; 4],
}

impl ArpRepr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Reads a checked packet (re-checks, so an unchecked view cannot slip through).
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        packet.check()?;
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_hw_addr: packet.sender_hw_addr(),
            sender_proto_addr: packet.sender_proto_addr(),
            target_hw_addr: packet.target_hw_addr(),
            target_proto_addr: packet.target_proto_addr(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the whole packet, fixed type and length fields included; the buffer must be at
    /// least [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(ethertype::IPV4);
        packet.set_hardware_len(HLEN_ETHERNET);
        packet.set_protocol_len(PLEN_IPV4);
        packet.set_operation(self.operation);
        packet.set_sender_hw_addr(self.sender_hw_addr);
        packet.set_sender_proto_addr(self.sender_proto_addr);
        packet.set_target_hw_addr(self.target_hw_addr);
        packet.set_target_proto_addr(self.target_proto_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, assert_truncations_fail, fuzz};

    /// Pod 10.244.1.5 asks who has its gateway 10.244.1.1.
    static REQUEST_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, op
        0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05, 10, 244, 1, 5, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 244, 1, 1, // target
    ];

    fn request() -> ArpRepr {
        ArpRepr {
            operation: OP_REQUEST,
            sender_hw_addr: MacAddr::for_ipv4([10, 244, 1, 5]),
            sender_proto_addr: [10, 244, 1, 5],
            target_hw_addr: MacAddr::ZERO,
            target_proto_addr: [10, 244, 1, 1],
        }
    }

    #[test]
    fn getters_read_static_request() {
        let p = ArpPacket::new_checked(&REQUEST_BYTES[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_hw_addr(), MacAddr::for_ipv4([10, 244, 1, 5]));
        assert_eq!(p.sender_proto_addr(), [10, 244, 1, 5]);
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_proto_addr(), [10, 244, 1, 1]);
        assert_eq!(ArpRepr::parse(&p).unwrap(), request());
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let mut buf = [0xa5u8; HEADER_LEN];
        request().emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST_BYTES);
        let reply = ArpRepr {
            operation: OP_REPLY,
            sender_hw_addr: MacAddr::for_ipv4([10, 244, 1, 1]),
            sender_proto_addr: [10, 244, 1, 1],
            target_hw_addr: MacAddr::for_ipv4([10, 244, 1, 5]),
            target_proto_addr: [10, 244, 1, 5],
        };
        let mut buf = [0xa5u8; HEADER_LEN];
        reply.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()).unwrap(),
            reply
        );
    }

    #[test]
    fn rejects_other_layouts() {
        for (at, value) in [(1, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut bytes = REQUEST_BYTES;
            bytes[at] = value;
            assert_eq!(
                ArpPacket::new_checked(&bytes[..]).unwrap_err(),
                WireError::Malformed
            );
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&REQUEST_BYTES, HEADER_LEN, |b| {
            ArpPacket::new_checked(b).is_ok()
        });
        assert_eq!(
            ArpPacket::new_checked(&REQUEST_BYTES[..27]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{ArpHardwareId, ArpOperation, EtherType};
        let ep = etherparse::ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REPLY,
            &[2, 3, 4, 5, 6, 7],
            &[192, 168, 0, 1],
            &[8, 9, 10, 11, 12, 13],
            &[192, 168, 0, 2],
        )
        .unwrap();
        let bytes = ep.to_bytes();
        let p = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.operation(), OP_REPLY);
        assert_eq!(p.sender_hw_addr().0, [2, 3, 4, 5, 6, 7]);
        assert_eq!(p.sender_proto_addr(), [192, 168, 0, 1]);
        assert_eq!(p.target_hw_addr().0, [8, 9, 10, 11, 12, 13]);
        assert_eq!(p.target_proto_addr(), [192, 168, 0, 2]);
        // And etherparse reads what we emit.
        let mut buf = [0xa5u8; HEADER_LEN];
        request().emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        let back = etherparse::ArpPacket::from_slice(&buf)
            .unwrap()
            .try_eth_ipv4()
            .unwrap();
        assert_eq!(back.operation, ArpOperation::REQUEST);
        assert_eq!(back.sender_ipv4, [10, 244, 1, 5]);
        assert_eq!(back.target_ipv4, [10, 244, 1, 1]);
    }

    #[test]
    fn no_panic() {
        fuzz(0xa4, &[&REQUEST_BYTES], 40, FUZZ_ROUNDS, |b| {
            let accepted = ArpPacket::new_checked(b).is_ok();
            if let Ok(p) = ArpPacket::new_checked(b) {
                let _ = (p.operation(), p.sender_hw_addr(), p.sender_proto_addr());
                let _ = (p.target_hw_addr(), p.target_proto_addr(), p.hardware_type());
                let _ = (p.protocol_type(), p.hardware_len(), p.protocol_len());
                let _ = ArpRepr::parse(&p).unwrap();
            }
            accepted
        });
    }
}
