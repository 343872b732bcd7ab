//! MurmurHash3, x64 128-bit variant (Austin Appleby's `MurmurHash3_x64_128`).
//!
//! Owned here because Maglev tables must be identical on every node and across versions:
//! the permutation of each backend is derived from this hash, so the function is part of
//! the table's definition, not an implementation detail. It is written from the published
//! algorithm and checked against published vectors (SMHasher's verification value
//! `0x6384BA69` and the reference strings other implementations test).
//!
//! Definition, for reimplementers: `h1 = h2 = seed`; each 16-byte block gives `k1`, `k2`
//! (little-endian u64s) mixed with `c1 = 0x87c37b91114253d5`, `c2 = 0x4cf5ad432745937f`;
//! the 0..15-byte tail is read little-endian into `k1` (bytes 0..8) and `k2` (8..15);
//! finalisation xors in the byte length, cross-adds, applies `fmix64` to both and
//! cross-adds again. The reference takes a 32-bit seed, zero-extended into `h1`/`h2`; this
//! one takes a `u64` and is identical to the reference for every seed below 2^32.

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

/// `MurmurHash3_x64_128(data, seed)` as the pair `(h1, h2)`: the first and second
/// little-endian u64 of the reference's 16-byte output.
pub fn murmur3_x64_128(data: &[u8], seed: u64) -> (u64, u64) {
    let mut h1 = seed;
    let mut h2 = seed;

    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (lo, hi) = block.split_at(8);
        h1 ^= mix_k1(le_u64(lo));
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(le_u64(hi));
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }

    // The tail is zero-padded; each half is mixed only if it holds at least one byte
    // (mixing a zero word would still change the state, and the reference skips it).
    let tail = blocks.remainder();
    if tail.len() > 8 {
        h2 ^= mix_k2(le_u64(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(le_u64(&tail[..tail.len().min(8)]));
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

fn mix_k1(k: u64) -> u64 {
    k.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k: u64) -> u64 {
    k.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// Little-endian u64 from up to 8 bytes, zero-padded at the high end.
fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

/// The MurmurHash3 64-bit finaliser (avalanches every input bit into every output bit).
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seed, h1, h2, input): the reference strings published with the Go murmur3
    /// packages (spaolacci/murmur3, twmb/murmur3), which other ports test against too.
    const VECTORS: [(u64, u64, u64, &str); 15] = [
        (0x00, 0x0000000000000000, 0x0000000000000000, ""),
        (0x00, 0xcbd8a7b341bd9b02, 0x5b1e906a48ae1d19, "hello"),
        (0x00, 0x342fac623a5ebc8e, 0x4cdcbc079642414d, "hello, world"),
        (
            0x00,
            0xb89e5988b737affc,
            0x664fc2950231b2cb,
            "19 Jan 2038 at 3:14:07 AM",
        ),
        (
            0x00,
            0xcd99481f9ee902c9,
            0x695da1a38987b6e7,
            "The quick brown fox jumps over the lazy dog.",
        ),
        (0x01, 0x4610abe56eff5cb5, 0x51622daa78f83583, ""),
        (0x01, 0xa78ddff5adae8d10, 0x128900ef20900135, "hello"),
        (0x01, 0x8b95f808840725c6, 0x1597ed5422bd493b, "hello, world"),
        (
            0x01,
            0x2a929de9c8f97b2f,
            0x56a41d99af43a2db,
            "19 Jan 2038 at 3:14:07 AM",
        ),
        (
            0x01,
            0xfb3325171f9744da,
            0xaaf8b92a5f722952,
            "The quick brown fox jumps over the lazy dog.",
        ),
        (0x2a, 0xf02aa77dfa1b8523, 0xd1016610da11cbb9, ""),
        (0x2a, 0xc4b8b3c960af6f08, 0x2334b875b0efbc7a, "hello"),
        (0x2a, 0xb91864d797caa956, 0xd5d139a55afe6150, "hello, world"),
        (
            0x2a,
            0xfd8f19ebdc8c6b6a,
            0xd30fdc310fa08ff9,
            "19 Jan 2038 at 3:14:07 AM",
        ),
        (
            0x2a,
            0x74f33c659cda5af7,
            0x4ec7a891caf316f0,
            "The quick brown fox jumps over the lazy dog.",
        ),
    ];

    #[test]
    fn reference_strings() {
        for (seed, h1, h2, s) in VECTORS {
            assert_eq!(
                murmur3_x64_128(s.as_bytes(), seed),
                (h1, h2),
                "{s:?} seed {seed}"
            );
        }
    }

    /// SMHasher's `VerificationTest`: hash the keys `[]`, `[0]`, `[0, 1]`, ... `[0..=254]`
    /// with seed `256 - len`, concatenate the 16-byte outputs, hash that with seed 0 and
    /// read the first four bytes little-endian. Appleby publishes `0x6384BA69` for
    /// MurmurHash3_x64_128. It covers every tail length and multi-block inputs.
    #[test]
    fn smhasher_verification_value() {
        let key: Vec<u8> = (0..=255u8).collect();
        let mut outputs = Vec::with_capacity(256 * 16);
        for len in 0..256usize {
            let (h1, h2) = murmur3_x64_128(&key[..len], 256 - len as u64);
            outputs.extend_from_slice(&h1.to_le_bytes());
            outputs.extend_from_slice(&h2.to_le_bytes());
        }
        let (h1, _) = murmur3_x64_128(&outputs, 0);
        assert_eq!(h1 as u32, 0x6384_ba69);
    }

    #[test]
    fn wide_seed_is_a_different_function() {
        // Seeds above 2^32 are our extension; they must not collapse onto the low half.
        assert_ne!(
            murmur3_x64_128(b"hello", 1 << 32),
            murmur3_x64_128(b"hello", 0)
        );
    }
}
