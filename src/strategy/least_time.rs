//! Least time: the candidate expected to answer soonest, by Peak-EWMA latency times pending work.
//!
//! Least connections treats a slow backend and a fast one alike while both have N requests open. Least
//! time weighs that load by how long the backend has been taking: the cost of a candidate is
//! `latency_us * (in_flight + 1) / weight`, as in linkerd's and tower's `PeakEwma` load
//! (`tower::load::peak_ewma`, after Finagle's): the Peak-EWMA estimate
//! ([`crate::backend::BackendStats::latency_us`]) jumps up to a slow sample at once and decays back
//! slowly, so a backend that hiccups is avoided at once; a failed response is recorded as a penalty
//! latency, so one that fails fast does not attract traffic. The weight is
//! [`super::effective_weight`]; ties rotate.
//!
//! A backend with no sample yet costs as much as the slowest known candidate it is compared with:
//! cheap enough to be tried as soon as the others are loaded, not so cheap that it takes every request
//! until its first answer (tower's reason for a conservative default of 1 s; against millisecond
//! backends, 1 s would keep a new backend idle until hundreds of requests are in flight elsewhere).
//! When no candidate has a sample, [`DEFAULT_LATENCY_US`] applies to all, and the cost reduces to
//! weighted least connections.

use super::{effective_weight, Feedback, PickContext, Strategy, StrategyParams};
use crate::backend::Backend;

/// Latency assumed when no compared candidate has answered yet.
pub const DEFAULT_LATENCY_US: f64 = 1_000.0;

/// The cost of sending one more request to `b`: lower is better. `unknown_latency_us` stands in for
/// a backend without a latency sample.
pub(crate) fn cost(
    b: &Backend,
    params: &StrategyParams,
    now_ms: u64,
    unknown_latency_us: f64,
) -> f64 {
    let latency_us = known_latency_us(b, now_ms).unwrap_or(unknown_latency_us);
    let pending = b.stats.in_flight() as f64 + 1.0;
    latency_us * pending / effective_weight(b, params, now_ms) as f64
}

/// The Peak-EWMA latency, or `None` before the first response.
pub(crate) fn known_latency_us(b: &Backend, now_ms: u64) -> Option<f64> {
    let latency_us = b.stats.latency_us_at(now_ms);
    (latency_us > 0.0).then_some(latency_us)
}

pub struct LeastTime {
    /// Where the scan starts, moved by one per pick to rotate ties.
    offset: usize,
    params: StrategyParams,
}

impl LeastTime {
    pub fn new(offset: usize, params: StrategyParams) -> LeastTime {
        LeastTime { offset, params }
    }
}

impl Strategy for LeastTime {
    fn feedback(&self) -> Feedback {
        Feedback {
            latency: true,
            ..Feedback::default()
        }
    }

    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        let n = candidates.len();
        let start = self.offset % n;
        self.offset = self.offset.wrapping_add(1);
        let unknown_latency_us = candidates
            .iter()
            .filter_map(|&c| known_latency_us(&backends[c], ctx.now_ms))
            .fold(None, |max: Option<f64>, l| {
                Some(max.map_or(l, |m| m.max(l)))
            })
            .unwrap_or(DEFAULT_LATENCY_US);
        let mut best = candidates[start];
        let mut best_cost = cost(
            &backends[best],
            &self.params,
            ctx.now_ms,
            unknown_latency_us,
        );
        for i in 1..n {
            let c = candidates[(start + i) % n];
            let cost = cost(&backends[c], &self.params, ctx.now_ms, unknown_latency_us);
            if cost < best_cost {
                best = c;
                best_cost = cost;
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

    fn least_time() -> LeastTime {
        LeastTime::new(0, StrategyParams::default())
    }

    #[test]
    fn least_time_prefers_the_faster_backend() {
        let b = backends(&[1, 1, 1]);
        b[0].stats.record_response(9_000, true, 1);
        b[1].stats.record_response(2_000, true, 1);
        b[2].stats.record_response(5_000, true, 1);
        let mut lt = least_time();
        for _ in 0..5 {
            assert_eq!(lt.pick(&b, &[0, 1, 2], &ctx()), 1);
        }
    }

    #[test]
    fn least_time_follows_load() {
        let b = backends(&[1, 1]);
        b[0].stats.record_response(1_000, true, 1);
        b[1].stats.record_response(3_000, true, 1);
        // 1 ms x (2 + 1) = 3 ms against 3 ms x 1: a tie, then the fast one's queue makes it dearer.
        b[0].stats.in_flight.store(2, Ordering::Relaxed);
        let picks: Vec<usize> = (0..2)
            .map(|_| least_time().pick(&b, &[0, 1], &ctx()))
            .collect();
        assert_eq!(picks, vec![0, 0]);
        b[0].stats.in_flight.store(3, Ordering::Relaxed);
        assert_eq!(least_time().pick(&b, &[0, 1], &ctx()), 1);
    }

    #[test]
    fn least_time_avoids_a_backend_that_fails_fast() {
        let b = backends(&[1, 1]);
        b[0].stats.record_response(50, false, 1);
        b[1].stats.record_response(20_000, true, 1);
        b[1].stats.in_flight.store(10, Ordering::Relaxed);
        assert_eq!(least_time().pick(&b, &[0, 1], &ctx()), 1);
    }

    #[test]
    fn least_time_weighs_cost_by_weight() {
        let b = backends(&[1, 4]);
        b[0].stats.record_response(1_000, true, 1);
        b[1].stats.record_response(3_000, true, 1);
        // 1 ms x 1 / 1 against 3 ms x 1 / 4.
        assert_eq!(least_time().pick(&b, &[0, 1], &ctx()), 1);
    }

    #[test]
    fn least_time_prices_a_new_backend_like_the_slowest_known() {
        let b = backends(&[1, 1, 1]);
        b[0].stats.record_response(1_000, true, 1);
        b[1].stats.record_response(4_000, true, 1);
        // New backend 2 costs 4 ms x 1: it loses to the idle fast one...
        assert_eq!(least_time().pick(&b, &[0, 1, 2], &ctx()), 0);
        // ...and wins once the fast one has 4 in flight (5 ms) and the slow one 1 (8 ms).
        b[0].stats.in_flight.store(4, Ordering::Relaxed);
        b[1].stats.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(least_time().pick(&b, &[0, 1, 2], &ctx()), 2);
    }

    #[test]
    fn least_time_without_samples_is_least_connections() {
        let b = backends(&[1, 1, 1]);
        b[0].stats.in_flight.store(2, Ordering::Relaxed);
        b[2].stats.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(least_time().pick(&b, &[0, 1, 2], &ctx()), 1);
        let mut lt = least_time();
        let idle = backends(&[1, 1, 1]);
        let seq: Vec<usize> = (0..3).map(|_| lt.pick(&idle, &[0, 1, 2], &ctx())).collect();
        assert_eq!(seq, vec![0, 1, 2], "ties rotate");
    }
}
