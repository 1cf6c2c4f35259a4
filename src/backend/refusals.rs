//! When to leave a backend alone for a while, beyond its learned rate limit: when its 429s come in
//! bursts, and when it cannot be reached.
//!
//! One 429 is capacity information: the limit is lower than what was sent, and the pacing in
//! [`crate::backend::learn`] learns it. Two in a row (no other answer between them, less than
//! [`BURST_GAP_MS`] apart, or than that and the backoff the run called for) say more: the limit fell far below what was learned, or the backend
//! refuses everything for a while. Real rate limiters punish exactly that — several over-limit
//! requests in a row, or a few within a second, put the client in a penalty box — so sluice stops
//! before a third: it backs off for [`BURST_BACKOFF_MS`], doubled for each further 429 in the same
//! run (up to [`MAX_BACKOFF_MS`]); any other answer ends the run. It is the exponential backoff
//! of RFC 6298 section 5.5 applied to refusals, as AWS's "Exponential backoff and jitter" advises
//! for throttled clients.
//!
//! A backend that closes the connection without answering, or cannot be connected to, is most
//! likely down for a moment: it is left alone for [`UNREACHABLE_BACKOFF_MS`], doubled while it
//! stays so (up to [`MAX_BACKOFF_MS`]), instead of spending more attempts on it.
//!
//! Each run lives in one atomic word updated with compare-and-swap, as the rest of what is learned.

use std::sync::atomic::{AtomicU64, Ordering};

/// Two 429s closer than this, with no other answer between them, are a burst.
pub const BURST_GAP_MS: u64 = 1_000;
/// Backoff after the second 429 of a burst: long enough to keep a third out of the same moment,
/// short enough not to idle a backend whose limit only fell by one or two. (1,050 ms before, a
/// sliding window drained: the replay of the challenge at 30 ids/s accepted 0.95 / 0.96 of the
/// oracle in configurations 3 and 4 with it, 0.96 / 0.97 with 300 ms, the same at 10 ids/s; the
/// penalty boxes it keeps out cost less than the capacity it idled.)
pub const BURST_BACKOFF_MS: u64 = 300;
/// Backoff after the first answer-less failure in a row.
pub const UNREACHABLE_BACKOFF_MS: u64 = 500;
/// The longest backoff. Short: when ids come faster than the limits take them, every backend's
/// refusals come in bursts, and backoffs of 8 s left no backend to send to (the replay at 30 ids/s
/// gave 0.76 of the oracle in configuration 2 with 8 s, 0.84 with 2 s, and no less at 10 ids/s).
pub const MAX_BACKOFF_MS: u64 = 2_000;

/// A run of refusals or of failures without an answer: its length (high 16 bits) and the time of
/// its latest one (low 32 bits of the ms clock).
fn pack(run: u64, at_ms: u64) -> u64 {
    (run.min(0xffff) << 32) | (at_ms & 0xffff_ffff)
}

fn unpack(v: u64) -> (u64, u32) {
    (v >> 32, v as u32)
}

/// Runs of refusals and of unreachability for one backend.
#[derive(Debug, Default)]
pub struct Refusals {
    refused: AtomicU64,
    unreachable: AtomicU64,
}

/// How long a run of `run` (≥ 1) calls for, starting from `first_ms` at its `from`-th element.
fn backoff_ms(run: u64, from: u64, first_ms: u64) -> u64 {
    if run < from {
        return 0;
    }
    let doublings = (run - from).min(16) as u32;
    first_ms.saturating_mul(1 << doublings).min(MAX_BACKOFF_MS)
}

impl Refusals {
    /// A 429 at `now_ms`: returns how long to leave the backend alone (0 for a single one).
    pub fn refused(&self, now_ms: u64) -> u64 {
        let mut run = 0;
        let _ = self
            .refused
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                let (n, at) = unpack(v);
                let gap = u64::from((now_ms as u32).wrapping_sub(at));
                // A run goes on across the backoff it called for.
                let within = BURST_GAP_MS + backoff_ms(n, 2, BURST_BACKOFF_MS);
                run = if n > 0 && gap < within { n + 1 } else { 1 };
                Some(pack(run, now_ms))
            });
        backoff_ms(run, 2, BURST_BACKOFF_MS)
    }

    /// No answer at `now_ms` (connect failed, or the connection closed before a response): returns
    /// how long to leave the backend alone.
    pub fn unreachable(&self, now_ms: u64) -> u64 {
        let mut run = 0;
        let _ = self
            .unreachable
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                run = unpack(v).0 + 1;
                Some(pack(run, now_ms))
            });
        backoff_ms(run, 1, UNREACHABLE_BACKOFF_MS)
    }

    /// An answer that was not a 429: both runs end.
    pub fn answered(&self) {
        if self.refused.load(Ordering::Relaxed) != 0 {
            self.refused.store(0, Ordering::Relaxed);
        }
        if self.unreachable.load(Ordering::Relaxed) != 0 {
            self.unreachable.store(0, Ordering::Relaxed);
        }
    }

    /// The current run of 429s (0 when the last answer was something else).
    pub fn refused_in_a_row(&self) -> u64 {
        unpack(self.refused.load(Ordering::Relaxed)).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_429_is_information_two_in_a_row_are_a_burst() {
        let r = Refusals::default();
        assert_eq!(r.refused(1_000), 0);
        assert_eq!(r.refused(1_400), BURST_BACKOFF_MS);
        assert_eq!(
            r.refused(2_500),
            (2 * BURST_BACKOFF_MS).min(MAX_BACKOFF_MS),
            "still no other answer: doubled, up to the cap"
        );
        r.answered();
        assert_eq!(r.refused(2_600), 0);
        // Far apart, two 429s are not a burst.
        assert_eq!(r.refused(2_600 + BURST_GAP_MS), 0);
        assert_eq!(r.refused(2_700 + 2 * BURST_GAP_MS), 0);
    }

    #[test]
    fn an_unreachable_backend_is_left_alone_longer_each_time() {
        let r = Refusals::default();
        let waits: Vec<u64> = (0..6).map(|i| r.unreachable(i * 100)).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 2_000, 2_000, 2_000]);
        r.answered();
        assert_eq!(r.unreachable(1_000), UNREACHABLE_BACKOFF_MS);
    }
}
