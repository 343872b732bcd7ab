//! kxdp flow hash v1, written from its published definition (datapath's `hash` module
//! docs), not from its code.
//!
//! The VXLAN outer source port is the only output byte that depends on the flow hash; an
//! expected encapsulated packet needs it, and computing it with the datapath's own
//! function would let a change there pass unnoticed. The golden values in the tests are
//! the ones the definition's owner publishes.

/// Definition (kxdp flow hash v1): the 5-tuple is packed into five 64-bit big-endian
/// words `src[0..8], src[8..16], dst[0..8], dst[8..16], sport<<48 | dport<<32 | proto`
/// (addresses as 16-byte IPv4-mapped keys); from `seed ^ "kxdpflow"` each word is absorbed
/// as `h = (h ^ w) * 0x9e3779b97f4a7c15` rotated left by 31, then the murmur3 64-bit
/// finaliser; the low 32 bits are the hash.
pub fn flow_hash(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
    seed: u64,
) -> u32 {
    let be = |b: &[u8]| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let words = [
        be(&src[..8]),
        be(&src[8..]),
        be(&dst[..8]),
        be(&dst[8..]),
        (u64::from(sport) << 48) | (u64::from(dport) << 32) | u64::from(proto),
    ];
    let mut h = seed ^ u64::from_be_bytes(*b"kxdpflow");
    for w in words {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }
    // murmur3 fmix64
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// The outer UDP source port for an inner flow: the dynamic range 49152-65535 that
/// RFC 7348 §5 recommends, indexed by the flow hash modulo its 16384 ports.
pub fn vxlan_source_port(hash: u32) -> u16 {
    49152 + (hash % 16384) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::mapped;

    #[test]
    fn matches_published_golden_values() {
        let got: Vec<u32> = (40000..40004)
            .map(|p| {
                flow_hash(
                    mapped([10, 244, 1, 5]),
                    mapped([10, 96, 0, 10]),
                    p,
                    80,
                    6,
                    0,
                )
            })
            .collect();
        assert_eq!(got, [1252193872, 2985739376, 1982461524, 3334015109]);
    }

    #[test]
    fn source_port_range_ends() {
        assert_eq!(vxlan_source_port(0), 49152);
        assert_eq!(vxlan_source_port(16383), 65535);
        assert_eq!(vxlan_source_port(u32::MAX), 65535);
    }
}
