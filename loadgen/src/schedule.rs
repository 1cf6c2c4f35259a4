//! The fixed-rate send schedule of the open-loop generator.
//!
//! Request `n` is due at `start + n / rate`, whatever happened to the requests before it. The
//! generator sends due requests as connections free up and measures latency from the due time,
//! so a stall in the system under test shows in the tail instead of silently slowing the
//! generator down ("coordinated omission"; the approach of Gil Tene's wrk2,
//! <https://github.com/giltene/wrk2>).

use std::time::{Duration, Instant};

/// Send times at a fixed rate, from `start` (inclusive) to `end` (exclusive).
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    end: Instant,
    rate_rps: f64,
    /// Number of requests whose due time has been reached so far.
    due: u64,
}

impl Schedule {
    /// `rate_rps` must be positive.
    pub fn new(start: Instant, end: Instant, rate_rps: f64) -> Self {
        Schedule {
            start,
            end,
            rate_rps,
            due: 0,
        }
    }

    /// Due time of request `n` (0-based).
    pub fn time_of(&self, n: u64) -> Instant {
        // Rounded to the nanosecond so whole-millisecond schedules land exactly.
        let offset_ns = (n as f64 * 1e9 / self.rate_rps).round() as u64;
        self.start + Duration::from_nanos(offset_ns)
    }

    /// Marks every request due at or before `now` (and before the end) as due; returns the total
    /// number due so far.
    pub fn advance(&mut self, now: Instant) -> u64 {
        loop {
            let next = self.time_of(self.due);
            if next > now || next >= self.end {
                return self.due;
            }
            self.due += 1;
        }
    }

    /// Requests due so far.
    pub fn due(&self) -> u64 {
        self.due
    }

    /// When the next request falls due, or `None` once the schedule has ended.
    pub fn next_due_at(&self) -> Option<Instant> {
        let next = self.time_of(self.due);
        (next < self.end).then_some(next)
    }

    /// Number of requests the whole schedule contains.
    pub fn total(&self) -> u64 {
        self.index_at(self.end)
    }

    /// The first request due at or after `t` (the count of requests due before `t`).
    pub fn index_at(&self, t: Instant) -> u64 {
        let span = t.saturating_duration_since(self.start).as_secs_f64();
        let mut n = (span * self.rate_rps).floor() as u64;
        // Float rounding can put one boundary request on either side; ask time_of.
        while n > 0 && self.time_of(n - 1) >= t {
            n -= 1;
        }
        while self.time_of(n) < t {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn send_times_are_evenly_spaced_from_start() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, t0 + ms(1000), 1000.0);
        for n in [0u64, 1, 10, 999] {
            assert_eq!(s.time_of(n), t0 + ms(n));
        }
    }

    #[test]
    fn advance_marks_exactly_the_requests_due_by_now() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, t0 + ms(1000), 1000.0);
        assert_eq!(s.advance(t0), 1, "request 0 is due at start");
        assert_eq!(s.advance(t0 + Duration::from_micros(10_500)), 11);
        assert_eq!(s.next_due_at(), Some(t0 + ms(11)));
        // Going back in time changes nothing.
        assert_eq!(s.advance(t0 + ms(3)), 11);
    }

    #[test]
    fn a_late_caller_catches_up_on_every_missed_request() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, t0 + ms(10_000), 100.0);
        assert_eq!(s.advance(t0 + ms(2_000)), 201);
    }

    #[test]
    fn nothing_is_due_at_or_after_the_end() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, t0 + ms(100), 100.0);
        assert_eq!(s.advance(t0 + ms(5_000)), 10);
        assert_eq!(s.next_due_at(), None);
        assert_eq!(s.total(), 10);
    }

    #[test]
    fn index_at_counts_the_requests_due_before_an_instant() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, t0 + ms(10_000), 100.0);
        assert_eq!(s.index_at(t0), 0);
        assert_eq!(
            s.index_at(t0 + ms(10)),
            1,
            "request 1 is due exactly at 10 ms"
        );
        assert_eq!(s.index_at(t0 + ms(11)), 2);
        assert_eq!(s.index_at(t0 + ms(1_000)), 100);
    }

    #[test]
    fn fractional_rates_keep_their_average() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, t0 + ms(10_000), 3.3);
        assert_eq!(s.total(), 33);
        assert_eq!(s.advance(t0 + ms(20_000)), 33);
    }
}
