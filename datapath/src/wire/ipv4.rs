//! IPv4 headers (RFC 791).
//!
//! `new_checked` verifies version 4, IHL >= 5 and `header_len <= total_len <= buffer length`.
//! Bytes after `total_len` (Ethernet padding of short frames) are allowed and ignored: every
//! accessor that returns packet bytes stops at `total_len`. Options are exposed as raw bytes;
//! the datapath forwards them untouched. The checksum is not verified by `new_checked`.

use super::{Field, WireError, checksum, clamp, read_array, read_u16, write_u16};

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of a header without options (the minimum).
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// IP protocol numbers the datapath dispatches on (shared by IPv6's next header).
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;
/// The fragment offset field counts 8-byte units.
const FRAG_UNIT: u16 = 8;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer holding an IPv4 packet. `Truncated` if the buffer is shorter than the
    /// 20-byte header or than `total_len`; `Malformed` for a version other than 4, an IHL
    /// below 5 or a `total_len` below the header length.
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let packet = Ipv4Packet::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 || self.header_len() < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(WireError::Malformed);
        }
        if total > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN bits as the one byte they share.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DONT_FRAG != 0
    }

    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MORE_FRAGS != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & FRAG_OFFSET_MASK) * FRAG_UNIT
    }

    /// Whether this is any fragment but a whole datagram: the L4 header may be elsewhere.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> [u8; 4] {
        read_array(self.buffer.as_ref(), field::SRC_ADDR)
    }

    pub fn dst_addr(&self) -> [u8; 4] {
        read_array(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The header bytes, options included (clamped to the buffer).
    pub fn header(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(0, self.header_len(), buf.len())]
    }

    /// The option bytes between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(HEADER_LEN, self.header_len(), buf.len())]
    }

    /// The payload: `header_len..total_len`, padding excluded.
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(self.header_len(), usize::from(self.total_len()), buf.len())]
    }

    /// Whether the header checksum (options included) is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.header()) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble, keeping the IHL.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60), keeping the version.
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    fn set_flg_off_bits(&mut self, mask: u16, bits: u16) {
        let old = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        write_u16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            (old & !mask) | (bits & mask),
        );
    }

    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flg_off_bits(FLAG_DONT_FRAG, if value { FLAG_DONT_FRAG } else { 0 });
    }

    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flg_off_bits(FLAG_MORE_FRAGS, if value { FLAG_MORE_FRAGS } else { 0 });
    }

    /// Sets the fragment offset in bytes (a multiple of 8; the remainder is dropped).
    pub fn set_frag_offset(&mut self, bytes: u16) {
        self.set_flg_off_bits(FRAG_OFFSET_MASK, bytes / FRAG_UNIT);
    }

    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    pub fn set_src_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr);
    }

    pub fn set_dst_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr);
    }

    /// Recomputes the header checksum over `header_len` bytes.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.header());
        self.set_checksum(!sum);
    }

    /// The payload, mutable: `header_len..total_len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = clamp(
            self.header_len(),
            usize::from(self.total_len()),
            self.buffer.as_ref().len(),
        );
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The IPv4 header fields the datapath reasons about. Options, fragmentation and the
/// checksum are not represented: `emit` writes an option-less, unfragmented header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub protocol: u8,
    pub ttl: u8,
    /// Bytes after the header (`total_len - header_len`).
    pub payload_len: usize,
    pub dont_frag: bool,
    pub ident: u16,
    pub dscp_ecn: u8,
}

impl Ipv4Repr {
    /// The length `emit` writes.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Reads a packet (re-checked, so an unchecked view cannot slip through). The checksum is
    /// not verified and options are skipped; `payload_len` excludes them.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr, WireError> {
        packet.check()?;
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            dont_frag: packet.dont_frag(),
            ident: packet.ident(),
            dscp_ecn: packet.dscp_ecn(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload, what `total_len` will say.
    pub const fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header with a correct checksum; the buffer must be at least
    /// [`HEADER_LEN`] bytes. `payload_len` must fit `total_len` (<= 65515); larger values are
    /// a caller bug (debug builds assert; release builds write the low 16 bits).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        debug_assert!(
            self.total_len() <= usize::from(u16::MAX),
            "IPv4 payload too long"
        );
        let buf = packet.buffer.as_mut();
        buf[field::VER_IHL] = 0x40 | (HEADER_LEN / 4) as u8;
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(self.total_len() as u16);
        packet.set_ident(self.ident);
        write_u16(
            packet.buffer.as_mut(),
            field::FLG_OFF,
            if self.dont_frag { FLAG_DONT_FRAG } else { 0 },
        );
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, XorShift, assert_truncations_fail, fuzz};

    /// 10.244.1.5 -> 10.96.0.10, UDP, TTL 64, DF, ident 0x1c46, 4 bytes of payload, followed
    /// by 2 bytes of Ethernet padding that must be ignored.
    static PACKET_BYTES: [u8; 26] = [
        0x45, 0x00, 0x00, 0x18, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x00,
        0x00, // checksum below
        10, 244, 1, 5, 10, 96, 0, 10, // addresses
        0xde, 0xad, 0xbe, 0xef, // payload
        0x00, 0x00, // padding
    ];

    fn packet_bytes() -> [u8; 26] {
        let mut bytes = PACKET_BYTES;
        Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        bytes
    }

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: [10, 244, 1, 5],
            dst_addr: [10, 96, 0, 10],
            protocol: protocol::UDP,
            ttl: 64,
            payload_len: 4,
            dont_frag: true,
            ident: 0x1c46,
            dscp_ecn: 0,
        }
    }

    #[test]
    fn getters_read_static_packet() {
        let bytes = packet_bytes();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src_addr(), [10, 244, 1, 5]);
        assert_eq!(p.dst_addr(), [10, 96, 0, 10]);
        assert_eq!(p.options(), &[] as &[u8]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
        let mut bad = bytes;
        bad[8] = 63;
        assert!(!Ipv4Packet::new_checked(&bad[..]).unwrap().verify_checksum());
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let mut buf = [0xa5u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p);
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(buf[..], packet_bytes()[..24]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn setters_write_their_bits_only() {
        let mut bytes = packet_bytes();
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
        p.set_frag_offset(1480);
        p.set_more_frags(true);
        p.set_dont_frag(false);
        assert_eq!(
            (p.frag_offset(), p.more_frags(), p.dont_frag()),
            (1480, true, false)
        );
        assert!(p.is_fragment());
        p.set_more_frags(false);
        assert!(p.is_fragment());
        p.set_frag_offset(0);
        assert!(!p.is_fragment());
        p.set_header_len(24);
        assert_eq!((p.version(), p.header_len()), (4, 24));
        p.set_version(6);
        assert_eq!((p.version(), p.header_len()), (6, 24));
        p.set_dscp_ecn(0xb8);
        p.set_total_len(1);
        // A nonsensical length written after the check must not make getters panic.
        assert_eq!(p.payload(), &[] as &[u8]);
        assert_eq!(p.payload_mut().len(), 0);
        assert_eq!(p.dscp_ecn(), 0xb8);
    }

    #[test]
    fn options_and_payload_follow_ihl() {
        // IHL 6: one 4-byte option word (NOP NOP NOP EOL), 2 bytes of payload.
        let mut bytes = [0u8; 26];
        bytes[0] = 0x46;
        bytes[2..4].copy_from_slice(&26u16.to_be_bytes());
        bytes[20..24].copy_from_slice(&[1, 1, 1, 0]);
        bytes[24..26].copy_from_slice(&[7, 8]);
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[7, 8]);
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, 2);
    }

    #[test]
    fn check_errors() {
        let bytes = packet_bytes();
        let with = |at: usize, v: u8| {
            let mut b = bytes;
            b[at] = v;
            Ipv4Packet::new_checked(&b[..]).map(|_| ())
        };
        assert_eq!(with(0, 0x65), Err(WireError::Malformed)); // version 6
        assert_eq!(with(0, 0x44), Err(WireError::Malformed)); // IHL 4
        assert_eq!(with(3, 19), Err(WireError::Malformed)); // total_len < 20
        assert_eq!(with(3, 27), Err(WireError::Truncated)); // total_len > buffer
        assert_eq!(with(3, 26), Ok(())); // padding consumed exactly
        assert_eq!(with(0, 0x4f), Err(WireError::Malformed)); // IHL 60 > total_len 24
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = packet_bytes();
        assert_truncations_fail(&bytes, 24, |b| Ipv4Packet::new_checked(b).is_ok());
    }

    /// Build real packets with etherparse (with options, fragments, TOS) and compare getters
    /// and checksums both ways.
    #[test]
    fn matches_etherparse() {
        use etherparse::{IpNumber, Ipv4Header};
        let mut rng = XorShift::new(0x4);
        for round in 0..200 {
            let payload_len = rng.below(64) as u16;
            let mut h = Ipv4Header::new(
                payload_len,
                rng.next_u8(),
                IpNumber(rng.next_u8()),
                core::array::from_fn(|_| rng.next_u8()),
                core::array::from_fn(|_| rng.next_u8()),
            )
            .unwrap();
            h.identification = rng.next_u16();
            h.dont_fragment = round % 2 == 0;
            h.more_fragments = round % 3 == 0;
            h.fragment_offset = etherparse::IpFragOffset::try_new(rng.next_u16() & 0x1fff).unwrap();
            h.dscp = etherparse::IpDscp::try_new(rng.next_u8() & 0x3f).unwrap();
            h.ecn = etherparse::IpEcn::try_new(rng.next_u8() & 0x3).unwrap();
            let opt_len = 4 * rng.below(11);
            let opts: Vec<u8> = (0..opt_len).map(|_| rng.next_u8()).collect();
            h.options = etherparse::Ipv4Options::try_from(&opts[..]).unwrap();
            h.total_len = (h.header_len() as u16) + payload_len;
            h.header_checksum = h.calc_header_checksum();
            let mut bytes = h.to_bytes().to_vec();
            bytes.extend((0..payload_len).map(|_| rng.next_u8()));
            let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(p.header_len(), h.header_len());
            assert_eq!(p.total_len(), h.total_len);
            assert_eq!(p.ident(), h.identification);
            assert_eq!(p.dont_frag(), h.dont_fragment);
            assert_eq!(p.more_frags(), h.more_fragments);
            assert_eq!(p.frag_offset(), h.fragment_offset.value() * 8);
            assert_eq!(p.dscp_ecn(), (h.dscp.value() << 2) | h.ecn.value());
            assert_eq!(p.ttl(), h.time_to_live);
            assert_eq!(p.protocol(), h.protocol.0);
            assert_eq!(p.src_addr(), h.source);
            assert_eq!(p.dst_addr(), h.destination);
            assert_eq!(p.options(), &opts[..]);
            assert_eq!(p.payload().len(), usize::from(payload_len));
            assert!(p.verify_checksum());
            assert_eq!(p.checksum(), h.header_checksum);
            let mut copy = bytes.clone();
            let mut q = Ipv4Packet::new_unchecked(&mut copy[..]);
            q.set_checksum(0x1234);
            q.fill_checksum();
            assert_eq!(copy, bytes);
        }
        // And etherparse accepts what we emit.
        let mut buf = [0xa5u8; 24];
        repr().emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        let (h, _) = Ipv4Header::from_slice(&buf).unwrap();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.identification, 0x1c46);
        assert!(h.dont_fragment);
    }

    /// Rewriting TTL and an address with the incremental helpers gives the same checksum as a
    /// full recomputation: the NAT path relies on this.
    #[test]
    fn incremental_update_matches_fill() {
        let mut rng = XorShift::new(0x4c);
        for _ in 0..2000 {
            let mut bytes = packet_bytes();
            let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
            let old_dst = p.dst_addr();
            let new_dst: [u8; 4] = core::array::from_fn(|_| rng.next_u8());
            let old_word = read_u16(p.header(), 8..10);
            p.set_ttl(p.ttl().wrapping_sub(1 + rng.next_u8() % 3));
            p.set_dst_addr(new_dst);
            let new_word = read_u16(p.header(), 8..10);
            let ck = checksum::update_u16(p.checksum(), old_word, new_word);
            let ck = checksum::update_bytes(ck, &old_dst, &new_dst);
            p.set_checksum(ck);
            assert!(p.verify_checksum());
            let before = p.checksum();
            p.fill_checksum();
            assert_eq!(p.checksum(), before);
        }
    }

    #[test]
    fn no_panic() {
        let bytes = packet_bytes();
        let mut with_opts = [0u8; 32];
        with_opts[0] = 0x47;
        with_opts[3] = 32;
        fuzz(0x44, &[&bytes, &with_opts], 80, FUZZ_ROUNDS, |b| {
            let accepted = Ipv4Packet::new_checked(b).is_ok();
            if let Ok(p) = Ipv4Packet::new_checked(b) {
                let _ = (
                    p.version(),
                    p.header_len(),
                    p.dscp_ecn(),
                    p.total_len(),
                    p.ident(),
                );
                let _ = (
                    p.dont_frag(),
                    p.more_frags(),
                    p.frag_offset(),
                    p.is_fragment(),
                );
                let _ = (
                    p.ttl(),
                    p.protocol(),
                    p.checksum(),
                    p.src_addr(),
                    p.dst_addr(),
                );
                let _ = (p.options().len(), p.payload().len(), p.verify_checksum());
                let r = Ipv4Repr::parse(&p).unwrap();
                assert!(r.payload_len <= b.len());
            }
            accepted
        });
    }
}
