//! Attempts sluice cuts off although their backend did nothing wrong ([`Cutoff`]): an answer whose
//! head is over sluice's own limits (`--max-response-header-bytes`, or more fields than it
//! parses), and a client that stops sending its request body or reading the answer for
//! `--response-timeout`.
//!
//! A client can bring either about at will (a large request header that the backend echoes is
//! enough), so neither may count against the backend: each is settled as [`End::CutOff`], which
//! counts it apart (`sluice_response_head_too_large_total`, `sluice_client_stalls_total`) and
//! feeds neither consecutive failures and passive ejection, nor the latency estimate, nor what
//! `bandit` learns. Neither is retried: another backend would answer the same request alike, and a
//! stalled client stalls any backend. The client gets 502 with a body that names the limit, or
//! 408 when its body stopped coming; one that stopped reading is closed. Refused heads are logged
//! at `warn`, at most once per [`WARN_EVERY_MS`] per worker with the count of the others, since a
//! client can produce them as fast as it likes.

use log::{debug, warn};

use crate::backend::BackendId;
use crate::http::head::MAX_HEADERS;
use crate::worker::attempt::{Cutoff, End};
use crate::worker::conn::ClientKey;
use crate::worker::{Core, Next};

/// A worker warns about a refused response head at most this often; the rest are counted.
pub(super) const WARN_EVERY_MS: u64 = 10_000;

// The answer below names the number.
const _: () = assert!(MAX_HEADERS == 256);

/// The rate limit of a worker's warnings about refused response heads.
#[derive(Debug, Default)]
pub(super) struct WarnLimit {
    /// No warning before this time (ms of the worker clock).
    quiet_until_ms: u64,
    /// Refusals not warned about since the last warning.
    unreported: u64,
}

impl WarnLimit {
    /// Whether to warn at `now_ms`; if so, how many went unreported since the last warning.
    pub(super) fn due(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms < self.quiet_until_ms {
            self.unreported += 1;
            return None;
        }
        self.quiet_until_ms = now_ms + WARN_EVERY_MS;
        Some(std::mem::take(&mut self.unreported))
    }
}

impl Core {
    /// Cuts client `k`'s current attempt off for `cutoff`: settled as not the backend's doing,
    /// its connection closed, and the client answered (or closed, once answer bytes went out).
    pub(super) fn attempt_cut(&mut self, k: ClientKey, cutoff: Cutoff) -> Next {
        let backend = self
            .conns
            .exchange(k)
            .and_then(|ex| ex.tried().last().copied());
        if self.settle_last_attempt(k, End::CutOff(cutoff)).is_none() {
            return Next::Close;
        }
        self.unbind_backend(k, false);
        let why = match cutoff {
            Cutoff::ResponseHeadTooLarge => "response head larger than --max-response-header-bytes",
            Cutoff::ResponseHeadTooManyFields => "response head with more than 256 fields",
            Cutoff::ClientStalled => {
                debug!("client stopped sending or reading for --response-timeout");
                if self.conns.exchange(k).is_none_or(|ex| ex.resp_started) {
                    return Next::Close;
                }
                return self.answer(k, 408, "request body timed out", true);
            }
        };
        self.warn_refused_head(backend, why);
        self.answer(k, 502, why, false)
    }

    fn warn_refused_head(&mut self, backend: Option<BackendId>, why: &str) {
        let Some(unreported) = self.refusal_warnings.due(self.now.ms) else {
            return;
        };
        let addr = backend
            .and_then(|id| self.routing.position(id))
            .map_or_else(
                || "gone".to_string(),
                |i| self.routing.backend(i).addr.to_string(),
            );
        let others = match unreported {
            0 => String::new(),
            n => format!("; {n} more since the last warning"),
        };
        warn!(
            "backend {addr}: {why} ({} bytes): answered 502, not counted as the backend \
             failing{others}",
            self.cfg.max_response_header_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_warns_once_per_interval_and_counts_the_rest() {
        let mut w = WarnLimit::default();
        assert_eq!(w.due(1_000), Some(0));
        assert_eq!(w.due(1_001), None);
        assert_eq!(w.due(1_000 + WARN_EVERY_MS - 1), None);
        assert_eq!(w.due(1_000 + WARN_EVERY_MS), Some(2));
        assert_eq!(w.due(1_000 + WARN_EVERY_MS + 1), None);
    }
}
