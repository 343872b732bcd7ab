//! TCP segments (RFC 9293): the header fields NAT, conntrack and RST generation need.
//!
//! TCP has no length field of its own, so the view must wrap exactly the IP payload: the
//! payload runs to the end of the buffer and the checksum covers the whole buffer.
//! `new_checked` requires 20 bytes, a data offset >= 5 and `header_len <= buffer length`.
//! Options are exposed as raw bytes (see [`TcpPacket::mss_option`] for the one we read).

use super::ipv4::protocol;
use super::{Field, WireError, checksum, clamp, read_u16, read_u32, write_u16, write_u32};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset in the high nibble; the low nibble holds reserved bits and NS (AccECN).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a header without options (the minimum).
pub const HEADER_LEN: usize = field::URGENT.end;

/// The flag bits of byte 13.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: usize = 4;

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// `Truncated` below 20 bytes or below the header length; `Malformed` for a data
    /// offset below 5.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, WireError> {
        let packet = TcpPacket::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.header_len() < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if self.header_len() > len {
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

    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The eight classic flag bits (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether all of the flag bits in `mask` are set.
    pub fn has_flags(&self, mask: u8) -> bool {
        self.flags() & mask == mask
    }

    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The raw option bytes.
    pub fn options(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(HEADER_LEN, self.header_len(), buf.len())]
    }

    /// Everything after the header, to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(self.header_len(), buf.len(), buf.len())]
    }

    /// The offset of the MSS option's value within the segment and the value, if the options
    /// carry a well-formed one: the encap path clamps it so pods do not send segments the
    /// VXLAN overlay would have to fragment. A malformed option list ends the search.
    pub fn mss_option(&self) -> Option<(usize, u16)> {
        let opts = self.options();
        let mut at = 0;
        while at < opts.len() {
            match opts[at] {
                OPT_END => return None,
                OPT_NOP => at += 1,
                kind => {
                    let len = usize::from(*opts.get(at + 1)?);
                    if len < 2 || at + len > opts.len() {
                        return None;
                    }
                    if kind == OPT_MSS && len == OPT_MSS_LEN {
                        let value = u16::from_be_bytes([opts[at + 2], opts[at + 3]]);
                        return Some((HEADER_LEN + at + 2, value));
                    }
                    at += len;
                }
            }
        }
        None
    }

    fn sum_with(&self, pseudo: u16) -> u16 {
        checksum::combine(&[pseudo, checksum::data(self.buffer.as_ref())])
    }

    /// Whether the checksum is right for these IPv4 addresses (the whole buffer is summed).
    pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        let len = self.buffer.as_ref().len() as u32;
        self.sum_with(checksum::pseudo_header_v4(src, dst, protocol::TCP, len)) == !0
    }

    /// Whether the checksum is right for these IPv6 addresses (the whole buffer is summed).
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let len = self.buffer.as_ref().len() as u32;
        self.sum_with(checksum::pseudo_header_v6(src, dst, protocol::TCP, len)) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60), keeping the low nibble.
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *b = (*b & 0x0f) | (((len / 4) as u8) << 4);
    }

    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    pub fn set_window(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    pub fn set_urgent(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let range = clamp(HEADER_LEN, self.header_len(), self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[range]
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let range = clamp(self.header_len(), len, len);
        &mut self.buffer.as_mut()[range]
    }

    /// Computes and writes the checksum over the whole buffer.
    pub fn fill_checksum_v4(&mut self, src: [u8; 4], dst: [u8; 4]) {
        self.set_checksum(0);
        let len = self.buffer.as_ref().len() as u32;
        let sum = self.sum_with(checksum::pseudo_header_v4(src, dst, protocol::TCP, len));
        self.set_checksum(!sum);
    }

    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let len = self.buffer.as_ref().len() as u32;
        let sum = self.sum_with(checksum::pseudo_header_v6(src, dst, protocol::TCP, len));
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fixed TCP header fields (options are not represented: `emit` writes a 20-byte header
/// and a zero checksum; fill it once the payload is in place). Enough for a RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
}

impl TcpRepr {
    /// The length `emit` writes.
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn parse<T: AsRef<[u8]>>(packet: &TcpPacket<T>) -> Result<TcpRepr, WireError> {
        packet.check()?;
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window(),
            urgent: packet.urgent(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut TcpPacket<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.buffer.as_mut()[field::DATA_OFFSET] = ((HEADER_LEN / 4) as u8) << 4;
        packet.set_flags(self.flags);
        packet.set_window(self.window);
        packet.set_checksum(0);
        packet.set_urgent(self.urgent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, XorShift, assert_truncations_fail, fuzz};

    const SRC: [u8; 4] = [10, 244, 1, 5];
    const DST: [u8; 4] = [10, 244, 2, 7];

    /// A SYN 51000 -> 8080 with MSS 1460, NOP, NOP, SACK-permitted... (data offset 7).
    static SYN_BYTES: [u8; 28] = [
        0xc7, 0x38, 0x1f, 0x90, // ports
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0x70, 0x02, 0xfa, 0xf0, // data offset 7, SYN, window 64240
        0x00, 0x00, 0x00, 0x00, // checksum (filled in tests), urgent
        0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x04, 0x02, // MSS 1460, NOP, NOP, SACK ok
    ];

    fn syn_bytes() -> [u8; 28] {
        let mut b = SYN_BYTES;
        TcpPacket::new_unchecked(&mut b[..]).fill_checksum_v4(SRC, DST);
        b
    }

    #[test]
    fn getters_read_static_syn() {
        let b = syn_bytes();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (51000, 8080));
        assert_eq!((p.seq_number(), p.ack_number()), (0x1234_5678, 0));
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.flags(), flags::SYN);
        assert!(p.has_flags(flags::SYN) && !p.has_flags(flags::SYN | flags::ACK));
        assert_eq!((p.window(), p.urgent()), (64240, 0));
        assert_eq!(p.options(), &SYN_BYTES[20..]);
        assert_eq!(p.payload(), &[] as &[u8]);
        assert_eq!(p.mss_option(), Some((22, 1460)));
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(SRC, [10, 244, 2, 8]));
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let repr = TcpRepr {
            src_port: 8080,
            dst_port: 51000,
            seq_number: 0,
            ack_number: 0x1234_5679,
            flags: flags::RST | flags::ACK,
            window: 0,
            urgent: 0,
        };
        let mut buf = [0xa5u8; HEADER_LEN];
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        p.fill_checksum_v4(DST, SRC);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum_v4(DST, SRC));
        assert_eq!(TcpRepr::parse(&p).unwrap(), repr);
        assert_eq!(p.header_len(), HEADER_LEN);
        assert_eq!(&buf[12..14], &[0x50, 0x14]);
    }

    #[test]
    fn setters_write_their_bits_only() {
        let mut b = syn_bytes();
        b[12] |= 0x01; // NS / AccECN bit survives set_header_len
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_header_len(24);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.as_ref()[12], 0x61);
        p.set_flags(flags::FIN | flags::ACK);
        p.set_window(7);
        p.set_seq_number(1);
        p.set_ack_number(2);
        p.set_urgent(3);
        assert_eq!(
            (
                p.flags(),
                p.window(),
                p.seq_number(),
                p.ack_number(),
                p.urgent()
            ),
            (0x11, 7, 1, 2, 3)
        );
        assert_eq!(p.options_mut().len(), 4);
        assert_eq!(p.payload_mut().len(), 4);
        p.set_header_len(60); // beyond the buffer: getters must clamp, not panic
        assert_eq!(p.payload().len(), 0);
        assert_eq!(p.options().len(), 8);
    }

    #[test]
    fn mss_option_edge_cases() {
        let with_opts = |opts: &[u8]| {
            let mut b = vec![0u8; HEADER_LEN];
            b.extend_from_slice(opts);
            b[12] = ((b.len() / 4) as u8) << 4;
            TcpPacket::new_checked(b).unwrap().mss_option()
        };
        assert_eq!(with_opts(&[1, 1, 1, 1]), None);
        assert_eq!(with_opts(&[0, 2, 4, 5, 0xb4, 0, 0, 0]), None); // EOL first
        assert_eq!(
            with_opts(&[8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 1, 0, 0, 0]),
            Some((32, 256))
        );
        assert_eq!(with_opts(&[3, 0, 2, 4]), None); // length 0 is malformed
        assert_eq!(with_opts(&[1, 1, 1, 2]), None); // kind without a length byte
        assert_eq!(with_opts(&[1, 2, 4, 5]), None); // runs past the options
    }

    #[test]
    fn check_errors() {
        let mut b = syn_bytes();
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        b[12] = 0x80;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&syn_bytes(), 28, |b| TcpPacket::new_checked(b).is_ok());
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
        let mut rng = XorShift::new(0x6);
        for round in 0..300 {
            let payload: Vec<u8> = (0..rng.below(100)).map(|_| rng.next_u8()).collect();
            let (s4, d4): ([u8; 4], [u8; 4]) = (
                core::array::from_fn(|_| rng.next_u8()),
                core::array::from_fn(|_| rng.next_u8()),
            );
            let (s6, d6): ([u8; 16], [u8; 16]) = (
                core::array::from_fn(|_| rng.next_u8()),
                core::array::from_fn(|_| rng.next_u8()),
            );
            let (sp, dp, seq, win, ack) = (
                rng.next_u16(),
                rng.next_u16(),
                rng.next_u32(),
                rng.next_u16(),
                rng.next_u32(),
            );
            let mss = rng.next_u16();
            let v6 = round % 2 == 1;
            let mut pkt = Vec::new();
            let ip = if v6 {
                PacketBuilder::ipv6(s6, d6, 64)
            } else {
                PacketBuilder::ipv4(s4, d4, 64)
            };
            let mut tcp = ip.tcp(sp, dp, seq, win);
            if round % 3 == 0 {
                tcp = tcp
                    .syn()
                    .options(&[
                        TcpOptionElement::MaximumSegmentSize(mss),
                        TcpOptionElement::Noop,
                    ])
                    .unwrap();
            } else {
                tcp = tcp.ack(ack).psh();
            }
            tcp.write(&mut pkt, &payload).unwrap();
            let sliced = SlicedPacket::from_ip(&pkt).unwrap();
            let Some(TransportSlice::Tcp(t)) = sliced.transport else {
                panic!("no tcp")
            };
            let l4 = &pkt[if v6 { 40 } else { 20 }..];
            let p = TcpPacket::new_checked(l4).unwrap();
            assert_eq!(p.src_port(), t.source_port());
            assert_eq!(p.dst_port(), t.destination_port());
            assert_eq!(p.seq_number(), t.sequence_number());
            assert_eq!(p.ack_number(), t.acknowledgment_number());
            assert_eq!(p.header_len(), t.slice().len() - t.payload().len());
            assert_eq!(p.has_flags(flags::SYN), t.syn());
            assert_eq!(p.has_flags(flags::ACK), t.ack());
            assert_eq!(p.has_flags(flags::PSH), t.psh());
            assert_eq!(p.window(), t.window_size());
            assert_eq!(p.checksum(), t.checksum());
            assert_eq!(p.options(), t.options());
            assert_eq!(p.payload(), &payload[..]);
            assert_eq!(p.mss_option().map(|m| m.1), (round % 3 == 0).then_some(mss));
            let mut copy = l4.to_vec();
            let mut q = TcpPacket::new_unchecked(&mut copy[..]);
            if v6 {
                assert!(p.verify_checksum_v6(&s6, &d6));
                q.fill_checksum_v6(&s6, &d6);
            } else {
                assert!(p.verify_checksum_v4(s4, d4));
                q.fill_checksum_v4(s4, d4);
            }
            assert_eq!(q.checksum(), t.checksum());
        }
    }

    /// DNAT rewrites the destination address (pseudo header) and port: the incremental
    /// updates must agree with a full recomputation.
    #[test]
    fn incremental_nat_update_matches_fill() {
        let mut rng = XorShift::new(0x6a);
        for _ in 0..2000 {
            let mut b = syn_bytes();
            let new_dst: [u8; 4] = core::array::from_fn(|_| rng.next_u8());
            let new_port = rng.next_u16();
            let mut p = TcpPacket::new_unchecked(&mut b[..]);
            let ck = checksum::update_bytes(p.checksum(), &DST, &new_dst);
            let ck = checksum::update_u16(ck, p.dst_port(), new_port);
            p.set_dst_port(new_port);
            p.set_checksum(ck);
            assert!(p.verify_checksum_v4(SRC, new_dst));
        }
    }

    #[test]
    fn no_panic() {
        let syn = syn_bytes();
        fuzz(0x66, &[&syn], 80, FUZZ_ROUNDS, |b| {
            let accepted = TcpPacket::new_checked(b).is_ok();
            if let Ok(p) = TcpPacket::new_checked(b) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
                let _ = (
                    p.header_len(),
                    p.flags(),
                    p.window(),
                    p.checksum(),
                    p.urgent(),
                );
                let _ = (p.options().len(), p.payload().len(), p.mss_option());
                let _ = p.verify_checksum_v4([1, 2, 3, 4], [5, 6, 7, 8]);
                let _ = p.verify_checksum_v6(&[1; 16], &[2; 16]);
                let _ = TcpRepr::parse(&p).unwrap();
            }
            accepted
        });
    }
}
