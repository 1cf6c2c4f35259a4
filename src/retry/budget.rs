//! The attempt budget per request id (at most three delivery attempts per id, the flaky-servers
//! challenge's rule), kept only when `--request-id` says where ids come from: whatever a client
//! does — re-send an id on a new connection, send it twice at once — sluice makes at most
//! `--max-attempts` delivery attempts for it in total, and answers an id that was already accepted
//! with 200 without trying again. An id is scoped by the request's method, host and path: the
//! same id sent to another path is another id ([`scope_hash`], [`scoped_id_hash`]).
//!
//! The ids live in one fixed table shared by all workers, updated only with compare-and-swap on
//! packed 64-bit entries, so no worker ever waits for another and the cap holds across workers
//! (the issue allowed per-worker state; a shared table also covers a re-send that lands on another
//! worker). Memory is bounded: `--id-memory` entries of 8 bytes. An entry is forgotten
//! `--id-window` after its last attempt, or earlier if [`PROBE`] newer ids collide into its
//! neighbourhood of the table (then its budget starts over; with the default sizes that takes about
//! a million live ids).
//!
//! Entry layout: fingerprint (36 bits) | attempts (3) | accepted (1) | last touch in seconds (24).

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots examined per lookup.
pub(crate) const PROBE: usize = 8;
pub(crate) const DEFAULT_ENTRIES: usize = 1 << 20;
pub(crate) const DEFAULT_WINDOW_S: u32 = 600;

const EPOCH_BITS: u32 = 24;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const ACCEPTED_BIT: u64 = 1 << EPOCH_BITS;
const ATTEMPTS_SHIFT: u32 = EPOCH_BITS + 1;
const ATTEMPTS_MASK: u64 = 0b111;
const FINGERPRINT_SHIFT: u32 = ATTEMPTS_SHIFT + 3;

/// The answer to "may I make another attempt for this id?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// Yes: this is attempt number `n` (1-based).
    Granted(u8),
    /// No: all attempts are spent.
    Exhausted,
    /// No need: a backend already accepted it.
    Accepted,
}

pub(crate) struct IdBudget {
    slots: Box<[AtomicU64]>,
    window_s: u32,
}

/// A fixed 64-bit hash of an id (FNV-1a, then the SplitMix64 finaliser for the low bits); the
/// budget is keyed by it, so an exchange keeps 8 bytes instead of the id.
pub(crate) fn id_hash(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn fingerprint(e: u64) -> u64 {
    e >> FINGERPRINT_SHIFT
}

fn attempts(e: u64) -> u8 {
    ((e >> ATTEMPTS_SHIFT) & ATTEMPTS_MASK) as u8
}

fn epoch(e: u64) -> u32 {
    (e & EPOCH_MASK) as u32
}

fn pack(fp: u64, attempts: u8, accepted: bool, now_s: u32) -> u64 {
    (fp << FINGERPRINT_SHIFT)
        | (u64::from(attempts) << ATTEMPTS_SHIFT)
        | if accepted { ACCEPTED_BIT } else { 0 }
        | (u64::from(now_s) & EPOCH_MASK)
}

impl IdBudget {
    /// A table of about `entries` slots (rounded up to a power of two) forgetting ids `window_s`
    /// after their last attempt.
    pub(crate) fn new(entries: usize, window_s: u32) -> IdBudget {
        let n = entries.max(PROBE).next_power_of_two();
        IdBudget {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            window_s: window_s.max(1),
        }
    }

    fn live(&self, e: u64, now_s: u32) -> bool {
        e != 0 && (now_s.wrapping_sub(epoch(e)) & EPOCH_MASK as u32) <= self.window_s
    }

    /// Where `id` lives (or would), and its fingerprint (never 0, so an entry is never 0).
    fn locate(&self, h: u64) -> (usize, u64) {
        let start = (h as usize) & (self.slots.len() - 1);
        let fp = (h >> 28) | 1;
        (start, fp & ((1 << (64 - FINGERPRINT_SHIFT)) - 1))
    }

    /// Finds the live entry for `fp`, or the slot a new entry should take: the first dead slot, or
    /// failing that the least recently touched. Returns (slot, current value, found).
    fn find(&self, start: usize, fp: u64, now_s: u32) -> (usize, u64, bool) {
        let mask = self.slots.len() - 1;
        let mut victim: Option<(usize, u64)> = None;
        let mut oldest: (usize, u64, u32) = (start, 0, 0);
        for i in 0..PROBE {
            let slot = (start + i) & mask;
            let e = self.slots[slot].load(Ordering::Acquire);
            if self.live(e, now_s) {
                if fingerprint(e) == fp {
                    return (slot, e, true);
                }
                let age = now_s.wrapping_sub(epoch(e)) & EPOCH_MASK as u32;
                if age >= oldest.2 {
                    oldest = (slot, e, age);
                }
            } else if victim.is_none() {
                victim = Some((slot, e));
            }
        }
        let (slot, e) = victim.unwrap_or((oldest.0, oldest.1));
        (slot, e, false)
    }

    /// Takes one attempt for `id` if the budget of `max` allows it.
    pub(crate) fn reserve(&self, id: u64, max: u8, now_s: u32) -> Reserve {
        let (start, fp) = self.locate(id);
        let max = max.min(ATTEMPTS_MASK as u8);
        loop {
            let (slot, e, found) = self.find(start, fp, now_s);
            let next = if found {
                if e & ACCEPTED_BIT != 0 {
                    return Reserve::Accepted;
                }
                if attempts(e) >= max {
                    return Reserve::Exhausted;
                }
                pack(fp, attempts(e) + 1, false, now_s)
            } else {
                pack(fp, 1, false, now_s)
            };
            if self.slots[slot]
                .compare_exchange(e, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Reserve::Granted(attempts(next));
            }
            // Another worker changed the slot first: look again.
        }
    }

    /// Whether [`IdBudget::reserve`] would grant an attempt now (another worker may take it first).
    pub(crate) fn would_grant(&self, id: u64, max: u8, now_s: u32) -> bool {
        let (start, fp) = self.locate(id);
        match self.find(start, fp, now_s) {
            (_, e, true) => e & ACCEPTED_BIT == 0 && attempts(e) < max.min(ATTEMPTS_MASK as u8),
            _ => true,
        }
    }

    /// Gives back an attempt that never reached a backend (its connect failed).
    pub(crate) fn refund(&self, id: u64, now_s: u32) {
        let (start, fp) = self.locate(id);
        loop {
            let (slot, e, found) = self.find(start, fp, now_s);
            if !found || e & ACCEPTED_BIT != 0 || attempts(e) == 0 {
                return;
            }
            let next = pack(fp, attempts(e) - 1, false, now_s);
            if self.slots[slot]
                .compare_exchange(e, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Records that a backend accepted `id`.
    pub(crate) fn accept(&self, id: u64, now_s: u32) {
        let (start, fp) = self.locate(id);
        loop {
            let (slot, e, found) = self.find(start, fp, now_s);
            let attempts_so_far = if found { attempts(e) } else { 1 };
            let next = pack(fp, attempts_so_far, true, now_s);
            if self.slots[slot]
                .compare_exchange(e, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Attempts used for `id` so far.
    #[cfg(test)]
    pub(crate) fn attempts(&self, id: u64, now_s: u32) -> u8 {
        let (start, fp) = self.locate(id);
        match self.find(start, fp, now_s) {
            (_, e, true) => attempts(e),
            _ => 0,
        }
    }
}

/// Whether `body` is an id for `--request-id body-alnum24`: exactly 24 ASCII letters and digits
/// (the flaky-servers challenge's ids).
pub(crate) fn is_alnum24(body: &[u8]) -> bool {
    body.len() == 24 && body.iter().all(u8::is_ascii_alphanumeric)
}

/// The scope of a request's id: its method, host and path (without the query), hashed. Each part
/// is hashed on its own first, so that no two different triples run together into the same bytes.
pub(crate) fn scope_hash(method: &[u8], host: &[u8], path: &[u8]) -> u64 {
    [id_hash(method), id_hash(host), id_hash(path)]
        .iter()
        .fold(0, |acc, &h| id_hash(&(acc ^ h).to_le_bytes()))
}

/// The budget's key for `id` within `scope` ([`scope_hash`]).
pub(crate) fn scoped_id_hash(scope: u64, id: &[u8]) -> u64 {
    id_hash(id) ^ scope.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_id_gets_at_most_max_attempts() {
        let b = IdBudget::new(1024, 60);
        let id = b"abcdefghijklmnopqrstuvwx";
        assert_eq!(b.reserve(id_hash(id), 3, 1), Reserve::Granted(1));
        assert_eq!(b.reserve(id_hash(id), 3, 1), Reserve::Granted(2));
        assert_eq!(b.reserve(id_hash(id), 3, 2), Reserve::Granted(3));
        assert_eq!(b.reserve(id_hash(id), 3, 2), Reserve::Exhausted);
        assert_eq!(
            b.reserve(id_hash(b"another-id-xxxxxxxxxxxxx"), 3, 2),
            Reserve::Granted(1)
        );
    }

    #[test]
    fn an_accepted_id_is_not_tried_again() {
        let b = IdBudget::new(1024, 60);
        assert_eq!(b.reserve(id_hash(b"id"), 3, 1), Reserve::Granted(1));
        b.accept(id_hash(b"id"), 1);
        assert_eq!(b.reserve(id_hash(b"id"), 3, 1), Reserve::Accepted);
        assert_eq!(b.attempts(id_hash(b"id"), 1), 1);
    }

    #[test]
    fn refunds_give_back_undelivered_attempts() {
        let b = IdBudget::new(1024, 60);
        let id = id_hash(b"id");
        assert_eq!(b.reserve(id, 3, 1), Reserve::Granted(1));
        b.refund(id, 1);
        assert_eq!(b.attempts(id, 1), 0);
        assert!(b.would_grant(id, 3, 1));
        for _ in 0..3 {
            b.reserve(id, 3, 1);
        }
        assert!(!b.would_grant(id, 3, 1));
    }

    #[test]
    fn ids_are_forgotten_after_the_window() {
        let b = IdBudget::new(1024, 10);
        for _ in 0..3 {
            b.reserve(id_hash(b"id"), 3, 100);
        }
        assert_eq!(b.reserve(id_hash(b"id"), 3, 110), Reserve::Exhausted);
        assert_eq!(b.reserve(id_hash(b"id"), 3, 121), Reserve::Granted(1));
    }

    #[test]
    fn the_budget_holds_under_random_outcomes_and_resends() {
        // Property: whatever the sequence of attempts, re-sends and acceptances, no id ever gets
        // more than `max` grants, and none after it was accepted.
        let b = IdBudget::new(1 << 12, 600);
        let mut rng = crate::rng::Rng::with_seed(7);
        let ids: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("id{i:021}").into_bytes())
            .collect();
        let mut grants = vec![0u8; ids.len()];
        let mut accepted = vec![false; ids.len()];
        for step in 0..20_000u32 {
            let i = rng.below(ids.len() as u64) as usize;
            match b.reserve(id_hash(&ids[i]), 3, step / 100) {
                Reserve::Granted(n) => {
                    assert!(!accepted[i], "granted after acceptance");
                    grants[i] += 1;
                    assert_eq!(n, grants[i]);
                    if rng.below(4) == 0 {
                        b.accept(id_hash(&ids[i]), step / 100);
                        accepted[i] = true;
                    }
                }
                Reserve::Exhausted => assert_eq!(grants[i], 3),
                Reserve::Accepted => assert!(accepted[i]),
            }
        }
        assert!(grants.iter().all(|&g| g <= 3));
    }

    #[test]
    fn concurrent_resends_never_exceed_the_budget() {
        let b = Arc::new(IdBudget::new(1 << 10, 600));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..200u32)
                        .map(|i| {
                            let id = format!("shared-{:017}", i % 50);
                            matches!(b.reserve(id_hash(id.as_bytes()), 3, 1), Reserve::Granted(_))
                                as usize
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(
            granted,
            50 * 3,
            "exactly three attempts for each of the 50 ids"
        );
    }

    #[test]
    fn body_ids_are_exactly_24_alphanumerics() {
        assert!(is_alnum24(b"ABCDEFGHIJKLMNOPQRSTUVW1"));
        assert!(!is_alnum24(b"ABCDEFGHIJKLMNOPQRSTUVW!"));
        assert!(!is_alnum24(b"ABCDEFGHIJKLMNOPQRSTUVW12"));
    }

    #[test]
    fn an_id_in_another_method_host_or_path_is_another_id() {
        let id = b"ABCDEFGHIJKLMNOPQRSTUVW1";
        let key = |m: &[u8], h: &[u8], p: &[u8]| scoped_id_hash(scope_hash(m, h, p), id);
        let base = key(b"POST", b"a", b"/");
        assert_eq!(base, key(b"POST", b"a", b"/"));
        for other in [
            key(b"PUT", b"a", b"/"),
            key(b"POST", b"b", b"/"),
            key(b"POST", b"a", b"/x"),
            // The parts do not run together: "ab" + "" is not "a" + "b".
            key(b"POST", b"ab", b""),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(key(b"POST", b"ab", b""), key(b"POST", b"a", b"b"));
    }
}
