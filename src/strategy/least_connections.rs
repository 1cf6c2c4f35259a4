//! Least connections, weighted: the candidate with the fewest requests in flight per unit of weight.
//!
//! In HTTP mode the load is requests in flight (a pooled idle connection is no load); in TCP mode it is
//! open tunnels. Both are counted across all workers in [`crate::backend::BackendStats::in_flight`].
//! Candidates are compared by `(in_flight + 1) / weight`, cross-multiplied in integers, and ties go
//! round robin so equal backends share the traffic. nginx's `least_conn` compares `in_flight / weight`;
//! the `+ 1` (the request being placed) keeps weights meaningful between idle backends, which slow
//! start needs: without it an idle backend at 1% of its weight would tie with an idle one at 100%.
//! The weight is [`super::effective_weight`], so a backend in slow start takes a growing share.

use super::{effective_weight, PickContext, Strategy, StrategyParams};
use crate::backend::Backend;

pub struct LeastConnections {
    /// Where the scan starts, moved by one per pick to rotate ties.
    offset: usize,
    params: StrategyParams,
}

impl LeastConnections {
    pub fn new(offset: usize, params: StrategyParams) -> LeastConnections {
        LeastConnections { offset, params }
    }
}

impl Strategy for LeastConnections {
    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        let n = candidates.len();
        let start = self.offset % n;
        self.offset = self.offset.wrapping_add(1);
        let load_weight = |c: usize| {
            let b = &backends[c];
            let load = u128::from(b.stats.in_flight()) + 1;
            (
                load,
                u128::from(effective_weight(b, &self.params, ctx.now_ms)),
            )
        };
        let mut best = candidates[start];
        let (mut best_load, mut best_weight) = load_weight(best);
        for i in 1..n {
            let c = candidates[(start + i) % n];
            let (load, weight) = load_weight(c);
            if load * best_weight < best_load * weight {
                best = c;
                best_load = load;
                best_weight = weight;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};
    use std::sync::atomic::Ordering;

    #[test]
    fn least_conn_prefers_the_idle_backend() {
        let b = backends(&[1, 1, 1]);
        b[0].stats.in_flight.store(3, Ordering::Relaxed);
        b[1].stats.in_flight.store(0, Ordering::Relaxed);
        b[2].stats.in_flight.store(2, Ordering::Relaxed);
        let mut lc = LeastConnections::new(0, StrategyParams::default());
        for _ in 0..5 {
            assert_eq!(lc.pick(&b, &[0, 1, 2], &ctx()), 1);
        }
    }

    #[test]
    fn least_conn_weighs_load_by_weight() {
        let b = backends(&[1, 4]);
        b[0].stats.in_flight.store(1, Ordering::Relaxed);
        b[1].stats.in_flight.store(3, Ordering::Relaxed);
        // (1+1)/1 against (3+1)/4: the heavier backend has less load per weight.
        assert_eq!(
            LeastConnections::new(0, StrategyParams::default()).pick(&b, &[0, 1], &ctx()),
            1
        );
    }

    #[test]
    fn least_conn_rotates_ties() {
        let b = backends(&[1, 1, 1]);
        let mut lc = LeastConnections::new(0, StrategyParams::default());
        let seq: Vec<usize> = (0..6).map(|_| lc.pick(&b, &[0, 1, 2], &ctx())).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_conn_gives_a_slow_starting_backend_a_growing_share() {
        let mut b = backends(&[1, 1]);
        b[1].since_ms = 1_000;
        let params = StrategyParams {
            slow_start_ms: 10_000,
            ..StrategyParams::default()
        };
        let mut lc = LeastConnections::new(0, params);
        b[0].stats.in_flight.store(4, Ordering::Relaxed);
        let at = |now_ms| PickContext { now_ms, ..ctx() };
        // At 10% of its weight, idle costs 1/0.1 = 10: more than the busy one's 5/1.
        assert_eq!(lc.pick(&b, &[0, 1], &at(2_000)), 0);
        // At 50%: 2 against 5.
        assert_eq!(lc.pick(&b, &[0, 1], &at(6_000)), 1);
    }
}
