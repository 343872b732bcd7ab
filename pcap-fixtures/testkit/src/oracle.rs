//! Reference implementations, slow and obviously right, independent of the datapath's
//! fast ones, to build test packets and check results with.

/// CRC32c (Castagnoli, reflected), bit by bit (the SCTP checksum, RFC 9260 appendix A).
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// kxdp flow hash v1, written from its published definition (datapath's `hash` module
/// docs), not from its code: the VXLAN outer source port is the only output byte that
/// depends on the flow hash, and an expected encapsulated packet computed with the
/// datapath's own function would let a change there pass unnoticed. The golden values in
/// the tests are the ones the definition's owner publishes.
///
/// Definition: the 5-tuple is packed into five 64-bit big-endian words
/// `src[0..8], src[8..16], dst[0..8], dst[8..16], sport<<48 | dport<<32 | proto`
/// (addresses as 16-byte IPv4-mapped keys); from `seed ^ "kxdpflow"` each word is
/// absorbed as `h = (h ^ w) * 0x9e3779b97f4a7c15` rotated left by 31, then the murmur3
/// 64-bit finaliser; the low 32 bits are the hash.
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
    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc32c_rfc3720_vectors() {
        // RFC 3720 §B.4's all-zeros and all-ones 32-byte vectors.
        assert_eq!(super::crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(super::crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    /// `ip` as the 16-byte IPv4-mapped key the flow hash packs.
    fn mapped(ip: [u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[10..12].copy_from_slice(&[0xff, 0xff]);
        out[12..].copy_from_slice(&ip);
        out
    }

    #[test]
    fn flow_hash_matches_published_golden_values() {
        let got: Vec<u32> = (40000..40004)
            .map(|p| {
                super::flow_hash(
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
    fn vxlan_source_port_range_ends() {
        assert_eq!(super::vxlan_source_port(0), 49152);
        assert_eq!(super::vxlan_source_port(16383), 65535);
        assert_eq!(super::vxlan_source_port(u32::MAX), 65535);
    }
}
