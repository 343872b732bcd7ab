//! The flow hash: one documented, seeded function, identical on every node.
//!
//! Backend choice and the VXLAN outer source port both derive from it, so two nodes
//! (or a restarted agent) must compute the same value for the same flow. std's and
//! foldhash's hashers make no cross-version stability promise, hence our own.
//!
//! Definition (kxdp flow hash v1): the 5-tuple is packed into five 64-bit words
//! `src[0..8], src[8..16], dst[0..8], dst[8..16], (sport << 48 | dport << 32 | proto)`
//! (addresses as 16-byte IPv4-mapped keys, big-endian words); starting from
//! `h = seed ^ 0x6b78_6470_666c_6f77` ("kxdpflow"), each word is absorbed as
//! `h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)`, and the result
//! goes through the murmur3 64-bit finaliser. The low 32 bits are the hash.

use crate::addr::IpKey;

/// The seed every node uses unless configured otherwise.
pub const DEFAULT_SEED: u64 = 0;

/// A flow's 5-tuple as the hash sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub src: IpKey,
    pub dst: IpKey,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

pub fn flow_hash(t: &FiveTuple, seed: u64) -> u32 {
    let words = [
        word(&t.src.0[..8]),
        word(&t.src.0[8..]),
        word(&t.dst.0[..8]),
        word(&t.dst.0[8..]),
        (u64::from(t.src_port) << 48) | (u64::from(t.dst_port) << 32) | u64::from(t.proto),
    ];
    let mut h = seed ^ 0x6b78_6470_666c_6f77;
    for w in words {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }
    fmix64(h) as u32
}

fn word(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_be_bytes(b)
}

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

    fn tuple(sport: u16) -> FiveTuple {
        FiveTuple {
            src: IpKey::v4([10, 244, 1, 5]),
            dst: IpKey::v4([10, 96, 0, 10]),
            src_port: sport,
            dst_port: 80,
            proto: 6,
        }
    }

    #[test]
    fn golden_values_never_change() {
        // If these change, every node in a mixed-version cluster disagrees on backends.
        let got: Vec<u32> = (40000..40004)
            .map(|p| flow_hash(&tuple(p), DEFAULT_SEED))
            .collect();
        assert_eq!(got, GOLDEN);
    }

    const GOLDEN: [u32; 4] = [1252193872, 2985739376, 1982461524, 3334015109];

    #[test]
    fn seed_and_fields_matter() {
        let a = flow_hash(&tuple(1), 0);
        assert_ne!(a, flow_hash(&tuple(1), 1));
        assert_ne!(a, flow_hash(&tuple(2), 0));
    }
}
