//! What sluice learns about each backend from its answers, shared by all workers: how likely an
//! attempt is to succeed, and how many attempts the backend takes per second before it answers 429.
//!
//! - **Success probability**: a decaying Beta posterior ([`crate::backend::posterior`]).
//! - **Rate limit**: a backend that answers 429 is paced by a mirror of the limiter it most likely
//!   runs, a sliding-window log (at most *L* requests in any [`WINDOW_MS`]; the "sliding log" of
//!   rate limiting, as in Figma's "An alternative approach to rate limiting", 2017, and the
//!   flaky-servers challenge's servers). sluice remembers when it sent its last [`SEND_LOG`] attempts to the backend; a 429
//!   says the backend's window was full, so *L* is at most the attempts of ours that it admitted in
//!   the last second, and when all of the backend's traffic is ours that count *is* its limit: one
//!   429 teaches it. An attempt is then sent only while fewer than *L* of ours are in the window, so
//!   a fixed limit is used to the last request and not exceeded again. A send is remembered
//!   from when the backend most likely took it, which a stall makes later than when it was
//!   picked ([`SendLog::admitted`]). Limits that move (the
//!   challenge's configurations 3 and 4) are followed down by the next 429 (by at most half at
//!   once, [`MIN_DROP_SHARE`]), and up by probing: while the window is full, a first attempt
//!   beyond it raises *L* by one every [`PROBE_AFTER_MS`]; a 429 sets that interval to
//!   [`REFUSED_PROBE_AFTER_MS`], or leaves it longer (a refused probe cost one attempt, while a
//!   rise not found costs the whole rise every second). A probe is judged by its own answer:
//!   later attempts count on its room once the backend admitted it, and once a probe follows one
//!   that held, the limit is climbing and each next probe goes as soon as the last was admitted
//!   ([`HELD_PROBE_AFTER_MS`]): one verified step per round trip
//!   ([`super::limit::Limit::raised`]).
//!   Before the first 429 nothing is paced. (This replaced additive-increase/multiplicative-decrease
//!   on a token bucket, whose sawtooth, down to 0.6 of the rate on a 429 and back by 0.1 per answer,
//!   cost a 429 every few seconds on every saturated backend and ran at about four fifths of its
//!   limit; PERF.md has the scores before and after.)
//! - **Uncertain attempts go out alone**: one that takes one of the top [`TOP_SLOTS`] of the
//!   learned window (or goes beyond it, as a probe), and any while the backend's last answer was
//!   a 429, is not sent while another such attempt is unanswered ([`Learned::wait_ms`]). Sent
//!   together, attempts learn nothing from each other: after a penalty box or a backoff, with a
//!   limit that fell meanwhile, or across a fixed window's boundary, a handful sent in the same
//!   millisecond all met a 429, and three 429s at once are what a limiter punishes. One at a
//!   time, the first 429 stops the rest (TCP's restart after idle, RFC 5681 section 4.1, for the
//!   same reason). It costs one round trip at the top of a window; PERF.md has the replay's
//!   figures.
//! - **A first attempt finds a fall first**: an attempt that would fill the learned window while
//!   no attempt that filled it has been admitted for [`TOP_TRUST_MS`] is the one most likely to
//!   meet a limit that fell meanwhile. A later attempt leaves that slot to a first attempt (which
//!   may take it beyond its share while a later one waits, [`CONFIRM_WANTED_MS`]) and takes the
//!   next one, once the window's top is confirmed or lowered, or after [`CONFIRM_TIMEOUT_MS`] if
//!   no first attempt comes; a 429 costs a first attempt the least, as with probes. PERF.md has
//!   the replay's figures.
//! - **No third 429 within a second** under a limiter that counts 429s within a window: the
//!   strategy judges the rule by the whole pool ([`crate::backend::penalty`]) and asks
//!   [`Learned::wait_in_pool_ms`].
//! - **`Retry-After`** longer than a second is obeyed: no attempts until it passes (RFC 9110
//!   section 10.2.3); a limiter's penalty box says so. One of a second ([`PACED_RETRY_AFTER_S`]),
//!   the shortest HTTP can say, is the window's own rounding: the pacing above already waits until
//!   our oldest send leaves the window, to the millisecond, and idling the backend for the whole
//!   second instead cost a second of its limit per 429 (the replay of the challenge at 30 ids/s:
//!   0.96 / 0.79 / 0.86 of the oracle in configurations 2–4 obeying it, 0.99 / 0.94 / 0.95 with
//!   the pacing; PERF.md has the runs).
//! - **Who gets a limited backend**: attempts are classed by their number ([`class_of`]). A
//!   request's last chance may fill a backend's window; earlier attempts only the part of it that
//!   later attempts wanting the backend leave over ([`Learned::wait_ms`]), because a success is
//!   worth the most where no attempt is left after it.
//!
//! Each quantity lives in atomic words updated with compare-and-swap, so workers never wait for each
//! other; a lost race retries the update.

use std::sync::atomic::{AtomicU64, Ordering};

pub use super::belief::{Belief, Pacing};
use super::limit::Limit;
pub use super::limit::{
    HELD_PROBE_AFTER_MS, MAX_LIMIT, MIN_DROP_SHARE, PROBE_AFTER_MS, PROBE_VERDICT_MS,
    REFUSED_PROBE_AFTER_MS, WINDOW_GUARD_MS, WINDOW_MS,
};
use super::penalty::Penalty;
pub use super::penalty::{Evidence, PenaltyRule};
use super::posterior::Posterior;
pub use super::posterior::SUCCESS_HALF_LIFE_MS;
use super::refusals::Refusals;
use super::send_log::{SendLog, SEND_LOG};

/// A `Retry-After` of this many seconds or less does not stop attempts to a backend whose limit
/// is learned: the pacing waits for its window to drain (see the module docs).
pub const PACED_RETRY_AFTER_S: u32 = 1;
/// The top slots of a learned window: an attempt that takes one of them goes out alone.
pub const TOP_SLOTS: usize = 2;
/// An attempt sent alone holds the next uncertain one back this long at most, if no answer
/// comes (a timeout is not an answer).
pub const ALONE_TIMEOUT_MS: u64 = 1_000;
/// How long an attempt held back for another's answer waits before it looks again, once the
/// answer is overdue.
pub const ALONE_RECHECK_MS: u64 = 5;
/// An attempt held back for another's answer looks again when the answer is due, then every
/// millisecond for this long (see [`Learned::alone_recheck_ms`]).
pub const ALONE_DUE_SLACK_MS: u64 = 3;
/// How long an admitted attempt that filled the learned window vouches for the window's top.
pub const TOP_TRUST_MS: u64 = 2_000;
/// A first attempt may take an unconfirmed top slot beyond its share while a later attempt asked
/// for it within this long (a waiting one asks again every [`ALONE_RECHECK_MS`]).
pub const CONFIRM_WANTED_MS: u64 = 50;
/// Later attempts wait this long at most for a first attempt to take an unconfirmed top slot:
/// with few requests none may come.
pub const CONFIRM_TIMEOUT_MS: u64 = 1_000;
/// Attempt classes: first attempts, second attempts, and third or later (a request's last chance
/// under the default `--max-attempts 3`).
pub const CLASSES: usize = 3;
/// Time constant of the measured demand of each class on a backend.
pub const DEMAND_TAU_MS: f64 = 10_000.0;

/// The class of a request's `attempt`-th attempt (1-based): 1 ..= [`CLASSES`].
pub fn class_of(attempt: usize) -> usize {
    attempt.clamp(1, CLASSES)
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

/// A demand word (a count as f32, its time as the low 32 bits of the ms clock) decayed to
/// `now_ms`.
fn decayed(v: u64, now_ms: u64) -> f64 {
    let (count, stamp) = (f32::from_bits((v >> 32) as u32), v as u32);
    let elapsed_ms = f64::from((now_ms as u32).wrapping_sub(stamp));
    f64::from(count) * (-elapsed_ms / DEMAND_TAU_MS).exp()
}

/// The shared learned state of one backend.
#[derive(Debug)]
pub struct Learned {
    /// How likely an attempt is to succeed.
    success: Posterior,
    /// Our latest attempts: our mirror of the backend's window.
    sends: SendLog,
    /// Per class after the first: attempts that wanted this backend ([`decayed`]).
    demand: [AtomicU64; CLASSES - 1],
    /// [`Limit`], packed.
    limit: AtomicU64,
    /// No attempts before this time (ms), from a 429's Retry-After or a backoff.
    blocked_until_ms: AtomicU64,
    /// Runs of 429s and of failures without an answer.
    refusals: Refusals,
    /// The latest 429s, and what they showed of the backend's penalty rule.
    penalty: Penalty,
    /// The pick time + 1 of the uncertain attempt sent alone and not answered yet (0: none).
    alone_ms: AtomicU64,
    /// The pick time + 1 of the latest attempt that filled the learned window (0: none).
    top_pending_ms: AtomicU64,
    /// When an attempt that filled the window was last admitted (0: never).
    top_confirmed_ms: AtomicU64,
    /// When a later attempt last waited for a first one to confirm the window's top (0: never).
    confirm_wanted_ms: AtomicU64,
    /// When later attempts began to wait for it, asking without a pause.
    confirm_since_ms: AtomicU64,
}

impl Default for Learned {
    fn default() -> Self {
        Learned {
            success: Posterior::default(),
            sends: SendLog::default(),
            demand: std::array::from_fn(|_| AtomicU64::new(0)),
            limit: AtomicU64::new(Limit::NONE.pack()),
            blocked_until_ms: AtomicU64::new(0),
            refusals: Refusals::default(),
            penalty: Penalty::default(),
            alone_ms: AtomicU64::new(0),
            top_pending_ms: AtomicU64::new(0),
            top_confirmed_ms: AtomicU64::new(0),
            confirm_wanted_ms: AtomicU64::new(0),
            confirm_since_ms: AtomicU64::new(0),
        }
    }
}

impl Learned {
    /// Records whether an attempt succeeded (a 2xx) or failed (5xx, no answer). 429s go to
    /// [`Learned::rate_limited`] instead: they say nothing about success once under the limit.
    pub fn observe(&self, success: bool, now_ms: u64) {
        self.refusals.answered();
        self.success.observe(success, now_ms);
    }

    /// Records that the attempt picked at `sent_ms` was admitted (answered other than 429) at
    /// `now_ms`: our mirror counts it from when the backend most likely took it
    /// ([`SendLog::admitted`]).
    pub fn admitted(&self, sent_ms: u64, now_ms: u64) {
        self.sends.admitted(sent_ms, now_ms);
        let seen = self.limit.load(Ordering::Relaxed);
        if let Some(held) = Limit::unpack(seen).admitted(sent_ms) {
            // The pending probe held (unless the limit changed meanwhile): later attempts may
            // count on its room, and the next probe may follow.
            let _ =
                self.limit
                    .compare_exchange(seen, held.pack(), Ordering::AcqRel, Ordering::Relaxed);
        }
        self.penalty.admitted(sent_ms);
        if self.top_pending_ms.load(Ordering::Relaxed) == sent_ms + 1 {
            self.top_confirmed_ms.store(now_ms, Ordering::Relaxed);
        }
        // The answer to the attempt sent alone, or to a later one.
        let _ = self
            .alone_ms
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                (v != 0 && sent_ms + 1 >= v).then_some(0)
            });
    }

    /// Records a 429, with the backend's `Retry-After` in seconds if it sent one: the attempt it
    /// refused leaves our window, and the limit becomes what the backend admitted of ours in the
    /// last second (at least 1).
    pub fn rate_limited(&self, retry_after_s: Option<u32>, now_ms: u64) {
        self.sends.withdraw_latest(now_ms);
        self.alone_ms.store(0, Ordering::Relaxed);
        self.penalty
            .refused(now_ms, retry_after_s, self.refused_in_a_row());
        // Count over the backend's whole window: a window shortened by the guard missed the
        // oldest send when a probe went out as it left ours, and took a fixed limit one lower
        // after each refused probe (with refused probes backing off to 4 s, the replay of
        // configuration 2 at 30 ids/s gave 0.988 of the oracle counting 980 ms, 0.995 counting
        // the whole second).
        let mut times = [0u64; SEND_LOG];
        let n = self.sends.within(now_ms, WINDOW_MS, CLASSES, &mut times);
        let admitted = if n < SEND_LOG {
            n as u64
        } else {
            // The log is full within the window: extrapolate its rate to the whole window.
            let oldest = times[..n].iter().min().copied().unwrap_or(now_ms);
            (n as u64 * WINDOW_MS) / now_ms.saturating_sub(oldest).max(1)
        };
        let admitted = admitted.clamp(1, u64::from(MAX_LIMIT)) as u32;
        update(&self.limit, |v| {
            Limit::unpack(v).refused(admitted, now_ms).pack()
        });
        if let Some(s) = retry_after_s.filter(|&s| s > PACED_RETRY_AFTER_S) {
            self.block_until(now_ms + u64::from(s) * 1000);
        }
        let backoff_ms = self.refusals.refused(now_ms);
        if backoff_ms > 0 {
            self.block_until(now_ms + backoff_ms);
        }
    }

    /// Records an attempt that got no answer (the connection failed or closed first): the backend
    /// is left alone for a while ([`Refusals::unreachable`]).
    pub fn unreachable(&self, now_ms: u64) {
        self.alone_ms.store(0, Ordering::Relaxed);
        let backoff_ms = self.refusals.unreachable(now_ms);
        self.block_until(now_ms + backoff_ms);
    }

    fn block_until(&self, until_ms: u64) {
        self.blocked_until_ms.fetch_max(until_ms, Ordering::Relaxed);
    }

    /// When the backend may be sent to again after a Retry-After or a backoff (0: not blocked).
    pub fn blocked_until_ms(&self) -> u64 {
        self.blocked_until_ms.load(Ordering::Relaxed)
    }

    /// The current run of 429s with no other answer between them.
    pub fn refused_in_a_row(&self) -> u64 {
        self.refusals.refused_in_a_row()
    }

    /// Records an attempt of `class` (2 or more) that would rather have been sent here, whether
    /// it was or not.
    pub fn note_demand(&self, class: usize, now_ms: u64) {
        let Some(cell) = self.demand.get(class.wrapping_sub(2)) else {
            return;
        };
        update(cell, |v| {
            let count = decayed(v, now_ms) + 1.0;
            (u64::from((count as f32).to_bits()) << 32) | u64::from(now_ms as u32)
        });
    }

    /// Attempts of `class` per [`WINDOW_MS`] that wanted this backend lately (an exponentially
    /// weighted rate over [`DEMAND_TAU_MS`]).
    pub fn demand(&self, class: usize, now_ms: u64) -> f64 {
        self.demand.get(class.wrapping_sub(2)).map_or(0.0, |cell| {
            decayed(cell.load(Ordering::Relaxed), now_ms) * WINDOW_MS as f64 / DEMAND_TAU_MS
        })
    }

    /// Posterior (α, β) including the uniform prior.
    pub fn beta(&self) -> (f64, f64) {
        self.success.beta()
    }

    /// Posterior mean success probability.
    pub fn success_mean(&self) -> f64 {
        let (a, b) = self.beta();
        a / (a + b)
    }

    /// What is believed of the backend at `now_ms`, for people watching (the admin API).
    pub fn belief(&self, now_ms: u64) -> Belief {
        let (a, b) = self.beta();
        let limit = Limit::unpack(self.limit.load(Ordering::Relaxed));
        let blocked_ms = self.blocked_until_ms().saturating_sub(now_ms);
        let pacing = if blocked_ms > 0 {
            Pacing::BackingOff
        } else if limit.per_window == 0 {
            Pacing::Unlimited
        } else if limit.unconfirmed(now_ms) {
            Pacing::Probing
        } else if self.wait(now_ms, CLASSES, self.own_penalty_rule(), false) > 0 {
            Pacing::Full
        } else {
            Pacing::Room
        };
        Belief {
            success_estimate: a / (a + b),
            evidence: a + b - 2.0,
            limit_per_window: (limit.per_window != 0).then_some(limit.per_window),
            window_ms: WINDOW_MS,
            pacing,
            backoff_ms: blocked_ms,
            refused_in_a_row: self.refused_in_a_row(),
        }
    }

    /// Sets the learned limit to `per_window`, as if learned at `now_ms`. For replays that
    /// measure what knowing a backend's true limit would be worth (`tests/bandit_replay.rs`).
    pub fn assume_limit(&self, per_window: u32, now_ms: u64) {
        update(&self.limit, |v| {
            Limit::unpack(v).assumed(per_window, now_ms).pack()
        });
    }

    /// The learned limit, attempts per second; `None` until the backend answers 429.
    pub fn limit(&self) -> Option<u32> {
        let l = Limit::unpack(self.limit.load(Ordering::Relaxed));
        (l.per_window != 0).then_some(l.per_window)
    }

    /// Milliseconds until an attempt of `class` ([`class_of`]) may be sent (0: now). A request's
    /// last chance may fill the window; an earlier attempt only the part of it that the demand of
    /// later classes for this backend ([`Learned::demand`]) leaves over: a success is worth the
    /// most where no attempt is left after it, so a backend's scarce capacity goes there first.
    /// These are nested booking limits, protecting capacity for the more valuable classes
    /// (Littlewood, "Forecasting and control of passenger bookings", 1972; trunk reservation in
    /// loss networks, Key 1990). A class left no share at all gets `u64::MAX`: not until the
    /// demand of later classes falls.
    pub fn wait_ms(&self, now_ms: u64, class: usize) -> u64 {
        self.wait_in_pool_ms(now_ms, class, self.own_penalty_rule())
    }

    /// [`Learned::wait_ms`] for a backend of a pool judged to punish by `rule`
    /// ([`PenaltyRule::of_pool`]): under the windowed rule, an uncertain attempt waits until a
    /// third 429 would not make three within a second.
    pub fn wait_in_pool_ms(&self, now_ms: u64, class: usize, rule: PenaltyRule) -> u64 {
        self.wait(now_ms, class, rule, true)
    }

    /// What this backend has shown of its penalty rule.
    pub fn penalty_evidence(&self) -> Evidence {
        self.penalty.evidence()
    }

    fn own_penalty_rule(&self) -> PenaltyRule {
        PenaltyRule::of_pool([self.penalty_evidence()])
    }

    /// [`Learned::wait_in_pool_ms`]; `asking` is false for an observer, who leaves no trace.
    fn wait(&self, now_ms: u64, class: usize, rule: PenaltyRule, asking: bool) -> u64 {
        let blocked = self
            .blocked_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms);
        let limit = Limit::unpack(self.limit.load(Ordering::Relaxed));
        if limit.per_window == 0 {
            return blocked;
        }
        let (span, k) = limit.span();
        // Later attempts do not count on the room a probe may have found until it held.
        let k_all = if class > 1 && limit.unconfirmed(now_ms) {
            k.saturating_sub(1).max(1)
        } else {
            k
        };
        let mut wait = self.sends.wait_ms(now_ms, span, k_all, CLASSES);
        let hold = self.penalty.hold_ms(now_ms);
        if rule == PenaltyRule::WithinAWindow
            && hold > 0
            && (wait > 0 || self.uncertain(self.sends.count(now_ms, span, CLASSES), k_all))
        {
            // A 429 now would be the third within a second.
            return blocked.max(wait).max(hold);
        }
        if self.waits_alone(now_ms, span, k_all) {
            // Look again soon, even if the window is full for longer: the answer awaited (a 429,
            // or room confirmed) changes what this attempt may do, here and elsewhere. (Waiting
            // for the window's room instead gave 0.003 less in the replay of flaky3 at 30 ids/s.)
            return blocked.max(self.alone_recheck_ms(now_ms));
        }
        if wait == 0 && k_all == k && self.top_unconfirmed(now_ms, span, k) {
            let wanted = self.confirm_wanted_ms.load(Ordering::Relaxed);
            let asked_lately = wanted != 0 && now_ms < wanted + CONFIRM_WANTED_MS;
            if class > 1 {
                // Leave the slot most likely to meet a fallen limit to a first attempt, for a
                // while.
                let since = if asked_lately {
                    self.confirm_since_ms.load(Ordering::Relaxed)
                } else {
                    now_ms
                };
                if now_ms < since + CONFIRM_TIMEOUT_MS {
                    if asking {
                        self.confirm_since_ms.store(since, Ordering::Relaxed);
                        self.confirm_wanted_ms.store(now_ms, Ordering::Relaxed);
                    }
                    return blocked.max(ALONE_RECHECK_MS);
                }
            } else if asked_lately {
                return blocked;
            }
        }
        if wait > 0 && class == 1 && limit.probe_due(now_ms) {
            // A first attempt may probe one beyond a full window: a refusal costs it the least.
            return blocked.max(self.sends.wait_ms(now_ms, span, k + 1, CLASSES));
        }
        if class < CLASSES && (limit.per_window as usize) <= SEND_LOG {
            let protected: f64 = (class + 1..=CLASSES).map(|c| self.demand(c, now_ms)).sum();
            let share = f64::from(limit.per_window) - protected;
            if share < 1.0 {
                return u64::MAX;
            }
            wait = wait.max(self.sends.wait_ms(now_ms, span, share as usize, class));
        }
        blocked.max(wait)
    }

    /// How long an attempt held back for another's answer waits: until the answer is due (the
    /// send plus the backend's fast round trip), then a millisecond at a time for
    /// [`ALONE_DUE_SLACK_MS`], then [`ALONE_RECHECK_MS`]. On a fixed beat, an answer a
    /// millisecond late (a send delayed on its way) held the attempt a whole beat longer; the
    /// replay of flaky2–4 at 30 ids/s over 200 seeds with 1 ms delays gained 0.001 (PERF.md).
    fn alone_recheck_ms(&self, now_ms: u64) -> u64 {
        let sent_ms = self.alone_ms.load(Ordering::Relaxed).saturating_sub(1);
        match self.sends.fast_rtt_ms().map(|rtt_ms| sent_ms + rtt_ms) {
            Some(due_ms) if due_ms > now_ms => (due_ms - now_ms).min(ALONE_RECHECK_MS),
            Some(due_ms) if now_ms < due_ms + ALONE_DUE_SLACK_MS => 1,
            _ => ALONE_RECHECK_MS,
        }
    }

    /// Whether an attempt now would be uncertain (in the top [`TOP_SLOTS`] of a window of `k`
    /// or beyond it, or after a 429) while another uncertain one is unanswered.
    fn waits_alone(&self, now_ms: u64, span_ms: u64, k: usize) -> bool {
        let alone = self.alone_ms.load(Ordering::Relaxed);
        if alone == 0 || now_ms >= alone - 1 + ALONE_TIMEOUT_MS {
            return false;
        }
        self.uncertain(self.sends.count(now_ms, span_ms, CLASSES), k)
    }

    /// Whether an attempt now would fill a window of `k` while no attempt that filled it has been
    /// admitted for [`TOP_TRUST_MS`].
    fn top_unconfirmed(&self, now_ms: u64, span_ms: u64, k: usize) -> bool {
        // The log is counted only when the top is stale: under a steady load it rarely is.
        let confirmed = self.top_confirmed_ms.load(Ordering::Relaxed);
        (confirmed == 0 || now_ms > confirmed + TOP_TRUST_MS)
            && self.sends.count(now_ms, span_ms, CLASSES) + 1 == k
    }

    /// Whether an attempt, with `others` sends already in the window, is uncertain: it takes one
    /// of the top [`TOP_SLOTS`] of a window of `k` or goes beyond it, or it follows a 429. The one
    /// rule both [`Learned::wait_ms`] and [`Learned::take`] go by.
    fn uncertain(&self, others: usize, k: usize) -> bool {
        self.refused_in_a_row() > 0 || others + TOP_SLOTS >= k
    }

    /// Records an attempt of `class` sent now (even one sent without room: a forced attempt still
    /// counts). A first attempt sent beyond a full window once the limit has held for the probing
    /// interval is a probe: the limit is raised by one, so that a limit that went up is found; a
    /// 429 soon after takes it back ([`Learned::rate_limited`]).
    pub fn take(&self, now_ms: u64, class: usize) {
        self.sends.record(now_ms, class);
        self.taken(now_ms, class);
    }

    /// How many attempts were sent to this backend so far, read before deciding on one: see
    /// [`Learned::take_after`].
    pub fn send_seq(&self) -> usize {
        self.sends.seq()
    }

    /// [`Learned::take`], unless another attempt went to this backend since [`Learned::send_seq`]
    /// gave `seq` (from another worker: two workers woken in the same millisecond for the same
    /// free slot would both take it, and one would meet a 429). Returns false, recording
    /// nothing, when the decision must be made again.
    pub fn take_after(&self, seq: usize, now_ms: u64, class: usize) -> bool {
        if !self.sends.record_after(seq, now_ms, class) {
            return false;
        }
        self.taken(now_ms, class);
        true
    }

    /// What follows the record of a send.
    fn taken(&self, now_ms: u64, class: usize) {
        let limit = Limit::unpack(self.limit.load(Ordering::Relaxed));
        if limit.per_window == 0 {
            return;
        }
        let (span, k) = limit.span();
        // This send included.
        let in_window = self.sends.count(now_ms, span, CLASSES);
        if self.uncertain(in_window.saturating_sub(1), k) {
            self.alone_ms.store(now_ms + 1, Ordering::Relaxed);
        }
        if in_window >= k {
            self.top_pending_ms.store(now_ms + 1, Ordering::Relaxed);
        }
        if class == 1 && limit.probe_due(now_ms) {
            self.probe(limit, now_ms);
        }
    }

    /// A first attempt went out beyond a full window once `limit` had held for its probing
    /// interval: the limit goes up.
    fn probe(&self, limit: Limit, now_ms: u64) {
        // A probe only if the backend surely still counts the k before it: those sent within its
        // window less the guard. One sent near the edge of our guarded window may have left the
        // backend's, and a send admitted then would teach a limit one too high (which later
        // attempts then pay for with 429s).
        let (span, k) = limit.span();
        let surely_counted_ms = span.saturating_sub(2 * WINDOW_GUARD_MS).max(1);
        if self.sends.count(now_ms, surely_counted_ms, CLASSES) <= k {
            return;
        }
        update(&self.limit, |v| {
            if Limit::unpack(v) == limit {
                limit.raised(now_ms).pack()
            } else {
                v
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::send_log::MAX_RESTAMP_MS;

    /// A backend with a sliding one-second window, as the flaky-servers
    /// challenge's: at most `limit(now)` admitted
    /// attempts in any second, 429 (with `retry_after_s`) otherwise.
    struct WindowServer {
        admitted: Vec<u64>,
        retry_after_s: Option<u32>,
    }

    /// What [`drive`] saw: attempts admitted, and when 429s came.
    struct Driven {
        admitted: usize,
        rejected_at: Vec<u64>,
    }

    impl WindowServer {
        fn new(retry_after_s: Option<u32>) -> WindowServer {
            WindowServer {
                admitted: Vec::new(),
                retry_after_s,
            }
        }

        /// Offers an attempt every 10 ms from `from` to `to` whenever `l` lets it go.
        fn drive(
            &mut self,
            l: &Learned,
            from: u64,
            to: u64,
            limit: impl Fn(u64) -> usize,
        ) -> Driven {
            let mut out = Driven {
                admitted: 0,
                rejected_at: Vec::new(),
            };
            for now in (from..to).step_by(10) {
                // First attempts: the class that probes.
                if l.wait_ms(now, 1) > 0 {
                    continue;
                }
                l.take(now, 1);
                self.admitted.retain(|&t| t + WINDOW_MS > now);
                if self.admitted.len() >= limit(now) {
                    l.rate_limited(self.retry_after_s, now);
                    out.rejected_at.push(now);
                } else {
                    self.admitted.push(now);
                    out.admitted += 1;
                    l.admitted(now, now);
                    l.observe(true, now);
                }
            }
            out
        }
    }

    #[test]
    fn a_send_decided_on_a_count_another_worker_changed_is_not_taken() {
        let l = Learned::default();
        l.take(0, 1);
        l.rate_limited(None, 10);
        assert_eq!(l.limit(), Some(1));
        // Two workers woken in the same millisecond both count a free window...
        let seq = l.send_seq();
        assert_eq!(l.wait_ms(WINDOW_MS + WINDOW_GUARD_MS, 1), 0);
        // ...one of them sends first.
        assert!(l.take_after(l.send_seq(), WINDOW_MS + WINDOW_GUARD_MS, 1));
        // The other's decision is stale: nothing is recorded, and asked again, it waits.
        assert!(!l.take_after(seq, WINDOW_MS + WINDOW_GUARD_MS, 1));
        assert_eq!(
            l.sends
                .count(WINDOW_MS + WINDOW_GUARD_MS, WINDOW_MS, CLASSES),
            1
        );
        assert!(l.wait_ms(WINDOW_MS + WINDOW_GUARD_MS, 1) > 0);
    }

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
    fn one_429_teaches_a_fixed_window_limit() {
        let l = Learned::default();
        assert_eq!(l.limit(), None, "nothing is paced before a 429");
        let driven = WindowServer::new(None).drive(&l, 0, 100, |_| 4);
        assert_eq!(driven.admitted, 4);
        assert_eq!(driven.rejected_at, [40], "the fifth attempt, and no other");
        assert_eq!(l.limit(), Some(4));
        // The next attempt goes when the first (sent at 0) has left the window, with the guard.
        assert_eq!(l.wait_ms(100, CLASSES), WINDOW_MS + WINDOW_GUARD_MS - 100);
    }

    #[test]
    fn pacing_holds_under_a_learned_limit() {
        for retry_after_s in [None, Some(1)] {
            let l = Learned::default();
            let mut server = WindowServer::new(retry_after_s);
            server.drive(&l, 0, 60_000, |_| 5);
            let late = server.drive(&l, 60_000, 120_000, |_| 5);
            let limit = l.limit().unwrap_or(0);
            assert!(
                (5..=6).contains(&limit),
                "learned {limit}/s for a 5/s limit"
            );
            // Only failed probes are refused, one a REFUSED_PROBE_AFTER_MS at most (each costs
            // one attempt; a Retry-After of a second stops nothing, the pacing waits for room).
            let probes = (60_000 / REFUSED_PROBE_AFTER_MS + 1) as usize;
            assert!(
                late.rejected_at.len() <= probes,
                "{:?} refused in the second minute",
                late.rejected_at
            );
            // And the limit is used: 5 every second and a guard.
            assert!(late.admitted >= 285, "{} admitted in 60 s", late.admitted);
        }
    }

    #[test]
    fn pacing_follows_a_changed_limit() {
        let l = Learned::default();
        let mut server = WindowServer::new(None);
        let per_s = |d: &Driven, secs: u64| d.admitted as f64 / secs as f64;
        let before = server.drive(&l, 0, 60_000, |_| 10);
        let low = server.drive(&l, 60_000, 120_000, |_| 2);
        let limit_low = l.limit().unwrap_or(0);
        assert!(limit_low <= 3, "follows the limit down: {limit_low}");
        let high = server.drive(&l, 120_000, 240_000, |_| 20);
        let limit_high = l.limit().unwrap_or(0);
        assert!(limit_high >= 18, "and back up: {limit_high}");
        let (before, low, high) = (per_s(&before, 60), per_s(&low, 60), per_s(&high, 120));
        assert!(
            before > 9.0 && low <= 2.1 && high > before,
            "{before} {low} {high}"
        );
    }

    #[test]
    fn refused_probes_come_a_second_apart_and_held_ones_climb_at_once() {
        let l = Learned::default();
        let mut server = WindowServer::new(Some(1));
        server.drive(&l, 0, 30_000, |_| 3);
        let held = server.drive(&l, 30_000, 60_000, |_| 3);
        // A limit that holds: one refused probe a second at most, and the limit used.
        let gaps: Vec<u64> = held.rejected_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|&g| g >= REFUSED_PROBE_AFTER_MS),
            "{:?}",
            held.rejected_at
        );
        assert!(held.admitted >= 85, "{} admitted in 30 s", held.admitted);
        // The limit quadruples: the next probe (within a second of the last refused one) holds,
        // and each one after it goes as soon as the one before was admitted and the window is
        // full at its level, one step each, so the new limit is found within a second and a
        // half, for the one 429 of the probe beyond it.
        let climb = server.drive(&l, 60_000, 61_500, |_| 12);
        assert_eq!(l.limit(), Some(12));
        assert!(climb.rejected_at.len() <= 1, "{:?}", climb.rejected_at);
    }

    #[test]
    fn a_probe_is_judged_by_its_answer_and_a_climb_follows_the_answers() {
        let l = limited(3);
        // Fills the window with first attempts sent at `times`, each admitted 10 ms later.
        let fill = |times: &[u64]| {
            for &t in times {
                l.take(t, 1);
                l.admitted(t, t + 10);
                l.observe(true, t + 10);
            }
        };
        // The window full again, and the probing interval (2 s after the first 429) passed.
        fill(&[4_500, 4_501, 4_502]);
        assert_eq!(l.wait_ms(4_600, 1), 0, "a first attempt may probe");
        l.take(4_600, 1);
        assert_eq!(l.limit(), Some(4));
        // Until its answer comes, later attempts do not count on its room.
        assert_eq!(l.belief(4_605).pacing, Pacing::Probing);
        l.admitted(4_600, 4_610);
        l.observe(true, 4_610);
        assert_ne!(l.belief(4_611).pacing, Pacing::Probing);
        // One probe that held may have met a slot that freed by chance: the next waits the
        // interval.
        fill(&[6_500, 6_501, 6_502, 6_503]);
        assert!(l.wait_ms(6_599, 1) > 0);
        l.take(6_600, 1);
        assert_eq!(l.limit(), Some(5));
        // A probe after a held one: the limit is climbing. The next probe waits only for this
        // one's answer...
        assert!(l.wait_ms(6_605, 1) > 0);
        l.admitted(6_600, 6_610);
        l.observe(true, 6_610);
        assert_eq!(l.wait_ms(6_611, 1), 0);
        l.take(6_611, 1);
        assert_eq!(l.limit(), Some(6));
        // ...and a 429 takes the step back and makes the next probe wait a second.
        l.rate_limited(None, 6_612);
        assert_eq!(l.limit(), Some(5));
        assert!(l.wait_ms(6_700, 1) > 0);
    }

    #[test]
    fn a_raised_limit_is_found_within_seconds_when_refused_probes_cost_no_wait() {
        let l = Learned::default();
        let mut server = WindowServer::new(None);
        server.drive(&l, 0, 60_000, |_| 3);
        assert_eq!(l.limit(), Some(3));
        server.drive(&l, 60_000, 66_000, |_| 6);
        assert!(l.limit() >= Some(6), "{:?}", l.limit());
    }

    #[test]
    fn a_limit_that_drops_costs_two_429s_at_most_and_never_three_in_a_second() {
        let l = Learned::default();
        // The challenge's servers send Retry-After: 1 with a 429; three 429s within a second would put
        // a configuration 3 server in its penalty box.
        let mut server = WindowServer::new(Some(1));
        server.drive(&l, 0, 20_000, |_| 8);
        let dropped = server.drive(&l, 20_000, 40_000, |_| 2);
        assert_eq!(l.limit(), Some(2));
        // The drop costs two 429s; after them, only probes of the new limit are refused, a
        // second apart.
        let first = dropped.rejected_at[0];
        let drop_429s = dropped
            .rejected_at
            .iter()
            .filter(|&&t| t < first + WINDOW_MS)
            .count();
        assert_eq!(drop_429s, 2, "{:?}", dropped.rejected_at);
        for w in dropped.rejected_at[1..].windows(2) {
            assert!(
                w[1] - w[0] >= REFUSED_PROBE_AFTER_MS,
                "{:?}",
                dropped.rejected_at
            );
        }
        for w in dropped.rejected_at.windows(3) {
            assert!(w[2] - w[0] >= 1_000, "{:?}", dropped.rejected_at);
        }
    }

    /// A backend with a learned limit of `limit` and a fast round trip of 10 ms.
    fn limited(limit: u64) -> Learned {
        let l = Learned::default();
        for t in 0..=limit {
            l.take(t, 1);
        }
        l.rate_limited(None, limit);
        for t in 0..limit {
            l.admitted(t, t + 10);
        }
        assert_eq!(l.limit(), Some(limit as u32));
        l
    }

    /// Sends two last chances, at `at_ms` and a millisecond later, each admitted `rtt_ms` after
    /// it was sent; returns how long a third waits 100 ms after the first.
    fn wait_after_two_answered_in(l: &Learned, at_ms: u64, rtt_ms: u64) -> u64 {
        for t in [at_ms, at_ms + 1] {
            l.take(t, CLASSES);
            l.admitted(t, t + rtt_ms);
        }
        l.wait_ms(at_ms + 100, CLASSES)
    }

    #[test]
    fn a_send_answered_late_counts_from_when_the_backend_took_it() {
        let l = limited(2);
        // A stall of 60 ms: the backend took both sends when it ended, and its window holds them
        // until 60 ms later than ours would have.
        assert_eq!(
            wait_after_two_answered_in(&l, 2_000, 70),
            2_060 + WINDOW_MS + WINDOW_GUARD_MS - 2_100
        );
        // Prompt answers leave the sends where they were picked.
        assert_eq!(
            wait_after_two_answered_in(&l, 4_000, 10),
            4_000 + WINDOW_MS + WINDOW_GUARD_MS - 4_100
        );
        // A slow answer moves a send by MAX_RESTAMP_MS at most.
        let l = limited(1);
        l.take(2_000, CLASSES);
        l.admitted(2_000, 2_500);
        let taken = 2_000 + MAX_RESTAMP_MS;
        assert_eq!(
            l.wait_ms(2_500, CLASSES),
            taken + WINDOW_MS + WINDOW_GUARD_MS - 2_500
        );
    }

    #[test]
    fn the_top_of_the_window_is_tried_one_attempt_at_a_time() {
        let l = limited(5);
        l.observe(true, 20);
        // The window has drained: three attempts go together, below its top two slots.
        let now = 2_000;
        for _ in 0..3 {
            assert_eq!(l.wait_ms(now, CLASSES), 0);
            l.take(now, CLASSES);
        }
        // The fourth takes one of the top slots: it goes, and the fifth waits for its answer.
        assert_eq!(l.wait_ms(now + 1, CLASSES), 0);
        l.take(now + 1, CLASSES);
        assert_eq!(l.wait_ms(now + 2, CLASSES), ALONE_RECHECK_MS);
        // The answer to an attempt sent before it does not free the fifth; its own does.
        l.admitted(now, now + 10);
        // That answer took 10 ms: the fifth looks again when the fourth's is due.
        assert_eq!(l.wait_ms(now + 10, CLASSES), 1);
        l.admitted(now + 1, now + 11);
        // The fifth fills the window, whose top no admitted attempt has confirmed: a first
        // attempt goes (a last chance would wait for one).
        assert_eq!(l.wait_ms(now + 11, CLASSES), ALONE_RECHECK_MS);
        assert_eq!(l.wait_ms(now + 11, 1), 0);
        l.take(now + 11, 1);
        // No answer at all: the hold lapses after ALONE_TIMEOUT_MS, and the full window is
        // waited out as before.
        let lapsed = now + 11 + ALONE_TIMEOUT_MS;
        assert_eq!(l.wait_ms(lapsed - 1, CLASSES), ALONE_RECHECK_MS);
        assert_eq!(
            l.wait_ms(lapsed, CLASSES),
            now + WINDOW_MS + WINDOW_GUARD_MS - lapsed
        );
    }

    #[test]
    fn an_attempt_held_for_another_looks_again_when_its_answer_is_due() {
        let l = limited(5);
        l.observe(true, 20);
        let now = 2_000;
        for _ in 0..3 {
            l.take(now, CLASSES);
        }
        // Answers take 10 ms.
        l.admitted(now, now + 10);
        // The fourth takes a top slot and goes alone; the fifth waits for its answer, due at 30.
        l.take(now + 20, CLASSES);
        assert_eq!(l.wait_ms(now + 21, CLASSES), ALONE_RECHECK_MS);
        assert_eq!(l.wait_ms(now + 27, CLASSES), 3);
        assert_eq!(l.wait_ms(now + 30, CLASSES), 1);
        assert_eq!(l.wait_ms(now + 32, CLASSES), 1);
        // Overdue: back to the slower beat.
        assert_eq!(l.wait_ms(now + 33, CLASSES), ALONE_RECHECK_MS);
        // It comes a millisecond late, and the fifth (a first attempt) goes at once.
        l.admitted(now + 20, now + 31);
        assert_eq!(l.wait_ms(now + 31, 1), 0);
    }

    #[test]
    fn a_last_chance_leaves_an_unconfirmed_top_to_a_first_attempt() {
        let l = limited(3);
        // Last chances want most of it: first attempts have a share of one slot, which one
        // takes.
        for _ in 0..20 {
            l.note_demand(CLASSES, 5_000);
        }
        let now = 5_000;
        for (t, class) in [(now, 1), (now + 10, CLASSES)] {
            assert_eq!(l.wait_ms(t, class), 0);
            l.take(t, class);
            l.admitted(t, t + 10);
        }
        // The third would fill the window, and no attempt that filled it was ever admitted.
        // Someone watching changes nothing: a first attempt still has no room.
        let top = now + 20;
        assert_eq!(l.belief(top).pacing, Pacing::Full);
        assert!(l.wait_ms(top, 1) > 0);
        // A last chance waits, and a first attempt takes the slot beyond its share meanwhile.
        assert_eq!(l.wait_ms(top, CLASSES), ALONE_RECHECK_MS);
        assert_eq!(l.wait_ms(top, 1), 0);
        l.take(top, 1);
        l.admitted(top, top + 10);
        // Admitted: the top is trusted for TOP_TRUST_MS, and the next last chance fills it.
        let next = now + WINDOW_MS + WINDOW_GUARD_MS;
        assert_eq!(l.wait_ms(next, CLASSES), 0);
        l.take(next, CLASSES);
        l.admitted(next, next + 10);
        // Later, with no confirmation for longer than that, a last chance waits again.
        let later = top + 10 + TOP_TRUST_MS + WINDOW_MS;
        for t in [later, later + 10] {
            assert_eq!(l.wait_ms(t, CLASSES), 0);
            l.take(t, CLASSES);
            l.admitted(t, t + 10);
        }
        assert_eq!(l.wait_ms(later + 20, CLASSES), ALONE_RECHECK_MS);
    }

    #[test]
    fn a_later_attempt_waits_for_a_first_one_a_second_at_most() {
        // With few requests no first attempt may come to confirm the top of a window of one.
        let l = limited(1);
        let from = 5_000;
        for t in (from..from + CONFIRM_TIMEOUT_MS).step_by(ALONE_RECHECK_MS as usize) {
            assert_eq!(l.wait_ms(t, 2), ALONE_RECHECK_MS);
        }
        assert_eq!(l.wait_ms(from + CONFIRM_TIMEOUT_MS, 2), 0);
        // After a pause in the asking, the wait starts over.
        let again = from + CONFIRM_TIMEOUT_MS + CONFIRM_WANTED_MS;
        assert_eq!(l.wait_ms(again, 2), ALONE_RECHECK_MS);
    }

    #[test]
    fn after_a_429_attempts_go_one_at_a_time_until_an_answer() {
        // Its last answer was a 429, and the window has drained since (a backoff, a penalty
        // box): the limit of ten may have fallen meanwhile, so one attempt goes and the next
        // waits for its answer.
        let l = limited(10);
        let now = 5_000;
        assert_eq!(l.wait_ms(now, CLASSES), 0);
        l.take(now, CLASSES);
        assert_eq!(l.wait_ms(now + 1, CLASSES), ALONE_RECHECK_MS);
        // Admitted: attempts go together again up to the window's top slots.
        l.admitted(now, now + 10);
        l.observe(true, now + 10);
        for _ in 0..8 {
            assert_eq!(l.wait_ms(now + 10, CLASSES), 0);
            l.take(now + 10, CLASSES);
        }
        assert_eq!(l.wait_ms(now + 10, CLASSES), ALONE_RECHECK_MS);
        // A 429 ends the hold too: the next attempt that has room goes alone.
        let refused = Learned::default();
        for t in 0..=3 {
            refused.take(t, CLASSES);
        }
        refused.rate_limited(None, 3);
        refused.take(2_000, CLASSES);
        assert_eq!(refused.wait_ms(2_001, CLASSES), ALONE_RECHECK_MS);
        refused.rate_limited(None, 2_002);
        // The limit is one now, and a first attempt finds out whether it holds.
        assert_eq!(refused.wait_ms(2_003, CLASSES), ALONE_RECHECK_MS);
        assert_eq!(refused.wait_ms(2_003, 1), 0);
    }

    #[test]
    fn a_send_at_the_edge_of_the_guard_is_not_a_probe() {
        let l = limited(2);
        // Two sends 1,000 and 990 ms before now: inside our guarded window, but the first has
        // left the backend's. A first attempt that goes now is the second in the backend's
        // window, so its admission says nothing about a third: the limit stays.
        l.take(10_000, 1);
        l.take(10_010, 1);
        let now = 11_000;
        assert!(l.wait_ms(now, 1) < u64::MAX);
        l.take(now, 1);
        assert_eq!(l.limit(), Some(2), "no probe raised it");
        // Well inside the backend's window, it is a probe: the limit goes up by one.
        let l = limited(2);
        l.take(10_000, 1);
        l.take(10_010, 1);
        l.take(10_500, 1);
        assert_eq!(l.limit(), Some(3));
    }

    #[test]
    fn windows_stay_exact_after_days_of_uptime() {
        let l = Learned::default();
        let t = 86_400_000 * 3 + 17;
        let driven = WindowServer::new(None).drive(&l, t, t + 30, |_| 2);
        assert_eq!((driven.admitted, l.limit()), (2, Some(2)));
        assert_eq!(l.wait_ms(t + 30, 1), WINDOW_MS + WINDOW_GUARD_MS - 30);
        assert_eq!(l.wait_ms(t + WINDOW_MS + WINDOW_GUARD_MS, 1), 0);
    }

    #[test]
    fn retry_after_blocks_the_backend() {
        let l = Learned::default();
        l.rate_limited(Some(3), 1_000);
        assert_eq!(l.wait_ms(1_000, 1), 3_000);
        assert_eq!(l.wait_ms(4_000, 1), 0);
    }

    #[test]
    fn a_retry_after_of_a_second_is_left_to_the_pacing() {
        // Four admitted at 0-30 ms, the fifth refused with Retry-After: 1 at 40 ms: the next
        // attempt waits for the first send to leave the window (1,020 ms), not for 1,040 ms.
        let l = Learned::default();
        let driven = WindowServer::new(Some(1)).drive(&l, 0, 100, |_| 4);
        assert_eq!((driven.rejected_at, l.limit()), (vec![40], Some(4)));
        assert_eq!(l.blocked_until_ms(), 0);
        assert_eq!(l.wait_ms(100, CLASSES), WINDOW_MS + WINDOW_GUARD_MS - 100);
    }

    #[test]
    fn under_a_windowed_penalty_rule_a_third_429_in_a_second_waits() {
        let l = Learned::default();
        test_support::two_429s_50_ms_apart(&l);
        assert_eq!(l.refused_in_a_row(), 1);
        // Its own 429s showed no rule: the attempt after a 429 goes once the window has room.
        assert_eq!(l.wait_ms(2_150, 1), 0);
        assert_eq!(
            l.wait_in_pool_ms(2_150, 1, PenaltyRule::NotWithinAWindow),
            0
        );
        // The pool showed a windowed rule: it waits until the 429 at 1,200 is a second old.
        assert_eq!(l.wait_in_pool_ms(2_150, 1, PenaltyRule::WithinAWindow), 50);
        assert_eq!(l.wait_in_pool_ms(2_200, 1, PenaltyRule::WithinAWindow), 0);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Learned;

    /// Teaches `l` a limit of 4 at 40 ms, then two 429s 50 ms apart (at 1,200 and 1,250) with an
    /// admitted attempt between them (no burst: the backend is not left alone), and nothing since.
    pub(crate) fn two_429s_50_ms_apart(l: &Learned) {
        let ok = |t: u64| {
            l.take(t, 1);
            l.admitted(t, t);
            l.observe(true, t);
        };
        let refused = |t: u64| {
            l.take(t, 1);
            l.rate_limited(Some(1), t);
        };
        for t in [0, 10, 20, 30] {
            ok(t);
        }
        refused(40);
        for t in [1_100, 1_110] {
            ok(t);
        }
        refused(1_200);
        ok(1_220);
        refused(1_250);
    }
}
