//! A precise wake-up for event loops.
//!
//! mio's poll timeout has millisecond granularity, rounded up: an open-loop generator at
//! 2,000 req/s per thread would send each request ~0.5 ms late on average, an error as large as
//! the latencies it measures (and charged to the server, since latency runs from the scheduled
//! time). On Linux a `timerfd` registered with the poll wakes the loop with nanosecond
//! precision; elsewhere this is a no-op and the poll timeout alone applies.

use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

/// Fires a readable event on its token at the armed instant.
pub struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    armed: Option<Instant>,
}

#[cfg(target_os = "linux")]
impl PreciseTimer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain syscall; the fd is owned right after.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )?;
        Ok(PreciseTimer { fd, armed: None })
    }

    /// Arms the timer for `at`, replacing the previous arming (a no-op when unchanged).
    pub fn arm(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        self.set(at)?;
        self.armed = Some(at);
        Ok(())
    }

    fn set(&mut self, at: Instant) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // Relative to now on the same monotonic clock Instant uses; zero would disarm.
        let left = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: timespec(Duration::ZERO),
            it_value: timespec(left),
        };
        // SAFETY: valid fd and a fully initialised itimerspec.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Acknowledges a fired timer; call on its event.
    pub fn clear(&mut self) {
        use std::os::fd::AsRawFd;
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer; EAGAIN is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        self.armed = None;
    }
}

#[cfg(target_os = "linux")]
fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

#[cfg(not(target_os = "linux"))]
impl PreciseTimer {
    pub fn new(_registry: &Registry, _token: Token) -> io::Result<Self> {
        Ok(PreciseTimer { armed: None })
    }

    pub fn arm(&mut self, at: Instant) -> io::Result<()> {
        self.armed = Some(at);
        Ok(())
    }

    pub fn clear(&mut self) {
        self.armed = None;
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_armed_timer_wakes_the_poll() {
        let mut poll = mio::Poll::new().unwrap();
        let mut timer = PreciseTimer::new(poll.registry(), Token(7)).unwrap();
        timer
            .arm(Instant::now() + Duration::from_micros(200))
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        // Generous bound: only checks that the event arrives, not when.
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(events.iter().next().map(|e| e.token()), Some(Token(7)));
        timer.clear();
    }
}
