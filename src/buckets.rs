//! Latency histograms that aggregate: fixed Prometheus buckets (`le` bounds from 100 µs to 60 s),
//! counted per worker in plain integers and summed by the control thread. Quantiles computed by
//! each instance (a summary) cannot be combined across instances; bucket counts can, since
//! `histogram_quantile` over the sum of several instances' buckets is the quantile of all their
//! requests. The HdrHistograms in [`crate::metrics`] stay for the API's and the dashboard's
//! quantiles; these are for `/metrics`.
//!
//! Recording costs a search over [`BOUNDS_US`] (about five comparisons) and an increment of a
//! counter the worker owns: no atomic, no lock.

/// Upper bounds of the buckets in microseconds, the `le` labels of `/metrics` (in seconds there):
/// a 1-2.5-5 progression from 100 µs to 10 s, then 30 s and 60 s for the slow tail; larger values
/// fall in `+Inf`.
pub(crate) const BOUNDS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Buckets, one more than bounds: the last is `+Inf`.
pub(crate) const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Counts of values per bucket (not cumulative), with their sum and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Buckets {
    counts: [u64; BUCKETS],
    sum_us: u64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            counts: [0; BUCKETS],
            sum_us: 0,
        }
    }
}

impl Buckets {
    /// Counts one value: in the first bucket whose bound is at least `value_us` (`le` means
    /// "less than or equal").
    #[inline]
    pub(crate) fn record(&mut self, value_us: u64) {
        let i = BOUNDS_US.partition_point(|&b| b < value_us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(value_us);
    }

    pub(crate) fn add(&mut self, other: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(crate) fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// `(le in seconds as Prometheus writes it, cumulative count)` for every bucket, `+Inf` last.
    pub(crate) fn cumulative(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let mut running = 0;
        self.counts.iter().enumerate().map(move |(i, n)| {
            running += n;
            let le = match BOUNDS_US.get(i) {
                Some(&us) => format!("{}", us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            (le, running)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_large_ones_in_inf() {
        let mut b = Buckets::default();
        b.record(100);
        b.record(101);
        b.record(0);
        b.record(61_000_000);
        let cum: Vec<(String, u64)> = b.cumulative().collect();
        assert_eq!(cum[0], ("0.0001".to_string(), 2));
        assert_eq!(cum[1], ("0.00025".to_string(), 3));
        assert_eq!(cum[BUCKETS - 2], ("60".to_string(), 3));
        assert_eq!(cum[BUCKETS - 1], ("+Inf".to_string(), 4));
        assert_eq!(b.count(), 4);
        assert_eq!(b.sum_us(), 61_000_201);
    }

    #[test]
    fn adding_sums_counts_bucket_by_bucket() {
        let (mut a, mut b) = (Buckets::default(), Buckets::default());
        a.record(1_000);
        b.record(1_000);
        b.record(2_000_000);
        a.add(&b);
        assert_eq!(a.count(), 3);
        let cum: Vec<u64> = a.cumulative().map(|(_, n)| n).collect();
        assert_eq!(cum[3], 2, "le=0.001");
        assert_eq!(cum[13], 3, "le=2.5");
    }
}
