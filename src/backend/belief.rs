//! What sluice shows people of what it learned about a backend: the snapshot the admin API, the
//! dashboard and `sluice ctl status` read ([`crate::backend::learn::Learned::belief`]), as plain
//! data, apart from the learning in [`crate::backend::learn`].

/// Whether attempts to a backend are held back now, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// No 429 yet: nothing is paced.
    Unlimited,
    /// Under its learned limit, with room in the window now.
    Room,
    /// No room now for a request's last chance: its learned limit's window is full, an attempt
    /// sent alone into the window's top awaits its answer, or the top awaits a first attempt.
    Full,
    /// A probe raised the learned limit and has not been refused yet.
    Probing,
    /// Left alone for a while: a `Retry-After`, a burst of 429s, or no answer.
    BackingOff,
}

/// A snapshot of what is learned of one backend ([`crate::backend::learn::Learned::belief`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Belief {
    /// Posterior mean of the success probability of an attempt (429s aside).
    pub success_estimate: f64,
    /// Attempts behind the estimate, decayed with [`crate::backend::learn::SUCCESS_HALF_LIFE_MS`].
    pub evidence: f64,
    /// The learned limit per window; `None` before the first 429.
    pub limit_per_window: Option<u32>,
    pub window_ms: u64,
    pub pacing: Pacing,
    /// Left of a backoff (0 unless [`Pacing::BackingOff`]).
    pub backoff_ms: u64,
    /// 429s in a row with no other answer between them.
    pub refused_in_a_row: u64,
}
