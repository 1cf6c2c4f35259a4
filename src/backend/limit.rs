//! The rate limit learned of one backend and its probing schedule, packed in one atomic word
//! ([`crate::backend::learn`] keeps it): how many attempts a window takes, when that last changed,
//! and whether the change was a probe still waiting for its verdict.

use super::send_log::SEND_LOG;

/// The window a rate limit counts requests in.
pub const WINDOW_MS: u64 = 1_000;
/// A send leaves our window this much later than the backend's: our clock is read once per event
/// loop turn and may lag the moment the request arrives, and a 429 costs more than the capacity.
pub const WINDOW_GUARD_MS: u64 = 20;
/// The probing interval to start with.
pub const PROBE_AFTER_MS: u64 = 2_000;
/// The probing interval after a refused probe: such a refusal costs one attempt, while a limit
/// that went up and is not found costs its whole rise every second. At most one refusal a second
/// for a saturated backend whose limit holds. (Doubling it after each refusal, up to 4 s or 60 s,
/// made the replay at 30 ids/s accept 0.91 and 0.88 instead of 0.96 of the oracle in
/// configuration 3, whose limits drift, for 0.001 more in configuration 2, whose limits hold.)
pub const REFUSED_PROBE_AFTER_MS: u64 = 1_000;
/// The probing interval while a limit climbs (a probe followed one that held, or one whose
/// answer never came): the next probe may go as soon as the last was admitted and the window is
/// full again, so a limit that rose is climbed one verified step per round trip.
pub const HELD_PROBE_AFTER_MS: u64 = 0;
/// A probe whose answer has not come within this long (a timeout, a closed connection) is
/// taken to have held: until then later attempts do not count on the room it may have found.
pub const PROBE_VERDICT_MS: u64 = 300;
/// Largest limit learned.
pub const MAX_LIMIT: u32 = 30_000;
/// A 429 lowers the learned limit to what the backend admitted of ours in the last window, but
/// to no less than this share of it at once: a 429 that comes after a quiet spell (a backoff, a
/// `Retry-After`, a server refusing everything for a moment) would otherwise bring a limit of
/// ten down to one, to be probed back up one by one. A real drop is followed by the next 429.
pub const MIN_DROP_SHARE: f64 = 0.5;

/// Where the latest change of the limit stands, if it was a probe (a raise by one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// The limit was learned from a 429 (or set): no probe since.
    None,
    /// Raised by a probe whose answer has not come yet.
    Pending,
    /// Raised by a probe the backend admitted.
    Held,
}

/// The learned limit and its probing schedule, packed in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limit {
    /// Attempts per [`WINDOW_MS`]; 0 = none learned (not paced).
    pub(super) per_window: u32,
    /// How long the window must stay full before the limit is raised by a probe.
    pub(super) probe_after_ms: u64,
    /// When the limit last changed (low 32 bits of the ms clock, wrapping).
    pub(super) changed_ms: u32,
    /// Whether that change was a probe, and its verdict.
    pub(super) probe: Probe,
}

impl Limit {
    pub(super) const NONE: Limit = Limit {
        per_window: 0,
        probe_after_ms: PROBE_AFTER_MS,
        changed_ms: 0,
        probe: Probe::None,
    };

    /// per_window (15 bits) | probe (2 bits) | probe_after in ms (15) | changed_ms (32).
    pub(super) fn pack(self) -> u64 {
        let probe = match self.probe {
            Probe::None => 0,
            Probe::Pending => 1,
            Probe::Held => 2,
        };
        (u64::from(self.per_window.min(0x7fff)) << 49)
            | (probe << 47)
            | (self.probe_after_ms.min(0x7fff) << 32)
            | u64::from(self.changed_ms)
    }

    pub(super) fn unpack(v: u64) -> Limit {
        Limit {
            per_window: ((v >> 49) & 0x7fff) as u32,
            probe: match (v >> 47) & 3 {
                1 => Probe::Pending,
                2 => Probe::Held,
                _ => Probe::None,
            },
            probe_after_ms: (v >> 32) & 0x7fff,
            changed_ms: v as u32,
        }
    }

    pub(super) fn since_change_ms(self, now_ms: u64) -> u64 {
        u64::from((now_ms as u32).wrapping_sub(self.changed_ms))
    }

    /// A probe raised the limit and its answer has not come (for [`PROBE_VERDICT_MS`] at most).
    pub(super) fn unconfirmed(self, now_ms: u64) -> bool {
        self.probe == Probe::Pending && self.since_change_ms(now_ms) < PROBE_VERDICT_MS
    }

    /// The limit has held for the probing interval: a first attempt may try one beyond it.
    pub(super) fn probe_due(self, now_ms: u64) -> bool {
        self.per_window != 0
            && (self.per_window as usize) < SEND_LOG
            && !self.unconfirmed(now_ms)
            && self.since_change_ms(now_ms) >= self.probe_after_ms
    }

    /// The window our sends are counted in, and how many may be in it: the learned limit over
    /// [`WINDOW_MS`] (plus the guard), or, for a limit above [`SEND_LOG`], as many as the log holds
    /// over the part of the window they may take.
    pub(super) fn span(self) -> (u64, usize) {
        let k = (self.per_window as usize).min(SEND_LOG);
        let span = WINDOW_MS * k as u64 / u64::from(self.per_window.max(1));
        (span.max(1) + WINDOW_GUARD_MS, k)
    }

    /// A probe sent at `now_ms`: one more, pending until the backend answers it. The first probe
    /// after a 429 waits the probing interval, and so does the one after it (one probe that
    /// held may have met a slot that freed by chance); once a probe follows one that held (or one
    /// whose answer never came), the limit is climbing, and each next probe is due as soon as the
    /// last was admitted and the window is full again ([`HELD_PROBE_AFTER_MS`]). Each step is
    /// admitted once before later attempts count on it, and a limit that rose is followed as
    /// fast as the backend answers.
    /// (A quarter more every 500 ms at most, as before, took four seconds to follow a limit that
    /// stepped from 2 to 16; the next probe due at once after the first that held gave 0.002
    /// less of the oracle at 10 ids/s in the replay of the challenge. PERF.md has the figures.)
    pub(super) fn raised(self, now_ms: u64) -> Limit {
        Limit {
            per_window: (self.per_window + 1).min(MAX_LIMIT),
            probe_after_ms: if self.probe == Probe::None {
                self.probe_after_ms
            } else {
                HELD_PROBE_AFTER_MS
            },
            changed_ms: now_ms as u32,
            probe: Probe::Pending,
        }
    }

    /// The attempt sent at `sent_ms` was admitted: if it was the pending probe, the probe held,
    /// and later attempts may count on its room.
    pub(super) fn admitted(self, sent_ms: u64) -> Option<Limit> {
        (self.probe == Probe::Pending && self.changed_ms == sent_ms as u32).then_some(Limit {
            probe: Probe::Held,
            ..self
        })
    }

    /// The limit set to `per_window` at `now_ms` as if learned then (unchanged if it already
    /// is): for replays that measure what knowing a backend's true limit is worth.
    pub(super) fn assumed(self, per_window: u32, now_ms: u64) -> Limit {
        if self.per_window == per_window {
            return self;
        }
        Limit {
            per_window,
            changed_ms: now_ms as u32,
            probe: Probe::None,
            ..self
        }
    }

    /// A 429 at `now_ms` after the backend admitted `admitted` of ours in its window: the limit
    /// falls to that (by [`MIN_DROP_SHARE`] at most at once). The next probe waits
    /// [`REFUSED_PROBE_AFTER_MS`] after a refused probe (a 429 within two windows of a raise),
    /// and at least that long after any other 429: a limit just found lower is not probed at
    /// once after a climb.
    pub(super) fn refused(self, admitted: u32, now_ms: u64) -> Limit {
        let failed_probe =
            self.probe != Probe::None && self.since_change_ms(now_ms) < 2 * WINDOW_MS;
        let per_window = if self.per_window == 0 {
            admitted
        } else {
            let floor = (f64::from(self.per_window) * MIN_DROP_SHARE) as u32;
            self.per_window.min(admitted.max(floor)).max(1)
        };
        Limit {
            per_window,
            probe_after_ms: if failed_probe {
                REFUSED_PROBE_AFTER_MS
            } else {
                self.probe_after_ms.max(REFUSED_PROBE_AFTER_MS)
            },
            changed_ms: now_ms as u32,
            probe: Probe::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_survives_its_packing() {
        for probe in [Probe::None, Probe::Pending, Probe::Held] {
            let limit = Limit {
                per_window: MAX_LIMIT,
                probe_after_ms: PROBE_AFTER_MS,
                changed_ms: u32::MAX,
                probe,
            };
            assert_eq!(Limit::unpack(limit.pack()), limit);
        }
    }

    #[test]
    fn only_the_probe_itself_decides_its_verdict() {
        let learned = Limit {
            per_window: 4,
            ..Limit::NONE
        };
        let probe = learned.raised(5_000);
        assert_eq!((probe.per_window, probe.probe), (5, Probe::Pending));
        assert!(probe.unconfirmed(5_010));
        assert_eq!(probe.admitted(4_999), None, "an attempt sent before it");
        let held = probe.admitted(5_000).expect("the probe was admitted");
        assert!(!held.unconfirmed(5_010));
        // No answer at all: taken to have held after the verdict's timeout.
        assert!(!probe.unconfirmed(5_000 + PROBE_VERDICT_MS));
    }
}
