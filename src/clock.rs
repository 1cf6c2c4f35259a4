//! One monotonic millisecond clock for the whole process, so that times taken on the control thread
//! (when a backend became eligible) and on workers (now) compare directly.

use std::sync::OnceLock;
use std::time::Instant;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Milliseconds since the process first asked; never 0, so 0 can mean "never" in deadlines.
pub(crate) fn now_ms() -> u64 {
    origin().elapsed().as_millis() as u64 + 1
}

/// Microseconds since the process first asked, for latencies.
pub(crate) fn now_us() -> u64 {
    origin().elapsed().as_micros() as u64 + 1
}

/// Both clocks from one reading: `(ms, us)`, consistent with [`now_ms`] and [`now_us`].
pub(crate) fn now() -> (u64, u64) {
    let us = now_us();
    ((us - 1) / 1000 + 1, us)
}
