//! 802.1Q / 802.1ad VLAN tags and the L2 walk that finds the L3 header behind them.
//!
//! A tag on the wire is TPID (the EtherType slot of the header before it) + TCI + the inner
//! EtherType. [`VlanTag`] views the 4 bytes after the TPID: TCI and inner EtherType, so that
//! stacked tags are read as a chain of the same view.

use super::ethernet::{self, ethertype};
use super::{Field, WireError, read_u16, write_u16};

mod field {
    use super::Field;
    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
}

/// Length of one tag after its TPID.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;

/// The deepest tag stack [`walk_l2`] follows. Q-in-Q is two; three leaves room for a provider
/// tag on top; anything deeper is treated as an attack on the parser, not a packet.
pub const MAX_VLAN_TAGS: u8 = 3;

const PCP_SHIFT: u16 = 13;
const DEI_BIT: u16 = 0x1000;
const VID_MASK: u16 = 0x0fff;

/// A view of one VLAN tag (TCI + inner EtherType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> VlanTag<T> {
        VlanTag { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<VlanTag<T>, WireError> {
        let tag = VlanTag::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
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

    /// The whole 16-bit tag control information.
    pub fn tci(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TCI)
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> PCP_SHIFT) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & DEI_BIT != 0
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }

    /// The EtherType of what follows this tag (another TPID when tags are stacked).
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Alias of [`VlanTag::ethertype`], for call sites that want to say "inner".
    pub fn inner_ethertype(&self) -> u16 {
        self.ethertype()
    }

    /// Everything after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    pub fn set_tci(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::TCI, value);
    }

    /// Sets the priority code point; bits above the low 3 are ignored.
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & !(0x7 << PCP_SHIFT)) | (u16::from(pcp & 0x7) << PCP_SHIFT);
        self.set_tci(tci);
    }

    pub fn set_dei(&mut self, dei: bool) {
        let tci = if dei {
            self.tci() | DEI_BIT
        } else {
            self.tci() & !DEI_BIT
        };
        self.set_tci(tci);
    }

    /// Sets the VLAN id; bits above the low 12 are ignored.
    pub fn set_vid(&mut self, vid: u16) {
        self.set_tci((self.tci() & !VID_MASK) | (vid & VID_MASK));
    }

    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    /// Alias of [`VlanTag::set_ethertype`].
    pub fn set_inner_ethertype(&mut self, value: u16) {
        self.set_ethertype(value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The fields of one VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanRepr {
    pub pcp: u8,
    pub dei: bool,
    pub vid: u16,
    pub ethertype: u16,
}

impl VlanRepr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<VlanRepr, WireError> {
        tag.check_len()?;
        Ok(VlanRepr {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            ethertype: tag.ethertype(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the tag; the buffer must be at least [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        tag.set_tci(
            (u16::from(self.pcp & 0x7) << PCP_SHIFT)
                | if self.dei { DEI_BIT } else { 0 }
                | (self.vid & VID_MASK),
        );
        tag.set_ethertype(self.ethertype);
    }
}

/// Where the L3 header of a frame starts, after any VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Info {
    /// The EtherType after the last tag (what the L3 header is).
    pub ethertype: u16,
    /// Offset of the L3 header from the start of the frame.
    pub l3_offset: usize,
    /// How many tags were skipped.
    pub vlan_tags: u8,
    /// The VID of the outermost tag, if any.
    pub outer_vid: Option<u16>,
}

/// Whether an EtherType is one of the TPIDs [`walk_l2`] follows.
pub const fn is_vlan_tpid(value: u16) -> bool {
    matches!(
        value,
        ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD
    )
}

/// Walks the Ethernet header and up to [`MAX_VLAN_TAGS`] tags (0x8100, 0x88a8, 0x9100 in any
/// order). `Truncated` if the frame ends inside the header or a tag; `Malformed` if more tags
/// follow than [`MAX_VLAN_TAGS`]. The L3 header itself is not looked at.
pub fn walk_l2(frame: &[u8]) -> Result<L2Info, WireError> {
    let eth = ethernet::EthernetFrame::new_checked(frame)?;
    let mut info = L2Info {
        ethertype: eth.ethertype(),
        l3_offset: ethernet::HEADER_LEN,
        vlan_tags: 0,
        outer_vid: None,
    };
    while is_vlan_tpid(info.ethertype) {
        if info.vlan_tags == MAX_VLAN_TAGS {
            return Err(WireError::Malformed);
        }
        let tag = VlanTag::new_checked(&frame[info.l3_offset..])?;
        info.outer_vid.get_or_insert(tag.vid());
        info.ethertype = tag.ethertype();
        info.l3_offset += HEADER_LEN;
        info.vlan_tags += 1;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, assert_truncations_fail, fuzz};

    /// Q-in-Q: S-tag 0x88a8 vid 100 pcp 5, C-tag 0x8100 vid 42 dei, then IPv4.
    static QINQ_FRAME: [u8; 24] = [
        0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, // dst, src
        0x88, 0xa8, 0xa0, 0x64, // S-tag: pcp 5, vid 100
        0x81, 0x00, 0x10, 0x2a, // C-tag: dei, vid 42
        0x08, 0x00, 0x45, 0x00, // inner ethertype IPv4, start of the IPv4 header
    ];

    #[test]
    fn walk_follows_two_tags() {
        let info = walk_l2(&QINQ_FRAME).unwrap();
        assert_eq!(
            info,
            L2Info {
                ethertype: ethertype::IPV4,
                l3_offset: 22,
                vlan_tags: 2,
                outer_vid: Some(100)
            }
        );
        let outer = VlanTag::new_checked(&QINQ_FRAME[14..]).unwrap();
        assert_eq!((outer.pcp(), outer.dei(), outer.vid()), (5, false, 100));
        assert_eq!(outer.ethertype(), ethertype::VLAN);
        let inner = VlanTag::new_checked(&QINQ_FRAME[18..]).unwrap();
        assert_eq!((inner.pcp(), inner.dei(), inner.vid()), (0, true, 42));
        assert_eq!(inner.inner_ethertype(), ethertype::IPV4);
    }

    #[test]
    fn walk_untagged() {
        let info = walk_l2(
            &QINQ_FRAME[..12]
                .iter()
                .chain(&[0x86, 0xdd])
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(
            info,
            L2Info {
                ethertype: ethertype::IPV6,
                l3_offset: 14,
                vlan_tags: 0,
                outer_vid: None
            }
        );
    }

    #[test]
    fn walk_rejects_too_many_tags() {
        let mut frame = vec![0u8; 12];
        for _ in 0..MAX_VLAN_TAGS + 1 {
            frame.extend_from_slice(&[0x91, 0x00, 0x00, 0x07]);
        }
        frame.extend_from_slice(&[0x08, 0x00, 0, 0, 0, 0]);
        assert_eq!(walk_l2(&frame), Err(WireError::Malformed));
        // Exactly MAX_VLAN_TAGS is fine.
        let mut ok = vec![0u8; 12];
        for _ in 0..MAX_VLAN_TAGS {
            ok.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        ok.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(walk_l2(&ok).unwrap().vlan_tags, MAX_VLAN_TAGS);
    }

    #[test]
    fn every_truncation_is_rejected() {
        // Up to the inner EtherType every prefix is cut short.
        assert_truncations_fail(&QINQ_FRAME, 22, |b| walk_l2(b).is_ok());
        assert_eq!(walk_l2(&QINQ_FRAME[..20]), Err(WireError::Truncated));
        assert_truncations_fail(&QINQ_FRAME[14..], HEADER_LEN, |b| {
            VlanTag::new_checked(b).is_ok()
        });
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let repr = VlanRepr {
            pcp: 6,
            dei: true,
            vid: 4094,
            ethertype: ethertype::ARP,
        };
        let mut buf = [0xa5u8; HEADER_LEN];
        repr.emit(&mut VlanTag::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0xdf, 0xfe, 0x08, 0x06]);
        assert_eq!(
            VlanRepr::parse(&VlanTag::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
        let mut tag = VlanTag::new_unchecked(&mut buf[..]);
        tag.set_vid(7);
        tag.set_pcp(1);
        tag.set_dei(false);
        tag.set_inner_ethertype(ethertype::IPV6);
        assert_eq!(buf, [0x20, 0x07, 0x86, 0xdd]);
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{PacketBuilder, SlicedPacket, VlanId};
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(VlanId::try_new(300).unwrap(), VlanId::try_new(7).unwrap())
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
            .udp(1, 2);
        let mut pkt = Vec::new();
        builder.write(&mut pkt, &[0u8; 4]).unwrap();
        let info = walk_l2(&pkt).unwrap();
        let sliced = SlicedPacket::from_ethernet(&pkt).unwrap();
        let ids = sliced.vlan_ids();
        assert_eq!(info.outer_vid, Some(ids[0].value()));
        assert_eq!(usize::from(info.vlan_tags), ids.len());
        assert_eq!(info.ethertype, ethertype::IPV4);
        assert_eq!(info.l3_offset, 22);
        let inner = VlanTag::new_checked(&pkt[18..]).unwrap();
        assert_eq!(inner.vid(), ids[1].value());
    }

    #[test]
    fn no_panic() {
        fuzz(0x71a, &[&QINQ_FRAME], 40, FUZZ_ROUNDS, |b| {
            let walked = walk_l2(b);
            if let Ok(info) = walked {
                assert!(info.l3_offset <= b.len());
                assert!(info.vlan_tags <= MAX_VLAN_TAGS);
            }
            if let Ok(tag) = VlanTag::new_checked(b) {
                let _ = (
                    tag.pcp(),
                    tag.dei(),
                    tag.vid(),
                    tag.ethertype(),
                    tag.payload().len(),
                );
                let _ = VlanRepr::parse(&tag).unwrap();
            }
            walked.is_ok()
        });
    }
}
