//! Least connections, weighted: the candidate with the fewest requests in flight per unit of weight.
//!
//! In HTTP mode the load is requests in flight (a pooled idle connection is no load); in TCP mode it is
//! open tunnels. Both are counted across all workers in [`crate::backend::BackendStats::in_flight`].
//! Candidates are compared as `in_flight_a * weight_b < in_flight_b * weight_a`, as nginx's
//! `least_conn` does, and ties go round robin so equal backends share the traffic.

use super::{PickContext, Strategy};
use crate::backend::Backend;

pub struct LeastConnections {
    /// Where the scan starts, moved by one per pick to rotate ties.
    offset: usize,
}

impl LeastConnections {
    pub fn new(offset: usize) -> LeastConnections {
        LeastConnections { offset }
    }
}

impl Strategy for LeastConnections {
    fn pick(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        _ctx: &PickContext<'_>,
    ) -> usize {
        let n = candidates.len();
        let start = self.offset % n;
        self.offset = self.offset.wrapping_add(1);
        let mut best = candidates[start];
        let mut best_load = backends[best].stats.in_flight();
        let mut best_weight = u64::from(backends[best].weight.max(1));
        for i in 1..n {
            let c = candidates[(start + i) % n];
            let load = backends[c].stats.in_flight();
            let weight = u64::from(backends[c].weight.max(1));
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
        let mut lc = LeastConnections::new(0);
        for _ in 0..5 {
            assert_eq!(lc.pick(&b, &[0, 1, 2], &ctx()), 1);
        }
    }

    #[test]
    fn least_conn_weighs_load_by_weight() {
        let b = backends(&[1, 4]);
        b[0].stats.in_flight.store(1, Ordering::Relaxed);
        b[1].stats.in_flight.store(3, Ordering::Relaxed);
        // 1/1 against 3/4: the heavier backend has less load per weight.
        assert_eq!(LeastConnections::new(0).pick(&b, &[0, 1], &ctx()), 1);
    }

    #[test]
    fn least_conn_rotates_ties() {
        let b = backends(&[1, 1, 1]);
        let mut lc = LeastConnections::new(0);
        let seq: Vec<usize> = (0..6).map(|_| lc.pick(&b, &[0, 1, 2], &ctx())).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }
}
