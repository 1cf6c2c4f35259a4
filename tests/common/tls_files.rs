//! Certificates the TLS tests make for themselves (never committed keys): a test CA made with
//! rcgen, leaf certificates it signs with chosen names, serial and end of validity, written as
//! PEM files into a temporary directory; a rustls client that trusts the CA, reports the
//! certificate the server presented, and reads responses with the shared HTTP/1 reader; and the
//! `sluice` binary started with `--tls`, its log collected.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{read_response, Resp, IO_TIMEOUT};

pub const DAY_S: i64 = 86_400;

pub fn unix_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sets the validity of `params` in seconds since the Unix epoch (rcgen counts in `time`'s
/// dates, which it does not re-export: they are reached from its own epoch date).
fn set_validity(params: &mut CertificateParams, not_before_unix_s: i64, not_after_unix_s: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before_unix_s as u64);
    params.not_after = epoch + Duration::from_secs(not_after_unix_s as u64);
}

/// A certificate authority for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, in PEM, with the DER the server should present.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = unix_now_s();
        set_validity(&mut params, now - DAY_S, now + 3650 * DAY_S);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA certificate in PEM, as a trust file (`--backend-ca`) holds it.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` with serial `serial`, valid from a day before `not_after_unix_s - 30
    /// days` (or yesterday, whichever is earlier) until `not_after_unix_s`.
    pub fn leaf(&self, names: &[&str], serial: u64, not_after_unix_s: i64) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.distinguished_name = dn;
        params.serial_number = Some(serial.into());
        let not_before = (not_after_unix_s - 30 * DAY_S).min(unix_now_s() - DAY_S);
        set_validity(&mut params, not_before, not_after_unix_s);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A leaf valid for `days` more days.
    pub fn leaf_for_days(&self, names: &[&str], serial: u64, days: i64) -> Leaf {
        self.leaf(names, serial, unix_now_s() + days * DAY_S + 3600)
    }
}

impl Leaf {
    /// Writes `stem.crt` and `stem.key` into `dir`, each replaced whole (written aside, then
    /// renamed), as a certificate manager does; returns the two paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        replace_file(&cert, self.cert_pem.as_bytes());
        replace_file(&key, self.key_pem.as_bytes());
        (cert, key)
    }
}

/// Writes `bytes` to `path` atomically (a reader sees the old file or the new, never a part).
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// `--tls` flag value for a certificate and key.
pub fn tls_flag(paths: &(PathBuf, PathBuf)) -> String {
    format!("{},{}", paths.0.display(), paths.1.display())
}

/// A client configuration that trusts `ca` (TLS 1.3 and 1.2, ALPN http/1.1) and never resumes a
/// session: every handshake is a full one, so the server shows its certificate each time (a
/// resumed session reports the certificate of the session it resumed).
pub fn client_config(ca: &TestCa) -> Arc<ClientConfig> {
    let mut cfg = Arc::unwrap_or_clone(resuming_client_config(ca));
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// Like [`client_config`], resuming sessions (tickets) as browsers and curl do.
pub fn resuming_client_config(ca: &TestCa) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    // The provider sluice itself uses, whichever it is.
    let provider = sluice::tls::provider();
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS connection to sluice, its handshake done.
pub struct TlsClient {
    pub reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects to `addr` asking for `sni` and completes the handshake.
    pub fn connect(
        addr: SocketAddr,
        cfg: &Arc<ClientConfig>,
        sni: &str,
    ) -> Result<TlsClient, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(TlsClient {
            reader: BufReader::new(stream),
        })
    }

    /// The leaf certificate the server presented (DER).
    pub fn peer_leaf(&self) -> Vec<u8> {
        self.reader
            .get_ref()
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// Whether the handshake resumed an earlier session (no certificate was sent).
    pub fn resumed(&self) -> bool {
        self.reader.get_ref().conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Sends a keep-alive GET and reads its response.
    pub fn get(&mut self, path: &str) -> Result<Resp, String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        let stream = self.reader.get_mut();
        stream
            .write_all(req.as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|e| format!("write: {e}"))?;
        read_response(&mut self.reader, false).map_err(|e| format!("read: {e}"))
    }
}
