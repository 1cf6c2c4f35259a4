//! Weighted random: each candidate with probability `weight / total weight`.
//!
//! The stateless baseline (nginx's `random` without `two`, HAProxy's `random(1)`): workers need no
//! coordination to share traffic in proportion to weights, and nothing an attacker can predict from
//! the order of requests. The weight is [`super::effective_weight`], so slow start applies.

use super::{effective_weight, PickContext, Strategy, StrategyParams};
use crate::backend::Backend;
use crate::rng::Rng;

pub struct WeightedRandom {
    rng: Rng,
    params: StrategyParams,
}

impl WeightedRandom {
    pub fn with_seed(seed: u64, params: StrategyParams) -> WeightedRandom {
        WeightedRandom {
            rng: Rng::with_seed(seed),
            params,
        }
    }
}

impl Strategy for WeightedRandom {
    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        let weight = |c: usize| effective_weight(&backends[c], &self.params, ctx.now_ms);
        let total: u64 = candidates.iter().map(|&c| weight(c)).sum();
        let mut ticket = self.rng.below(total);
        for &c in candidates {
            let w = weight(c);
            if ticket < w {
                return c;
            }
            ticket -= w;
        }
        // Not reached: both passes compute the same weights, so the ticket falls in one of them.
        candidates[candidates.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};

    #[test]
    fn random_shares_traffic_by_weight() {
        let b = backends(&[1, 2, 5]);
        let mut r = WeightedRandom::with_seed(9, StrategyParams::default());
        let mut counts = [0u32; 3];
        for _ in 0..80_000 {
            counts[r.pick(&b, &[0, 1, 2], &ctx())] += 1;
        }
        // Expected 10000, 20000, 50000; the bounds are over 4 standard deviations wide.
        assert!((9_500..10_500).contains(&counts[0]), "{counts:?}");
        assert!((19_300..20_700).contains(&counts[1]), "{counts:?}");
        assert!((49_400..50_600).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn random_only_picks_candidates() {
        let b = backends(&[1, 1, 1, 1]);
        let mut r = WeightedRandom::with_seed(10, StrategyParams::default());
        for _ in 0..1_000 {
            let p = r.pick(&b, &[1, 3], &ctx());
            assert!(p == 1 || p == 3);
        }
    }

    #[test]
    fn random_is_reproducible_with_a_seed() {
        let b = backends(&[1, 1, 1]);
        let run = |seed| {
            let mut r = WeightedRandom::with_seed(seed, StrategyParams::default());
            (0..32)
                .map(|_| r.pick(&b, &[0, 1, 2], &ctx()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
