//! The listener's certificates: read from `--tls CERT.pem,KEY.pem` files, checked (each key
//! matches its certificate, none has expired), and chosen per handshake by the name the client
//! asked for (SNI).
//!
//! A [`CertSet`] is immutable: a reload reads every file again into a new set, and only a set that
//! loaded whole replaces the one in use, so a bad file never leaves a listener without its
//! certificates. [`SniResolver`] picks from one set: an exact name first, then a wildcard
//! (`*.example.com` covers one label, as RFC 6125 section 6.4.3 allows), and the first certificate
//! for a client that sent no name or one no certificate has, unless `--tls-strict-sni` refuses it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::x509::CertInfo;
use crate::tls::TlsError;

/// One `--tls` flag: a certificate chain file and its private key file (PEM both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    /// Parses `CERT.pem,KEY.pem`.
    pub fn parse(s: &str) -> Result<CertPaths, String> {
        match s.split_once(',') {
            Some((cert, key)) if !cert.is_empty() && !key.is_empty() && !key.contains(',') => {
                Ok(CertPaths {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                })
            }
            _ => Err(format!("expected CERT.pem,KEY.pem, got {s:?}")),
        }
    }
}

impl std::str::FromStr for CertPaths {
    type Err = String;

    fn from_str(s: &str) -> Result<CertPaths, String> {
        CertPaths::parse(s)
    }
}

/// One loaded certificate: where it came from, what it says, and the key rustls signs with.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub paths: CertPaths,
    /// The leaf certificate's names, issuer and expiry.
    pub info: CertInfo,
    pub key: Arc<CertifiedKey>,
}

/// The listener's certificates, in flag order (the first is the default).
#[derive(Debug, Clone)]
pub struct CertSet {
    pub certs: Vec<LoadedCert>,
    /// Lowercase name (exact, or `*.rest` for a wildcard) → index of the first certificate
    /// carrying it.
    by_name: HashMap<String, usize>,
}

impl CertSet {
    /// Reads and checks every certificate and key; the first failure is the error.
    pub fn load(paths: &[CertPaths]) -> Result<CertSet, TlsError> {
        Self::load_at(paths, now_unix_s(), &crate::tls::provider())
    }

    /// [`CertSet::load`], with the time certificates must not have expired by, and the provider
    /// that loads the keys.
    pub fn load_at(
        paths: &[CertPaths],
        now_unix_s: i64,
        provider: &CryptoProvider,
    ) -> Result<CertSet, TlsError> {
        if paths.is_empty() {
            return Err(TlsError::Config("no certificate given".into()));
        }
        let certs = paths
            .iter()
            .map(|p| load_one(p, now_unix_s, provider))
            .collect::<Result<Vec<_>, _>>()?;
        let mut by_name = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.info.names {
                by_name.entry(name.clone()).or_insert(i);
            }
        }
        Ok(CertSet { certs, by_name })
    }

    /// The certificate for a client that asked for `sni`: exact name, then wildcard; `None` when
    /// no certificate carries the name.
    pub fn find(&self, sni: &str) -> Option<&LoadedCert> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.by_name.get(&sni) {
            return self.certs.get(i);
        }
        let (_, parent) = sni.split_once('.')?;
        if parent.is_empty() {
            return None;
        }
        let i = *self.by_name.get(&format!("*.{parent}"))?;
        self.certs.get(i)
    }

    /// The certificate for clients without SNI or with an unknown name.
    pub fn default_cert(&self) -> Option<&LoadedCert> {
        self.certs.first()
    }

    /// What each certificate says, in flag order.
    pub fn infos(&self) -> impl Iterator<Item = &CertInfo> {
        self.certs.iter().map(|c| &c.info)
    }
}

/// Seconds since the Unix epoch now.
pub fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| TlsError::Read {
        file: file.to_path_buf(),
        detail: e.to_string(),
    })
}

fn load_one(
    paths: &CertPaths,
    now_unix_s: i64,
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let cert_pem = read(&paths.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            file: paths.cert.clone(),
            detail: format!("bad PEM: {e}"),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            file: paths.cert.clone(),
        });
    };
    let info = CertInfo::parse(&paths.cert, leaf).map_err(|detail| TlsError::Invalid {
        file: paths.cert.clone(),
        detail,
    })?;
    if info.expired_at(now_unix_s) {
        return Err(TlsError::Expired {
            file: paths.cert.clone(),
            not_after: info.not_after.clone(),
        });
    }
    let key_pem = read(&paths.key)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                file: paths.key.clone(),
            })
        }
        Err(e) => {
            return Err(TlsError::Invalid {
                file: paths.key.clone(),
                detail: format!("bad PEM: {e}"),
            })
        }
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Invalid {
            file: paths.key.clone(),
            detail: format!("unusable private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::KeyMismatch {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
            })
        }
    }
    Ok(LoadedCert {
        paths: paths.clone(),
        info,
        key: Arc::new(certified),
    })
}

/// Chooses a handshake's certificate from one [`CertSet`] by SNI.
#[derive(Debug)]
pub struct SniResolver {
    certs: Arc<CertSet>,
    /// Refuse (no certificate: the handshake fails with an alert) an SNI no certificate carries,
    /// instead of answering with the default.
    strict_sni: bool,
}

impl SniResolver {
    pub fn new(certs: Arc<CertSet>, strict_sni: bool) -> SniResolver {
        SniResolver { certs, strict_sni }
    }

    /// The certificate for a client that sent `sni` (or none).
    pub fn pick(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        match sni {
            None => self.certs.default_cert(),
            Some(name) => match self.certs.find(name) {
                Some(cert) => Some(cert),
                None if self.strict_sni => None,
                None => self.certs.default_cert(),
            },
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name()).map(|c| c.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("sluice-certs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes a self-signed certificate for `names` and its key; returns their paths.
    fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> CertPaths {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let paths = CertPaths {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }

    #[test]
    fn the_flag_is_a_certificate_and_a_key_separated_by_a_comma() {
        let p = CertPaths::parse("a.pem,b.key").unwrap();
        assert_eq!((p.cert, p.key), ("a.pem".into(), "b.key".into()));
        assert!(CertPaths::parse("a.pem").is_err());
        assert!(CertPaths::parse("a.pem,").is_err());
        assert!(CertPaths::parse("a,b,c").is_err());
    }

    #[test]
    fn sni_picks_exact_names_then_one_label_wildcards_then_the_first_certificate() {
        let dir = temp_dir("sni");
        let a = write_cert(&dir.0, "a", &["a.example", "*.wild.example"]);
        let b = write_cert(&dir.0, "b", &["b.example", "x.wild.example"]);
        let set = Arc::new(CertSet::load(&[a.clone(), b.clone()]).unwrap());
        let lenient = SniResolver::new(set.clone(), false);
        let pick = |sni| lenient.pick(sni).map(|c| c.paths.cert.clone());
        assert_eq!(pick(Some("B.Example")), Some(b.cert.clone()));
        assert_eq!(
            pick(Some("x.wild.example")),
            Some(b.cert.clone()),
            "exact wins"
        );
        assert_eq!(pick(Some("y.wild.example")), Some(a.cert.clone()));
        assert_eq!(
            pick(Some("z.y.wild.example")),
            Some(a.cert.clone()),
            "default"
        );
        assert_eq!(pick(None), Some(a.cert.clone()));
        let strict = SniResolver::new(set, true);
        assert!(strict.pick(Some("z.y.wild.example")).is_none());
        assert!(strict.pick(Some("unknown.example")).is_none());
        assert!(strict.pick(None).is_some(), "no SNI still gets the default");
    }

    #[test]
    fn each_bad_file_is_refused_with_its_name() {
        let dir = temp_dir("bad");
        let a = write_cert(&dir.0, "a", &["a.example"]);
        let b = write_cert(&dir.0, "b", &["b.example"]);
        let missing = CertPaths {
            cert: dir.0.join("nope.crt"),
            key: a.key.clone(),
        };
        let err = CertSet::load(&[missing]).unwrap_err().to_string();
        assert!(
            err.contains("nope.crt") && err.contains("cannot read"),
            "{err}"
        );

        let mismatched = CertPaths {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = CertSet::load(&[mismatched]).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("b.key"), "{err}");

        let key_as_cert = CertPaths {
            cert: a.key.clone(),
            key: a.key.clone(),
        };
        let err = CertSet::load(&[key_as_cert]).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

        let cert_as_key = CertPaths {
            cert: a.cert.clone(),
            key: a.cert.clone(),
        };
        let err = CertSet::load(&[cert_as_key]).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");

        let far_future = 4_000_000_000_000;
        let err = CertSet::load_at(&[a], far_future, &crate::tls::provider()).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("a.crt"), "{err}");
    }
}
