//! A coarse timer wheel for per-connection deadlines.
//!
//! Every connection has at most one deadline (idle, head, connect or response timeout), and deadlines
//! move on almost every read or write. Moving a deadline only stores a number in the connection; the
//! wheel holds one entry per connection, and when the entry fires the owner compares it with the
//! connection's current deadline and either times out or re-arms. That keeps the per-event cost at one
//! store and makes a million armed connections cost 16 bytes each. This is the lazy re-insertion scheme
//! of Varghese and Lauck, "Hashed and Hierarchical Timing Wheels" (SOSP 1987), scheme 4, with deadlines
//! beyond the wheel's span parked in its last slot and re-armed when they come round.
//!
//! A wait that must end on time (a request paced for a backend's rate limit, where a send a tick
//! late leaves part of the backend's window unused) goes instead into a short heap of precise
//! entries that fire on their millisecond ([`Deadline::set_precise`]); only such waits pay its
//! O(log n).
//!
//! An entry names its owner by the owner's mio token (a client's slab key, or a backend connection's
//! key with the backend bit), so the loop routes a fired entry exactly as it routes an event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use mio::Token;

/// Default slot count; with the default tick ([`crate::config::DEFAULT_TICK_MS`]) the wheel spans
/// about 41 s.
pub(super) const DEFAULT_SLOTS: usize = 4096;

/// One scheduled wake-up: `token` is the owner, `fire_ms` identifies this entry (an owner that re-armed
/// since holds another value and ignores the stale entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TimerEntry {
    pub(super) token: Token,
    pub(super) fire_ms: u64,
}

pub(super) struct TimerWheel {
    slots: Vec<Vec<TimerEntry>>,
    tick_ms: u64,
    /// The first tick whose slot has not been expired yet.
    next_tick: u64,
    len: usize,
    /// Precise entries, soonest first: (fire_ms, token).
    precise: BinaryHeap<Reverse<(u64, Token)>>,
}

impl TimerWheel {
    pub(super) fn new(tick_ms: u64, slots: usize) -> TimerWheel {
        TimerWheel {
            slots: (0..slots.max(2)).map(|_| Vec::new()).collect(),
            tick_ms: tick_ms.max(1),
            next_tick: 0,
            len: 0,
            precise: BinaryHeap::new(),
        }
    }

    /// Schedules a wake-up for `token` at or after `at_ms`; returns the time the entry will fire, which
    /// is earlier than `at_ms` when the deadline lies beyond the wheel's span.
    pub(super) fn schedule(&mut self, at_ms: u64, token: Token) -> u64 {
        let n = self.slots.len() as u64;
        let tick = at_ms
            .div_ceil(self.tick_ms)
            .clamp(self.next_tick, self.next_tick + n - 1);
        let fire_ms = (tick * self.tick_ms).max(1);
        self.slots[(tick % n) as usize].push(TimerEntry { token, fire_ms });
        self.len += 1;
        fire_ms
    }

    /// Schedules a wake-up for `token` at exactly `at_ms` (not a tick later); returns `at_ms`.
    pub(super) fn schedule_precise(&mut self, at_ms: u64, token: Token) -> u64 {
        let fire_ms = at_ms.max(1);
        self.precise.push(Reverse((fire_ms, token)));
        fire_ms
    }

    /// Moves every entry due at `now_ms` into `out`.
    pub(super) fn expire(&mut self, now_ms: u64, out: &mut Vec<TimerEntry>) {
        while let Some(&Reverse((fire_ms, token))) = self.precise.peek() {
            if fire_ms > now_ms {
                break;
            }
            self.precise.pop();
            out.push(TimerEntry { token, fire_ms });
        }
        let now_tick = now_ms / self.tick_ms;
        if self.len == 0 {
            self.next_tick = self.next_tick.max(now_tick + 1);
            return;
        }
        let n = self.slots.len() as u64;
        // After a long pause every slot is due once; no need to go round more than once.
        let first = self.next_tick.max((now_tick + 1).saturating_sub(n));
        for tick in first..=now_tick {
            let slot = &mut self.slots[(tick % n) as usize];
            self.len -= slot.len();
            out.append(slot);
        }
        self.next_tick = self.next_tick.max(now_tick + 1);
    }

    /// How long the event loop may sleep before the next tick that can hold an entry.
    pub(super) fn poll_timeout_ms(&self, now_ms: u64) -> Option<u64> {
        let precise = self
            .precise
            .peek()
            .map(|&Reverse((fire_ms, _))| fire_ms.saturating_sub(now_ms));
        if self.len == 0 {
            return precise;
        }
        let wheel = (self.next_tick * self.tick_ms).saturating_sub(now_ms);
        Some(precise.map_or(wheel, |p| p.min(wheel)))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Gives back the memory of slots that grew during a crowd and are nearly empty now.
    pub(super) fn shrink(&mut self) {
        for slot in &mut self.slots {
            if slot.capacity() > 4 * slot.len() + 16 {
                slot.shrink_to(slot.len() * 2);
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0 && self.precise.is_empty()
    }
}

/// A connection's side of the scheme: its current deadline and the wheel entry armed for it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Deadline {
    /// When the owner times out, in ms of the worker clock; 0 = never.
    at_ms: u64,
    /// Fire time of the owner's live wheel entry; 0 = none.
    armed_ms: u64,
}

impl Deadline {
    /// Sets the deadline, adding a wheel entry only when none would fire in time.
    pub(super) fn set(&mut self, at_ms: u64, token: Token, wheel: &mut TimerWheel) {
        self.at_ms = at_ms;
        if at_ms != 0 && (self.armed_ms == 0 || at_ms < self.armed_ms) {
            self.armed_ms = wheel.schedule(at_ms, token);
        }
    }

    /// Sets a deadline that fires on its millisecond rather than at the end of its tick
    /// ([`TimerWheel::schedule_precise`]); an entry armed earlier goes stale.
    pub(super) fn set_precise(&mut self, at_ms: u64, token: Token, wheel: &mut TimerWheel) {
        self.at_ms = at_ms;
        if at_ms != 0 && self.armed_ms != at_ms {
            self.armed_ms = wheel.schedule_precise(at_ms, token);
        }
    }

    pub(super) fn clear(&mut self) {
        self.at_ms = 0;
    }

    /// Handles a fired entry: returns true when the owner has timed out. Stale entries return false.
    pub(super) fn fire(&mut self, entry: TimerEntry, now_ms: u64, wheel: &mut TimerWheel) -> bool {
        if entry.fire_ms != self.armed_ms {
            return false;
        }
        self.armed_ms = 0;
        if self.at_ms == 0 {
            return false;
        }
        if self.at_ms <= now_ms {
            self.at_ms = 0;
            return true;
        }
        self.armed_ms = wheel.schedule(self.at_ms, entry.token);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Token = Token(1);

    fn fire_all(w: &mut TimerWheel, d: &mut Deadline, now_ms: u64) -> bool {
        let mut out = Vec::new();
        w.expire(now_ms, &mut out);
        let mut timed_out = false;
        for e in out {
            timed_out |= d.fire(e, now_ms, w);
        }
        timed_out
    }

    #[test]
    fn deadline_fires_not_before_it_is_due() {
        let mut w = TimerWheel::new(10, 8);
        let mut d = Deadline::default();
        d.set(25, T, &mut w);
        assert!(!fire_all(&mut w, &mut d, 24));
        assert!(fire_all(&mut w, &mut d, 30));
        assert!(w.is_empty());
    }

    #[test]
    fn moving_a_deadline_later_adds_no_entry_and_rearms_on_fire() {
        let mut w = TimerWheel::new(10, 8);
        let mut d = Deadline::default();
        d.set(20, T, &mut w);
        d.set(50, T, &mut w);
        assert_eq!(w.len(), 1);
        assert!(!fire_all(&mut w, &mut d, 20), "fires at 20, re-arms for 50");
        assert_eq!(w.len(), 1);
        assert!(fire_all(&mut w, &mut d, 50));
    }

    #[test]
    fn moving_a_deadline_earlier_arms_a_new_entry_and_the_old_one_goes_stale() {
        let mut w = TimerWheel::new(10, 8);
        let mut d = Deadline::default();
        d.set(60, T, &mut w);
        d.set(10, T, &mut w);
        assert_eq!(w.len(), 2);
        assert!(fire_all(&mut w, &mut d, 10));
        d.clear();
        assert!(!fire_all(&mut w, &mut d, 70), "the entry for 60 is stale");
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_the_span_are_parked_and_rearmed() {
        let mut w = TimerWheel::new(10, 4);
        let mut d = Deadline::default();
        d.set(1000, T, &mut w);
        let mut now = 0;
        let mut fired_at = None;
        while now <= 1100 {
            if fire_all(&mut w, &mut d, now) {
                fired_at = Some(now);
                break;
            }
            now += 10;
        }
        assert_eq!(fired_at, Some(1000));
    }

    #[test]
    fn a_long_pause_expires_everything_due_once() {
        let mut w = TimerWheel::new(10, 4);
        for t in 0..4 {
            w.schedule(10 * (t + 1), Token(t as usize));
        }
        let mut out = Vec::new();
        w.expire(10_000, &mut out);
        assert_eq!(out.len(), 4);
        assert!(w.is_empty());
        assert_eq!(w.poll_timeout_ms(10_000), None);
    }

    #[test]
    fn shrink_returns_slot_memory_after_a_crowd() {
        let mut w = TimerWheel::new(10, 4);
        for t in 0..10_000 {
            w.schedule(10, Token(t));
        }
        let mut out = Vec::new();
        w.expire(100, &mut out);
        assert!(w.slots.iter().map(Vec::capacity).sum::<usize>() >= 10_000);
        w.shrink();
        assert!(w.slots.iter().map(Vec::capacity).sum::<usize>() < 100);
    }

    #[test]
    fn a_precise_deadline_fires_on_its_millisecond_not_at_the_tick() {
        let mut w = TimerWheel::new(10, 8);
        let mut d = Deadline::default();
        d.set(40, T, &mut w);
        d.set_precise(13, T, &mut w);
        assert!(!fire_all(&mut w, &mut d, 11));
        assert_eq!(
            w.poll_timeout_ms(11),
            Some(2),
            "the loop wakes at 13, not at 20"
        );
        assert!(!fire_all(&mut w, &mut d, 12));
        assert!(fire_all(&mut w, &mut d, 13));
        assert!(!fire_all(&mut w, &mut d, 40), "the coarse entry went stale");
        assert!(w.is_empty());
    }

    #[test]
    fn a_precise_deadline_later_than_an_armed_entry_still_fires_on_time() {
        let mut w = TimerWheel::new(10, 8);
        let mut d = Deadline::default();
        d.set(5, T, &mut w);
        d.set_precise(17, T, &mut w);
        assert!(!fire_all(&mut w, &mut d, 10), "the entry for 10 is stale");
        assert!(!fire_all(&mut w, &mut d, 16));
        assert!(fire_all(&mut w, &mut d, 17));
        assert_eq!(w.poll_timeout_ms(17), None);
    }

    #[test]
    fn cleared_deadline_never_fires() {
        let mut w = TimerWheel::new(10, 8);
        let mut d = Deadline::default();
        d.set(20, T, &mut w);
        d.clear();
        assert!(!fire_all(&mut w, &mut d, 100));
    }
}
