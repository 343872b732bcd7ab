//! IPv6 headers (RFC 8200) and the extension-header walk that finds the upper layer.
//!
//! `new_checked` verifies version 6, the 40-byte header and `40 + payload_len <= buffer
//! length`; bytes after that (Ethernet padding) are ignored. Jumbograms (RFC 2675) are not
//! supported: a packet with `payload_len == 0`, a hop-by-hop header next and bytes after the
//! fixed header is the jumbogram encoding and is `Malformed`. A `payload_len` of 0 with any
//! other next header is an empty packet and trailing bytes are padding (a 54-byte frame
//! carrying it is padded to 60 by the sender).

use super::{Field, WireError, clamp, read_array, read_u16, read_u32, write_u16, write_u32};

mod field {
    use super::Field;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Offsets within an extension header.
mod ext_field {
    use super::Field;
    pub const NEXT_HEADER: usize = 0;
    /// Hop-by-hop, routing, destination options: length in 8-octet units, not counting the
    /// first 8. AH: length in 4-octet units, minus 2.
    pub const LENGTH: usize = 1;
    /// Fragment header: 13-bit offset (8-octet units), 2 reserved bits, M flag.
    pub const FRAG_OFF_M: Field = 2..4;
    pub const FRAG_IDENT: Field = 4..8;
}

pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The deepest extension-header chain [`walk_extension_headers`] follows. Real traffic uses
/// one or two; a long chain is a parser-exhaustion attempt (and RFC 7112 lets us drop it).
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values of the extension headers [`walk_extension_headers`] knows.
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

const FRAGMENT_HEADER_LEN: usize = 8;
const FRAG_OFFSET_MASK: u16 = 0xfff8;
const FRAG_MORE: u16 = 0x0001;
const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// `Truncated` if the buffer is shorter than 40 bytes or than `40 + payload_len`;
    /// `Malformed` for a version other than 6 or a jumbogram (see the module docs).
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, WireError> {
        let packet = Ipv6Packet::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::Malformed);
        }
        let payload_len = usize::from(self.payload_len());
        if payload_len == 0 && self.next_header() == next_header::HOP_BY_HOP && len > HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if HEADER_LEN + payload_len > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    /// DSCP and ECN, as one byte.
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & FLOW_LABEL_MASK
    }

    /// Bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> [u8; 16] {
        read_array(self.buffer.as_ref(), field::SRC_ADDR)
    }

    pub fn dst_addr(&self) -> [u8; 16] {
        read_array(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Header and payload, padding excluded.
    pub fn packet(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(0, HEADER_LEN + usize::from(self.payload_len()), buf.len())]
    }

    /// `40..40 + payload_len`: extension headers and upper layer.
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[clamp(
            HEADER_LEN,
            HEADER_LEN + usize::from(self.payload_len()),
            buf.len(),
        )]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_ver_tc_flow(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, value);
    }

    pub fn set_version(&mut self, version: u8) {
        let word = (self.ver_tc_flow() & 0x0fff_ffff) | (u32::from(version & 0x0f) << 28);
        self.set_ver_tc_flow(word);
    }

    pub fn set_traffic_class(&mut self, value: u8) {
        let word = (self.ver_tc_flow() & 0xf00f_ffff) | (u32::from(value) << 20);
        self.set_ver_tc_flow(word);
    }

    /// Sets the flow label (low 20 bits of `value`).
    pub fn set_flow_label(&mut self, value: u32) {
        let word = (self.ver_tc_flow() & !FLOW_LABEL_MASK) | (value & FLOW_LABEL_MASK);
        self.set_ver_tc_flow(word);
    }

    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, value);
    }

    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    pub fn set_src_addr(&mut self, addr: &[u8; 16]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(addr);
    }

    pub fn set_dst_addr(&mut self, addr: &[u8; 16]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(addr);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let range = clamp(
            HEADER_LEN,
            HEADER_LEN + usize::from(self.payload_len()),
            len,
        );
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A fragment header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Offset of this fragment's data in the original packet, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    pub ident: u32,
}

/// Where the upper-layer header starts, after the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Upper {
    /// The upper-layer protocol (TCP, UDP, ICMPv6, ...), or 59 for "no next header".
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, if one was crossed.
    pub fragment: Option<FragmentInfo>,
}

/// Walks the extension headers of a checked IPv6 packet (bounded by `40 + payload_len`,
/// padding ignored) to the upper layer.
///
/// Knows hop-by-hop (0, only directly after the fixed header, else `Malformed`), routing
/// (43), fragment (44), destination options (60), AH (51) and no-next-header (59, returned
/// as the protocol). At a non-first fragment (offset != 0) the walk stops right after the
/// fragment header with `protocol` = its next header: the upper-layer header is in the first
/// fragment, not here. Any other value is the upper-layer protocol. `Truncated` if a header
/// runs past the packet, `Malformed` for more than [`MAX_EXT_HEADERS`] extension headers.
pub fn walk_extension_headers(packet: &[u8]) -> Result<Ipv6Upper, WireError> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let end = HEADER_LEN + usize::from(ip.payload_len());
    let mut protocol = ip.next_header();
    let mut offset = HEADER_LEN;
    let mut fragment = None;
    let mut seen = 0;
    loop {
        let len = match protocol {
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DEST_OPTS => {
                if protocol == next_header::HOP_BY_HOP && offset != HEADER_LEN {
                    return Err(WireError::Malformed);
                }
                let units = *packet[..end]
                    .get(offset + ext_field::LENGTH)
                    .ok_or(WireError::Truncated)?;
                (usize::from(units) + 1) * 8
            }
            next_header::AUTH => {
                let units = *packet[..end]
                    .get(offset + ext_field::LENGTH)
                    .ok_or(WireError::Truncated)?;
                (usize::from(units) + 2) * 4
            }
            next_header::FRAGMENT => FRAGMENT_HEADER_LEN,
            _ => {
                return Ok(Ipv6Upper {
                    protocol,
                    offset,
                    fragment,
                });
            }
        };
        if seen == MAX_EXT_HEADERS {
            return Err(WireError::Malformed);
        }
        seen += 1;
        if offset + len > end {
            return Err(WireError::Truncated);
        }
        let header = &packet[offset..offset + len];
        let next = header[ext_field::NEXT_HEADER];
        if protocol == next_header::FRAGMENT {
            let off_m = read_u16(header, ext_field::FRAG_OFF_M);
            let info = FragmentInfo {
                offset: off_m & FRAG_OFFSET_MASK,
                more: off_m & FRAG_MORE != 0,
                ident: read_u32(header, ext_field::FRAG_IDENT),
            };
            fragment = Some(info);
            if info.offset != 0 {
                return Ok(Ipv6Upper {
                    protocol: next,
                    offset: offset + len,
                    fragment,
                });
            }
        }
        protocol = next;
        offset += len;
    }
}

/// The IPv6 fixed-header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub next_header: u8,
    pub hop_limit: u8,
    /// Bytes after the fixed header.
    pub payload_len: usize,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Ipv6Repr, WireError> {
        packet.check()?;
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            payload_len: usize::from(packet.payload_len()),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte header; the buffer must be at least [`HEADER_LEN`] bytes and
    /// `payload_len` must fit 16 bits (debug builds assert).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        debug_assert!(self.payload_len <= usize::from(u16::MAX), "no jumbograms");
        packet.set_ver_tc_flow(
            (6 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & FLOW_LABEL_MASK),
        );
        packet.set_payload_len(self.payload_len as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(&self.src_addr);
        packet.set_dst_addr(&self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::protocol;
    use crate::wire::test_util::{FUZZ_ROUNDS, XorShift, assert_truncations_fail, fuzz};

    const SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x05];
    const DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x07];

    /// Traffic class 0xb8, flow label 0x12345, UDP, hop limit 64, 4 bytes of payload and 2
    /// bytes of padding.
    static PACKET_BYTES: [u8; 46] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x04, 17, 64, // ver/tc/flow, length, next header, hops
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x05, // src
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x07, // dst
        1, 2, 3, 4, 0, 0, // payload, padding
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: SRC,
            dst_addr: DST,
            next_header: protocol::UDP,
            hop_limit: 64,
            payload_len: 4,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn getters_read_static_packet() {
        let p = Ipv6Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!((p.traffic_class(), p.flow_label()), (0xb8, 0x12345));
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (4, 17, 64)
        );
        assert_eq!((p.src_addr(), p.dst_addr()), (SRC, DST));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert_eq!(p.packet().len(), 44);
        let upper = walk_extension_headers(&PACKET_BYTES).unwrap();
        assert_eq!(
            upper,
            Ipv6Upper {
                protocol: protocol::UDP,
                offset: 40,
                fragment: None
            }
        );
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let mut buf = [0xa5u8; 44];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p);
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(buf, PACKET_BYTES[..44]);
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()).unwrap(),
            repr()
        );
    }

    #[test]
    fn setters_keep_neighbouring_bits() {
        let mut b = PACKET_BYTES;
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_traffic_class(0x01);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0x01, 0x12345)
        );
        p.set_flow_label(0xfffff);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0x01, 0xfffff)
        );
        p.set_version(4);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (4, 0x01, 0xfffff)
        );
        p.set_hop_limit(1);
        p.set_next_header(58);
        p.set_src_addr(&DST);
        p.set_dst_addr(&SRC);
        assert_eq!(
            (p.hop_limit(), p.next_header(), p.src_addr(), p.dst_addr()),
            (1, 58, DST, SRC)
        );
        p.set_payload_len(1000); // past the buffer: clamps, no panic
        assert_eq!(p.payload().len(), 6);
    }

    #[test]
    fn check_errors() {
        let with = |at: usize, v: u8| {
            let mut b = PACKET_BYTES;
            b[at] = v;
            Ipv6Packet::new_checked(&b[..]).map(|_| ())
        };
        assert_eq!(with(0, 0x4b), Err(WireError::Malformed));
        assert_eq!(with(5, 7), Err(WireError::Truncated));
        assert_eq!(with(5, 6), Ok(()));
        // payload_len 0 + padding: an empty packet; with hop-by-hop next: a jumbogram.
        assert_eq!(with(5, 0), Ok(()));
        let mut jumbo = PACKET_BYTES;
        jumbo[5] = 0;
        jumbo[6] = next_header::HOP_BY_HOP;
        assert_eq!(
            Ipv6Packet::new_checked(&jumbo[..]).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&PACKET_BYTES, 44, |b| Ipv6Packet::new_checked(b).is_ok());
    }

    /// Builds a packet: fixed header with `first` next header, then `exts` as
    /// (next header, bytes) pairs, then `upper` bytes.
    fn chain(first: u8, exts: &[Vec<u8>], upper: &[u8]) -> Vec<u8> {
        let mut b = PACKET_BYTES[..40].to_vec();
        b[6] = first;
        for e in exts {
            b.extend_from_slice(e);
        }
        b.extend_from_slice(upper);
        let len = (b.len() - 40) as u16;
        b[4..6].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// An 8*(units+1)-byte options-style header.
    fn opts_header(next: u8, units: u8) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(units) + 1) * 8];
        h[0] = next;
        h[1] = units;
        h
    }

    fn frag_header(next: u8, offset: u16, more: bool, ident: u32) -> Vec<u8> {
        let mut h = vec![next, 0];
        h.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&ident.to_be_bytes());
        h
    }

    #[test]
    fn walk_crosses_every_known_header() {
        use next_header::*;
        let mut ah = vec![DEST_OPTS, 4, 0, 0];
        ah.resize(24, 0); // (4 + 2) * 4
        let pkt = chain(
            HOP_BY_HOP,
            &[
                opts_header(ROUTING, 0),
                opts_header(FRAGMENT, 1),
                frag_header(AUTH, 0, true, 0xdead_beef),
                ah,
                opts_header(protocol::TCP, 0),
            ],
            &[0; 20],
        );
        let upper = walk_extension_headers(&pkt).unwrap();
        assert_eq!(upper.protocol, protocol::TCP);
        assert_eq!(upper.offset, 40 + 8 + 16 + 8 + 24 + 8);
        assert_eq!(
            upper.fragment,
            Some(FragmentInfo {
                offset: 0,
                more: true,
                ident: 0xdead_beef
            })
        );
    }

    #[test]
    fn walk_stops_at_non_first_fragment() {
        let pkt = chain(
            next_header::FRAGMENT,
            &[frag_header(protocol::UDP, 1480, false, 7)],
            &[9; 8],
        );
        let upper = walk_extension_headers(&pkt).unwrap();
        assert_eq!(
            upper,
            Ipv6Upper {
                protocol: protocol::UDP,
                offset: 48,
                fragment: Some(FragmentInfo {
                    offset: 1480,
                    more: false,
                    ident: 7
                })
            }
        );
    }

    #[test]
    fn walk_no_next_header_and_errors() {
        let pkt = chain(
            next_header::DEST_OPTS,
            &[opts_header(next_header::NO_NEXT_HEADER, 0)],
            &[],
        );
        let upper = walk_extension_headers(&pkt).unwrap();
        assert_eq!((upper.protocol, upper.offset), (59, 48));

        // Hop-by-hop anywhere but first.
        let pkt = chain(
            next_header::DEST_OPTS,
            &[opts_header(0, 0), opts_header(6, 0)],
            &[],
        );
        assert_eq!(walk_extension_headers(&pkt), Err(WireError::Malformed));

        // MAX_EXT_HEADERS is fine, one more is not.
        let exts: Vec<Vec<u8>> = (0..MAX_EXT_HEADERS)
            .map(|i| opts_header(if i + 1 == MAX_EXT_HEADERS { 17 } else { 60 }, 0))
            .collect();
        assert_eq!(
            walk_extension_headers(&chain(60, &exts, &[]))
                .unwrap()
                .protocol,
            17
        );
        let exts: Vec<Vec<u8>> = (0..=MAX_EXT_HEADERS)
            .map(|i| opts_header(if i == MAX_EXT_HEADERS { 17 } else { 60 }, 0))
            .collect();
        assert_eq!(
            walk_extension_headers(&chain(60, &exts, &[])),
            Err(WireError::Malformed)
        );

        // A header claiming more than payload_len holds, with padding after: still truncated.
        let mut pkt = chain(next_header::ROUTING, &[opts_header(6, 0)], &[]);
        pkt[41] = 1;
        pkt.extend_from_slice(&[0; 8]);
        assert_eq!(walk_extension_headers(&pkt), Err(WireError::Truncated));
    }

    #[test]
    fn walk_every_truncation_is_rejected() {
        let pkt = chain(
            next_header::HOP_BY_HOP,
            &[
                opts_header(next_header::FRAGMENT, 0),
                frag_header(protocol::TCP, 0, false, 1),
            ],
            &[],
        );
        assert_eq!(walk_extension_headers(&pkt).unwrap().offset, 56);
        // Cut payload_len short (buffer unchanged): every shorter claim fails the walk.
        for cut in 0..16u16 {
            let mut b = pkt.clone();
            b[4..6].copy_from_slice(&cut.to_be_bytes());
            assert!(walk_extension_headers(&b).is_err(), "payload_len {cut}");
        }
        assert_truncations_fail(&pkt, pkt.len(), |b| walk_extension_headers(b).is_ok());
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{Ipv6Header, PacketBuilder, SlicedPacket};
        let mut rng = XorShift::new(0x66);
        for _ in 0..200 {
            let s: [u8; 16] = core::array::from_fn(|_| rng.next_u8());
            let d: [u8; 16] = core::array::from_fn(|_| rng.next_u8());
            let payload: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u8()).collect();
            let hops = rng.next_u8();
            let mut pkt = Vec::new();
            PacketBuilder::ipv6(s, d, hops)
                .udp(1, 2)
                .write(&mut pkt, &payload)
                .unwrap();
            let (h, _) = Ipv6Header::from_slice(&pkt).unwrap();
            let p = Ipv6Packet::new_checked(&pkt[..]).unwrap();
            assert_eq!(p.src_addr(), h.source);
            assert_eq!(p.dst_addr(), h.destination);
            assert_eq!(p.hop_limit(), h.hop_limit);
            assert_eq!(p.payload_len(), h.payload_length);
            assert_eq!(p.next_header(), h.next_header.0);
            assert_eq!(p.flow_label(), h.flow_label.value());
            assert_eq!(p.traffic_class(), h.traffic_class);
            let sliced = SlicedPacket::from_ip(&pkt).unwrap();
            assert!(sliced.transport.is_some());
            assert_eq!(walk_extension_headers(&pkt).unwrap().offset, 40);
        }
        // etherparse reads what we emit.
        let mut buf = [0xa5u8; 44];
        repr().emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        let (h, _) = Ipv6Header::from_slice(&buf).unwrap();
        assert_eq!(
            (h.traffic_class, h.flow_label.value(), h.payload_length),
            (0xb8, 0x12345, 4)
        );
    }

    /// etherparse's own extension-header parser agrees with our walk on a fragmented packet
    /// with a hop-by-hop header.
    #[test]
    fn walk_matches_etherparse_exts() {
        use etherparse::SlicedPacket;
        let pkt = chain(
            next_header::HOP_BY_HOP,
            &[
                opts_header(next_header::FRAGMENT, 0),
                frag_header(protocol::UDP, 0, true, 99),
            ],
            &[0x00, 0x01, 0x00, 0x02, 0x00, 0x08, 0x00, 0x00],
        );
        let upper = walk_extension_headers(&pkt).unwrap();
        let sliced = SlicedPacket::from_ip(&pkt).unwrap();
        let Some(etherparse::NetSlice::Ipv6(v6)) = sliced.net else {
            panic!("no ipv6")
        };
        let payload = v6.payload();
        assert_eq!(payload.ip_number.0, upper.protocol);
        assert_eq!(pkt.len() - payload.payload.len(), upper.offset);
        assert!(payload.fragmented);
    }

    #[test]
    fn no_panic() {
        use next_header::*;
        let ext_pkt = chain(
            HOP_BY_HOP,
            &[
                opts_header(ROUTING, 0),
                opts_header(FRAGMENT, 0),
                frag_header(AUTH, 8, true, 1),
            ],
            &[0; 16],
        );
        let mut ah_pkt = chain(
            AUTH,
            &[vec![DEST_OPTS, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]],
            &[],
        );
        ah_pkt.extend_from_slice(&opts_header(6, 0));
        let len = (ah_pkt.len() - 40) as u16;
        ah_pkt[4..6].copy_from_slice(&len.to_be_bytes());
        fuzz(
            0x6e,
            &[&PACKET_BYTES, &ext_pkt, &ah_pkt],
            120,
            FUZZ_ROUNDS,
            |b| {
                let accepted = Ipv6Packet::new_checked(b).is_ok();
                if let Ok(p) = Ipv6Packet::new_checked(b) {
                    let _ = (
                        p.version(),
                        p.traffic_class(),
                        p.flow_label(),
                        p.payload_len(),
                    );
                    let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
                    let _ = (p.payload().len(), p.packet().len());
                    let _ = Ipv6Repr::parse(&p).unwrap();
                    if let Ok(upper) = walk_extension_headers(b) {
                        assert!(upper.offset <= p.packet().len());
                    }
                } else {
                    assert!(walk_extension_headers(b).is_err());
                }
                accepted
            },
        );
    }
}
