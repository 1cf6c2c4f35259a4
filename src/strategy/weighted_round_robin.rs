//! Weighted round robin, smooth: each backend gets its weight's share, interleaved rather than in bursts.
//!
//! Plain weighted round robin with weights 5, 1, 1 sends five requests in a row to the heavy backend,
//! which is a burst it then has to absorb. nginx's smooth weighted round robin (introduced in nginx
//! 1.3.1, `ngx_http_upstream_get_peer` in `ngx_http_upstream_round_robin.c`) interleaves instead: on every
//! pick each candidate's `current` grows by its weight, the largest `current` wins, and the winner's
//! `current` drops by the total weight. Over one period of `sum(weights)` picks every backend is picked
//! exactly `weight` times, and 5, 1, 1 gives `a a b a c a a`.
//!
//! Weights are [`super::effective_weight`], so a backend in slow start gets a growing share. The
//! `current` values live in this worker's instance; a new table version starts them again at 0.

use super::{effective_weight, PickContext, Strategy, StrategyParams, WEIGHT_SCALE};
use crate::backend::Backend;

/// Most picks [`WeightedRoundRobin::new`] makes to move a worker off the common starting phase.
const MAX_WARM_UP_PICKS: u64 = 1_024;

pub struct WeightedRoundRobin {
    params: StrategyParams,
    /// nginx's `current_weight`, by backend index.
    current: Vec<i64>,
}

impl WeightedRoundRobin {
    /// Every worker would begin the same sequence at the same moment (all of them first send to the
    /// heaviest backend), so each starts `seed % sum(weights)` picks into the period.
    pub fn new(params: StrategyParams, backends: &[Backend], seed: u64) -> WeightedRoundRobin {
        let mut wrr = WeightedRoundRobin {
            params,
            current: vec![0; backends.len()],
        };
        let eligible: Vec<usize> = (0..backends.len())
            .filter(|&i| backends[i].is_eligible())
            .collect();
        let period: u64 = eligible
            .iter()
            .map(|&i| u64::from(backends[i].weight))
            .sum();
        if period > 0 {
            for _ in 0..(seed % period).min(MAX_WARM_UP_PICKS) {
                wrr.step(backends, &eligible, |b| u64::from(b.weight) * WEIGHT_SCALE);
            }
        }
        wrr
    }

    fn step(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        weight: impl Fn(&Backend) -> u64,
    ) -> usize {
        if self.current.len() < backends.len() {
            self.current.resize(backends.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best = candidates[0];
        let mut best_current = i64::MIN;
        for &c in candidates {
            let w = weight(&backends[c]) as i64;
            self.current[c] += w;
            total += w;
            // Strictly greater: the first of equal candidates wins, as in nginx.
            if self.current[c] > best_current {
                best = c;
                best_current = self.current[c];
            }
        }
        self.current[best] -= total;
        best
    }
}

impl Strategy for WeightedRoundRobin {
    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        let params = self.params;
        self.step(backends, candidates, |b| {
            effective_weight(b, &params, ctx.now_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};

    fn picks(
        wrr: &mut WeightedRoundRobin,
        b: &[Backend],
        candidates: &[usize],
        n: usize,
    ) -> Vec<usize> {
        (0..n).map(|_| wrr.pick(b, candidates, &ctx())).collect()
    }

    #[test]
    fn smooth_wrr_matches_nginx_documented_sequence() {
        let b = backends(&[5, 1, 1]);
        let mut wrr = WeightedRoundRobin::new(StrategyParams::default(), &b, 0);
        let (a, bb, c) = (0, 1, 2);
        assert_eq!(
            picks(&mut wrr, &b, &[0, 1, 2], 7),
            vec![a, a, bb, a, c, a, a]
        );
        // The period repeats exactly.
        assert_eq!(
            picks(&mut wrr, &b, &[0, 1, 2], 7),
            vec![a, a, bb, a, c, a, a]
        );
    }

    #[test]
    fn smooth_wrr_never_bursts_the_heavy_backend() {
        let b = backends(&[3, 1]);
        let mut wrr = WeightedRoundRobin::new(StrategyParams::default(), &b, 0);
        let seq = picks(&mut wrr, &b, &[0, 1], 400);
        assert_eq!(seq.iter().filter(|&&p| p == 0).count(), 300);
        let longest_run = seq
            .chunk_by(|x, y| x == y)
            .filter(|run| run[0] == 0)
            .map(<[usize]>::len)
            .max();
        assert_eq!(
            longest_run,
            Some(3),
            "weight 3 against 1: never more than 3 in a row"
        );
    }

    #[test]
    fn smooth_wrr_only_picks_candidates() {
        let b = backends(&[5, 1, 1]);
        let mut wrr = WeightedRoundRobin::new(StrategyParams::default(), &b, 0);
        let seq = picks(&mut wrr, &b, &[1, 2], 6);
        assert_eq!(seq, vec![1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn smooth_wrr_seeds_start_at_different_phases_of_the_same_period() {
        let b = backends(&[5, 1, 1]);
        let mut base = WeightedRoundRobin::new(StrategyParams::default(), &b, 0);
        let period = picks(&mut base, &b, &[0, 1, 2], 7);
        for seed in 1..7 {
            let mut wrr = WeightedRoundRobin::new(StrategyParams::default(), &b, seed);
            let seq = picks(&mut wrr, &b, &[0, 1, 2], 7);
            let mut rotated = period.clone();
            rotated.rotate_left(seed as usize);
            assert_eq!(seq, rotated, "seed {seed}");
        }
    }

    #[test]
    fn smooth_wrr_ramps_a_slow_starting_backend() {
        let mut b = backends(&[1, 1]);
        b[1].since_ms = 1_000;
        let params = StrategyParams {
            slow_start_ms: 10_000,
            ..StrategyParams::default()
        };
        let mut wrr = WeightedRoundRobin::new(params, &b, 0);
        let share = |wrr: &mut WeightedRoundRobin, now_ms| {
            let at = PickContext { now_ms, ..ctx() };
            (0..1_000)
                .filter(|_| wrr.pick(&b, &[0, 1], &at) == 1)
                .count()
        };
        // Weight 1 against 0.2, then against 0.8, then equal.
        assert_eq!(share(&mut wrr, 3_000), 167);
        assert_eq!(share(&mut wrr, 9_000), 444);
        assert_eq!(share(&mut wrr, 11_000), 500);
    }
}
