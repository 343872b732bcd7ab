//! VXLAN headers (RFC 7348): the 8 bytes between the outer UDP header and the inner frame.
//!
//! `new_checked` only checks the length, so the decap path can count a missing I flag
//! separately; [`VxlanRepr::parse`] requires the flag. Reserved fields are readable so a
//! strict receiver can reject them, and `emit` always writes them as zero.

use super::{Field, WireError, read_u32, write_u32};

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const RESERVED1: Field = 1..4;
    /// The VNI is the high 24 bits of bytes 4..8; byte 7 is reserved.
    pub const VNI_RESERVED2: Field = 4..8;
    pub const RESERVED2: usize = 7;
}

pub const HEADER_LEN: usize = field::VNI_RESERVED2.end;
/// The I flag: the VNI is valid. The only flag RFC 7348 defines.
pub const FLAG_VNI_VALID: u8 = 0x08;
/// The IANA-assigned UDP port.
pub const DEFAULT_PORT: u16 = 4789;
/// VNIs are 24 bits.
pub const VNI_MASK: u32 = 0x00ff_ffff;

/// A view of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> VxlanHeader<T> {
        VxlanHeader { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<VxlanHeader<T>, WireError> {
        let header = VxlanHeader::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
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

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_VNI_VALID != 0
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VNI_RESERVED2) >> 8
    }

    /// The 24 reserved bits after the flags.
    pub fn reserved1(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::RESERVED1];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The reserved byte after the VNI.
    pub fn reserved2(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED2]
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the VNI (low 24 bits of `vni`), keeping the reserved byte after it.
    pub fn set_vni(&mut self, vni: u32) {
        let word = ((vni & VNI_MASK) << 8) | u32::from(self.reserved2());
        write_u32(self.buffer.as_mut(), field::VNI_RESERVED2, word);
    }

    /// Sets the 24 reserved bits after the flags (low 24 bits of `value`).
    pub fn set_reserved1(&mut self, value: u32) {
        self.buffer.as_mut()[field::RESERVED1].copy_from_slice(&value.to_be_bytes()[1..]);
    }

    pub fn set_reserved2(&mut self, value: u8) {
        self.buffer.as_mut()[field::RESERVED2] = value;
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A VXLAN header: just the VNI; the flags are implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    pub vni: u32,
}

impl VxlanRepr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// `Malformed` without the I flag (RFC 7348: the VNI is meaningless then). Reserved bits
    /// are ignored, as the RFC asks of receivers.
    pub fn parse<T: AsRef<[u8]>>(header: &VxlanHeader<T>) -> Result<VxlanRepr, WireError> {
        header.check_len()?;
        if !header.vni_valid() {
            return Err(WireError::Malformed);
        }
        Ok(VxlanRepr { vni: header.vni() })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes flags 0x08, the VNI, and zero reserved fields.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut VxlanHeader<T>) {
        header.set_flags(FLAG_VNI_VALID);
        header.set_reserved1(0);
        header.set_reserved2(0);
        header.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{FUZZ_ROUNDS, assert_truncations_fail, fuzz};

    static HEADER_BYTES: [u8; 10] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xaa, 0xbb];

    #[test]
    fn getters_read_static_header() {
        let h = VxlanHeader::new_checked(&HEADER_BYTES[..]).unwrap();
        assert_eq!(h.flags(), FLAG_VNI_VALID);
        assert!(h.vni_valid());
        assert_eq!(h.vni(), 0x12_3456);
        assert_eq!((h.reserved1(), h.reserved2()), (0, 0));
        assert_eq!(h.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn repr_round_trips_into_a5_buffer() {
        let mut buf = [0xa5u8; HEADER_LEN];
        VxlanRepr { vni: 0x12_3456 }.emit(&mut VxlanHeader::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HEADER_BYTES[..HEADER_LEN]);
        let repr = VxlanRepr::parse(&VxlanHeader::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(repr, VxlanRepr { vni: 0x12_3456 });
        // The VNI is cut to 24 bits.
        VxlanRepr { vni: 0xff00_0001 }.emit(&mut VxlanHeader::new_unchecked(&mut buf[..]));
        assert_eq!(VxlanHeader::new_checked(&buf[..]).unwrap().vni(), 1);
    }

    #[test]
    fn reserved_fields_and_missing_flag() {
        let bytes = [0x0c, 1, 2, 3, 0, 0, 1, 9];
        let h = VxlanHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!((h.reserved1(), h.reserved2(), h.vni()), (0x01_0203, 9, 1));
        assert_eq!(VxlanRepr::parse(&h).unwrap(), VxlanRepr { vni: 1 });
        let no_i = [0x00, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            VxlanRepr::parse(&VxlanHeader::new_checked(&no_i[..]).unwrap()),
            Err(WireError::Malformed)
        );
        let mut buf = bytes;
        let mut h = VxlanHeader::new_unchecked(&mut buf[..]);
        h.set_vni(0xabcdef);
        assert_eq!((h.vni(), h.reserved2()), (0xabcdef, 9));
    }

    #[test]
    fn every_truncation_is_rejected() {
        assert_truncations_fail(&HEADER_BYTES, HEADER_LEN, |b| {
            VxlanHeader::new_checked(b).is_ok()
        });
    }

    #[test]
    fn no_panic() {
        fuzz(0x4789, &[&HEADER_BYTES], 20, FUZZ_ROUNDS, |b| {
            let accepted = VxlanHeader::new_checked(b).is_ok();
            if let Ok(h) = VxlanHeader::new_checked(b) {
                let _ = (
                    h.flags(),
                    h.vni_valid(),
                    h.vni(),
                    h.reserved1(),
                    h.reserved2(),
                );
                let _ = (h.payload().len(), VxlanRepr::parse(&h));
            }
            accepted
        });
    }
}
