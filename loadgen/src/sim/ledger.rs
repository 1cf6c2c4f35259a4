//! The simulator's ledger for the flaky-servers challenge: for every id that reached a server,
//! how many attempts it took and whether one of them was accepted.
//!
//! An *attempt* is a well-formed `POST /` (a 24-character alphanumeric body) that reached a
//! server, whatever the answer (200, 5xx, 429, or 503 while down). Requests answered 400 are not
//! attempts. The challenge's score is
//!
//! `score = ids accepted − Σ over ids of max(0, attempts − 3)`
//!
//! (the second term is `penalty_attempts`). Totals are kept incrementally, so reading the score
//! is O(1) however many ids there are.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Attempts an id may take before each further one costs a point.
pub const FREE_ATTEMPTS: u32 = 3;

/// One id's line in the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub attempts: u32,
    pub accepted: bool,
}

/// Ledger totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub ids: u64,
    pub accepted: u64,
    pub attempts: u64,
    pub penalty_attempts: u64,
    pub score: i64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<Id, Entry>,
    accepted: u64,
    attempts: u64,
    penalty_attempts: u64,
    first_id_at: Option<Instant>,
    last_id_at: Option<Instant>,
}

impl Ledger {
    /// Records one attempt for `id`, accepted or not.
    pub fn record(&mut self, id: Id, accepted: bool, now: Instant) {
        let entry = self.entries.entry(id).or_default();
        if entry.attempts == 0 {
            self.first_id_at.get_or_insert(now);
            self.last_id_at = Some(now);
        }
        entry.attempts += 1;
        self.attempts += 1;
        if entry.attempts > FREE_ATTEMPTS {
            self.penalty_attempts += 1;
        }
        if accepted && !entry.accepted {
            entry.accepted = true;
            self.accepted += 1;
        }
    }

    pub fn get(&self, id: &Id) -> Option<Entry> {
        self.entries.get(id).copied()
    }

    pub fn totals(&self) -> Totals {
        Totals {
            ids: self.entries.len() as u64,
            accepted: self.accepted,
            attempts: self.attempts,
            penalty_attempts: self.penalty_attempts,
            score: self.accepted as i64 - self.penalty_attempts as i64,
        }
    }

    /// When the first and the latest new id arrived, if any did.
    pub fn id_span(&self) -> Option<(Instant, Instant)> {
        self.first_id_at.zip(self.last_id_at)
    }

    /// New ids per second between the first and the latest new id; `None` with fewer than two
    /// ids or no time between them.
    pub fn ids_per_s(&self) -> Option<f64> {
        let (first, last) = self.id_span()?;
        let span_s = last.saturating_duration_since(first).as_secs_f64();
        let ids = self.entries.len();
        (ids >= 2 && span_s > 0.0).then(|| (ids - 1) as f64 / span_s)
    }

    pub fn clear(&mut self) {
        *self = Ledger::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u8) -> Id {
        [b'a' + n; 24]
    }

    #[test]
    fn score_is_accepted_ids_minus_attempts_beyond_the_third() {
        let t = Instant::now();
        let mut l = Ledger::default();
        // id 0: accepted on the first attempt.
        l.record(id(0), true, t);
        // id 1: four failures then a success: two attempts beyond the third.
        for _ in 0..4 {
            l.record(id(1), false, t);
        }
        l.record(id(1), true, t);
        // id 2: three failures, no penalty, not accepted.
        for _ in 0..3 {
            l.record(id(2), false, t);
        }
        let totals = l.totals();
        assert_eq!(
            totals,
            Totals {
                ids: 3,
                accepted: 2,
                attempts: 9,
                penalty_attempts: 2,
                score: 0,
            }
        );
        assert_eq!(
            l.get(&id(1)),
            Some(Entry {
                attempts: 5,
                accepted: true
            })
        );
        assert_eq!(l.get(&id(9)), None);
    }

    #[test]
    fn a_second_acceptance_of_the_same_id_counts_once() {
        let t = Instant::now();
        let mut l = Ledger::default();
        l.record(id(0), true, t);
        l.record(id(0), true, t);
        assert_eq!(l.totals().accepted, 1);
        assert_eq!(l.totals().attempts, 2);
    }

    #[test]
    fn id_rate_is_measured_between_first_and_last_new_id() {
        let t = Instant::now();
        let mut l = Ledger::default();
        assert_eq!(l.ids_per_s(), None);
        for n in 0..11u8 {
            l.record(id(n), false, t + Duration::from_millis(100 * u64::from(n)));
            // Retries of old ids don't move the span.
            l.record(id(0), false, t + Duration::from_secs(30));
        }
        let rate = l.ids_per_s().unwrap();
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn clear_forgets_everything() {
        let mut l = Ledger::default();
        l.record(id(0), true, Instant::now());
        l.clear();
        assert_eq!(l.totals(), Totals::default());
        assert_eq!(l.id_span(), None);
    }
}
