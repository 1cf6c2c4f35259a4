//! A client's socket: plain TCP, or TCP carrying TLS once a handshake has started on it.
//!
//! The session's handlers read and write a client through this one type whatever the listener
//! speaks, so TLS adds no state or handler of its own to the request path: a plain connection
//! costs one test of an empty `Option` per read or write, and the TLS work sits out of line
//! ([`crate::tls::ServerTls`] keeps the conventions the worker's cached readiness relies on: a
//! short read drained both the socket and the session). The session is boxed so that an idle
//! plain client stays as small as it was.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::tls::ServerTls;

pub(super) struct ClientSock {
    pub(super) tcp: TcpStream,
    /// The TLS session, from the first handshake byte on.
    pub(super) tls: Option<Box<ServerTls>>,
}

impl ClientSock {
    /// The TLS version (as nginx's `$ssl_protocol` writes it) and the SNI name of the session, for
    /// the access log; `(None, None)` on a plain connection.
    pub(super) fn tls_facts(&self) -> (Option<&'static str>, Option<&str>) {
        let Some(tls) = self.tls.as_deref() else {
            return (None, None);
        };
        let version = tls.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        });
        (version, tls.sni())
    }

    pub(super) fn plain(tcp: TcpStream) -> ClientSock {
        ClientSock { tcp, tls: None }
    }

    #[inline]
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether TLS records are waiting for the socket to take them.
    #[inline]
    pub(super) fn wants_flush(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_flush())
    }

    /// Sends pending TLS records; true when none is left (always, for plain TCP).
    #[inline(never)]
    pub(super) fn flush_tls(&mut self) -> io::Result<bool> {
        match &mut self.tls {
            None => Ok(true),
            Some(tls) => tls.flush(&mut self.tcp),
        }
    }

    /// Ends the sending side: `close_notify` for TLS (then the TCP side, once every record went),
    /// `shutdown(Write)` for plain TCP.
    pub(super) fn shut_write(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => self.tcp.shutdown(Shutdown::Write),
            Some(tls) => {
                let all_sent = tls.close(&mut self.tcp);
                if all_sent {
                    self.tcp.shutdown(Shutdown::Write)
                } else {
                    // The rest goes out as the socket becomes writable ([`ClientSock::on_writable`]).
                    Ok(())
                }
            }
        }
    }

    /// Before the socket is dropped: a TLS peer whose handshake completed gets `close_notify`, as
    /// far as the socket takes it now (a handshake cut short gets no more than its alert, if
    /// rustls sent one).
    pub(super) fn close(&mut self) {
        if let Some(tls) = self.tls.as_mut().filter(|t| !t.is_handshaking()) {
            let _ = tls.close(&mut self.tcp);
        }
    }

    /// The socket became writable: TLS records a write left behind go now, even when no handler
    /// has more to write.
    #[inline]
    pub(super) fn on_writable(&mut self) -> io::Result<()> {
        if self.wants_flush() {
            self.flush_tls()?;
        }
        Ok(())
    }
}

#[inline(never)]
fn tls_read(tls: &mut ServerTls, tcp: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    tls.read(tcp, buf)
}

#[inline(never)]
fn tls_write(tls: &mut ServerTls, tcp: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    tls.write(tcp, bytes)
}

impl Read for ClientSock {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.read(buf),
            Some(tls) => tls_read(tls, &mut self.tcp, buf),
        }
    }
}

impl Write for ClientSock {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.write(bytes),
            Some(tls) => tls_write(tls, &mut self.tcp, bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().map(|_| ())
    }
}
