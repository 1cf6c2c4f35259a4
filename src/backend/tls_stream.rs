//! TLS to a backend (`--backend-tls`): a rustls client session over a backend's socket, driven by
//! [`crate::tls::TlsIo`] with the conventions the listener's sessions keep, so that a worker
//! reads and writes a TLS backend through the same [`super::BackendStream`] as a plain one.
//!
//! The handshake is part of the connect: [`TlsOver::is_connected`] says yes only once the socket
//! connected *and* the handshake completed, so a verification failure is a failed connect (the
//! client gets 502 once no other backend answers) and the connect timeout bounds the handshake.
//! A pooled connection keeps its session: a request on it makes no new handshake.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use super::BackendStream;
use crate::tls::client::BackendTls;
use crate::tls::{Handshake, TlsIo};

/// A TLS session and the backend socket it runs over.
#[derive(Debug)]
pub struct TlsOver {
    pub(super) inner: BackendStream,
    pub(super) tls: ClientConnection,
}

impl TlsOver {
    pub(super) fn new(
        inner: BackendStream,
        tls: &BackendTls,
        name: ServerName<'static>,
    ) -> io::Result<TlsOver> {
        let conn = ClientConnection::new(tls.config().clone(), name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(TlsOver { inner, tls: conn })
    }

    fn io(&mut self) -> TlsIo<'_, ClientConnection, BackendStream> {
        TlsIo {
            conn: &mut self.tls,
            sock: &mut self.inner,
        }
    }

    /// Connected and the handshake done: `Ok(false)` while either is in progress; a handshake
    /// the backend closed or that failed verification is an error that says why.
    pub(super) fn is_connected(&mut self) -> io::Result<bool> {
        if !self.inner.is_connected()? {
            return Ok(false);
        }
        match self.io().handshake()? {
            Handshake::Done => Ok(true),
            Handshake::Blocked => Ok(false),
            Handshake::Eof => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the backend closed the connection during the TLS handshake",
            )),
        }
    }

    /// Sends pending records; true when none is left.
    pub(super) fn flush_records(&mut self) -> io::Result<bool> {
        self.io().flush()
    }

    pub(super) fn wants_flush(&self) -> bool {
        self.tls.wants_write()
    }

    /// `close_notify` before the write side of the socket is shut.
    pub(super) fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) && !self.tls.is_handshaking() {
            self.io().close();
        }
        self.inner.shutdown(how)
    }

    /// For an idle pooled connection that turned readable: takes in records that carry no data
    /// (a TLS 1.3 session ticket, a key update) and says whether the connection is still usable;
    /// data, `close_notify`, an end of stream or an error mean it is not.
    pub(super) fn absorb_idle(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.io().read(&mut byte) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // Data nobody asked for (n = 1) or the end (n = 0): not reusable either way.
            Ok(n) => n > 1,
        }
    }
}

impl Read for TlsOver {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io().read(buf)
    }
}

impl Write for TlsOver {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.io().write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.io().flush().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::client::BackendTlsSettings;
    use std::os::unix::net::UnixStream as StdUnix;
    use std::sync::mpsc;
    use std::sync::Arc;

    /// A CA-signed `localhost` server configuration and a `BackendTls` that trusts the CA.
    fn configs() -> (Arc<rustls::ServerConfig>, BackendTls) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], der)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("sluice-tls-over-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let client = BackendTls::new(&BackendTlsSettings {
            ca_file: Some(ca_file),
            sni: None,
        })
        .unwrap();
        (Arc::new(server), client)
    }

    #[test]
    fn an_idle_connection_survives_a_session_ticket_but_not_close_notify() {
        let (server_cfg, client_tls) = configs();
        let (ours, theirs) = StdUnix::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (step_tx, step_rx) = mpsc::channel::<&str>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let mut sock = theirs;
            let mut conn = rustls::ServerConnection::new(server_cfg).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).unwrap();
            }
            // TLS 1.3 session tickets follow the handshake.
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            step_tx.send("tickets sent").unwrap();
            go_rx.recv().unwrap();
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            step_tx.send("closed").unwrap();
            go_rx.recv().unwrap();
        });
        let inner = BackendStream::Unix(mio::net::UnixStream::from_std(ours));
        let name = client_tls.server_name(None, None);
        let mut tls = TlsOver::new(inner, &client_tls, name).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !tls.is_connected().unwrap() {
            assert!(std::time::Instant::now() < deadline, "no handshake");
            std::thread::yield_now();
        }
        assert_eq!(step_rx.recv().unwrap(), "tickets sent");
        assert!(tls.absorb_idle(), "records without data leave it reusable");
        go_tx.send(()).unwrap();
        assert_eq!(step_rx.recv().unwrap(), "closed");
        assert!(!tls.absorb_idle(), "close_notify ends it");
        go_tx.send(()).unwrap();
        server.join().unwrap();
    }
}
