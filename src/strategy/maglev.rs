//! Maglev consistent hashing: a key maps to a backend through a fixed-size lookup table, in O(1).
//!
//! From Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer" (NSDI 2016),
//! section 3.4. Each backend has a preference list of table slots, a permutation of `0..M` given by an
//! `offset` and a `skip` hashed from its name: slot `j` of the list is `(offset + j * skip) mod M`. The
//! table is filled in rounds: in each round every backend takes its next preferred slot still empty.
//! With `M` prime ([`MAGLEV_TABLE_SIZE`] = 65537, the paper's choice) every list visits every slot, so
//! the table fills completely and each backend owns about `M / N` slots. When a backend leaves, its
//! slots go to the others and only a small fraction of the others' slots change hands (the paper's
//! "minimal disruption", which is near, not exactly, rendezvous hashing's zero).
//!
//! Choices made here:
//! - Names are address texts, hashed with the fixed hashes of [`super::hash`]:
//!   `offset = seeded(addr_hash, MAGLEV_OFFSET_SEED) mod M` and
//!   `skip = seeded(addr_hash, MAGLEV_SKIP_SEED) mod (M - 1) + 1`. Backends fill the table in address
//!   order, so the table depends on the set of eligible backends and their weights, not on list
//!   order, ids, workers or restarts.
//! - Weights: a backend of weight `w` takes `w` slots per round, so its share of the table is
//!   `w / sum(w)` (configured weights; slow start does not apply to hashing).
//! - The table covers the backends eligible when the table version was built; a health or enable flip
//!   publishes a new version and so moves only the flipped backend's keys (and that small fraction).
//! - The key is [`PickContext::key`] when set (HTTP, a configurable request attribute), else the client
//!   address octets (TCP). Slot = `mix64(fnv1a64(key)) mod M`.
//! - A retry that excludes the looked-up backend falls back to weighted rendezvous hashing over the
//!   candidates ([`super::rendezvous`]), so a key's second choice is deterministic too.

use super::hash::{addr_hash, request_key_hash, seeded};
use super::rendezvous::highest_weight;
use super::{PickContext, Strategy};
use crate::backend::Backend;

/// Lookup table size: prime, and large against the number of backends (the paper wants M >> 100 N).
pub const MAGLEV_TABLE_SIZE: usize = 65_537;
/// Seeds of the two hashes of a backend's name ([`super::hash::seeded`]).
pub(super) const MAGLEV_OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
pub(super) const MAGLEV_SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

const EMPTY: u32 = u32::MAX;

pub struct Maglev {
    /// Backend index by slot; empty when no backend was eligible.
    table: Vec<u32>,
    addr_hashes: Vec<u64>,
}

impl Maglev {
    pub fn new(backends: &[Backend]) -> Maglev {
        let addr_hashes: Vec<u64> = backends.iter().map(addr_hash).collect();
        Maglev {
            table: populate(backends, &addr_hashes),
            addr_hashes,
        }
    }

    /// The table's choice for `key_hash`, before candidates are considered.
    fn lookup(&self, key_hash: u64) -> Option<usize> {
        let slot = (seeded(key_hash, 0) % MAGLEV_TABLE_SIZE as u64) as usize;
        self.table.get(slot).map(|&i| i as usize)
    }
}

/// The paper's `Populate` (section 3.4, pseudocode 1), with `w` turns per round for weight `w`.
fn populate(backends: &[Backend], addr_hashes: &[u64]) -> Vec<u32> {
    let m = MAGLEV_TABLE_SIZE as u64;
    let mut eligible: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].is_eligible())
        .collect();
    if eligible.is_empty() || backends.len() >= EMPTY as usize {
        return Vec::new();
    }
    eligible.sort_by(|&a, &b| (&backends[a].addr, a).cmp(&(&backends[b].addr, b)));
    // (backend index, offset, skip, next position in its preference list)
    let mut prefs: Vec<(usize, u64, u64, u64)> = eligible
        .iter()
        .map(|&i| {
            let offset = seeded(addr_hashes[i], MAGLEV_OFFSET_SEED) % m;
            let skip = seeded(addr_hashes[i], MAGLEV_SKIP_SEED) % (m - 1) + 1;
            (i, offset, skip, 0)
        })
        .collect();
    let mut table = vec![EMPTY; MAGLEV_TABLE_SIZE];
    let mut filled = 0;
    loop {
        for (i, offset, skip, next) in prefs.iter_mut() {
            for _ in 0..backends[*i].weight {
                // Each preference list is a permutation of all slots, so an empty one is found.
                let slot = loop {
                    let slot = ((*offset + *next * *skip) % m) as usize;
                    *next += 1;
                    if table[slot] == EMPTY {
                        break slot;
                    }
                };
                table[slot] = *i as u32;
                filled += 1;
                if filled == MAGLEV_TABLE_SIZE {
                    return table;
                }
            }
        }
    }
}

impl Strategy for Maglev {
    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        let key_hash = request_key_hash(ctx);
        match self.lookup(key_hash) {
            Some(b) if candidates.contains(&b) => b,
            _ => highest_weight(backends, &self.addr_hashes, candidates, key_hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};
    use std::net::{IpAddr, Ipv4Addr};

    const KEYS: u32 = 100_000;

    fn key_ctx(key: &[u8]) -> PickContext<'_> {
        PickContext { key, ..ctx() }
    }

    /// The address each of `KEYS` keys maps to over all eligible backends.
    fn placement(b: &[Backend]) -> Vec<crate::backend::BackendAddr> {
        let mut m = Maglev::new(b);
        let all: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_eligible()).collect();
        (0..KEYS)
            .map(|k| b[m.pick(b, &all, &key_ctx(&k.to_le_bytes()))].addr.clone())
            .collect()
    }

    #[test]
    fn maglev_fills_the_whole_table() {
        let m = Maglev::new(&backends(&[1, 2, 3, 1, 1]));
        assert_eq!(m.table.len(), MAGLEV_TABLE_SIZE);
        assert!(m.table.iter().all(|&i| i != EMPTY));
    }

    #[test]
    fn maglev_places_keys_the_same_way_in_every_build_and_any_list_order() {
        let b = backends(&[1, 1, 2, 1]);
        assert_eq!(Maglev::new(&b).table, Maglev::new(&b).table);
        let mut reversed = b.clone();
        reversed.reverse();
        assert_eq!(placement(&b), placement(&reversed));
    }

    #[test]
    fn maglev_removing_one_of_n_moves_about_one_nth_of_keys() {
        const N: usize = 10;
        let mut b = backends(&[1; N]);
        let before = placement(&b);
        b[3].healthy = false;
        let after = placement(&b);
        let removed = b[3].addr.clone();
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        let fraction = moved as f64 / f64::from(KEYS);
        let n = N as f64;
        assert!(
            (0.8 / n..=1.3 / n).contains(&fraction),
            "moved {fraction} of keys"
        );
        // Every key of the removed backend moves; of the others' keys, a small fraction does.
        let others_moved = before
            .iter()
            .zip(&after)
            .filter(|(x, y)| **x != removed && x != y)
            .count();
        assert!(others_moved < KEYS as usize / 100, "{others_moved} moved");
        assert!(after.iter().all(|a| *a != removed));
    }

    #[test]
    fn maglev_honours_weights() {
        let m = Maglev::new(&backends(&[1, 2, 3]));
        let mut slots = [0i64; 3];
        for &i in &m.table {
            slots[i as usize] += 1;
        }
        // Rounds of 1 + 2 + 3 slots: each share is exact to within one round.
        let round = MAGLEV_TABLE_SIZE as i64 / 6;
        for (i, w) in [1i64, 2, 3].iter().enumerate() {
            assert!((slots[i] - round * w).abs() <= *w, "{slots:?}");
        }
    }

    #[test]
    fn maglev_falls_back_deterministically_when_the_backend_is_excluded() {
        let b = backends(&[1, 1, 1, 1]);
        let mut m = Maglev::new(&b);
        for k in 0..1_000u32 {
            let key = k.to_le_bytes();
            let first = m.pick(&b, &[0, 1, 2, 3], &key_ctx(&key));
            let rest: Vec<usize> = (0..4).filter(|&i| i != first).collect();
            let retry = m.pick(&b, &rest, &key_ctx(&key));
            assert_ne!(retry, first);
            assert_eq!(retry, Maglev::new(&b).pick(&b, &rest, &key_ctx(&key)));
        }
    }

    #[test]
    fn maglev_keys_on_the_client_address_without_a_request_key() {
        let b = backends(&[1, 1, 1, 1]);
        let mut m = Maglev::new(&b);
        let client = |i: u32| PickContext {
            client_ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            ..ctx()
        };
        let picks: Vec<usize> = (0..400)
            .map(|i| m.pick(&b, &[0, 1, 2, 3], &client(i)))
            .collect();
        for (i, &p) in picks.iter().enumerate() {
            assert_eq!(m.pick(&b, &[0, 1, 2, 3], &client(i as u32)), p);
        }
        assert!((0..4).all(|backend| picks.contains(&backend)));
    }

    #[test]
    fn maglev_without_eligible_backends_still_picks_a_candidate() {
        let mut b = backends(&[1, 1]);
        b[0].enabled = false;
        b[1].enabled = false;
        let mut m = Maglev::new(&b);
        assert!(m.table.is_empty());
        assert_eq!(m.pick(&b, &[1], &key_ctx(b"/x")), 1);
    }
}
