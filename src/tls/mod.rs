//! TLS termination with rustls: the certificates (`certs`, `x509`), the server configuration
//! every worker shares (`server`), the client configuration for TLS to backends (`client`), and
//! the sans-I/O adapter that drives a rustls connection over a non-blocking socket from a
//! worker's loop (`stream`).
//!
//! rustls does no I/O of its own: a worker feeds it the bytes its socket gave and writes back the
//! bytes rustls hands out, so TLS fits the mio loop with no runtime and no extra thread. What is
//! shared between workers is immutable (an `Arc<ServerConfig>` swapped whole on a reload) except
//! rustls's ticket keys and session cache, which are built once per process here so that a client
//! resumes on any worker and across reloads.
//!
//! The crypto provider is chosen in exactly one place, [`provider`].

pub mod certs;
#[cfg(any(test, fuzzing))]
pub mod check;
pub mod client;
pub mod server;
pub mod session;
pub mod sniff;
pub mod stream;
#[cfg(test)]
mod testing;
pub mod x509;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;

pub use certs::{CertPaths, CertSet, LoadedCert, SniResolver};
pub use server::TlsServer;
pub use session::ServerTls;
pub use stream::{Handshake, TlsIo};
pub use x509::CertInfo;

/// The crypto provider of every TLS connection sluice makes or accepts: `aws-lc-rs`, measured
/// against `ring` on sluice's workload (PERF.md, "TLS crypto provider": 1.6x fewer server CPU
/// microseconds per full handshake, 1.3x per resumed one, 1.4x per 16 KiB response, the same per
/// small request).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The provider's session-ticket key rotator: a new key every six hours, the previous one still
/// accepted, so tickets live up to twelve hours (rustls's recommended ticketer).
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// Why a certificate or its key could not be used; each names the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The file could not be read (missing, unreadable).
    Read { file: PathBuf, detail: String },
    /// The certificate file holds no PEM certificate.
    NoCertificate { file: PathBuf },
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    NoKey { file: PathBuf },
    /// The certificate or key could not be parsed or used.
    Invalid { file: PathBuf, detail: String },
    /// The key is not the certificate's.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// The certificate's not-after is in the past.
    Expired { file: PathBuf, not_after: String },
    /// Building the TLS configuration failed.
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { file, detail } => {
                write!(f, "{}: cannot read: {detail}", file.display())
            }
            TlsError::NoCertificate { file } => {
                write!(f, "{}: no PEM certificate in the file", file.display())
            }
            TlsError::NoKey { file } => write!(
                f,
                "{}: no PEM private key in the file (PKCS#8, PKCS#1 or SEC1)",
                file.display()
            ),
            TlsError::Invalid { file, detail } => write!(f, "{}: {detail}", file.display()),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "{}: the key does not match the certificate {}",
                key.display(),
                cert.display()
            ),
            TlsError::Expired { file, not_after } => {
                write!(
                    f,
                    "{}: the certificate expired on {not_after}",
                    file.display()
                )
            }
            TlsError::Config(detail) => write!(f, "TLS configuration: {detail}"),
        }
    }
}

impl std::error::Error for TlsError {}
