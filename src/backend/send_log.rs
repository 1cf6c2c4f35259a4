//! sluice's mirror of a rate-limited backend's window: when our latest attempts reached the
//! backend, and of which class (first attempt, second, last chance). [`crate::backend::learn`]
//! counts it to pace attempts under a learned limit and to read a limit off a 429. One ring of
//! atomic words per backend, written by every worker without a lock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Send times remembered per backend. A limit above this many per window is enforced over a
/// proportionally shorter window (the same rate, with bursts of at most this many).
pub const SEND_LOG: usize = 64;
/// How much later than it was picked a send may be counted as taken by the backend
/// ([`SendLog::admitted`]): covers a stalled backend or event loop, bounded so that a backend
/// whose answers are merely slow costs at most this share of a second of its limit.
pub const MAX_RESTAMP_MS: u64 = 100;
/// The low quantile of round trips ([`SendLog::admitted`]) rises by 1/this of the gap to a
/// slower round trip, and falls at once to a faster one.
pub const RTT_RISE_DIVISOR: u64 = 64;

/// An entry: (ms + 1) shifted left twice, with the attempt class in the low bits; 0 for none.
fn pack(at_ms: u64, class: usize) -> u64 {
    ((at_ms + 1) << 2) | class as u64
}

/// (time in ms, class) of a non-zero entry.
fn unpack(v: u64) -> (u64, usize) {
    ((v >> 2) - 1, (v & 3) as usize)
}

/// The fast round trip word (ms + 1, 0 for none) after a round trip of `rtt_ms`: down to it at
/// once, up towards it by 1/[`RTT_RISE_DIVISOR`] of the gap.
fn next_fast_rtt(v: u64, rtt_ms: u64) -> u64 {
    let known = v.saturating_sub(1);
    if v == 0 || rtt_ms < known {
        rtt_ms + 1
    } else {
        v + (rtt_ms - known) / RTT_RISE_DIVISOR
    }
}

/// Our latest sends to one backend.
#[derive(Debug)]
pub struct SendLog {
    /// A ring of [`pack`]ed entries (0 for none, or withdrawn after a 429).
    sends: [AtomicU64; SEND_LOG],
    next: AtomicUsize,
    /// A low quantile of the round trip of admitted attempts, ms + 1 (0: none yet).
    fast_rtt_ms: AtomicU64,
}

impl Default for SendLog {
    fn default() -> Self {
        SendLog {
            sends: std::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicUsize::new(0),
            fast_rtt_ms: AtomicU64::new(0),
        }
    }
}

impl SendLog {
    /// Records an attempt of `class` sent at `now_ms`, over the oldest entry.
    pub fn record(&self, now_ms: u64, class: usize) {
        let i = self.next.fetch_add(1, Ordering::AcqRel) % SEND_LOG;
        self.sends[i].store(pack(now_ms, class), Ordering::Release);
    }

    /// How many sends were recorded so far: read before deciding on a send, and given back to
    /// [`SendLog::record_after`].
    pub fn seq(&self) -> usize {
        self.next.load(Ordering::Acquire)
    }

    /// [`SendLog::record`], unless another send was recorded since [`SendLog::seq`] gave `seq`:
    /// then the decision it was based on is stale, and nothing is recorded.
    pub fn record_after(&self, seq: usize, now_ms: u64, class: usize) -> bool {
        if self
            .next
            .compare_exchange(seq, seq + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.sends[seq % SEND_LOG].store(pack(now_ms, class), Ordering::Release);
        true
    }

    /// The attempt picked at `sent_ms` was admitted (answered other than 429) at `now_ms`. The
    /// backend counted it in its window when the request reached it, which may be well after the
    /// pick: a stalled backend (a pause, a busy machine) takes what queued up at once, and its
    /// window then holds those sends longer than ours did. So the send is moved to the answer's
    /// time less the backend's fast round trip (a low quantile of round trips,
    /// [`RTT_RISE_DIVISOR`]), by at most [`MAX_RESTAMP_MS`]: a prompt answer leaves it where it
    /// was, a delayed one moves it to about when the backend took it. (The replay of the
    /// challenge at 30 ids/s with servers stalling 60 ms every 370 ms: 0.91 / 0.93 / 0.94 of the
    /// oracle in configurations 2–4 with send times as picked, 1.01 / 0.97 / 0.98 moved; PERF.md
    /// has the runs.)
    pub fn admitted(&self, sent_ms: u64, now_ms: u64) {
        let rtt_ms = now_ms.saturating_sub(sent_ms);
        let before = self
            .fast_rtt_ms
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                Some(next_fast_rtt(v, rtt_ms))
            })
            .unwrap_or_else(|v| v);
        let fast_rtt_ms = next_fast_rtt(before, rtt_ms) - 1;
        let taken_ms = now_ms
            .saturating_sub(fast_rtt_ms)
            .clamp(sent_ms, sent_ms + MAX_RESTAMP_MS);
        if taken_ms == sent_ms {
            return;
        }
        for cell in &self.sends {
            let v = cell.load(Ordering::Relaxed);
            if v == 0 || unpack(v).0 != sent_ms {
                continue;
            }
            let moved = pack(taken_ms, unpack(v).1);
            if cell
                .compare_exchange(v, moved, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// A low quantile of the round trip of admitted attempts, if any was admitted yet.
    pub fn fast_rtt_ms(&self) -> Option<u64> {
        self.fast_rtt_ms.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Takes the most recent send out of the log: the attempt a 429 just refused (at one answer
    /// per attempt and 429s answered at once, it is the latest one sent to this backend).
    pub fn withdraw_latest(&self, now_ms: u64) {
        loop {
            let latest = self
                .sends
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.load(Ordering::Relaxed)))
                .filter(|&(_, v)| v != 0 && unpack(v).0 <= now_ms)
                .max_by_key(|&(_, v)| unpack(v).0);
            let Some((i, v)) = latest else { return };
            if self.sends[i]
                .compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Our sends within the last `span_ms` (and any stamped later by a worker whose clock ran
    /// ahead) of class `max_class` or lower, into `out`; returns how many.
    pub fn within(
        &self,
        now_ms: u64,
        span_ms: u64,
        max_class: usize,
        out: &mut [u64; SEND_LOG],
    ) -> usize {
        let mut n = 0;
        for s in &self.sends {
            let v = s.load(Ordering::Relaxed);
            if v == 0 {
                continue;
            }
            let (t, class) = unpack(v);
            if t + span_ms > now_ms && class <= max_class {
                out[n] = t;
                n += 1;
            }
        }
        n
    }

    /// How many of our sends of class `max_class` or lower are within the last `span_ms`.
    pub fn count(&self, now_ms: u64, span_ms: u64, max_class: usize) -> usize {
        let mut times = [0u64; SEND_LOG];
        self.within(now_ms, span_ms, max_class, &mut times)
    }

    /// How long until fewer than `k` of our sends of class `max_class` or lower are in the last
    /// `span_ms` (0: now).
    pub fn wait_ms(&self, now_ms: u64, span_ms: u64, k: usize, max_class: usize) -> u64 {
        let mut times = [0u64; SEND_LOG];
        let n = self.within(now_ms, span_ms, max_class, &mut times);
        if n < k {
            return 0;
        }
        // The window holds n ≥ k: the (n − k + 1)-th oldest must leave it first.
        let times = &mut times[..n];
        times.sort_unstable();
        (times[n - k] + span_ms).saturating_sub(now_ms).max(1)
    }
}
