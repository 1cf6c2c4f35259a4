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
    (ms_of_us(us), us)
}

/// The [`now_ms`] reading taken with a [`now_us`] reading of `us`.
pub(crate) fn ms_of_us(us: u64) -> u64 {
    us.saturating_sub(1) / 1000 + 1
}

/// Year, month (1-12) and day (1-31) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, from "chrono-Compatible Low-Level Date Algorithms"), for dates in logs and
/// listings.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
