//! A tiny seedable PRNG, so every random choice in loadgen (ids, failure draws, per-server
//! parameters) can be replayed from a seed without pulling in the `rand` crate.
//!
//! The generator is xoshiro256** seeded through SplitMix64, both by David Blackman and
//! Sebastiano Vigna: <https://prng.di.unimi.it/xoshiro256starstar.c> and
//! <https://prng.di.unimi.it/splitmix64.c>. Not cryptographic.

use std::time::{SystemTime, UNIX_EPOCH};

/// One SplitMix64 step: advances `state` and returns the next output.
///
/// Also used on its own as a fixed, documented hash of a `u64` (e.g. the flaky3 step schedule).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes `value` with SplitMix64's output function (stateless form of [`splitmix64`]).
pub fn mix64(value: u64) -> u64 {
    let mut state = value;
    splitmix64(&mut state)
}

/// xoshiro256** generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// A generator seeded from the clock, the process id and a stack address.
    pub fn from_entropy() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        Rng::with_seed(nanos ^ (u64::from(std::process::id()) << 32) ^ addr.rotate_left(17))
    }

    /// A new generator derived from this one's seed stream, for a sub-component (e.g. one
    /// server or one thread) so components don't share a sequence.
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng::with_seed(self.next_u64() ^ mix64(salt))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` by Lemire's multiply-shift; the bias (< n / 2^64) is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range_u64(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_sequence() {
        let mut a = Rng::with_seed(42);
        let mut b = Rng::with_seed(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::with_seed(1).next_u64(), Rng::with_seed(2).next_u64());
    }

    #[test]
    fn splitmix_matches_reference_output() {
        // First outputs of splitmix64.c seeded with 1234567.
        let mut s = 1_234_567u64;
        assert_eq!(splitmix64(&mut s), 6_457_827_717_110_365_317);
        assert_eq!(splitmix64(&mut s), 3_203_168_211_198_807_973);
    }

    #[test]
    fn floats_and_ranges_stay_in_bounds() {
        let mut r = Rng::with_seed(7);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(10) < 10);
            let x = r.range_u64(3, 5);
            assert!((3..=5).contains(&x));
        }
    }

    #[test]
    fn chance_is_roughly_its_probability() {
        let mut r = Rng::with_seed(3);
        let hits = (0..100_000).filter(|_| r.chance(0.25)).count();
        assert!((24_000..26_000).contains(&hits), "hits {hits}");
    }
}
