//! Internet checksums (RFC 1071, full and RFC 1624 incremental) and CRC32c for SCTP.
//!
//! Convention: [`data`], [`combine`] and the `pseudo_header_*` functions return the folded
//! ones'-complement **sum**, not inverted; a header's checksum field holds `!sum`. So a
//! header verifies when the sum over it (checksum field included) is `0xffff`.
//!
//! The incremental updates ([`update_u16`], [`update_bytes`]) take and return the *stored*
//! (inverted) field, so NAT can patch a checksum after rewriting an address or port without
//! touching the payload. They use RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which never turns
//! a correct checksum into `0x0000`-vs-`0xffff` nonsense the way eqn. 2 can. Two caveats for
//! the callers (not handled here, because they depend on the protocol):
//! * UDP: a stored checksum of 0 means "none" over IPv4; do not update it, and write `0xffff`
//!   if an update yields 0.
//! * A kernel-sent veth frame may carry `CHECKSUM_PARTIAL` (only the pseudo-header sum in the
//!   field); incremental updates keep it consistent as such, but it never verifies.

/// Folds a wide ones'-complement accumulator into 16 bits (end-around carry).
#[inline]
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Ones'-complement sum of `bytes` taken as big-endian 16-bit words, folded, not inverted.
/// An odd trailing byte is padded with a zero byte, as RFC 1071 requires.
///
/// Summing 32-bit words into a 64-bit accumulator is equivalent (2^16 = 1 mod 0xffff) and
/// halves the loop count on the hot path.
pub fn data(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = bytes.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold(sum)
}

/// Ones'-complement sum of partial sums (e.g. pseudo header + data), folded, not inverted.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv4 pseudo header (RFC 768/793): addresses, zero + protocol, upper-layer length.
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u32) -> u16 {
    let sum = u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + u64::from(proto)
        + u64::from(len);
    fold(sum)
}

/// Sum of the IPv6 pseudo header (RFC 8200 section 8.1): addresses, 32-bit upper-layer
/// length, zero + next header.
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, len: u32) -> u16 {
    combine(&[
        data(src),
        data(dst),
        fold(u64::from(len) + u64::from(proto)),
    ])
}

/// Incrementally updates a stored checksum field after one 16-bit word changed from `old` to
/// `new` (RFC 1624 eqn. 3). The word must sit at an even offset of the summed data.
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// Incrementally updates a stored checksum field after `old` was replaced by `new` in the
/// summed data (an address, a port pair). Both must have the same length and start at an even
/// offset; an even length is expected (4 or 16 bytes), an odd trailing byte is treated as a
/// word padded with zero, matching [`data`] when the field ends the data. If the lengths
/// differ, only the common prefix is accounted for (a caller bug; debug builds assert).
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len(), "update_bytes: lengths differ");
    // The sum of ~old words is ~sum(old) in ones'-complement arithmetic.
    let sum = u64::from(!checksum) + u64::from(!data(old)) + u64::from(data(new));
    !fold(sum)
}

/// The CRC32c (Castagnoli) lookup table for the reflected polynomial 0x82f63b78, built at
/// compile time. Byte-at-a-time table lookup: simple, and SCTP is rare enough on a Kubernetes
/// node that slicing-by-8 or SSE4.2 is not worth the code.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC32c (iSCSI/SCTP polynomial, reflected, init and final XOR `0xffffffff`) of `bytes`.
/// `crc32c(b"123456789") == 0xe3069283`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_append(0, bytes)
}

/// Continues a finished CRC32c over more bytes: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
/// Lets SCTP checksum a packet around its checksum field without copying it.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    let mut state = !crc;
    for &b in bytes {
        state = (state >> 8) ^ CRC32C_TABLE[((state ^ u32::from(b)) & 0xff) as usize];
    }
    !state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::XorShift;

    /// The RFC 1071 section 3 worked example: words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn data_matches_rfc1071_example() {
        static BYTES: [u8; 8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&BYTES), 0xddf2);
    }

    #[test]
    fn data_pads_odd_trailing_byte() {
        assert_eq!(data(&[0x12]), 0x1200);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[]), 0);
    }

    /// The 4-byte fast path must agree with a plain 16-bit word loop at every length.
    #[test]
    fn data_agrees_with_naive_word_sum() {
        let mut rng = XorShift::new(7);
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u8()).collect();
            let mut sum: u32 = 0;
            for (i, b) in bytes.iter().enumerate() {
                sum += if i % 2 == 0 {
                    u32::from(*b) << 8
                } else {
                    u32::from(*b)
                };
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            assert_eq!(data(&bytes), sum as u16, "len {len}");
        }
    }

    #[test]
    fn combine_folds_carries() {
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
        assert_eq!(combine(&[]), 0);
    }

    #[test]
    fn pseudo_headers_match_explicit_layout() {
        let src = [10, 244, 1, 5];
        let dst = [10, 96, 0, 10];
        let mut v4 = [0u8; 12];
        v4[..4].copy_from_slice(&src);
        v4[4..8].copy_from_slice(&dst);
        v4[9] = 17;
        v4[10..12].copy_from_slice(&1234u16.to_be_bytes());
        assert_eq!(pseudo_header_v4(src, dst, 17, 1234), data(&v4));

        let mut rng = XorShift::new(11);
        let s6: [u8; 16] = core::array::from_fn(|_| rng.next_u8());
        let d6: [u8; 16] = core::array::from_fn(|_| rng.next_u8());
        let mut v6 = [0u8; 40];
        v6[..16].copy_from_slice(&s6);
        v6[16..32].copy_from_slice(&d6);
        v6[32..36].copy_from_slice(&70000u32.to_be_bytes());
        v6[39] = 6;
        assert_eq!(pseudo_header_v6(&s6, &d6, 6, 70000), data(&v6));
    }

    /// Full checksum of `buf` with the field at `at..at+2` taken as zero, stored form.
    fn full(buf: &[u8], at: usize) -> u16 {
        let mut copy = buf.to_vec();
        copy[at..at + 2].copy_from_slice(&[0, 0]);
        !data(&copy)
    }

    /// Writes a word at an even offset of a random buffer and checks the incremental update
    /// against recomputation, including buffers whose sum is forced to 0xffff (stored 0x0000)
    /// and words changing to and from 0x0000 / 0xffff, the cases RFC 1624 is about.
    #[test]
    fn update_u16_matches_recomputation() {
        let mut rng = XorShift::new(0x1624);
        for round in 0..20_000 {
            let len = 4 + 2 * rng.below(30);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next_u8()).collect();
            let ck_at = 0;
            let word_at = 2 + 2 * rng.below((len - 2) / 2);
            if round % 4 == 1 {
                // Force the stored checksum to 0x0000 (data sums to 0xffff) by fixing a filler word.
                let filler_at = if word_at == 2 { 4 } else { 2 };
                if filler_at + 2 <= len {
                    buf[filler_at..filler_at + 2].copy_from_slice(&[0, 0]);
                    let s = !full(&buf, ck_at);
                    let need = 0xffffu16.wrapping_sub(s);
                    let need = if need == 0 { 0xffff } else { need };
                    buf[filler_at..filler_at + 2].copy_from_slice(&need.to_be_bytes());
                }
            }
            let ck = full(&buf, ck_at);
            buf[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
            let old = u16::from_be_bytes([buf[word_at], buf[word_at + 1]]);
            let new = match round % 5 {
                0 => 0,
                1 => 0xffff,
                _ => rng.next_u16(),
            };
            buf[word_at..word_at + 2].copy_from_slice(&new.to_be_bytes());
            let expect = full(&buf, ck_at);
            let got = update_u16(ck, old, new);
            // The only divergence RFC 1624 allows: data that sums to +0 vs -0 (all-zero data),
            // which a header with a nonzero version/port never is.
            if data(&buf[2..]) != 0 {
                assert_eq!(
                    got, expect,
                    "round {round}: ck {ck:04x} {old:04x}->{new:04x}"
                );
            }
        }
    }

    /// RFC 1624 section 4's example: a header summing to 0xcd7a, one word 0x5555 -> 0x3285.
    #[test]
    fn update_u16_rfc1624_example() {
        // HC = 0xdd2f, m = 0x5555, m' = 0x3285 -> HC' = 0x0000 per eqn. 3.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn update_bytes_matches_recomputation() {
        let mut rng = XorShift::new(0xadd7);
        for round in 0..20_000 {
            let field = if round % 2 == 0 { 4 } else { 16 };
            let len = 2 + field + 2 * rng.below(20);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next_u8()).collect();
            let at = 2 + 2 * rng.below((len - 2 - field) / 2 + 1);
            let ck = full(&buf, 0);
            buf[..2].copy_from_slice(&ck.to_be_bytes());
            let old = buf[at..at + field].to_vec();
            let new: Vec<u8> = match round % 7 {
                0 => vec![0; field],
                1 => vec![0xff; field],
                _ => (0..field).map(|_| rng.next_u8()).collect(),
            };
            buf[at..at + field].copy_from_slice(&new);
            if data(&buf[2..]) != 0 {
                assert_eq!(update_bytes(ck, &old, &new), full(&buf, 0), "round {round}");
            }
        }
    }

    #[test]
    fn crc32c_known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[]), 0);
        // RFC 3720 B.4: 32 bytes of zeros, and of 0xff.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
    }

    #[test]
    fn crc32c_append_concatenates() {
        let mut rng = XorShift::new(3);
        for _ in 0..200 {
            let a: Vec<u8> = (0..rng.below(40)).map(|_| rng.next_u8()).collect();
            let b: Vec<u8> = (0..rng.below(40)).map(|_| rng.next_u8()).collect();
            let ab: Vec<u8> = a.iter().chain(&b).copied().collect();
            assert_eq!(crc32c_append(crc32c(&a), &b), crc32c(&ab));
        }
    }
}
