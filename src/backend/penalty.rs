//! Which rule a pool's rate limiters punish by, as their 429s show it, and the hold it calls for.
//!
//! A limiter puts a client that presses on in a penalty box: everything is refused for a second
//! or two. Two rules are common. One counts over-limit requests **in a row** (an admitted request
//! starts the count over); the burst backoff of [`crate::backend::refusals`] keeps a third 429 in a
//! row out. The other counts them **within a window**: three in a second, admitted requests
//! between them or not (the flaky-servers challenge's configuration 3). Against that rule, once two 429s came within
//! [`PENALTY_WINDOW_MS`], an uncertain attempt (one that takes the top of the learned window, or
//! follows a 429) waits until the first of them is a second old ([`Penalty::hold_ms`]).
//!
//! The hold idles capacity that a limiter counting in a row would have given, so it applies only
//! where the backends have shown the windowed rule. A backend shows which rule it runs once:
//! - **within a window**: a penalty box (a `Retry-After` longer than a second) opened by a run of
//!   fewer than three 429s in a row;
//! - **not within a window**: three 429s within a second, and an attempt sent after the third one
//!   admitted within [`BOX_PROOF_MS`] of it.
//!
//! One backend's own evidence comes too late to help it: by the time it has been boxed once, most
//! of what the hold saves is spent. The backends of one pool usually run the same limiter, so the
//! verdict is the pool's ([`PenaltyRule::of_pool`]): the windowed rule where more backends showed it
//! than showed the contrary. (The replay of the challenge at 30 ids/s, `tests/bandit_replay.rs`:
//! PERF.md has the figures with the pool's verdict, with each backend's own, and without the hold.)

use std::sync::atomic::{AtomicU64, Ordering};

/// The window a windowed penalty rule counts 429s in.
pub const PENALTY_WINDOW_MS: u64 = 1_000;
/// 429s within [`PENALTY_WINDOW_MS`], or in a row, that such a rule punishes most often.
pub const PENALTY_STRIKES: u64 = 3;
/// An attempt admitted this soon after a third 429 within a second shows that no box opened (a
/// box lasts a second or two).
pub const BOX_PROOF_MS: u64 = 2_000;

const WITHIN_A_WINDOW: u64 = 1;
const NOT_WITHIN_A_WINDOW: u64 = 2;

/// What one backend has shown of its penalty rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    pub within_a_window: bool,
    pub not_within_a_window: bool,
}

/// The rule a pool's limiters are judged to punish by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PenaltyRule {
    /// Nothing shown either way, or as much each way: no hold.
    #[default]
    Unknown,
    /// Three 429s within a second open the box: hold after two.
    WithinAWindow,
    /// 429s are counted otherwise (in a row): no hold.
    NotWithinAWindow,
}

impl PenaltyRule {
    /// The verdict of a pool whose backends showed `evidence`: the rule more of them showed.
    pub fn of_pool(evidence: impl IntoIterator<Item = Evidence>) -> PenaltyRule {
        let (mut within, mut not) = (0u32, 0u32);
        for e in evidence {
            within += u32::from(e.within_a_window);
            not += u32::from(e.not_within_a_window);
        }
        match within.cmp(&not) {
            std::cmp::Ordering::Greater => PenaltyRule::WithinAWindow,
            std::cmp::Ordering::Less => PenaltyRule::NotWithinAWindow,
            std::cmp::Ordering::Equal => PenaltyRule::Unknown,
        }
    }
}

/// One backend's latest 429s and what they showed.
#[derive(Debug, Default)]
pub struct Penalty {
    /// When the latest three 429s came, latest first (0: none).
    refused_ms: [AtomicU64; 3],
    /// [`WITHIN_A_WINDOW`] | [`NOT_WITHIN_A_WINDOW`], as shown.
    evidence: AtomicU64,
}

impl Penalty {
    /// A 429 at `now_ms` with the backend's `Retry-After`, after `in_a_row_before` 429s with no
    /// other answer between them.
    pub fn refused(&self, now_ms: u64, retry_after_s: Option<u32>, in_a_row_before: u64) {
        let [latest, second, third] = &self.refused_ms;
        third.store(second.load(Ordering::Relaxed), Ordering::Relaxed);
        second.store(latest.swap(now_ms, Ordering::Relaxed), Ordering::Relaxed);
        let boxed = retry_after_s.is_some_and(|s| s > 1);
        if boxed && in_a_row_before + 1 < PENALTY_STRIKES {
            self.show(WITHIN_A_WINDOW);
        }
    }

    /// The attempt sent at `sent_ms` was admitted.
    pub fn admitted(&self, sent_ms: u64) {
        let latest = self.refused_ms[0].load(Ordering::Relaxed);
        let third = self.refused_ms[2].load(Ordering::Relaxed);
        let three_in_a_window = third != 0 && latest < third + PENALTY_WINDOW_MS;
        if three_in_a_window && sent_ms > latest && sent_ms < latest + BOX_PROOF_MS {
            self.show(NOT_WITHIN_A_WINDOW);
        }
    }

    fn show(&self, kind: u64) {
        if self.evidence.load(Ordering::Relaxed) & kind == 0 {
            self.evidence.fetch_or(kind, Ordering::Relaxed);
        }
    }

    pub fn evidence(&self) -> Evidence {
        let e = self.evidence.load(Ordering::Relaxed);
        Evidence {
            within_a_window: e & WITHIN_A_WINDOW != 0,
            not_within_a_window: e & NOT_WITHIN_A_WINDOW != 0,
        }
    }

    /// Milliseconds until the earlier of the latest two 429s is [`PENALTY_WINDOW_MS`] old (0: it
    /// is, or there were not two): until then a third would make three within a window.
    pub fn hold_ms(&self, now_ms: u64) -> u64 {
        let second = self.refused_ms[1].load(Ordering::Relaxed);
        if second == 0 {
            return 0;
        }
        (second + PENALTY_WINDOW_MS).saturating_sub(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_after_two_429s_shows_a_windowed_rule_and_holds_a_third() {
        let p = Penalty::default();
        p.refused(1_000, Some(1), 0);
        assert_eq!(p.hold_ms(1_100), 0, "one 429 is no reason to hold");
        p.admitted(1_050);
        p.refused(1_400, Some(2), 0);
        assert_eq!(
            p.evidence(),
            Evidence {
                within_a_window: true,
                not_within_a_window: false
            },
            "boxed by the second 429 of a run of one: counted within a window"
        );
        assert_eq!(
            p.hold_ms(1_500),
            500,
            "until the first of the two is a second old"
        );
        assert_eq!(p.hold_ms(2_000), 0);
    }

    #[test]
    fn a_box_after_a_run_of_three_shows_nothing() {
        let p = Penalty::default();
        for (i, t) in [1_000, 1_100, 1_200].into_iter().enumerate() {
            p.refused(t, Some(if i == 2 { 2 } else { 1 }), i as u64);
        }
        assert_eq!(p.evidence(), Evidence::default());
    }

    #[test]
    fn an_admission_soon_after_three_429s_in_a_second_shows_no_windowed_rule() {
        let p = Penalty::default();
        for t in [1_000, 1_300, 1_600] {
            p.refused(t, Some(1), 0);
        }
        p.admitted(1_500);
        assert_eq!(p.evidence(), Evidence::default(), "sent before the third");
        p.admitted(1_700);
        assert!(p.evidence().not_within_a_window);
        // Three spread over more than a second show nothing.
        let q = Penalty::default();
        for t in [1_000, 1_600, 2_200] {
            q.refused(t, Some(1), 0);
        }
        q.admitted(2_300);
        assert_eq!(q.evidence(), Evidence::default());
    }

    #[test]
    fn the_pool_goes_by_what_more_backends_showed() {
        let within = Evidence {
            within_a_window: true,
            not_within_a_window: false,
        };
        let not = Evidence {
            within_a_window: false,
            not_within_a_window: true,
        };
        let none = Evidence::default();
        assert_eq!(PenaltyRule::of_pool([]), PenaltyRule::Unknown);
        assert_eq!(
            PenaltyRule::of_pool([none, within]),
            PenaltyRule::WithinAWindow
        );
        assert_eq!(PenaltyRule::of_pool([within, not]), PenaltyRule::Unknown);
        assert_eq!(
            PenaltyRule::of_pool([within, not, not]),
            PenaltyRule::NotWithinAWindow
        );
    }
}
