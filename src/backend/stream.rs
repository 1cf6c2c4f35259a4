//! A non-blocking stream to a backend, TCP or Unix-domain, for the workers' backend connections
//! and the control thread's health probes. One enum rather than a trait object: each read and
//! write is a `match` on two variants, which costs a TCP backend nothing measurable. With
//! `--backend-tls` either carries a TLS session ([`BackendStream::Tls`], see [`super::tls_stream`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::tls_stream::TlsOver;
use super::BackendAddr;
use crate::tls::client::BackendTls;

/// A connection to a backend, possibly still connecting.
#[derive(Debug)]
pub enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over a TCP or Unix stream (`--backend-tls`).
    Tls(Box<TlsOver>),
}

impl BackendStream {
    /// Starts a non-blocking connect to `addr`. TCP connections get `TCP_NODELAY`.
    pub fn connect(addr: &BackendAddr) -> io::Result<BackendStream> {
        match addr {
            BackendAddr::Ip(ip) => {
                let sock = TcpStream::connect(*ip)?;
                let _ = sock.set_nodelay(true);
                Ok(BackendStream::Tcp(sock))
            }
            BackendAddr::Unix(path) => UnixStream::connect(path).map(BackendStream::Unix),
            // Tables carry the addresses a name resolved to, never the name.
            BackendAddr::Name { .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr} is a name: sluice connects to the addresses it resolves to"),
            )),
        }
    }

    /// Starts a connect to `addr`, with a TLS session on it when `tls` is given; `dns_name` is
    /// the name the backend was given by, if it was (see [`BackendTls::server_name`]).
    pub fn connect_with(
        addr: &BackendAddr,
        tls: Option<&BackendTls>,
        dns_name: Option<&str>,
    ) -> io::Result<BackendStream> {
        let sock = BackendStream::connect(addr)?;
        let Some(tls) = tls else {
            return Ok(sock);
        };
        let ip = match addr {
            BackendAddr::Ip(ip) => Some(ip.ip()),
            _ => None,
        };
        let name = tls.server_name(ip, dns_name);
        Ok(BackendStream::Tls(Box::new(TlsOver::new(sock, tls, name)?)))
    }

    /// Whether it carries TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, BackendStream::Tls(_))
    }

    /// The TCP socket under it, if it is TCP.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            BackendStream::Tcp(s) => Some(s),
            BackendStream::Unix(_) => None,
            BackendStream::Tls(t) => t.inner.tcp(),
        }
    }

    /// Whether TLS records wait for the socket to take them (never for a plain stream).
    pub fn wants_flush(&self) -> bool {
        match self {
            BackendStream::Tls(t) => t.wants_flush(),
            _ => false,
        }
    }

    /// Sends pending TLS records (the socket became writable); true when none is left.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        match self {
            BackendStream::Tls(t) => t.flush_records(),
            _ => Ok(true),
        }
    }

    /// An idle pooled connection turned readable: whether it is still usable. A plain one is not
    /// (a backend sends nothing unasked but a close); a TLS one may have sent a session ticket.
    pub fn survives_idle_read(&mut self) -> bool {
        match self {
            BackendStream::Tls(t) => t.absorb_idle(),
            _ => false,
        }
    }

    /// The pending error of a connect, if it failed.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            BackendStream::Tcp(s) => s.take_error(),
            BackendStream::Unix(s) => s.take_error(),
            BackendStream::Tls(t) => t.inner.take_error(),
        }
    }

    /// Whether the connect (and, for TLS, the handshake) completed: `Ok(false)` while it is in
    /// progress. For TLS this moves the handshake on as far as the socket allows.
    pub fn is_connected(&mut self) -> io::Result<bool> {
        let peer = match self {
            BackendStream::Tcp(s) => s.peer_addr().map(drop),
            BackendStream::Unix(s) => s.peer_addr().map(drop),
            BackendStream::Tls(t) => return t.is_connected(),
        };
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.shutdown(how),
            BackendStream::Unix(s) => s.shutdown(how),
            BackendStream::Tls(t) => t.shutdown(how),
        }
    }
}

impl Read for BackendStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BackendStream::Tcp(s) => s.read(buf),
            BackendStream::Unix(s) => s.read(buf),
            BackendStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for BackendStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BackendStream::Tcp(s) => s.write(buf),
            BackendStream::Unix(s) => s.write(buf),
            BackendStream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for BackendStream {
    fn register(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.register(r, token, interest),
            BackendStream::Unix(s) => s.register(r, token, interest),
            BackendStream::Tls(t) => t.inner.register(r, token, interest),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.reregister(r, token, interest),
            BackendStream::Unix(s) => s.reregister(r, token, interest),
            BackendStream::Tls(t) => t.inner.reregister(r, token, interest),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.deregister(r),
            BackendStream::Unix(s) => s.deregister(r),
            BackendStream::Tls(t) => t.inner.deregister(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_stream_connects_and_carries_bytes() {
        let dir = std::env::temp_dir().join(format!("sluice-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let addr = BackendAddr::Unix(path.clone());
        let mut s = BackendStream::connect(&addr).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        assert!(s.is_connected().unwrap());
        assert!(s.take_error().unwrap().is_none());
        // A unix socket's write lands in the reader's queue before it returns.
        peer.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        assert_eq!(s.read(&mut got).unwrap(), 2);
        assert_eq!(&got, b"hi");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_unix_socket_fails_at_once() {
        let addr = BackendAddr::Unix("/nonexistent-dir-of-sluice/x.sock".into());
        assert!(BackendStream::connect(&addr).is_err());
    }
}
