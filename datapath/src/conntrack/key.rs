//! Flow keys (one direction of a connection as seen on the wire) and the index hash.
//!
//! Owns: the key layout and the seeded hash the flow index uses. Never: the cross-node flow
//! hash (`crate::hash` owns that one; this hash is private to one table and may change).

use crate::addr::IpKey;

/// One direction of a flow, as seen on the wire. 38 bytes, no padding but the last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    pub src: IpKey,
    pub dst: IpKey,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl FlowKey {
    /// The same tuple seen from the other end (addresses and ports swapped).
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }
}

/// Which of an entry's two tuples a packet matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The tuple the client sent (`FlowEntry::original`).
    Original,
    /// The tuple replies carry (`FlowEntry::reply`).
    Reply,
}

impl Direction {
    pub(super) fn bit(self) -> u32 {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }

    pub(super) fn from_bit(bit: u32) -> Direction {
        if bit & 1 == 0 {
            Direction::Original
        } else {
            Direction::Reply
        }
    }
}

/// Seeded key hash for one table's index (and the affinity cache).
///
/// The key is read as five fixed-width words and folded with 128-bit multiplies (the
/// foldhash construction), each word first XORed with a secret derived from the seed: a
/// per-table random seed keeps remote senders, who choose source ports and addresses, from
/// building long probe chains on purpose.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHasher {
    k: [u64; 8],
}

impl KeyHasher {
    pub(super) fn new(seed: u64) -> KeyHasher {
        let mut state = seed;
        let mut k = [0u64; 8];
        for word in &mut k {
            // splitmix64: spreads one seed into independent-looking secrets. The forced
            // low bit keeps a secret from ever being zero (a zero operand kills a multiply).
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *word = (z ^ (z >> 31)) | 1;
        }
        KeyHasher { k }
    }

    /// A seed from foldhash's per-process randomness (stack addresses under ASLR and a
    /// counter; no syscall), so every table hashes differently.
    pub(super) fn random_seed() -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::RandomState::default().hash_one(0x6b78_6470_6374_u64)
    }

    #[inline]
    pub(super) fn flow(&self, key: &FlowKey) -> u64 {
        let (s0, s1) = halves(key.src);
        let (d0, d1) = halves(key.dst);
        let ports =
            (u64::from(key.src_port) << 24) | (u64::from(key.dst_port) << 8) | u64::from(key.proto);
        let k = &self.k;
        let a = fold(s0 ^ k[0], s1 ^ k[1]);
        let b = fold(d0 ^ k[2], d1 ^ k[3]);
        let c = fold(ports ^ k[4], a ^ k[5]);
        fold(b ^ k[6], c ^ k[7])
    }

    #[inline]
    pub(super) fn client_service(&self, client: IpKey, service: u32) -> u64 {
        let (c0, c1) = halves(client);
        let k = &self.k;
        let a = fold(c0 ^ k[0], c1 ^ k[1]);
        fold(u64::from(service) ^ k[2], a ^ k[3])
    }
}

#[inline]
fn halves(ip: IpKey) -> (u64, u64) {
    let v = u128::from_ne_bytes(ip.0);
    (v as u64, (v >> 64) as u64)
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: IpKey::v4([10, 244, 1, 5]),
            dst: IpKey::v4([10, 96, 0, 10]),
            src_port: sport,
            dst_port: 80,
            proto: 6,
        }
    }

    #[test]
    fn reversed_swaps_ends_and_round_trips() {
        let k = key(40000);
        let r = k.reversed();
        assert_eq!((r.src, r.dst), (k.dst, k.src));
        assert_eq!((r.src_port, r.dst_port, r.proto), (80, 40000, 6));
        assert_eq!(r.reversed(), k);
    }

    #[test]
    fn hash_spreads_neighbouring_ports() {
        let h = KeyHasher::new(7);
        // 4096 consecutive source ports into 4096 buckets: a decent hash leaves about
        // 1/e of them empty; a broken one (e.g. ports ignored) leaves nearly all empty.
        let mut used = vec![false; 4096];
        for p in 0..4096u16 {
            used[(h.flow(&key(p)) & 4095) as usize] = true;
        }
        let filled = used.iter().filter(|u| **u).count();
        assert!(filled > 2400, "{filled}");
        assert_ne!(
            KeyHasher::new(1).flow(&key(1)),
            KeyHasher::new(2).flow(&key(1))
        );
    }
}
