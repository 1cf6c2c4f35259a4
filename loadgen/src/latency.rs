//! Latency recording: one HdrHistogram per thread (microseconds, 3 significant digits),
//! merged at the end, summarised as the percentiles every report prints.
//!
//! Histograms cross process boundaries (`hold --procs`) as `[value, count]` pairs of the
//! recorded buckets, which merge exactly.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded: one hour; larger values saturate.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram for latencies in microseconds.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Only invalid bounds make this fail (low < 1, high < 2 * low, or more than 5 significant
    // digits); these are constants, checked by the unit tests.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Adds `src` into `dst` (same bounds, so this cannot fail in practice).
pub fn merge(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    if dst.add(src).is_err() {
        for v in src.iter_recorded() {
            dst.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// The recorded buckets as `[value_us, count]` pairs.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<[u64; 2]> {
    h.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

/// Records `[value_us, count]` pairs into `h`.
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[[u64; 2]]) {
    for &[value, count] in pairs {
        h.saturating_record_n(value, count);
    }
}

/// Percentiles in microseconds; all zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Formats microseconds for people: `850us`, `12.3ms`, `1.52s`.
pub fn human_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_exactly() {
        let mut h = new_histogram();
        for v in [1u64, 5, 5, 1_000, 250_000, 3_000_000] {
            h.record(v).unwrap();
        }
        let mut back = new_histogram();
        add_pairs(&mut back, &to_pairs(&h));
        assert_eq!(LatencySummary::of(&h), LatencySummary::of(&back));
        assert_eq!(back.len(), 6);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        assert_eq!(LatencySummary::of(&new_histogram()).max, 0);
    }

    #[test]
    fn huge_values_saturate_instead_of_failing() {
        let mut h = new_histogram();
        h.saturating_record(u64::MAX);
        assert!(h.max() >= MAX_LATENCY_US);
    }
}
