//! The listener's TLS configuration: one immutable `Arc<ServerConfig>` that every worker's new
//! handshakes use, rebuilt whole when the certificates change.
//!
//! [`TlsServer`] holds what must outlive any one configuration: the crypto provider, the
//! session-ticket key rotator and the server-side session cache. Each configuration it builds
//! shares them, so a client resumes its session on any worker of the process and after a
//! certificate reload. Tickets (TLS 1.3 and 1.2) are stateless for sluice; the cache, which needs
//! a lock, serves only TLS 1.2 clients that do not take tickets.
//!
//! Versions: TLS 1.3 and 1.2. ALPN: `http/1.1` only (a client offering only `h2` is refused by
//! rustls with `no_application_protocol`, as nginx does when it does not speak h2).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;

use crate::tls::certs::{CertSet, SniResolver};
use crate::tls::TlsError;

/// Sessions kept by the server-side cache (a few hundred bytes each), shared by all workers.
pub const DEFAULT_SESSION_CACHE_ENTRIES: usize = 16 * 1024;
/// TLS 1.3 tickets sent after a full handshake (OpenSSL's default, so a client can open two
/// resumed connections).
pub const TLS13_TICKETS: usize = 2;
/// The only application protocol sluice speaks over TLS.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// What every server configuration of the process shares.
pub struct TlsServer {
    provider: Arc<CryptoProvider>,
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<dyn StoresServerSessions + Send + Sync>,
}

impl TlsServer {
    /// A provider from [`crate::tls::provider`], a fresh ticket key rotator and an empty cache
    /// of [`DEFAULT_SESSION_CACHE_ENTRIES`].
    pub fn new() -> Result<TlsServer, TlsError> {
        let ticketer = crate::tls::ticketer()
            .map_err(|e| TlsError::Config(format!("session tickets: {e}")))?;
        Ok(TlsServer {
            provider: crate::tls::provider(),
            ticketer,
            cache: ServerSessionMemoryCache::new(DEFAULT_SESSION_CACHE_ENTRIES),
        })
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// A configuration serving `certs` (chosen by SNI; see [`SniResolver`]), with this process's
    /// ticket keys and session cache.
    pub fn config(
        &self,
        certs: Arc<CertSet>,
        strict_sni: bool,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver::new(certs, strict_sni)));
        cfg.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        cfg.ticketer = self.ticketer.clone();
        cfg.session_storage = self.cache.clone();
        cfg.send_tls13_tickets = TLS13_TICKETS;
        Ok(Arc::new(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_share_ticket_keys_and_cache() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("sluice-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = crate::tls::CertPaths {
            cert: dir.join("a.crt"),
            key: dir.join("a.key"),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        let set = Arc::new(CertSet::load(&[paths]).unwrap());
        let server = TlsServer::new().unwrap();
        let one = server.config(set.clone(), false).unwrap();
        let two = server.config(set, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Arc::ptr_eq(&one.ticketer, &two.ticketer));
        assert!(Arc::ptr_eq(&one.session_storage, &two.session_storage));
        assert!(one.ticketer.enabled());
        assert_eq!(one.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
