//! The TLS handshake of a client on a TLS listener (`--tls`), before its first request.
//!
//! A client of a TLS listener starts in [`ClientState::TlsHandshake`] (after its PROXY protocol
//! header, when it sends one). Its first byte decides what it is, before any rustls state exists:
//! a TLS handshake record (0x16) gets a rustls session from the worker's current configuration;
//! a plain HTTP request gets `400` "plain HTTP request sent to a TLS port", in plain text, as
//! nginx answers it; anything else is closed. The handshake then runs as the socket allows, and
//! must complete within `--tls-handshake-timeout` of the accept, or the connection is closed
//! (slowloris on the handshake). A completed handshake continues as the listener's mode does: an
//! HTTP request head, or a tunnel to a backend in TCP mode. Each outcome is counted
//! (`sluice_tls_handshakes_total`, `sluice_tls_handshake_failures_total`).
//!
//! The configuration is an `Arc<ServerConfig>` the control thread replaces on a certificate
//! reload ([`Core::install_tls`]); a session keeps the configuration it started with.

use std::io;
use std::sync::Arc;

use log::debug;
use rustls::{HandshakeKind, ServerConfig};

use crate::tls::sniff::{classify_first_bytes, FirstBytes};
use crate::tls::{Handshake, ServerTls};
use crate::worker::conn::{ClientKey, ClientState};
use crate::worker::origin::{looks_like_header, Looks};
use crate::worker::{Core, Next};

/// What a plain HTTP client on the TLS port is told.
pub(super) const PLAIN_HTTP_REASON: &str = "plain HTTP request sent to a TLS port";

/// Why a handshake failed, for the failure counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    PlainHttp,
    NotTls,
    TimedOut,
    Closed,
    UnknownSni,
    Protocol,
}

impl Core {
    /// Whether new clients must complete a TLS handshake first.
    #[inline]
    pub(super) fn tls_listener(&self) -> bool {
        self.tls.is_some()
    }

    /// A new TLS configuration from the control thread (a certificate reload): new handshakes use
    /// it, sessions already started keep theirs. A plain listener stays plain.
    pub(super) fn install_tls(&mut self, cfg: Arc<ServerConfig>) {
        if let Some(tls) = self.tls.as_mut() {
            *tls = cfg;
        }
    }

    /// Puts client `k` into the handshake state, its deadline `--tls-handshake-timeout` away.
    pub(super) fn start_tls(&mut self, k: ClientKey) -> Next {
        let timeout_ms = self.cfg.tls.as_ref().map_or(0, |t| t.handshake_timeout_ms);
        let c = &mut self.conns[k];
        c.state = ClientState::TlsHandshake;
        c.deadline
            .set(self.now.ms + timeout_ms, k.token(), &mut self.io.timers);
        Next::Again
    }

    /// `TlsHandshake`: tells TLS from plain HTTP by the first byte, then moves the handshake on.
    #[inline(never)]
    pub(super) fn tls_handshake(&mut self, k: ClientKey) -> Next {
        if !self.conns[k].sock.is_tls() {
            if let Some(next) = self.begin_session(k) {
                return next;
            }
        }
        let c = &mut self.conns[k];
        let Some(tls) = c.sock.tls.as_deref_mut() else {
            return Next::Close;
        };
        match tls.handshake(&mut c.sock.tcp) {
            Ok(Handshake::Done) => self.handshake_done(k),
            Ok(Handshake::Blocked) => {
                c.ready.readable = false;
                Next::Wait
            }
            Ok(Handshake::Eof) => self.handshake_failed(k, Failure::Closed),
            Err(e) => {
                let why = failure_of(&e);
                debug!("TLS handshake from {}: {e}", c.peer_ip);
                self.handshake_failed(k, why)
            }
        }
    }

    /// Looks at the first bytes: a TLS client gets a session (`None`: go on with the handshake);
    /// otherwise what to do next.
    fn begin_session(&mut self, k: ClientKey) -> Option<Next> {
        let c = &mut self.conns[k];
        if !c.ready.readable {
            return Some(Next::Wait);
        }
        let mut first = [0u8; 8];
        let n = match c.sock.tcp.peek(&mut first) {
            Ok(0) => return Some(self.handshake_failed(k, Failure::Closed)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.ready.readable = false;
                return Some(Next::Wait);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Some(Next::Again),
            Err(_) => return Some(Next::Close),
        };
        let first = &first[..n];
        if self.cfg.proxy_protocol_from.is_some() && looks_like_header(first) == Looks::Header {
            self.metrics.current.proxy_headers.untrusted += 1;
            return Some(Next::Close);
        }
        match classify_first_bytes(first) {
            FirstBytes::Tls => {}
            FirstBytes::PlainHttp => {
                self.count_failure(Failure::PlainHttp);
                return Some(self.answer(k, 400, PLAIN_HTTP_REASON, true));
            }
            FirstBytes::Other => return Some(self.handshake_failed(k, Failure::NotTls)),
        }
        let cfg = self.tls.clone()?;
        match ServerTls::new(cfg, self.ops.log.is_some()) {
            Ok(session) => {
                self.conns[k].sock.tls = Some(Box::new(session));
                None
            }
            Err(e) => {
                debug!("TLS session: {e}");
                Some(Next::Close)
            }
        }
    }

    /// The handshake completed: on to the listener's mode.
    fn handshake_done(&mut self, k: ClientKey) -> Next {
        let c = &mut self.conns[k];
        let resumed = c
            .sock
            .tls
            .as_ref()
            .is_some_and(|t| t.handshake_kind() == Some(HandshakeKind::Resumed));
        // rustls may hold application data that came with the client's last flight.
        c.ready.readable = true;
        if resumed {
            self.metrics.current.tls.resumed += 1;
        } else {
            self.metrics.current.tls.full += 1;
        }
        self.first_request_or_tunnel(k)
    }

    /// The deadline of `TlsHandshake` passed.
    #[inline(never)]
    pub(super) fn tls_handshake_timed_out(&mut self, k: ClientKey) -> Next {
        self.handshake_failed(k, Failure::TimedOut)
    }

    fn handshake_failed(&mut self, k: ClientKey, why: Failure) -> Next {
        self.count_failure(why);
        if let Some(c) = self.conns.client(k) {
            debug!("TLS handshake from {}: {why:?}; closing", c.peer_ip);
        }
        Next::Close
    }

    fn count_failure(&mut self, why: Failure) {
        let tls = &mut self.metrics.current.tls;
        match why {
            Failure::PlainHttp => tls.plain_http += 1,
            Failure::NotTls => tls.not_tls += 1,
            Failure::TimedOut => tls.timed_out += 1,
            Failure::Closed => tls.closed += 1,
            Failure::UnknownSni => tls.unknown_sni += 1,
            Failure::Protocol => tls.protocol += 1,
        }
    }
}

/// Which failure a handshake error is.
fn failure_of(e: &io::Error) -> Failure {
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        // What rustls says when the resolver has no certificate for the name (strict SNI).
        Some(rustls::Error::General(msg)) if msg.contains("no server certificate") => {
            Failure::UnknownSni
        }
        Some(_) => Failure::Protocol,
        None => Failure::Closed,
    }
}
