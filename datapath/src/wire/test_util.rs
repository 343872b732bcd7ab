//! Test helpers shared by the wire tests: a seeded xorshift RNG and the fuzz-buffer generator
//! behind every module's `no_panic` test. Test-only; no extra crates.

/// xorshift64* (Vigna): tiny, seeded, reproducible; plenty for generating bytes.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // A zero state would stay zero forever.
        XorShift(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn next_u8(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    pub fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Number of buffers each module's `no_panic` test throws at its view.
pub const FUZZ_ROUNDS: usize = 50_000;

/// Calls `check` on `rounds` buffers: a third fully random (0..=max_len bytes), the rest
/// mutations of the `seeds` (bit flips, byte overwrites with edge values, truncation,
/// extension), so that many of them get past `new_checked` and reach the getters.
/// `check` returns whether the view accepted the buffer; at least a tenth must be accepted,
/// or the test would only be exercising the error paths.
pub fn fuzz(
    seed: u64,
    seeds: &[&[u8]],
    max_len: usize,
    rounds: usize,
    mut check: impl FnMut(&[u8]) -> bool,
) {
    let mut accepted = 0;
    let mut rng = XorShift::new(seed);
    let mut buf: Vec<u8> = Vec::with_capacity(max_len + 64);
    for round in 0..rounds {
        buf.clear();
        if seeds.is_empty() || round % 3 == 0 {
            let len = rng.below(max_len + 1);
            buf.extend((0..len).map(|_| rng.next_u8()));
        } else {
            buf.extend_from_slice(seeds[rng.below(seeds.len())]);
            let mutations = 1 + rng.below(4);
            for _ in 0..mutations {
                if buf.is_empty() {
                    break;
                }
                let at = rng.below(buf.len());
                match rng.below(6) {
                    0 => buf[at] ^= 1 << rng.below(8),
                    1 => buf[at] = rng.next_u8(),
                    2 => buf[at] = [0x00, 0xff, 0x01, 0x7f, 0x80][rng.below(5)],
                    3 => buf.truncate(at),
                    4 => buf.extend((0..rng.below(16)).map(|_| rng.next_u8())),
                    _ => {
                        // Overwrite a 16-bit word, where most length fields live.
                        let w = [0x0000u16, 0xffff, 0x0005, 0x0014, 0x0028][rng.below(5)];
                        if at + 2 <= buf.len() {
                            buf[at..at + 2].copy_from_slice(&w.to_be_bytes());
                        }
                    }
                }
            }
        }
        accepted += usize::from(check(&buf));
    }
    assert!(
        accepted >= rounds / 10,
        "only {accepted} of {rounds} fuzz buffers were accepted"
    );
}

/// Asserts that every proper prefix of `packet[..min_valid]` is rejected; `accepts` says
/// whether `new_checked` (or a walker) took a buffer.
pub fn assert_truncations_fail(packet: &[u8], min_valid: usize, accepts: impl Fn(&[u8]) -> bool) {
    for len in 0..min_valid {
        assert!(
            !accepts(&packet[..len]),
            "accepted a {len}-byte prefix of a {min_valid}-byte packet"
        );
    }
}
