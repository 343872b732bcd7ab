//! Ethernet II frames: destination, source, EtherType, payload.
//!
//! No FCS: AF_XDP frames end before it. An 802.1Q/802.1ad tag shows up here as an EtherType of
//! [`ethertype::VLAN`]/[`ethertype::QINQ`]; [`crate::wire::vlan::walk_l2`] follows the tags.

use super::{Field, WireError, read_array, read_u16, write_u16};
use crate::addr::MacAddr;

mod field {
    use super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD_START: usize = ETHERTYPE.end;
}

/// Length of the untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD_START;

/// The EtherTypes the datapath dispatches on.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (Q-in-Q).
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard Q-in-Q TPID some switches still send.
    pub const QINQ_OLD: u16 = 0x9100;
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, WireError> {
        let frame = EthernetFrame::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Truncated` if the buffer cannot hold the header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(read_array(self.buffer.as_ref(), field::DST))
    }

    pub fn src_addr(&self) -> MacAddr {
        MacAddr(read_array(self.buffer.as_ref(), field::SRC))
    }

    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the 14-byte header (a VLAN tag, when the EtherType says so).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD_START..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD_START..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Reads a checked frame. Never fails today; `Result` keeps every `Repr::parse` alike.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr, WireError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; the frame must be at least [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, assert_truncations_fail, fuzz};

    /// An ARP request frame head: broadcast from 0a:58:0a:f4:01:05.
    static FRAME_BYTES: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00,
    ];

    #[test]
    fn getters_read_static_frame() {
        let frame = EthernetFrame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(
            frame.src_addr(),
            MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05])
        );
        assert_eq!(frame.ethertype(), ethertype::ARP);
        assert_eq!(frame.payload(), &[0x00, 0x01, 0x08, 0x00]);
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let repr =
            EthernetRepr::parse(&EthernetFrame::new_checked(&FRAME_BYTES[..]).unwrap()).unwrap();
        let mut buf = [0xa5u8; 18];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        repr.emit(&mut frame);
        frame.payload_mut().copy_from_slice(&FRAME_BYTES[14..]);
        assert_eq!(buf, FRAME_BYTES);
        let again = EthernetRepr::parse(&EthernetFrame::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(again, repr);
    }

    #[test]
    fn matches_etherparse() {
        let builder =
            etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(1000, 2000);
        let mut pkt = Vec::new();
        builder.write(&mut pkt, b"hello").unwrap();
        let frame = EthernetFrame::new_checked(&pkt[..]).unwrap();
        let (eth, _) = etherparse::Ethernet2Header::from_slice(&pkt).unwrap();
        assert_eq!(frame.src_addr().0, eth.source);
        assert_eq!(frame.dst_addr().0, eth.destination);
        assert_eq!(frame.ethertype(), u16::from(eth.ether_type));
        assert_eq!(frame.payload().len(), pkt.len() - HEADER_LEN);
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&FRAME_BYTES, HEADER_LEN, |b| {
            EthernetFrame::new_checked(b).is_ok()
        });
        assert_eq!(
            EthernetFrame::new_checked(&FRAME_BYTES[..13]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn no_panic() {
        fuzz(0xe7, &[&FRAME_BYTES], 40, FUZZ_ROUNDS, |b| {
            let accepted = EthernetFrame::new_checked(b).is_ok();
            if let Ok(f) = EthernetFrame::new_checked(b) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
                let _ = EthernetRepr::parse(&f).unwrap();
            }
            accepted
        });
    }
}
