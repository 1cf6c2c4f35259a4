//! What sluice learns about each backend from its answers, shared by all workers: how likely an
//! attempt is to succeed, and how fast the backend may be sent requests before it answers 429.
//!
//! - **Success probability**: a Beta(α, β) posterior over "an attempt succeeds", starting from the
//!   uniform Beta(1, 1), with both counts decaying with half-life [`SUCCESS_HALF_LIFE_MS`] so that a
//!   backend that changes is re-learned (a discounted Thompson-sampling bandit; Raj and Kalyani,
//!   "Taming non-stationary bandits", 2017).
//! - **Rate limit**: additive increase, multiplicative decrease of an allowed rate (as TCP congestion
//!   control): each answer that is not a 429 adds [`RATE_INCREASE`] requests/s, each 429 multiplies
//!   the rate by [`RATE_DECREASE`] and, with `Retry-After`, blocks the backend until then. Attempts are
//!   paced by a token bucket that refills at the learned rate and holds at most one second of it, the
//!   same shape as a one-second sliding-window limit. Limits that move (brief 000's configuration 3)
//!   are followed the same way.
//!
//! Each quantity is packed into one atomic word and updated with compare-and-swap, so workers never
//! wait for each other; a lost race retries the update.

use std::sync::atomic::{AtomicU64, Ordering};

pub const SUCCESS_HALF_LIFE_MS: f64 = 60_000.0;
/// Starting rate, requests per second: generous, so that an unlimited backend is never held back.
pub const INITIAL_RATE: f64 = 50.0;
pub const MIN_RATE: f64 = 0.2;
pub const MAX_RATE: f64 = 100_000.0;
pub const RATE_INCREASE: f64 = 0.1;
pub const RATE_DECREASE: f64 = 0.6;
/// A bucket never holds less than this many tokens' room, so a slow backend can still be tried.
pub const MIN_BURST: f64 = 1.0;

fn pack2(a: f32, b: f32) -> u64 {
    (u64::from(a.to_bits()) << 32) | u64::from(b.to_bits())
}

fn unpack2(v: u64) -> (f32, f32) {
    (f32::from_bits((v >> 32) as u32), f32::from_bits(v as u32))
}

/// A token bucket word: tokens as f32, last refill as the low 32 bits of the ms clock (wrapping).
fn pack_bucket(tokens: f32, stamp_ms: u32) -> u64 {
    (u64::from(tokens.to_bits()) << 32) | u64::from(stamp_ms)
}

fn unpack_bucket(v: u64) -> (f32, u32) {
    (f32::from_bits((v >> 32) as u32), v as u32)
}

/// Updates an atomic word with `f` until no other thread got in between.
fn update(cell: &AtomicU64, mut f: impl FnMut(u64) -> u64) -> u64 {
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let next = f(cur);
        match cell.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => cur = actual,
        }
    }
}

/// The shared learned state of one backend.
#[derive(Debug)]
pub struct Learned {
    /// (α, β) as two f32, excluding the Beta(1, 1) prior.
    counts: AtomicU64,
    counts_stamp_ms: AtomicU64,
    /// Allowed rate, f64 bits.
    rate: AtomicU64,
    /// Tokens and last refill ([`pack_bucket`]).
    bucket: AtomicU64,
    /// No attempts before this time (ms), from a 429's Retry-After.
    blocked_until_ms: AtomicU64,
}

impl Default for Learned {
    fn default() -> Self {
        Learned {
            counts: AtomicU64::new(pack2(0.0, 0.0)),
            counts_stamp_ms: AtomicU64::new(0),
            rate: AtomicU64::new(INITIAL_RATE.to_bits()),
            bucket: AtomicU64::new(pack_bucket(INITIAL_RATE as f32, 0)),
            blocked_until_ms: AtomicU64::new(0),
        }
    }
}

impl Learned {
    fn decay(&self, now_ms: u64) -> f32 {
        let last = self.counts_stamp_ms.swap(now_ms, Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(last) as f64;
        (0.5f64).powf(elapsed / SUCCESS_HALF_LIFE_MS) as f32
    }

    /// Records whether an attempt succeeded (a 2xx) or failed (5xx, no answer). 429s go to
    /// [`Learned::rate_limited`] instead: they say nothing about success once under the limit.
    pub fn observe(&self, success: bool, now_ms: u64) {
        let keep = self.decay(now_ms);
        update(&self.counts, |v| {
            let (a, b) = unpack2(v);
            let (a, b) = (a * keep, b * keep);
            if success {
                pack2(a + 1.0, b)
            } else {
                pack2(a, b + 1.0)
            }
        });
        update(&self.rate, |v| {
            (f64::from_bits(v) + RATE_INCREASE).min(MAX_RATE).to_bits()
        });
    }

    /// Records a 429, with the backend's `Retry-After` in seconds if it sent one.
    pub fn rate_limited(&self, retry_after_s: Option<u32>, now_ms: u64) {
        let rate = f64::from_bits(update(&self.rate, |v| {
            (f64::from_bits(v) * RATE_DECREASE).max(MIN_RATE).to_bits()
        }));
        let pause_ms = match retry_after_s {
            Some(s) => u64::from(s) * 1000,
            None => (1000.0 / rate) as u64,
        };
        self.blocked_until_ms
            .fetch_max(now_ms + pause_ms, Ordering::Relaxed);
        // Empty the bucket: the backend just said it had enough.
        update(&self.bucket, |_| pack_bucket(0.0, now_ms as u32));
    }

    /// Posterior (α, β) including the uniform prior.
    pub fn beta(&self) -> (f64, f64) {
        let (a, b) = unpack2(self.counts.load(Ordering::Relaxed));
        (f64::from(a) + 1.0, f64::from(b) + 1.0)
    }

    /// Posterior mean success probability.
    pub fn success_mean(&self) -> f64 {
        let (a, b) = self.beta();
        a / (a + b)
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    fn refilled(&self, v: u64, now_ms: u64) -> (f64, u32) {
        let (tokens, stamp) = unpack_bucket(v);
        let now = now_ms as u32;
        let elapsed_s = f64::from(now.wrapping_sub(stamp)) / 1000.0;
        let rate = self.rate();
        let cap = rate.max(MIN_BURST);
        ((f64::from(tokens) + elapsed_s * rate).min(cap), now)
    }

    /// Milliseconds until an attempt may be sent (0: now).
    pub fn wait_ms(&self, now_ms: u64) -> u64 {
        let blocked = self
            .blocked_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms);
        let (tokens, _) = self.refilled(self.bucket.load(Ordering::Relaxed), now_ms);
        let for_token = if tokens >= 1.0 {
            0
        } else {
            ((1.0 - tokens) / self.rate() * 1000.0).ceil() as u64
        };
        blocked.max(for_token)
    }

    /// Spends one token for an attempt sent now (even if none is left: a forced attempt still counts).
    pub fn take(&self, now_ms: u64) {
        update(&self.bucket, |v| {
            let (tokens, now) = self.refilled(v, now_ms);
            pack_bucket((tokens - 1.0).max(-1.0) as f32, now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_posterior_learns_and_forgets() {
        let l = Learned::default();
        for i in 0..90 {
            l.observe(i % 10 != 0, 1);
        }
        assert!(
            (l.success_mean() - 0.9).abs() < 0.02,
            "{}",
            l.success_mean()
        );
        // Two half-lives later the old evidence weighs a quarter.
        l.observe(false, 1 + 2 * SUCCESS_HALF_LIFE_MS as u64);
        let (a, b) = l.beta();
        assert!(
            (a - (81.0 / 4.0 + 1.0)).abs() < 0.5 && (b - (9.0 / 4.0 + 2.0)).abs() < 0.5,
            "{a} {b}"
        );
    }

    #[test]
    fn pacing_holds_under_a_learned_limit() {
        let l = Learned::default();
        // A backend limited to 5/s: 429 whenever more than 5 were sent in the last second.
        let limit = 5usize;
        let mut sent: Vec<u64> = Vec::new();
        let mut rejected_late = 0;
        for now in (0..120_000u64).step_by(10) {
            if l.wait_ms(now) > 0 {
                continue;
            }
            l.take(now);
            sent.retain(|&t| t + 1000 > now);
            if sent.len() >= limit {
                l.rate_limited(None, now);
                if now > 60_000 {
                    rejected_late += 1;
                }
            } else {
                sent.push(now);
                l.observe(true, now);
            }
        }
        let rate = l.rate();
        assert!(rate > 2.0 && rate < 8.0, "learned {rate}/s for a 5/s limit");
        assert!(
            rejected_late < 40,
            "{rejected_late} 429s in the second minute"
        );
    }

    #[test]
    fn pacing_follows_a_changed_limit() {
        let l = Learned::default();
        let run = |limit: usize, from: u64, to: u64| {
            let mut sent: Vec<u64> = Vec::new();
            let mut accepted = 0;
            for now in (from..to).step_by(10) {
                if l.wait_ms(now) > 0 {
                    continue;
                }
                l.take(now);
                sent.retain(|&t| t + 1000 > now);
                if sent.len() >= limit {
                    l.rate_limited(None, now);
                } else {
                    sent.push(now);
                    accepted += 1;
                    l.observe(true, now);
                }
            }
            accepted as f64 / ((to - from) as f64 / 1000.0)
        };
        let before = run(10, 0, 60_000);
        let low = run(2, 60_000, 120_000);
        let rate_low = l.rate();
        assert!(rate_low < 4.0, "follows the limit down: {rate_low}");
        let high = run(20, 120_000, 240_000);
        assert!(l.rate() > rate_low * 3.0, "and back up: {}", l.rate());
        assert!(
            before > 5.0 && low <= 2.1 && high > before,
            "{before} {low} {high}"
        );
    }

    #[test]
    fn refills_stay_exact_after_days_of_uptime() {
        let l = Learned::default();
        let day_ms = 86_400_000 * 3 + 17;
        l.take(day_ms);
        l.take(day_ms);
        let before = l.wait_ms(day_ms + 1);
        assert_eq!(before, 0, "48 tokens left");
        for _ in 0..48 {
            l.take(day_ms + 1);
        }
        // Empty now; at 50/s the next token comes 20 ms later, not rounded to the clock's float step.
        assert!(
            (19..=21).contains(&l.wait_ms(day_ms + 1)),
            "{}",
            l.wait_ms(day_ms + 1)
        );
    }

    #[test]
    fn retry_after_blocks_the_backend() {
        let l = Learned::default();
        l.rate_limited(Some(3), 1_000);
        assert_eq!(l.wait_ms(1_000), 3_000);
        assert_eq!(l.wait_ms(4_000), 0);
    }
}
