//! What a worker says about TLS to backends (`--backend-tls`): a handshake that fails (most often
//! a certificate that does not verify) is a failed connect, retried elsewhere or answered with
//! 502, and is logged as one warning naming the backend and the reason. The warning is given once
//! per backend per reason, not once per request: a backend with a wrong certificate would
//! otherwise fill the log at the request rate. A handshake that succeeds again forgets the
//! reason, so the next failure is reported again.

use std::collections::HashMap;
use std::io;

use log::warn;

use crate::backend::BackendId;
use crate::worker::keys::{BackendConnKey, ClientKey};
use crate::worker::Core;

/// What a client is told when its request's last attempt failed in the TLS handshake.
pub(super) const TLS_FAILED: &str = "TLS handshake with the backend failed";

/// The last TLS failure reported per backend.
#[derive(Default)]
pub(super) struct TlsWarnings {
    reported: HashMap<BackendId, String>,
}

impl TlsWarnings {
    /// Whether `reason` is news for `backend` (and remembers it).
    fn is_news(&mut self, backend: BackendId, reason: &str) -> bool {
        if self.reported.get(&backend).is_some_and(|r| r == reason) {
            return false;
        }
        self.reported.insert(backend, reason.to_string());
        true
    }

    fn forget(&mut self, backend: BackendId) {
        self.reported.remove(&backend);
    }
}

/// The rustls error inside an I/O error, if it is one.
fn tls_reason(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(inner.to_string())
}

impl Core {
    /// The connect of backend connection `bk` for client `k` failed with `e`: notes on the
    /// exchange whether that was the TLS handshake (a final failure is then 502), and warns when
    /// it is a TLS failure not yet reported for its backend.
    #[inline(never)]
    pub(super) fn backend_tls_failed(&mut self, k: ClientKey, bk: BackendConnKey, e: &io::Error) {
        if self.backend_tls.is_none() {
            return;
        }
        let reason = tls_reason(e);
        if let Some(ex) = self.conns.exchange_mut(k) {
            ex.backend_tls_failed = reason.is_some();
        }
        let Some(reason) = reason else {
            return;
        };
        let id = self.conns[bk].backend_id;
        if !self.backend_tls_warnings.is_news(id, &reason) {
            return;
        }
        let addr = self.routing.position(id).map_or_else(
            || "gone".to_string(),
            |i| self.routing.backend(i).addr.to_string(),
        );
        warn!("backend {addr}: TLS handshake failed: {reason}; its requests get 502 or go to another backend");
    }

    /// Backend connection `bk` completed its handshake.
    pub(super) fn backend_tls_ok(&mut self, bk: BackendConnKey) {
        if self.backend_tls.is_some() {
            let id = self.conns[bk].backend_id;
            self.backend_tls_warnings.forget(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_reported_once_per_backend_until_it_changes_or_a_handshake_succeeds() {
        let mut w = TlsWarnings::default();
        assert!(w.is_news(1, "bad cert"));
        assert!(!w.is_news(1, "bad cert"));
        assert!(w.is_news(2, "bad cert"), "another backend");
        assert!(w.is_news(1, "expired"), "another reason");
        w.forget(1);
        assert!(w.is_news(1, "expired"), "failing again after a success");
    }

    #[test]
    fn only_tls_errors_have_a_reason() {
        let plain = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_reason(&plain), None);
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(tls_reason(&tls).is_some_and(|r| r.contains("UnknownIssuer")));
    }
}
