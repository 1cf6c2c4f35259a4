//! Fixed hashes for placement: every worker and every restart of sluice must map a key to the same
//! backend, so placement never uses std's per-process randomized `DefaultHasher`.
//!
//! - [`fnv1a64`]: FNV-1a, 64-bit (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`; Fowler,
//!   Noll and Vo, as specified in draft-eastlake-fnv). Cheap and byte-at-a-time, but its high bits mix
//!   poorly on short inputs, so every placement hash passes through...
//! - [`mix64`]: the SplitMix64 finalizer (Stafford's "Mix13" variant, as in Java's `SplittableRandom`),
//!   a bijection in which every input bit affects every output bit.
//!
//! A backend is named by its address text (`10.0.0.1:8080`, `[::1]:80`, `unix:/run/app.sock`, so a
//! unix backend by its path), not by its id: ids are handed out afresh on every restart. [`seeded`] derives independent hashes of one
//! name (Maglev's offset and skip, sticky tokens) by mixing in a documented constant.

use std::fmt::{self, Write};
use std::net::IpAddr;

use super::PickContext;
use crate::backend::Backend;

pub(crate) const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
pub(crate) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`, continuing from `state` ([`FNV_OFFSET_BASIS`] to start).
pub(crate) fn fnv1a64_from(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_from(FNV_OFFSET_BASIS, bytes)
}

/// The SplitMix64 output function.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An independent hash of the same name for each `seed`: `mix64(name_hash ^ seed)`.
pub(crate) fn seeded(name_hash: u64, seed: u64) -> u64 {
    mix64(name_hash ^ seed)
}

/// Feeds formatted text into FNV-1a without building a `String`.
struct FnvWriter(u64);

impl Write for FnvWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = fnv1a64_from(self.0, s.as_bytes());
        Ok(())
    }
}

/// FNV-1a 64 of the backend's address text: the name placement is computed from.
pub(crate) fn addr_hash(b: &Backend) -> u64 {
    let mut w = FnvWriter(FNV_OFFSET_BASIS);
    // Writing into FnvWriter cannot fail.
    let _ = write!(w, "{}", b.addr);
    w.0
}

/// Hash of the client address: its 4 (IPv4) or 16 (IPv6) octets.
pub(crate) fn ip_key_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => fnv1a64(&v4.octets()),
        IpAddr::V6(v6) => fnv1a64(&v6.octets()),
    }
}

/// Hash of the request key, or of the client address when there is none (TCP mode).
pub(crate) fn request_key_hash(ctx: &PickContext<'_>) -> u64 {
    if ctx.key.is_empty() {
        ip_key_hash(ctx.client_ip)
    } else {
        fnv1a64(ctx.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::backends;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn addr_hash_is_the_fnv_of_the_address_text() {
        let b = backends(&[1]);
        assert_eq!(b[0].addr.to_string(), "127.0.0.1:10000");
        assert_eq!(addr_hash(&b[0]), fnv1a64(b"127.0.0.1:10000"));
        // Pinned so that a change of hash, which would move every key, fails a test.
        assert_eq!(fnv1a64(b"127.0.0.1:8081"), 0x1cf0_cbae_52b4_597f);
    }

    #[test]
    fn mix64_spreads_neighbouring_inputs() {
        let differing_bits = (mix64(1) ^ mix64(2)).count_ones();
        assert!((16..=48).contains(&differing_bits), "{differing_bits}");
        assert_ne!(seeded(5, 1), seeded(5, 2));
    }
}
