//! What sluice reads out of a certificate: the DNS names it serves (for SNI), its issuer and when
//! it expires (for start-up and reload checks, `GET /api/tls` and the expiry metric). The one
//! place that parses X.509, with `x509-parser`.

use std::path::{Path, PathBuf};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate as sluice describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its DNS names, lowercase: the subject alternative names, or the subject's common name when
    /// there are none (as HAProxy and nginx match them); wildcards (`*.example.com`) included.
    pub names: Vec<String>,
    /// The issuer's distinguished name (RFC 4514 form).
    pub issuer: String,
    /// Not valid after this time, in seconds since the Unix epoch.
    pub not_after_unix_s: i64,
    /// The same instant, readable (`Mar  1 12:00:00 2027 +00:00`).
    pub not_after: String,
}

impl CertInfo {
    /// Parses a DER certificate read from `file`.
    pub fn parse(file: &Path, der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("bad certificate: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = name {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            for cn in cert.subject().iter_common_name() {
                if let Ok(cn) = cn.as_str() {
                    names.push(cn.to_ascii_lowercase());
                }
            }
        }
        let not_after = cert.validity().not_after;
        Ok(CertInfo {
            file: file.to_path_buf(),
            names,
            issuer: cert.issuer().to_string(),
            not_after_unix_s: not_after.timestamp(),
            not_after: not_after.to_string(),
        })
    }

    /// Whether the certificate has expired at `now_unix_s`.
    pub fn expired_at(&self, now_unix_s: i64) -> bool {
        self.not_after_unix_s < now_unix_s
    }

    /// Seconds until it expires (negative once it has).
    pub fn expires_in_s(&self, now_unix_s: i64) -> i64 {
        self.not_after_unix_s - now_unix_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_subject_alternative_names_lowercased() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["A.example.com".into(), "*.b.example".into()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::parse(Path::new("x.pem"), cert.der()).unwrap();
        assert_eq!(info.names, ["a.example.com", "*.b.example"]);
        assert!(info.not_after_unix_s > 0);
        assert!(!info.expired_at(0));
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert!(CertInfo::parse(Path::new("x.pem"), b"not der").is_err());
    }
}
