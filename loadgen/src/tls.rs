//! The client side of TLS for the generator and the holder, so latency and held connections can
//! be measured over HTTPS as clients see it.
//!
//! rustls is sans-I/O: [`TlsStream`] feeds it bytes from a non-blocking mio socket and writes what
//! it has to send, so the event loops drive a TLS connection exactly as they drive a plain one
//! (`read` and `write` until `WouldBlock`, plus a `flush` on every event for records rustls still
//! holds). The crypto provider is aws-lc-rs, the one sluice uses (its numbers against ring are
//! in PERF.md); [`provider`] is the one place it is named.
//!
//! Trust: the system's roots (rustls-native-certs), or `--cacert FILE`, or with `--insecure` any
//! certificate (the handshake's signatures are still checked, as `curl -k` does). Resumption:
//! with [`TlsOptions::resume`] every connection offers a ticket from an earlier one (rustls's
//! in-memory cache, shared by every connection of the run); without, every handshake is full.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{event, Interest, Registry, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};
use rustls::{HandshakeKind, SignatureScheme};

/// The crypto provider of every TLS connection loadgen makes.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// How to speak TLS to the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Accept any certificate (test certificates); signatures are still verified.
    pub insecure: bool,
    /// Trust these PEM certificates instead of the system's roots.
    pub cacert: Option<PathBuf>,
    /// Server name to send and verify; `None` = the URL's host (an IP address sends no SNI and
    /// is verified against the certificate's IP addresses).
    pub sni: Option<String>,
    /// Offer a ticket from an earlier connection (resumed handshakes); off = every handshake
    /// is full.
    pub resume: bool,
}

/// What every connection of a run shares: the configuration (and with it the session cache)
/// and the name it asks for.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// `host` is the URL's host (without port or brackets), used when `opts.sni` is `None`.
    pub fn new(opts: &TlsOptions, host: &str) -> io::Result<Self> {
        let name_text = opts.sni.as_deref().unwrap_or(host);
        let name = server_name(name_text)?;
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let mut config = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &opts.cacert {
                Some(path) => roots_from_file(path)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !opts.resume {
            config.resumption = Resumption::disabled();
        }
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// Starts the client side of a handshake over a connecting socket; the ClientHello goes out
    /// with the first write or flush once the socket is connected.
    pub fn wrap(&self, sock: TcpStream) -> io::Result<TlsStream> {
        let conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn,
            peer_closed: false,
        })
    }
}

/// A URL host (`[::1]` allowed) as a name rustls can send and verify.
fn server_name(text: &str) -> io::Result<ServerName<'static>> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{text:?} is not a valid TLS server name"),
        )
    })
}

fn roots_from_file(path: &Path) -> io::Result<RootCertStore> {
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--cacert {}: {why}", path.display()),
        )
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in the file".to_string()));
    }
    Ok(roots)
}

fn system_roots() -> io::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no trusted root certificates found on this system: give --cacert FILE or --insecure",
        ));
    }
    Ok(roots)
}

/// `--insecure`: any certificate for any name, but the handshake must still be signed by the
/// certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client connection over a non-blocking socket. `read` returns plaintext (or
/// `WouldBlock` while only handshake or ticket records arrived); `write` hands plaintext to
/// rustls and sends what the socket takes; `flush` sends records still held back.
pub struct TlsStream {
    sock: TcpStream,
    conn: ClientConnection,
    /// The socket reached end of file.
    peer_closed: bool,
}

impl TlsStream {
    /// Full or resumed, once the handshake is done.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        if self.conn.is_handshaking() {
            None
        } else {
            self.conn.handshake_kind()
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Moves the handshake on with what the socket has: `Ok(true)` once it is done,
    /// `Ok(false)` while it waits for the server.
    pub fn complete_handshake(&mut self) -> io::Result<bool> {
        self.send_pending_nonblocking()?;
        while self.conn.is_handshaking() {
            match self.receive() {
                Ok(true) => {}
                Ok(false) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes rustls's pending records until it has none or the socket is full.
    fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn send_pending_nonblocking(&mut self) -> io::Result<()> {
        match self.send_pending() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Reads records from the socket and processes them; `Ok(false)` when the socket had
    /// nothing (or reached its end).
    fn receive(&mut self) -> io::Result<bool> {
        if self.peer_closed {
            return Ok(false);
        }
        let n = match self.conn.read_tls(&mut self.sock) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        };
        if n == 0 {
            self.peer_closed = true;
        }
        if let Err(e) = self.conn.process_new_packets() {
            // The alert rustls queued tells the server why; best effort.
            let _ = self.send_pending_nonblocking();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        // Handshake replies, and the request rustls held back until the handshake ended.
        self.send_pending_nonblocking()?;
        Ok(n > 0)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                // End of the socket without close_notify: many servers close that way after
                // a `Connection: close` response, and the HTTP framing decides what was whole.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.receive()? && !self.peer_closed {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.send_pending_nonblocking()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending_nonblocking()
    }
}

impl event::Source for TlsStream {
    fn register(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.sock.register(r, token, interests)
    }

    fn reregister(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.sock.reregister(r, token, interests)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.sock.deregister(r)
    }
}

/// A connection to the target: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Wraps a connecting socket in TLS when `tls` is given.
    pub fn new(sock: TcpStream, tls: Option<&TlsClient>) -> io::Result<Self> {
        Ok(match tls {
            Some(client) => Stream::Tls(Box::new(client.wrap(sock)?)),
            None => Stream::Plain(sock),
        })
    }

    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.socket(),
        }
    }

    /// See [`TlsStream::complete_handshake`]; plain TCP has none to wait for.
    pub fn complete_handshake(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            Stream::Tls(t) => t.complete_handshake(),
        }
    }

    /// The handshake's kind once it is done; `None` for plain TCP.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.handshake_kind(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.flush(),
        }
    }
}

impl event::Source for Stream {
    fn register(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.register(r, token, interests),
            Stream::Tls(t) => t.register(r, token, interests),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.reregister(r, token, interests),
            Stream::Tls(t) => t.reregister(r, token, interests),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.deregister(r),
            Stream::Tls(t) => t.deregister(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_take_hosts_and_ip_addresses() {
        assert!(matches!(
            server_name("example.test").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name("bad name!").is_err());
    }

    #[test]
    fn a_cacert_without_certificates_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("loadgen-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let opts = TlsOptions {
            cacert: Some(path.clone()),
            ..TlsOptions::default()
        };
        let err = TlsClient::new(&opts, "localhost").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("empty.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
