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
/// A probe (a first attempt beyond the learned limit) not refused within this long held: until
/// then later attempts do not count on the room it may have found.
pub const PROBE_VERDICT_MS: u64 = 300;

/// The learned limit and its probing schedule, packed in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limit {
    /// Attempts per [`WINDOW_MS`]; 0 = none learned (not paced).
    pub(super) per_window: u32,
    /// How long the window must stay full before the limit is raised by a probe.
    pub(super) probe_after_ms: u64,
    /// When the limit last changed (low 32 bits of the ms clock, wrapping).
    pub(super) changed_ms: u32,
    /// Whether that change was a probe (a raise).
    pub(super) probing: bool,
}

impl Limit {
    pub(super) const NONE: Limit = Limit {
        per_window: 0,
        probe_after_ms: PROBE_AFTER_MS,
        changed_ms: 0,
        probing: false,
    };

    /// per_window (15 bits) and the probing flag above it | probe_after in ms (16) | changed_ms (32).
    pub(super) fn pack(self) -> u64 {
        let head = u64::from(self.per_window.min(0x7fff)) | if self.probing { 0x8000 } else { 0 };
        (head << 48) | (self.probe_after_ms.min(0xffff) << 32) | u64::from(self.changed_ms)
    }

    pub(super) fn unpack(v: u64) -> Limit {
        let head = v >> 48;
        Limit {
            per_window: (head & 0x7fff) as u32,
            probe_after_ms: (v >> 32) & 0xffff,
            changed_ms: v as u32,
            probing: head & 0x8000 != 0,
        }
    }

    pub(super) fn since_change_ms(self, now_ms: u64) -> u64 {
        u64::from((now_ms as u32).wrapping_sub(self.changed_ms))
    }

    /// A probe raised the limit and has not been refused, but not for long enough to trust it.
    pub(super) fn unconfirmed(self, now_ms: u64) -> bool {
        self.probing && self.since_change_ms(now_ms) < PROBE_VERDICT_MS
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
}
