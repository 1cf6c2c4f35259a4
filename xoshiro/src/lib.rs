//! The one seedable random generator of the workspace: sluice's strategies (`random`, `p2c`,
//! `bandit`) and everything loadgen draws (ids, failure draws, per-server parameters).
//!
//! Why not a crate from outside: a few dozen lines of well-known arithmetic, and a fixed seed must
//! give the same sequence on every platform and in every version, so that distribution tests can
//! assert exact counts and a simulator run can be replayed from its seed.
//!
//! The generator is xoshiro256** 1.0 from David Blackman and Sebastiano Vigna, "Scrambled Linear
//! Pseudorandom Number Generators", ACM Transactions on Mathematical Software 47(4), 2021
//! (reference code `xoshiro256starstar.c` at <https://prng.di.unimi.it/>). Its 256-bit state is
//! filled from a 64-bit seed with SplitMix64 (`splitmix64.c` on the same page), as its authors
//! recommend, so nearby seeds (worker 0, 1, 2...) still give unrelated streams. Not cryptographic.

#![warn(unreachable_pub)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

/// One SplitMix64 step: advances `state` and returns the next output.
///
/// Also used on its own as a fixed, documented hash of a `u64` (see [`mix64`]).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes `value` with one SplitMix64 step from state `value` (the stateless form of
/// [`splitmix64`]).
pub fn mix64(value: u64) -> u64 {
    let mut state = value;
    splitmix64(&mut state)
}

/// A xoshiro256** generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole output is determined by `seed`, on every platform.
    pub fn with_seed(seed: u64) -> Rng {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// A generator seeded from the per-process random keys std draws for its hash maps, the clock
    /// and the process id.
    pub fn from_entropy() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::with_seed(RandomState::new().hash_one((nanos, std::process::id())))
    }

    /// A new generator derived from this one's stream, for a sub-component (one server, one
    /// thread) so components don't share a sequence.
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng::with_seed(self.next_u64() ^ mix64(salt))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` without modulo bias, by Lemire's multiply-and-reject method ("Fast Random
    /// Integer Generation in an Interval", ACM TOMACS 2019). Returns 0 when `n` is 0. May take
    /// more than one draw (with probability below `n / 2^64`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            // Reject the low products that would make some results one more likely than others.
            let floor = n.wrapping_neg() % n;
            while (m as u64) < floor {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in `0..n` by the same multiply-shift as [`Rng::below`] without its rejection step:
    /// exactly one draw per call, at the cost of a bias below `n / 2^64`. loadgen's simulator
    /// draws this way, and its seeded runs must stay as they were.
    pub fn below_one_draw(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`, with the 53 bits an `f64` holds.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `lo..=hi`, in one draw ([`Rng::below_one_draw`]).
    pub fn range_u64(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below_one_draw(hi - lo + 1)
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
    fn seed_zero_matches_the_reference_c_implementation() {
        // Printed by splitmix64.c seeding xoshiro256starstar.c with x = 0.
        let mut sm = 0;
        assert_eq!(splitmix64(&mut sm), 0xe220_a839_7b1d_cdaf);
        let mut rng = Rng::with_seed(0);
        let out: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(
            out,
            vec![
                0x99ec_5f36_cb75_f2b4,
                0xbf6e_1f78_4956_452a,
                0x1a5f_849d_4933_e6e0,
                0x6aa5_94f1_262d_2d2c
            ]
        );
    }

    #[test]
    fn splitmix_matches_reference_output() {
        // First outputs of splitmix64.c seeded with 1234567.
        let mut s = 1_234_567u64;
        assert_eq!(splitmix64(&mut s), 6_457_827_717_110_365_317);
        assert_eq!(splitmix64(&mut s), 3_203_168_211_198_807_973);
    }

    #[test]
    fn same_seed_same_sequence_and_neighbour_seeds_differ() {
        let a: Vec<u64> = {
            let mut r = Rng::with_seed(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::with_seed(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::with_seed(8);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).all(|(x, y)| x != y));
    }

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
    fn below_stays_in_range_and_is_roughly_uniform() {
        let mut rng = Rng::with_seed(1);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            let v = rng.below(7);
            assert!(v < 7);
            counts[v as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(rng.below(1), 0);
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn below_is_unbiased_where_modulo_would_not_be() {
        // n = 3 * 2^62: `x % n` would give the lower third of the range twice the odds.
        let n = 3u64 << 62;
        let mut rng = Rng::with_seed(2);
        let low = (0..30_000).filter(|_| rng.below(n) < n / 3).count();
        assert!((9_400..10_600).contains(&low), "{low}");
    }

    #[test]
    fn below_one_draw_takes_one_draw_and_agrees_with_below_when_nothing_is_rejected() {
        let mut one = Rng::with_seed(9);
        let mut unbiased = Rng::with_seed(9);
        for _ in 0..10_000 {
            // For n = 10 a rejection has odds of 10 in 2^64: it never happens here.
            assert_eq!(one.below_one_draw(10), unbiased.below(10));
        }
        assert_eq!(one.next_u64(), unbiased.next_u64(), "streams stay aligned");
    }

    #[test]
    fn next_f64_is_in_the_unit_interval_with_mean_one_half() {
        let mut rng = Rng::with_seed(3);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.01, "{sum}");
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

    #[test]
    fn from_entropy_gives_a_working_generator() {
        let mut rng = Rng::from_entropy();
        assert!(rng.below(10) < 10);
    }
}
