//! Threshold: round robin that skips overloaded backends, with hysteresis.
//!
//! With variable service times, plain round robin keeps feeding a backend that is backed up by a few
//! slow requests while others idle. Brief 002's remedy, run per pick instead of by a periodic script:
//! a backend with more than `threshold_high` requests in flight is skipped until it drops below
//! `threshold_low`, so it drains; never so many are skipped that fewer than `min_enabled` candidates
//! remain (then the least loaded of the overloaded ones stay in the rotation).
//!
//! The hysteresis state is [`crate::backend::BackendStats::overloaded`], shared by all workers, and
//! flipped with `compare_exchange`: whichever worker observes a crossing first flips it, logs it at
//! `info` with the backend's address and load, and counts it in [`THRESHOLD_FLIPS`]; the others see it
//! already flipped. Load is read at pick time, so flips happen only while requests arrive. A
//! `threshold_low` above `threshold_high` is treated as equal to it (no hysteresis, no flapping loop).

use std::sync::atomic::{AtomicU64, Ordering};

use log::info;

use super::{PickContext, Strategy, StrategyParams};
use crate::backend::Backend;

/// How many times backends were skipped and returned, across all workers.
#[derive(Debug, Default)]
pub struct ThresholdFlips {
    /// A backend went over `threshold_high` and is now skipped.
    pub skips: AtomicU64,
    /// A skipped backend went under `threshold_low` and is back in the rotation.
    pub returns: AtomicU64,
}

impl ThresholdFlips {
    pub const fn new() -> ThresholdFlips {
        ThresholdFlips {
            skips: AtomicU64::new(0),
            returns: AtomicU64::new(0),
        }
    }
}

/// The process's threshold counters, for metrics.
pub static THRESHOLD_FLIPS: ThresholdFlips = ThresholdFlips::new();

pub struct Threshold {
    next: usize,
    params: StrategyParams,
    flips: &'static ThresholdFlips,
    /// Per pick, by candidate position: (requests in flight, overloaded). Kept to avoid allocating.
    seen: Vec<(u64, bool)>,
    /// Per pick: loads of the overloaded candidates, to find the least loaded.
    overloaded_loads: Vec<u64>,
}

impl Threshold {
    pub fn new(offset: usize, params: StrategyParams, backends_len: usize) -> Threshold {
        Threshold::with_counters(offset, params, backends_len, &THRESHOLD_FLIPS)
    }

    /// As [`Threshold::new`], counting into `flips` (tests count separately).
    pub fn with_counters(
        offset: usize,
        params: StrategyParams,
        backends_len: usize,
        flips: &'static ThresholdFlips,
    ) -> Threshold {
        Threshold {
            next: offset,
            params,
            flips,
            seen: Vec::with_capacity(backends_len),
            overloaded_loads: Vec::with_capacity(backends_len),
        }
    }

    /// Updates `b`'s overloaded flag for `load` and returns it.
    fn overloaded(&self, b: &Backend, load: u64) -> bool {
        let high = self.params.threshold_high;
        let low = self.params.threshold_low.min(high);
        let flag = &b.stats.overloaded;
        let was = flag.load(Ordering::Relaxed);
        if !was && load > high {
            if flag
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.flips.skips.fetch_add(1, Ordering::Relaxed);
                info!(
                    "threshold: skipping {}: {load} requests in flight, over {high}",
                    b.addr
                );
            }
            return true;
        }
        if was && load < low {
            if flag
                .compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.flips.returns.fetch_add(1, Ordering::Relaxed);
                info!(
                    "threshold: {} is back: {load} requests in flight, under {low}",
                    b.addr
                );
            }
            return false;
        }
        was
    }
}

impl Strategy for Threshold {
    fn pick(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        _ctx: &PickContext<'_>,
    ) -> usize {
        let n = candidates.len();
        self.seen.clear();
        let mut usable = 0;
        for &c in candidates {
            let load = backends[c].stats.in_flight();
            let over = self.overloaded(&backends[c], load);
            usable += usize::from(!over);
            self.seen.push((load, over));
        }
        // At least one: a pick must return a backend even with min_enabled = 0.
        let keep = self.params.min_enabled.max(1).min(n);
        // The load at or under which an overloaded candidate still takes requests.
        let mut cutoff = None;
        if usable < keep {
            self.overloaded_loads.clear();
            self.overloaded_loads
                .extend(self.seen.iter().filter(|s| s.1).map(|s| s.0));
            let (_, kth, _) = self.overloaded_loads.select_nth_unstable(keep - usable - 1);
            cutoff = Some(*kth);
        }
        let start = self.next % n;
        for i in 0..n {
            let pos = (start + i) % n;
            let (load, over) = self.seen[pos];
            if !over || cutoff.is_some_and(|max| load <= max) {
                self.next = pos.wrapping_add(1);
                return candidates[pos];
            }
        }
        // Not reached: `keep >= 1` candidates pass the test above.
        candidates[start]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};

    fn params(high: u64, low: u64, min_enabled: usize) -> StrategyParams {
        StrategyParams {
            threshold_high: high,
            threshold_low: low,
            min_enabled,
            ..StrategyParams::default()
        }
    }

    fn set_load(b: &[Backend], loads: &[u64]) {
        for (b, &l) in b.iter().zip(loads) {
            b.stats.in_flight.store(l, Ordering::Relaxed);
        }
    }

    fn picks(t: &mut Threshold, b: &[Backend], n: usize) -> Vec<usize> {
        let all: Vec<usize> = (0..b.len()).collect();
        (0..n).map(|_| t.pick(b, &all, &ctx())).collect()
    }

    #[test]
    fn threshold_is_round_robin_below_the_threshold() {
        static FLIPS: ThresholdFlips = ThresholdFlips::new();
        let b = backends(&[1, 1, 1]);
        let mut t = Threshold::with_counters(0, params(10, 5, 1), 3, &FLIPS);
        assert_eq!(picks(&mut t, &b, 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn threshold_skips_between_low_and_high_and_returns_below_low() {
        static FLIPS: ThresholdFlips = ThresholdFlips::new();
        let b = backends(&[1, 1, 1]);
        let mut t = Threshold::with_counters(0, params(10, 5, 1), 3, &FLIPS);
        set_load(&b, &[11, 0, 0]);
        assert_eq!(picks(&mut t, &b, 4), vec![1, 2, 1, 2]);
        // Back between the thresholds: still skipped (hysteresis).
        set_load(&b, &[7, 0, 0]);
        assert_eq!(picks(&mut t, &b, 4), vec![1, 2, 1, 2]);
        // Under low: back in the rotation.
        set_load(&b, &[4, 0, 0]);
        assert_eq!(picks(&mut t, &b, 3), vec![0, 1, 2]);
        // Between the thresholds again, now from below: not skipped.
        set_load(&b, &[7, 0, 0]);
        assert_eq!(picks(&mut t, &b, 3), vec![0, 1, 2]);
        assert_eq!(FLIPS.skips.load(Ordering::Relaxed), 1);
        assert_eq!(FLIPS.returns.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn threshold_never_leaves_fewer_than_min_enabled() {
        static FLIPS: ThresholdFlips = ThresholdFlips::new();
        let b = backends(&[1, 1, 1, 1]);
        let mut t = Threshold::with_counters(0, params(10, 5, 2), 4, &FLIPS);
        // Three overloaded: the one fine backend and the least loaded overloaded one stay.
        set_load(&b, &[30, 12, 0, 20]);
        assert_eq!(picks(&mut t, &b, 4), vec![1, 2, 1, 2]);
        // All overloaded: the two least loaded.
        set_load(&b, &[30, 12, 15, 20]);
        assert_eq!(picks(&mut t, &b, 4), vec![1, 2, 1, 2]);
        assert_eq!(FLIPS.skips.load(Ordering::Relaxed), 4);
        // min_enabled above the number of candidates: all of them.
        let mut all = Threshold::with_counters(0, params(10, 5, 9), 4, &FLIPS);
        assert_eq!(picks(&mut all, &b, 4), vec![0, 1, 2, 3]);
        // min_enabled 0 still picks: the least loaded.
        let mut zero = Threshold::with_counters(0, params(10, 5, 0), 4, &FLIPS);
        assert_eq!(picks(&mut zero, &b, 2), vec![1, 1]);
    }

    #[test]
    fn threshold_flips_once_however_many_workers_see_it() {
        static FLIPS: ThresholdFlips = ThresholdFlips::new();
        let b = backends(&[1, 1]);
        set_load(&b, &[50, 0]);
        std::thread::scope(|s| {
            for worker in 0..8 {
                let b = &b;
                s.spawn(move || {
                    let mut t = Threshold::with_counters(worker, params(10, 5, 1), 2, &FLIPS);
                    for _ in 0..100 {
                        assert_eq!(t.pick(b, &[0, 1], &ctx()), 1);
                    }
                });
            }
        });
        assert_eq!(FLIPS.skips.load(Ordering::Relaxed), 1);
        assert!(b[0].stats.overloaded.load(Ordering::Relaxed));
        set_load(&b, &[0, 0]);
        let mut t = Threshold::with_counters(0, params(10, 5, 1), 2, &FLIPS);
        let mut u = Threshold::with_counters(1, params(10, 5, 1), 2, &FLIPS);
        t.pick(&b, &[0, 1], &ctx());
        u.pick(&b, &[0, 1], &ctx());
        assert_eq!(FLIPS.returns.load(Ordering::Relaxed), 1);
    }
}
