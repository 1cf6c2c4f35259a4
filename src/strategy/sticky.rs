//! Sticky sessions: a client that carries sluice's affinity cookie goes back to the backend it names.
//!
//! Session affinity by an inserted cookie, as HAProxy's `cookie <name> insert` and nginx's `sticky
//! cookie`: the first response of a session sets a cookie naming the backend that served it, and later
//! requests carrying it go there again, so a backend that keeps per-session state in memory sees the
//! whole session. The cookie value is [`sticky_token`]: 16 lowercase hex digits of a fixed hash of the
//! backend's address ([`super::hash`]), the same in every worker and after a restart, and revealing no
//! address. The HTTP session puts the request's cookie value in [`PickContext::key`] (empty if none),
//! and adds the [`ResponseCookie`] that [`Strategy::response_cookie`] returns to the response.
//!
//! When the token names no candidate (no cookie, an unknown or forged value, or the pinned backend is
//! gone, down, disabled or already failed for this request), the request goes to the least loaded
//! candidate ([`super::LeastConnections`], weighted, with slow start); the session then sees that the
//! picked backend's token differs from the cookie it received and sets a new one: the client is
//! re-pinned.

use std::io::Write as _;

use super::hash::{addr_hash, seeded};
use super::{Feedback, LeastConnections, PickContext, Strategy, StrategyParams};
use crate::backend::Backend;

/// Length of a [`sticky_token`]: 64 bits in hex.
pub const STICKY_TOKEN_LEN: usize = 16;
/// The cookie name the HTTP session is expected to use.
pub const STICKY_COOKIE_NAME: &str = "sluice_backend";
/// Seed of the token hash ([`super::hash::seeded`]), so tokens do not reveal `addr_hash`.
pub(crate) const STICKY_TOKEN_SEED: u64 = 0x7374_6963_6b79_746b; // "stickytk"

/// The affinity cookie value that leads back to `b`: `seeded(addr_hash(b), STICKY_TOKEN_SEED)` as 16
/// lowercase hex digits. Allocation-free, so the session can call it for each response it pins.
pub fn sticky_token(b: &Backend) -> [u8; STICKY_TOKEN_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = seeded(addr_hash(b), STICKY_TOKEN_SEED);
    let mut token = [0u8; STICKY_TOKEN_LEN];
    for (i, digit) in token.iter_mut().enumerate() {
        *digit = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    token
}

/// The affinity cookie a response carries to pin its client to a backend: that backend's
/// [`sticky_token`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseCookie(pub [u8; STICKY_TOKEN_LEN]);

/// Room for the longest `Set-Cookie` value [`ResponseCookie::write`] writes.
pub const SET_COOKIE_MAX_LEN: usize = 96;

impl ResponseCookie {
    /// The `Set-Cookie` field value, written into `buf` without allocating:
    /// `sluice_backend=<token>; Path=/; HttpOnly; SameSite=Lax`.
    pub fn write<'a>(&self, buf: &'a mut [u8; SET_COOKIE_MAX_LEN]) -> &'a [u8] {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = cursor.write_all(STICKY_COOKIE_NAME.as_bytes());
        let _ = cursor.write_all(b"=");
        let _ = cursor.write_all(&self.0);
        let _ = cursor.write_all(b"; Path=/; HttpOnly; SameSite=Lax");
        let n = cursor.position() as usize;
        &buf[..n]
    }
}

pub struct Sticky {
    /// [`sticky_token`] of each backend, by index, computed once per table version.
    tokens: Vec<[u8; STICKY_TOKEN_LEN]>,
    fallback: LeastConnections,
}

impl Sticky {
    pub fn new(offset: usize, params: StrategyParams, backends: &[Backend]) -> Sticky {
        Sticky {
            tokens: backends.iter().map(sticky_token).collect(),
            fallback: LeastConnections::new(offset, params),
        }
    }
}

impl Strategy for Sticky {
    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        if ctx.key.len() == STICKY_TOKEN_LEN {
            let pinned = candidates
                .iter()
                .copied()
                .find(|&c| self.tokens.get(c).map(|t| &t[..]) == Some(ctx.key));
            if let Some(c) = pinned {
                return c;
            }
        }
        self.fallback.pick(backends, candidates, ctx)
    }

    fn feedback(&self) -> Feedback {
        Feedback {
            response_cookie: true,
            ..Feedback::default()
        }
    }

    /// The picked backend's token, unless the request already carried it.
    fn response_cookie(&self, backend: usize, key: &[u8]) -> Option<ResponseCookie> {
        let token = self.tokens.get(backend)?;
        (key != token).then_some(ResponseCookie(*token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};
    use std::sync::atomic::Ordering;

    fn cookie(token: &[u8]) -> PickContext<'_> {
        PickContext {
            key: token,
            ..ctx()
        }
    }

    #[test]
    fn sticky_cookie_round_trips_to_the_same_backend() {
        let b = backends(&[1, 1, 1, 1]);
        let mut s = Sticky::new(0, StrategyParams::default(), &b);
        for i in 0..4 {
            // Busier than the others: only the cookie can lead here.
            b[i].stats.in_flight.store(50, Ordering::Relaxed);
            let token = sticky_token(&b[i]);
            assert_eq!(s.pick(&b, &[0, 1, 2, 3], &cookie(&token)), i);
            b[i].stats.in_flight.store(0, Ordering::Relaxed);
        }
        // A new session's first pick, then its cookie, lead to the same backend.
        let first = s.pick(&b, &[0, 1, 2, 3], &cookie(b""));
        let token = sticky_token(&b[first]);
        for _ in 0..5 {
            assert_eq!(s.pick(&b, &[0, 1, 2, 3], &cookie(&token)), first);
        }
    }

    #[test]
    fn sticky_token_is_stable_hex_and_distinct_per_backend() {
        let b = backends(&[1, 1, 1]);
        let tokens: Vec<_> = b.iter().map(sticky_token).collect();
        for t in &tokens {
            assert!(t
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(tokens[0], tokens[1]);
        assert_ne!(tokens[1], tokens[2]);
        // Pinned: a change would unpin every session across an upgrade.
        assert_eq!(&tokens[0], b"3bbcf2283fd5a423");
        // The same address in another table (another id, weight) has the same token.
        let again = crate::backend::Backend::at(99, b[0].addr.clone(), 7);
        assert_eq!(sticky_token(&again), tokens[0]);
    }

    #[test]
    fn sticky_repins_when_the_pinned_backend_is_not_a_candidate() {
        let b = backends(&[1, 1, 1]);
        b[1].stats.in_flight.store(2, Ordering::Relaxed);
        let mut s = Sticky::new(0, StrategyParams::default(), &b);
        let pinned_to_0 = sticky_token(&b[0]);
        // Backend 0 is down or already failed: the least loaded of the rest, whose token differs.
        let p = s.pick(&b, &[1, 2], &cookie(&pinned_to_0));
        assert_eq!(p, 2);
        assert_ne!(sticky_token(&b[p]), pinned_to_0);
        let repinned = sticky_token(&b[p]);
        assert_eq!(s.pick(&b, &[0, 1, 2], &cookie(&repinned)), 2);
    }

    #[test]
    fn a_response_sets_the_cookie_only_when_the_client_is_not_pinned_there_yet() {
        let b = backends(&[1, 1]);
        let s = Sticky::new(0, StrategyParams::default(), &b);
        let token = sticky_token(&b[1]);
        assert_eq!(s.response_cookie(1, &token), None);
        assert_eq!(s.response_cookie(1, b""), Some(ResponseCookie(token)));
        assert_eq!(
            s.response_cookie(1, &sticky_token(&b[0])),
            Some(ResponseCookie(token)),
            "re-pinned"
        );
        let mut buf = [0; SET_COOKIE_MAX_LEN];
        assert_eq!(
            ResponseCookie(token).write(&mut buf),
            format!(
                "sluice_backend={}; Path=/; HttpOnly; SameSite=Lax",
                std::str::from_utf8(&token).unwrap()
            )
            .as_bytes()
        );
    }

    #[test]
    fn sticky_unknown_or_malformed_token_falls_back_to_least_connections() {
        let b = backends(&[1, 1, 1]);
        b[0].stats.in_flight.store(3, Ordering::Relaxed);
        b[2].stats.in_flight.store(1, Ordering::Relaxed);
        let mut s = Sticky::new(0, StrategyParams::default(), &b);
        for token in [&b"0000000000000000"[..], b"short", b"", b"3BBCF2283FD5A423"] {
            assert_eq!(s.pick(&b, &[0, 1, 2], &cookie(token)), 1, "{token:?}");
        }
    }
}
