//! Flags for the listener's TLS: `--tls CERT.pem,KEY.pem` (repeatable; with one or more the
//! listener speaks TLS), `--tls-strict-sni` and `--tls-handshake-timeout`; and for TLS to the
//! backends: `--backend-tls`, `--backend-ca FILE`, `--backend-sni NAME`.
//!
//! The files are only named here; they are read and checked at start-up (`crate::tls::CertSet`),
//! which fails with a message naming the file when one is missing, unreadable or wrong.

use std::path::PathBuf;

use clap::Args;

use super::duration::DurationArg;
use super::ProxyConfig;
use crate::tls::client::{check_ca_file, check_sni, BackendTlsSettings};
use crate::tls::CertPaths;

/// Default `--tls-handshake-timeout`.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";

/// The listener's TLS flags.
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Terminate TLS on the listener with this certificate chain and private key (PEM files;
    /// ECDSA or RSA). Repeat for more certificates: each handshake gets the one whose names
    /// match the client's SNI (wildcards included), the first one when none does or the client
    /// sent no name. HTTP requests then carry X-Forwarded-Proto: https.
    #[arg(long = "tls", value_name = "CERT.pem,KEY.pem")]
    pub certs: Vec<CertPaths>,

    /// Refuse a handshake (with an alert) whose SNI no certificate carries, instead of answering
    /// with the first certificate. Clients without SNI still get the first.
    #[arg(long)]
    pub tls_strict_sni: bool,

    /// Close a TLS client whose handshake has not completed this long after the accept (or
    /// after its PROXY protocol header).
    #[arg(long, default_value = DEFAULT_TLS_HANDSHAKE_TIMEOUT, value_name = "DURATION")]
    pub tls_handshake_timeout: DurationArg,

    /// Speak TLS to every backend (re-encrypt), verifying each one's certificate against the
    /// system's trusted roots, or only those of --backend-ca.
    #[arg(long)]
    pub backend_tls: bool,

    /// With --backend-tls: trust only the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub backend_ca: Option<PathBuf>,

    /// With --backend-tls: send this name as SNI and verify every backend's certificate against
    /// it, instead of the name the backend was given by (or its IP address).
    #[arg(long, value_name = "NAME")]
    pub backend_sni: Option<String>,
}

/// The listener's TLS settings, when it speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// In flag order: the first is the default certificate.
    pub certs: Vec<CertPaths>,
    pub strict_sni: bool,
    pub handshake_timeout_ms: u64,
}

impl TlsArgs {
    /// Puts the flags into `proxy`.
    pub fn apply(&self, proxy: &mut ProxyConfig) -> Result<(), String> {
        proxy.backend_tls = self.backend_settings()?;
        if self.certs.is_empty() {
            if self.tls_strict_sni {
                return Err("--tls-strict-sni needs --tls CERT.pem,KEY.pem".into());
            }
            proxy.tls = None;
            return Ok(());
        }
        let handshake_timeout_ms = self.tls_handshake_timeout.ms();
        if handshake_timeout_ms == 0 {
            return Err("--tls-handshake-timeout must be more than 0".into());
        }
        proxy.tls = Some(TlsSettings {
            certs: self.certs.clone(),
            strict_sni: self.tls_strict_sni,
            handshake_timeout_ms,
        });
        Ok(())
    }
}

impl TlsArgs {
    /// `--backend-tls` and its two options; the CA file is read now so that a missing or
    /// unreadable one stops start-up with its name.
    fn backend_settings(&self) -> Result<Option<BackendTlsSettings>, String> {
        if !self.backend_tls {
            if self.backend_ca.is_some() {
                return Err("--backend-ca needs --backend-tls".into());
            }
            if self.backend_sni.is_some() {
                return Err("--backend-sni needs --backend-tls".into());
            }
            return Ok(None);
        }
        if let Some(path) = &self.backend_ca {
            check_ca_file(path).map_err(|e| format!("--backend-ca: {e}"))?;
        }
        if let Some(name) = &self.backend_sni {
            check_sni(name).map_err(|e| e.to_string())?;
        }
        Ok(Some(BackendTlsSettings {
            ca_file: self.backend_ca.clone(),
            sni: self.backend_sni.clone(),
        }))
    }
}
