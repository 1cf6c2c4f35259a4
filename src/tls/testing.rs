//! What the TLS unit tests share: an in-memory socket that blocks as a non-blocking one does,
//! and a server and client configuration that trust each other.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// One end of an in-memory pipe that blocks (like a non-blocking socket) when empty or when
/// `room` is used up.
#[derive(Default)]
pub(crate) struct Pipe {
    pub(crate) inbox: VecDeque<u8>,
    pub(crate) outbox: VecDeque<u8>,
    pub(crate) room: usize,
    pub(crate) closed: bool,
}

impl Pipe {
    pub(crate) fn with_room(room: usize) -> Pipe {
        Pipe {
            room,
            ..Pipe::default()
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.inbox.is_empty() {
            return if self.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = out.len().min(self.inbox.len());
        for (o, b) in out.iter_mut().zip(self.inbox.drain(..n)) {
            *o = b;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(self.room.saturating_sub(self.outbox.len()));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outbox.extend(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Moves what one end wrote to the other end's inbox.
pub(crate) fn move_bytes(from: &mut Pipe, to: &mut Pipe) {
    to.inbox.extend(from.outbox.drain(..));
}

/// A server configuration for a fresh self-signed certificate of `a.example`, and a client
/// configuration that trusts it.
pub(crate) fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = crate::tls::provider();
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// The client writes `bytes` whole into its end of the pipe.
pub(crate) fn client_writes(client: &mut rustls::ClientConnection, c: &mut Pipe, bytes: &[u8]) {
    client_io(client, c).write_all(bytes).unwrap();
}

/// The client's end, driven as a socket would be.
pub(crate) fn client_io<'a>(
    client: &'a mut rustls::ClientConnection,
    c: &'a mut Pipe,
) -> crate::tls::TlsIo<'a, rustls::ClientConnection, Pipe> {
    crate::tls::TlsIo {
        conn: client,
        sock: c,
    }
}
