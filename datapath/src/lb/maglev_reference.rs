//! A second, deliberately naive Maglev table builder, for tests only.
//!
//! Production ([`super::maglev`]) is written for speed: it never materialises a
//! permutation, keeps occupancy in a bitmap, and skips the weight counters when weights
//! are equal. A bug in any of those shortcuts would also be baked into its golden values.
//! This module is the independent check: it follows the algorithm as published
//! (Eisenbud et al., NSDI 2016, §3.4; `maglev-reference.md` §1), so each function can be
//! read against the paper line by line, and the tests compare the two slot by slot.
//!
//! What it shares with production is only what *defines* a kxdp table rather than
//! implements it, taken from the definition in `maglev.rs`'s module docs:
//! - a backend's name is its byte key (`backend_key`: 16-byte address + big-endian port);
//! - `(h1, h2) = MurmurHash3_x64_128(name, seed)` ([`super::murmur3`], itself pinned by
//!   published vectors);
//! - weight 0 leaves a backend out; the rest are ordered by key, bytewise, then by the
//!   caller's index;
//! - weights use Katran's V2 counters to decide whether a backend uses its turn.
//!
//! Cost is `N * M` memory for the permutations, fine at test sizes only.

use super::murmur3::murmur3_x64_128;

/// The paper's `offset = h1(name) mod M` and `skip = h2(name) mod (M - 1) + 1`.
pub(super) fn offset_and_skip(name: &[u8], m: u64, seed: u64) -> (u64, u64) {
    let (h1, h2) = murmur3_x64_128(name, seed);
    (h1 % m, h2 % (m - 1) + 1)
}

/// The paper's `permutation[i][j] = (offset + j * skip) mod M` for `j = 0..M-1`, written
/// out in full. `u64` so `j * skip` cannot overflow at any table size we test.
pub(super) fn permutation(offset: u64, skip: u64, m: u64) -> Vec<usize> {
    (0..m).map(|j| ((offset + j * skip) % m) as usize).collect()
}

/// The paper's Populate over `m` entries, one permutation per backend in turn order.
/// `weights` (one per backend, all > 0) decide whether a backend uses its turn (Katran
/// V2): its counter grows by its weight each turn, and it takes an entry only once the
/// counter reaches the largest weight, which it then pays back. All-equal weights make
/// every backend take every turn, i.e. the paper's plain round robin.
/// Entries hold the backend's position in `permutations`; `None` is the paper's -1.
// The index loop is the paper's pseudo-code; iterators would hide the parallel arrays.
#[allow(clippy::needless_range_loop)]
pub(super) fn populate(
    m: usize,
    permutations: &[Vec<usize>],
    weights: &[u32],
) -> Vec<Option<usize>> {
    let n = permutations.len();
    assert_eq!(weights.len(), n, "one weight per backend");
    let mut entry: Vec<Option<usize>> = vec![None; m];
    // The paper assumes N >= 1: with no backend nothing is ever filled.
    if n == 0 {
        return entry;
    }
    let mut next = vec![0usize; n];
    let w_max = u64::from(*weights.iter().max().expect("n >= 1"));
    let mut counter = vec![0u64; n];
    let mut filled = 0;
    loop {
        for i in 0..n {
            counter[i] += u64::from(weights[i]);
            if counter[i] < w_max {
                continue;
            }
            counter[i] -= w_max;
            let mut c = permutations[i][next[i]];
            while entry[c].is_some() {
                next[i] += 1;
                c = permutations[i][next[i]];
            }
            entry[c] = Some(i);
            next[i] += 1;
            filled += 1;
            if filled == m {
                return entry;
            }
        }
    }
}

/// A whole kxdp table: the backends that take part (weight > 0, `None` = all 1) in key
/// order, their permutations, Populate. Entries hold indices into `keys`, like
/// production's slots. `m` must be prime (not checked: the tests also use M = 7).
pub(super) fn table(
    keys: &[&[u8]],
    weights: Option<&[u32]>,
    m: u32,
    seed: u64,
) -> Vec<Option<usize>> {
    let weight_of = |i: usize| weights.map_or(1, |w| w[i]);
    let mut order: Vec<usize> = (0..keys.len()).filter(|&i| weight_of(i) > 0).collect();
    // Slices compare bytewise with a proper prefix first, as the definition says.
    order.sort_by(|&a, &b| (keys[a], a).cmp(&(keys[b], b)));

    let m = u64::from(m);
    let permutations: Vec<Vec<usize>> = order
        .iter()
        .map(|&i| {
            let (offset, skip) = offset_and_skip(keys[i], m, seed);
            permutation(offset, skip, m)
        })
        .collect();
    let ordered_weights: Vec<u32> = order.iter().map(|&i| weight_of(i)).collect();
    populate(m as usize, &permutations, &ordered_weights)
        .into_iter()
        .map(|e| e.map(|turn| order[turn]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::IpKey;
    use crate::lb::maglev::tests::{keys_for, refs};
    use crate::lb::maglev::{
        DEFAULT_SEED, DEFAULT_TABLE_SIZE, EMPTY, MaglevTable, backend_key, offset_skip,
    };

    /// splitmix64: a tiny deterministic generator, so a failing case reproduces from its
    /// printed number (the crate has no proptest).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Production's table in the reference's shape (`None` for [`EMPTY`]).
    fn production(keys: &[[u8; 18]], weights: Option<&[u32]>, m: u32) -> Vec<Option<usize>> {
        let t = MaglevTable::build(&refs(keys), weights, m, DEFAULT_SEED).expect("valid input");
        t.slots()
            .iter()
            .map(|&s| (s != EMPTY).then_some(usize::from(s)))
            .collect()
    }

    fn reference(keys: &[[u8; 18]], weights: Option<&[u32]>, m: u32) -> Vec<Option<usize>> {
        table(&refs(keys), weights, m, DEFAULT_SEED)
    }

    /// Fails with the first differing slot rather than two 65537-entry dumps.
    fn assert_same(keys: &[[u8; 18]], weights: Option<&[u32]>, m: u32, case: &str) {
        let (p, r) = (production(keys, weights, m), reference(keys, weights, m));
        assert_eq!(p.len(), r.len(), "{case}: sizes");
        if let Some(slot) = (0..p.len()).find(|&s| p[s] != r[s]) {
            panic!(
                "{case}: slot {slot} is {:?} in production, {:?} in the reference",
                p[slot], r[slot]
            );
        }
    }

    /// maglev-reference.md §1's worked example, with offsets and skips given, so the
    /// reference's Populate is anchored to the document and not only to production.
    #[test]
    fn worked_example_m7_from_the_document() {
        let (b0, b1, b2) = ((3, 4), (0, 2), (3, 1));
        let perm = |(offset, skip)| permutation(offset, skip, 7);
        assert_eq!(perm(b0), [3, 0, 4, 1, 5, 2, 6]);
        assert_eq!(perm(b1), [0, 2, 4, 6, 1, 3, 5]);
        assert_eq!(perm(b2), [3, 4, 5, 6, 0, 1, 2]);

        let names = |table: Vec<Option<usize>>, backends: &[&'static str]| -> Vec<&'static str> {
            table
                .into_iter()
                .map(|e| backends[e.expect("full")])
                .collect()
        };
        let all = populate(7, &[perm(b0), perm(b1), perm(b2)], &[1, 1, 1]);
        assert_eq!(
            names(all, &["B0", "B1", "B2"]),
            ["B1", "B0", "B1", "B0", "B2", "B2", "B0"]
        );
        let without_b1 = populate(7, &[perm(b0), perm(b2)], &[1, 1]);
        assert_eq!(
            names(without_b1, &["B0", "B2"]),
            ["B0", "B0", "B0", "B0", "B2", "B2", "B2"]
        );
    }

    /// Same `(offset, skip)` as production's derivation, including at M = 7, which
    /// production's `build` refuses but its `offset_skip` accepts.
    #[test]
    fn offset_and_skip_agree_with_production() {
        for m in [7u32, 11, 251, 1021, 65537, 655_373] {
            for k in keys_for(500) {
                let (o, s) = offset_and_skip(&k, u64::from(m), DEFAULT_SEED);
                assert_eq!(
                    offset_skip(&k, m, DEFAULT_SEED),
                    (o as u32, s as u32),
                    "m {m}"
                );
            }
        }
    }

    /// §4 property 1, for the reference itself: its Populate indexes `next[i]` into a
    /// full permutation, so a non-bijection would show up as a panic or a hole.
    #[test]
    fn permutations_are_bijections() {
        for m in [7u64, 11, 251, 1021] {
            for k in keys_for(200) {
                let (offset, skip) = offset_and_skip(&k, m, DEFAULT_SEED);
                assert!(offset < m && (1..m).contains(&skip));
                let mut seen = vec![false; m as usize];
                for p in permutation(offset, skip, m) {
                    assert!(!seen[p], "m {m} offset {offset} skip {skip}: {p} twice");
                    seen[p] = true;
                }
            }
        }
    }

    /// Weights for the grid: a mix of 0 (left out), equal and skewed ones.
    fn some_weights(n: usize) -> Vec<u32> {
        (0..n as u32)
            .map(|i| [3, 0, 1, 7, 1, 2][i as usize % 6])
            .collect()
    }

    #[test]
    fn matches_production_on_a_grid() {
        let sizes = [251u32, 1021, DEFAULT_TABLE_SIZE];
        for m in sizes {
            for n in [0u32, 1, 2, 3, 10, 100] {
                let keys = keys_for(n);
                assert_same(&keys, None, m, &format!("m {m} n {n}"));
                let w = some_weights(n as usize);
                assert_same(&keys, Some(&w), m, &format!("m {m} n {n} weights {w:?}"));
                let equal = vec![5; n as usize];
                assert_same(&keys, Some(&equal), m, &format!("m {m} n {n} weights 5"));
            }
        }
        // More backends than slots / 100, and the paper's large size once.
        assert_same(&keys_for(1000), None, 1021, "m 1021 n 1000");
        assert_same(&keys_for(10), None, 655_373, "m 655373 n 10");
    }

    /// One random backend: v4 or v6, often sharing a prefix with others (so ordering is
    /// decided late in the key), sometimes a duplicate of an earlier one (the index
    /// tie-break).
    fn random_key(rng: &mut Rng, earlier: &[[u8; 18]]) -> [u8; 18] {
        if !earlier.is_empty() && rng.below(20) == 0 {
            return earlier[rng.below(earlier.len() as u64) as usize];
        }
        let port = if rng.below(2) == 0 {
            8080
        } else {
            rng.next() as u16
        };
        let ip = if rng.below(3) == 0 {
            let mut v6 = [0u8; 16];
            v6[..2].copy_from_slice(&[0xfd, 0x00]);
            v6[14..].copy_from_slice(&(rng.next() as u16).to_be_bytes());
            IpKey::v6(v6)
        } else {
            IpKey::v4([10, 244, rng.below(4) as u8, rng.next() as u8])
        };
        backend_key(ip, port)
    }

    fn random_weights(rng: &mut Rng, n: usize) -> Option<Vec<u32>> {
        match rng.below(3) {
            0 => None,
            1 => Some((0..n).map(|_| rng.below(4) as u32).collect()),
            _ => Some((0..n).map(|_| rng.below(1000) as u32).collect()),
        }
    }

    /// The property-test stand-in: random backend sets, sizes and weights.
    #[test]
    fn matches_production_on_random_sets() {
        let sizes = [251u32, 257, 509, 1021, 2039, 4093];
        for case in 0..400u64 {
            let mut rng = Rng(case);
            let m = sizes[rng.below(sizes.len() as u64) as usize];
            let n = rng.below(if case % 10 == 0 { 300 } else { 40 }) as usize;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                let k = random_key(&mut rng, &keys);
                keys.push(k);
            }
            let weights = random_weights(&mut rng, n);
            assert_same(
                &keys,
                weights.as_deref(),
                m,
                &format!("case {case}: m {m} n {n}"),
            );
        }
    }

    fn counts(table: &[Option<usize>], n: usize) -> Vec<u32> {
        let mut c = vec![0u32; n];
        for e in table.iter().flatten() {
            c[*e] += 1;
        }
        c
    }

    /// §4 properties 2-4 on the reference alone, so it is trusted on its own merits and
    /// not merely for agreeing with production.
    #[test]
    fn reference_properties() {
        for m in [251u32, 1021] {
            for n in [1u32, 2, 3, 10, 100] {
                let t = reference(&keys_for(n), None, m);
                assert!(t.iter().all(Option::is_some), "hole at m {m} n {n}");
                let c = counts(&t, n as usize);
                let spread = c.iter().max().expect("n >= 1") - c.iter().min().expect("n >= 1");
                assert!(spread <= 1, "m {m} n {n}: {c:?}");
            }
        }

        // Order independence, compared by key since entries are input indices.
        let keys = keys_for(30);
        let by_key = |t: Vec<Option<usize>>, ks: &[[u8; 18]]| -> Vec<[u8; 18]> {
            t.into_iter().map(|e| ks[e.expect("full")]).collect()
        };
        let mut reversed = keys.clone();
        reversed.reverse();
        assert_eq!(
            by_key(reference(&keys, None, 1021), &keys),
            by_key(reference(&reversed, None, 1021), &reversed)
        );

        // Removal at N = 3, M = 1021: the removed backend's entries all move, and under
        // 1% of M moves between the remaining two (Cilium's TestBackendRemoval bound).
        let keys = keys_for(3);
        let before = by_key(reference(&keys, None, 1021), &keys);
        for gone in 0..3 {
            let rest: Vec<[u8; 18]> = (0..3).filter(|&i| i != gone).map(|i| keys[i]).collect();
            let after = by_key(reference(&rest, None, 1021), &rest);
            assert!(after.iter().all(|k| *k != keys[gone]));
            let moved_among_rest = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b != a && **b != keys[gone])
                .count();
            assert!(
                moved_among_rest * 100 < 1021,
                "remove #{gone}: {moved_among_rest}"
            );
        }
    }
}
