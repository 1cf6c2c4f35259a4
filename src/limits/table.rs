//! The per-client table: a fixed array of buckets shared by all workers and updated with atomics
//! only, like the per-id attempt budget. A client's address is hashed (with a per-process random
//! seed, so that nobody can pick addresses that land on someone else's bucket) to one bucket,
//! which holds its open connections, its token bucket, and what the dashboard shows (requests and
//! refusals counted, the last address seen).
//!
//! **When the table is full.** The table never grows: [`super::DEFAULT_CLIENT_BUCKETS`] buckets
//! of 32 bytes, whatever number of addresses appear. Two clients whose addresses hash to one
//! bucket share its counts, so the table errs toward refusing: together they have one client's
//! connection cap and one client's rate, and neither ever gets more than its limit. With the
//! default size, a client shares its bucket with another when about a thousand clients are active
//! at once with probability about 1.5%; sharing costs a client part of its allowance, never lets
//! it past its own.
//!
//! The token bucket is GCRA (the generic cell rate algorithm of ATM, as in redis-cell): one
//! theoretical arrival time per bucket, moved forward one interval per admitted request; a request
//! that would push it more than `burst` intervals ahead of now is refused, and how far ahead it
//! would be is the `Retry-After`. One compare-and-swap per request.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{ClientLimits, RateLimit};

/// IPv4 keys carry this in their upper half; an IPv6 /64 with these bits is reserved space.
const V4_TAG: u64 = 0xffff_ffff << 32;

/// The key of a client: its IPv4 address, or its IPv6 /64.
pub(crate) fn client_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => V4_TAG | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
    }
}

/// A key written back as an address (`192.0.2.7`, `2001:db8:1:2::/64`).
pub(crate) fn key_text(key: u64) -> String {
    if key & V4_TAG == V4_TAG {
        std::net::Ipv4Addr::from(key as u32).to_string()
    } else {
        format!("{}/64", std::net::Ipv6Addr::from(u128::from(key) << 64))
    }
}

#[repr(align(32))]
#[derive(Default)]
pub(super) struct Bucket {
    /// The last client key seen here (0 = never used).
    pub(super) key: AtomicU64,
    /// GCRA's theoretical arrival time, in µs of [`crate::clock`].
    tat_us: AtomicU64,
    pub(super) conns: AtomicU32,
    pub(super) requests: AtomicU32,
    pub(super) refused: AtomicU32,
}

pub(crate) struct ClientTable {
    buckets: Box<[Bucket]>,
    seed: u64,
    limits: ClientLimits,
    refused_conns: AtomicU64,
    refused_rate: AtomicU64,
}

impl ClientTable {
    /// A table of `buckets` (rounded up to a power of two).
    pub(crate) fn new(limits: ClientLimits, buckets: usize) -> ClientTable {
        let n = buckets.max(1).next_power_of_two();
        ClientTable {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            seed: limits
                .hash_seed
                .unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64)),
            limits,
            refused_conns: AtomicU64::new(0),
            refused_rate: AtomicU64::new(0),
        }
    }

    pub(crate) fn limits(&self) -> ClientLimits {
        self.limits
    }

    pub(super) fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Bytes the table holds: fixed at creation.
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets) + std::mem::size_of::<ClientTable>()
    }

    fn bucket(&self, key: u64) -> &Bucket {
        // SplitMix64's finaliser over the seeded key: every bit of the address moves the index.
        let mut h = key ^ self.seed;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        &self.buckets[(h as usize) & (self.buckets.len() - 1)]
    }

    /// A new connection from `ip`: true when it may stay (then [`ClientTable::close`] must
    /// follow when it closes), false (counted) when the client is at its connection cap.
    pub(crate) fn open(&self, ip: IpAddr) -> bool {
        let key = client_key(ip);
        let b = self.bucket(key);
        b.key.store(key, Ordering::Relaxed);
        let before = b.conns.fetch_add(1, Ordering::Relaxed);
        match self.limits.max_conns {
            Some(max) if before >= max => {
                b.conns.fetch_sub(1, Ordering::Relaxed);
                b.refused.fetch_add(1, Ordering::Relaxed);
                self.refused_conns.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }

    /// A connection that [`ClientTable::open`] let in has closed.
    pub(crate) fn close(&self, ip: IpAddr) {
        let b = self.bucket(client_key(ip));
        let _ = b
            .conns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A request (HTTP) or a connection (TCP) from `ip` at `now_us`: `Ok` when the client's rate
    /// allows it, else `Err(seconds until it would)` (at least 1), counted.
    pub(crate) fn admit(&self, ip: IpAddr, now_us: u64) -> Result<(), u32> {
        let key = client_key(ip);
        let b = self.bucket(key);
        b.key.store(key, Ordering::Relaxed);
        b.requests.fetch_add(1, Ordering::Relaxed);
        let Some(rate) = self.limits.rate else {
            return Ok(());
        };
        match gcra(&b.tat_us, rate, now_us) {
            Ok(()) => Ok(()),
            Err(wait_us) => {
                b.refused.fetch_add(1, Ordering::Relaxed);
                self.refused_rate.fetch_add(1, Ordering::Relaxed);
                Err(wait_us.div_ceil(1_000_000).clamp(1, u64::from(u32::MAX)) as u32)
            }
        }
    }

    /// Connections refused at the per-client cap, and requests (or TCP connections) refused over
    /// the per-client rate, since start.
    pub(crate) fn refusals(&self) -> (u64, u64) {
        (
            self.refused_conns.load(Ordering::Relaxed),
            self.refused_rate.load(Ordering::Relaxed),
        )
    }
}

/// One GCRA step on `tat_us`: `Ok` and the arrival time moved on, or `Err(µs to wait)`.
fn gcra(tat_us: &AtomicU64, rate: RateLimit, now_us: u64) -> Result<(), u64> {
    let window_us = rate.interval_us.saturating_mul(u64::from(rate.burst));
    let mut tat = tat_us.load(Ordering::Relaxed);
    loop {
        let next = tat.max(now_us) + rate.interval_us;
        if next - now_us > window_us {
            return Err(next - now_us - window_us);
        }
        match tat_us.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(seen) => tat = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_conns: Option<u32>, rate: Option<&str>) -> ClientTable {
        let limits = ClientLimits {
            max_conns,
            rate: rate.map(|r| RateLimit::parse(r).unwrap()),
            hash_seed: Some(7),
        };
        ClientTable::new(limits, 1 << 16)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_at_its_cap_is_refused_and_another_is_not() {
        let t = table(Some(2), None);
        assert!(t.open(ip("10.0.0.1")));
        assert!(t.open(ip("10.0.0.1")));
        assert!(!t.open(ip("10.0.0.1")));
        assert!(t.open(ip("10.0.0.2")));
        t.close(ip("10.0.0.1"));
        assert!(t.open(ip("10.0.0.1")), "a close makes room");
        assert_eq!(t.refusals(), (1, 0));
    }

    #[test]
    fn the_rate_admits_a_burst_then_one_per_interval_with_a_retry_after() {
        let t = table(None, Some("10/s,burst=3"));
        let a = ip("10.0.0.1");
        let start = 1_000_000_000;
        for _ in 0..3 {
            assert_eq!(t.admit(a, start), Ok(()));
        }
        assert_eq!(t.admit(a, start), Err(1));
        assert_eq!(t.admit(a, start + 99_000), Err(1));
        assert_eq!(t.admit(a, start + 100_000), Ok(()), "one token back");
        assert_eq!(t.admit(ip("10.0.0.2"), start), Ok(()), "another client");
        assert_eq!(t.refusals(), (0, 2));
        let slow = table(None, Some("1/m,burst=1"));
        assert_eq!(slow.admit(a, start), Ok(()));
        assert_eq!(slow.admit(a, start + 1_000_000), Err(59));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            client_key(ip("::ffff:10.0.0.1")),
            client_key(ip("10.0.0.1"))
        );
        assert_eq!(key_text(client_key(ip("10.0.0.1"))), "10.0.0.1");
        assert_eq!(
            key_text(client_key(ip("2001:db8:1:2::1"))),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn a_million_addresses_leave_the_table_its_size_and_err_toward_refusing() {
        let t = table(Some(1), Some("1/s,burst=1"));
        let size = t.memory_bytes();
        assert_eq!(size, (1 << 16) * 32 + std::mem::size_of::<ClientTable>());
        let mut refused = 0u64;
        for i in 0..1_000_000u32 {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            if !t.open(a) {
                refused += 1;
            }
        }
        assert_eq!(t.memory_bytes(), size, "the table does not grow");
        // A million clients in 65,536 buckets share them: at one connection a bucket, at most
        // one client of each bucket is let in, never two.
        let open: u64 = t
            .buckets()
            .iter()
            .map(|b| u64::from(b.conns.load(Ordering::Relaxed)))
            .sum();
        assert!(open <= 1 << 16, "{open}");
        assert_eq!(open + refused, 1_000_000);
    }
}
