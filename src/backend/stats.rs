//! The load measure: per-backend counters every worker updates and load-aware strategies read.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Per-backend counters every worker updates and reads. Cache-line aligned so two backends' counters
/// never share a line.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests sent and not yet answered (HTTP), or tunnels open (TCP), across all workers.
    pub in_flight: AtomicU64,
    /// Open connections to the backend, idle pooled ones included.
    pub conns: AtomicU64,
    /// Requests waiting in the workers' queues for a connection (`--backend-max-conns`).
    pub queued: AtomicU64,
    /// Peak-EWMA response time in microseconds, stored as `f64` bits (see [`BackendStats::latency_us`]).
    latency_ewma_bits: AtomicU64,
    /// When `latency_ewma_bits` was last updated, in ms of [`crate::clock`].
    latency_stamp_ms: AtomicU64,
    /// Set while the threshold strategy skips this backend as overloaded.
    pub overloaded: AtomicBool,
    /// Failed attempts in a row, across workers; passive ejection reads it.
    consecutive_failures: AtomicU32,
    /// Learned success probability and rate limit (the `bandit` strategy).
    pub learned: crate::backend::learn::Learned,
}

/// Decay time of the Peak-EWMA latency estimate (linkerd and tower use 10 s).
pub(crate) const LATENCY_DECAY_MS: f64 = 10_000.0;
/// Latency charged for a failed response, so a backend that fails fast does not look fast.
pub(crate) const FAILURE_PENALTY_US: f64 = 1_000_000.0;

impl BackendStats {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn conns(&self) -> u64 {
        self.conns.load(Ordering::Relaxed)
    }

    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Counts a failed attempt; returns the failures in a row so far.
    pub fn note_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a successful attempt. Reads before writing so the common case (no failures) does not
    /// write a line that other cores read.
    pub fn note_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    pub fn reset_failures(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// The Peak-EWMA response time in microseconds (0 before the first response).
    ///
    /// Peak-EWMA as in linkerd and tower's `PeakEwma`: a sample above the estimate replaces it at once
    /// (react to a slowdown immediately); a sample below it is averaged in with weight
    /// `1 - exp(-elapsed / decay)` (forget a slowdown gradually).
    pub fn latency_us(&self) -> f64 {
        f64::from_bits(self.latency_ewma_bits.load(Ordering::Relaxed))
    }

    /// The estimate as of `now_ms`, decayed toward zero for the time since the last response, as
    /// tower's `PeakEwma` does when it is read: a backend that got no traffic after a slow spell
    /// looks cheaper as time passes, so it is tried again.
    pub fn latency_us_at(&self, now_ms: u64) -> f64 {
        let estimate = self.latency_us();
        if estimate == 0.0 {
            return 0.0;
        }
        let idle_ms = now_ms.saturating_sub(self.latency_stamp_ms.load(Ordering::Relaxed)) as f64;
        estimate * (-idle_ms / LATENCY_DECAY_MS).exp()
    }

    /// Records one response: its latency, or [`FAILURE_PENALTY_US`] when it failed. Concurrent updates
    /// from two workers may lose one sample; the estimate stays a valid mix of recent samples.
    pub fn record_response(&self, latency_us: u64, ok: bool, now_ms: u64) {
        let sample = if ok {
            latency_us as f64
        } else {
            FAILURE_PENALTY_US.max(latency_us as f64)
        };
        let prev = self.latency_us();
        let last_ms = self.latency_stamp_ms.swap(now_ms, Ordering::Relaxed);
        let next = if prev == 0.0 || sample > prev {
            sample
        } else {
            let elapsed_ms = now_ms.saturating_sub(last_ms) as f64;
            let keep = (-elapsed_ms / LATENCY_DECAY_MS).exp();
            prev * keep + sample * (1.0 - keep)
        };
        self.latency_ewma_bits
            .store(next.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = BackendStats::default();
        s.record_response(1_000, true, 1);
        assert_eq!(s.latency_us(), 1_000.0);
        s.record_response(5_000, true, 2);
        assert_eq!(
            s.latency_us(),
            5_000.0,
            "a slower sample replaces the estimate"
        );
        s.record_response(1_000, true, 2 + LATENCY_DECAY_MS as u64);
        let after_one_decay = s.latency_us();
        let expected = 5_000.0 * (-1.0f64).exp() + 1_000.0 * (1.0 - (-1.0f64).exp());
        assert!(
            (after_one_decay - expected).abs() < 1e-6,
            "{after_one_decay} vs {expected}"
        );
        s.record_response(10, false, 3 + LATENCY_DECAY_MS as u64);
        assert_eq!(
            s.latency_us(),
            FAILURE_PENALTY_US,
            "a failure costs the penalty"
        );
    }
}
