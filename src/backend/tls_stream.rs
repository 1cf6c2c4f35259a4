//! TLS to a backend (`--backend-tls`): a rustls client session over a backend's socket, driven by
//! [`crate::tls::TlsIo`] the way the listener drives its sessions, so that a worker reads and
//! writes a TLS backend through the same [`super::BackendStream`] as a plain one.
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
