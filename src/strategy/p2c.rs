//! Power of two choices: sample two distinct candidates at random and send to the cheaper one.
//!
//! Mitzenmacher ("The Power of Two Choices in Randomized Load Balancing", IEEE TPDS 2001) showed that
//! comparing two random choices instead of one shrinks the worst queue exponentially, and unlike a
//! scan for the global minimum it does not send every worker's next request to the same backend in
//! the instant before the shared counters catch up (the "herd" behaviour of least connections across
//! many independent pickers). This is tower's `balance::p2c` with its `PeakEwma` load, and nginx's
//! `random two`: the cost is least time's ([`super::least_time`]: Peak-EWMA latency times requests in
//! flight plus one, over the effective weight). A candidate without a latency sample is priced at the
//! other's latency, or [`super::DEFAULT_LATENCY_US`] when neither has one.

use super::least_time::{cost, known_latency_us};
use super::{Feedback, PickContext, Strategy, StrategyParams, DEFAULT_LATENCY_US};
use crate::backend::Backend;
use crate::rng::Rng;

pub struct PowerOfTwoChoices {
    rng: Rng,
    params: StrategyParams,
}

impl PowerOfTwoChoices {
    pub fn with_seed(seed: u64, params: StrategyParams) -> PowerOfTwoChoices {
        PowerOfTwoChoices {
            rng: Rng::with_seed(seed),
            params,
        }
    }
}

/// Two distinct positions in `0..n` (`n >= 2`), uniformly among all ordered pairs.
pub(crate) fn two_distinct(rng: &mut Rng, n: usize) -> (usize, usize) {
    let first = rng.below(n as u64) as usize;
    // Draw from the n - 1 others, skipping over `first`.
    let second = rng.below(n as u64 - 1) as usize;
    (first, if second >= first { second + 1 } else { second })
}

impl Strategy for PowerOfTwoChoices {
    fn feedback(&self) -> Feedback {
        Feedback {
            latency: true,
            ..Feedback::default()
        }
    }

    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        if candidates.len() < 2 {
            return candidates[0];
        }
        let (i, j) = two_distinct(&mut self.rng, candidates.len());
        let (a, b) = (&backends[candidates[i]], &backends[candidates[j]]);
        let unknown_latency_us = match (
            known_latency_us(a, ctx.now_ms),
            known_latency_us(b, ctx.now_ms),
        ) {
            (Some(x), Some(y)) => x.max(y),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => DEFAULT_LATENCY_US,
        };
        let cost_a = cost(a, &self.params, ctx.now_ms, unknown_latency_us);
        let cost_b = cost(b, &self.params, ctx.now_ms, unknown_latency_us);
        // On a tie the first draw wins; it is itself random, so ties split evenly.
        if cost_b < cost_a {
            candidates[j]
        } else {
            candidates[i]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};
    use std::sync::atomic::Ordering;

    #[test]
    fn p2c_never_samples_the_same_candidate_twice() {
        let mut rng = Rng::with_seed(11);
        let mut pairs = [[0u32; 4]; 4];
        for _ in 0..12_000 {
            let (i, j) = two_distinct(&mut rng, 4);
            assert_ne!(i, j);
            pairs[i][j] += 1;
        }
        // All 12 ordered pairs come up, each about 1000 times.
        for (i, row) in pairs.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                if i != j {
                    assert!((900..1_100).contains(&count), "{pairs:?}");
                }
            }
        }
    }

    #[test]
    fn p2c_samples_both_of_two_equal_backends() {
        let b = backends(&[1, 1]);
        let mut p2c = PowerOfTwoChoices::with_seed(1, StrategyParams::default());
        let second = (0..10_000)
            .filter(|_| p2c.pick(&b, &[0, 1], &ctx()) == 1)
            .count();
        assert!((4_800..5_200).contains(&second), "{second} of 10000");
    }

    #[test]
    fn p2c_follows_load() {
        let b = backends(&[1, 1, 1]);
        b[0].stats.in_flight.store(8, Ordering::Relaxed);
        let mut p2c = PowerOfTwoChoices::with_seed(2, StrategyParams::default());
        let mut counts = [0u32; 3];
        for _ in 0..9_000 {
            counts[p2c.pick(&b, &[0, 1, 2], &ctx())] += 1;
        }
        // The loaded backend loses every pair it is drawn into; the idle two share the rest.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!((4_300..4_700).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn p2c_prefers_the_faster_of_the_pair() {
        let b = backends(&[1, 1, 1]);
        b[0].stats.record_response(1_000, true, 1);
        b[1].stats.record_response(5_000, true, 1);
        b[2].stats.record_response(9_000, true, 1);
        let mut p2c = PowerOfTwoChoices::with_seed(3, StrategyParams::default());
        let mut counts = [0u32; 3];
        for _ in 0..9_000 {
            counts[p2c.pick(&b, &[0, 1, 2], &ctx())] += 1;
        }
        // The fastest wins the 2 pairs of 3 it is in, the middle one the remaining pair, the slowest none.
        assert!((5_800..6_200).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[2], 0, "{counts:?}");
    }

    #[test]
    fn p2c_with_one_candidate_picks_it() {
        let b = backends(&[1, 1, 1]);
        let mut p2c = PowerOfTwoChoices::with_seed(4, StrategyParams::default());
        assert_eq!(p2c.pick(&b, &[2], &ctx()), 2);
    }

    #[test]
    fn p2c_is_reproducible_with_a_seed() {
        let b = backends(&[1, 1, 1, 1]);
        let run = |seed| {
            let mut p2c = PowerOfTwoChoices::with_seed(seed, StrategyParams::default());
            (0..32)
                .map(|_| p2c.pick(&b, &[0, 1, 2, 3], &ctx()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
