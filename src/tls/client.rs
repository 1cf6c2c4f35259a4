//! The client side of TLS to backends (`--backend-tls`): one immutable `ClientConfig` shared by
//! every worker and the health checker, and the name each backend is verified against.
//!
//! Trust is the system's roots (rustls-native-certs, which reads the store the operating system
//! keeps, so `update-ca-certificates` and a company CA installed there apply, as they do for
//! nginx's `proxy_ssl_trusted_certificate` pointed at the system bundle; webpki-roots would
//! freeze Mozilla's list into the binary instead), or only the PEM certificates of
//! `--backend-ca FILE`. A backend is verified against `--backend-sni NAME` when given (and that
//! name is sent as SNI), else against its address: an IP address backend is checked against the
//! certificate's IP address SANs and sends no SNI, as RFC 6066 section 3 asks.
//!
//! The configuration keeps rustls's client session cache, so a reconnect to a backend resumes
//! its session; pooled connections are reused without any handshake at all.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::tls::TlsError;

/// Settings of `--backend-tls`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendTlsSettings {
    /// `--backend-ca FILE`; `None` = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// `--backend-sni NAME`: sent and verified instead of the backend's address.
    pub sni: Option<String>,
}

/// What every TLS connection to a backend shares.
#[derive(Clone, Debug)]
pub struct BackendTls {
    config: Arc<ClientConfig>,
    sni: Option<ServerName<'static>>,
}

impl BackendTls {
    /// Reads the roots and builds the configuration; a CA file that cannot be read or holds no
    /// certificate is refused with its name.
    pub fn new(settings: &BackendTlsSettings) -> Result<BackendTls, TlsError> {
        let roots = match &settings.ca_file {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        let sni = match &settings.sni {
            Some(name) => Some(check_sni(name)?),
            None => None,
        };
        let mut config = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![crate::tls::server::ALPN_HTTP11.to_vec()];
        Ok(BackendTls {
            config: Arc::new(config),
            sni,
        })
    }

    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The name a backend is verified against (and sends as SNI when it is a DNS name):
    /// `--backend-sni`, else the DNS name the backend was given by, else its IP address; a
    /// Unix-socket backend with neither is checked as `localhost`.
    pub fn server_name(&self, ip: Option<IpAddr>, dns_name: Option<&str>) -> ServerName<'static> {
        if let Some(name) = &self.sni {
            return name.clone();
        }
        if let Some(name) = dns_name.and_then(|n| ServerName::try_from(n.to_string()).ok()) {
            return name;
        }
        match ip {
            Some(ip) => ServerName::IpAddress(ip.into()),
            None => ServerName::try_from("localhost")
                .unwrap_or(ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into())),
        }
    }
}

/// `--backend-sni NAME` as a TLS server name (a DNS name or an IP address).
pub fn check_sni(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| {
        TlsError::Config(format!(
            "--backend-sni {name:?}: not a valid TLS server name"
        ))
    })
}

/// Reads `--backend-ca FILE` as start-up does; the error names the file.
pub fn check_ca_file(path: &Path) -> Result<(), TlsError> {
    roots_from_file(path).map(drop)
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let invalid = |detail: String| TlsError::Invalid {
        file: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| TlsError::Read {
        file: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            file: path.to_path_buf(),
        });
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Config(
            "--backend-tls: no trusted root certificate found on this system; give --backend-ca FILE".into(),
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-backend-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_with_its_name() {
        let path = temp_file("empty-ca.pem", "nothing here\n");
        let settings = BackendTlsSettings {
            ca_file: Some(path.clone()),
            sni: None,
        };
        let err = BackendTls::new(&settings).unwrap_err();
        assert!(err.to_string().contains("empty-ca.pem"), "{err}");
    }

    #[test]
    fn backends_are_verified_by_their_address_unless_a_name_is_given() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = temp_file("ca.pem", &ca.pem());
        let mut settings = BackendTlsSettings {
            ca_file: Some(path),
            sni: None,
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let tls = BackendTls::new(&settings).unwrap();
        assert_eq!(
            tls.server_name(Some(ip), None),
            ServerName::IpAddress(ip.into())
        );
        assert_eq!(
            tls.server_name(Some(ip), Some("named.test")),
            ServerName::try_from("named.test").unwrap(),
            "a backend given by name is checked against that name"
        );
        settings.sni = Some("backend.test".into());
        let tls = BackendTls::new(&settings).unwrap();
        assert_eq!(
            tls.server_name(Some(ip), Some("named.test")),
            ServerName::try_from("backend.test").unwrap()
        );
        settings.sni = Some("bad name!".into());
        assert!(BackendTls::new(&settings).is_err());
    }
}
