//! Who a client is when a balancer stands in front of sluice, and telling the backends: the
//! PROXY protocol ([`crate::proxy_protocol`]) in both directions.
//!
//! Receiving (`--accept-proxy-protocol`): a connection from a peer in `--proxy-protocol-from`
//! starts in the client state `ProxyHeader` ([`Core::proxy_header`]). The header is read with
//! `MSG_PEEK` into a buffer on the stack, and only once it is whole are exactly its bytes taken
//! off the socket, so the client's own bytes stay in the kernel for the next state and a
//! connection waiting for its header holds no pooled buffer. The client it names replaces the
//! socket's peer for everything after: X-Forwarded-For, the hashing strategies' keys, logs.
//! A listed peer that sends no header, a malformed or truncated header, and a header that is not
//! complete within `--head-timeout` of the accept close the connection. A peer not listed is a
//! client itself: in HTTP mode a header from it fails to parse as a request and is refused
//! here rather than answered with 400 ([`Core::refused_as_untrusted_header`]); in TCP mode its
//! first bytes are looked at as they arrive, without holding back what the backend sends
//! ([`Core::vet_tunnel_start`]). Each outcome is counted (`sluice_proxy_protocol_headers_total`).
//!
//! Sending (`--send-proxy-protocol`): a new backend connection gets a header naming the client
//! before any other byte ([`Core::send_origin`]). The header is at most 108 bytes and the socket's
//! send buffer is empty right after the connect, so it is written whole or the connect counts as
//! failed. In HTTP mode the configuration turns pooling off, so no backend connection carries
//! one client's header for another.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use log::debug;

use crate::config::{any_contains, Mode};
use crate::proxy_protocol::{self, Version};
use crate::worker::conn::{BackendConnKey, ClientKey, ClientState};
use crate::worker::{Core, Next};

/// Why a connection's PROXY header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    Missing,
    Malformed,
    TimedOut,
}

/// How the first bytes of a connection compare with a PROXY header's signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Looks {
    /// They start a header (`PROXY ` or the v2 signature).
    Header,
    /// They are a strict prefix of a signature: more bytes will tell.
    Undecided,
    /// They are no header.
    Other,
}

/// Compares the first bytes of a connection with the two signatures.
pub(super) fn looks_like_header(bytes: &[u8]) -> Looks {
    let mut looks = Looks::Other;
    for signature in [&b"PROXY "[..], &proxy_protocol::V2_SIGNATURE[..]] {
        let n = bytes.len().min(signature.len());
        if n > 0 && bytes[..n] == signature[..n] {
            if n == signature.len() {
                return Looks::Header;
            }
            looks = Looks::Undecided;
        }
    }
    looks
}

impl Core {
    /// The state a new client starts in: `ProxyHeader` for a peer that must send a header.
    pub(super) fn first_state(&self, peer_ip: IpAddr) -> ClientState {
        match &self.cfg.proxy_protocol_from {
            Some(from) if any_contains(from, peer_ip) => ClientState::ProxyHeader,
            _ => ClientState::Head,
        }
    }

    /// `ProxyHeader`: reads the PROXY header of a connection from a listed balancer, then goes on
    /// as the client it names.
    // Kept out of line, like the other handlers here, so that the event loop's hot function does
    // not grow by code that runs once per connection, and only with the flags on: inlined, it
    // changed LLVM's inlining of the request path and cost every request about 50 instructions.
    #[inline(never)]
    pub(super) fn proxy_header(&mut self, k: ClientKey) -> Next {
        let c = &mut self.conns[k];
        if !c.ready.readable {
            return Next::Wait;
        }
        let mut buf = [0u8; proxy_protocol::V2_MAX_BYTES];
        let n = match c.sock.tcp.peek(&mut buf) {
            // Closed before a byte: a balancer's connect check, not a refusal.
            Ok(0) => return Next::Close,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.ready.readable = false;
                return Next::Wait;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Next::Again,
            Err(_) => return Next::Close,
        };
        let header = match proxy_protocol::parse(&buf[..n]) {
            Ok(Some(h)) => h,
            Ok(None) if !c.ready.hup && n < buf.len() => {
                // The rest comes with a later event (epoll reports new bytes even though the
                // peeked ones are still unread); the accept's deadline bounds the wait.
                c.ready.readable = false;
                return Next::Wait;
            }
            Ok(None) => return self.refuse_header(k, Refused::Malformed),
            Err(proxy_protocol::Error::Missing) => return self.refuse_header(k, Refused::Missing),
            Err(_) => return self.refuse_header(k, Refused::Malformed),
        };
        if take_exactly(&mut c.sock.tcp, &mut buf[..header.len]).is_err() {
            return Next::Close;
        }
        // Bytes past the header, or the peer's close, are still there to read.
        c.ready.readable = n > header.len || c.ready.hup;
        if let Some((client, dst)) = header.addresses {
            c.peer_ip = client.ip().to_canonical();
            c.peer_port = client.port();
            if self.cfg.send_proxy_protocol.is_some() {
                self.conns.proxied_dst.insert(k.0, dst);
            }
        }
        self.metrics.current.proxy_headers.accepted += 1;
        if self.ops.clients.is_some() {
            let ip = self.conns[k].peer_ip;
            if !self.client_may_connect(ip) {
                // Still in `ProxyHeader`: the close does not count it out of a client it was
                // never counted in.
                return Next::Close;
            }
        }
        if self.tls_listener() {
            return self.start_tls(k);
        }
        self.first_request_or_tunnel(k)
    }

    /// The connection is ready for its first request (HTTP) or its tunnel (TCP): after the accept,
    /// the PROXY protocol header and the TLS handshake, whichever of them it has.
    pub(super) fn first_request_or_tunnel(&mut self, k: ClientKey) -> Next {
        match self.cfg.mode {
            Mode::Http => {
                let c = &mut self.conns[k];
                c.state = ClientState::Head;
                c.deadline.set(
                    self.now.ms + self.cfg.idle_timeout_ms,
                    k.token(),
                    &mut self.io.timers,
                );
                Next::Again
            }
            Mode::Tcp => {
                self.make_tunnel(k, false);
                self.dispatch(k)
            }
        }
    }

    /// The deadline of `ProxyHeader` passed.
    #[inline(never)]
    pub(super) fn proxy_header_timed_out(&mut self, k: ClientKey) -> Next {
        self.refuse_header(k, Refused::TimedOut)
    }

    fn refuse_header(&mut self, k: ClientKey, why: Refused) -> Next {
        let counts = &mut self.metrics.current.proxy_headers;
        match why {
            Refused::Missing => counts.missing += 1,
            Refused::Malformed => counts.malformed += 1,
            Refused::TimedOut => counts.timed_out += 1,
        }
        if let Some(c) = self.conns.client(k) {
            debug!("PROXY header from {}: {why:?}; closing", c.peer_ip);
        }
        Next::Close
    }

    /// HTTP mode, a request head refused: true (and counted) when it was a PROXY header from a
    /// peer not listed in `--proxy-protocol-from`, which gets no answer but a close.
    #[inline(never)]
    pub(super) fn refused_as_untrusted_header(&mut self, k: ClientKey) -> bool {
        if self.cfg.proxy_protocol_from.is_none() {
            return false;
        }
        let header = self
            .conns
            .exchange(k)
            .and_then(|ex| ex.req.as_ref())
            .is_some_and(|req| looks_like_header(req.bytes()) == Looks::Header);
        if header {
            self.note_untrusted_header(k);
        }
        header
    }

    fn note_untrusted_header(&mut self, k: ClientKey) {
        self.metrics.current.proxy_headers.untrusted += 1;
        if let Some(c) = self.conns.client(k) {
            debug!(
                "PROXY header from {}, not in --proxy-protocol-from; closing",
                c.peer_ip
            );
        }
    }

    /// TCP mode, a tunnel for a peer not listed in `--proxy-protocol-from`: looks at the first
    /// bytes the client sends, with `MSG_PEEK`, before any of them goes to the backend. A PROXY
    /// header closes the connection; while the bytes so far could still begin one, the client's
    /// side is held back (what the backend sends flows meanwhile). `Some` when the tunnel closes.
    #[inline(never)]
    pub(super) fn vet_tunnel_start(&mut self, k: ClientKey) -> Option<Next> {
        let c = &mut self.conns[k];
        if !c.ready.readable {
            return None;
        }
        let mut first = [0u8; proxy_protocol::V2_SIGNATURE.len()];
        let looks = match c.sock.tcp.peek(&mut first) {
            Ok(0) => Looks::Other,
            Ok(n) => looks_like_header(&first[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.ready.readable = false;
                return None;
            }
            // Look again before the tunnel reads anything.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Some(Next::Again),
            Err(_) => return Some(Next::Close),
        };
        match looks {
            Looks::Header => {
                self.note_untrusted_header(k);
                Some(Next::Close)
            }
            // Cut short by a close: no header after all.
            Looks::Undecided if !c.ready.hup => {
                c.ready.readable = false;
                None
            }
            Looks::Undecided | Looks::Other => {
                if let Some(ex) = c.ex.as_deref_mut() {
                    ex.vet_first_bytes = false;
                }
                None
            }
        }
    }

    /// Writes the PROXY header naming client `k` on its new backend connection `bk`.
    #[inline(never)]
    pub(super) fn send_origin(
        &mut self,
        k: ClientKey,
        bk: BackendConnKey,
        version: Version,
    ) -> io::Result<()> {
        let local = match self.conns.proxied_dst.get(&k.0) {
            Some(&dst) => dst,
            None => {
                let local = self.conns[k].sock.tcp.local_addr()?;
                SocketAddr::new(local.ip().to_canonical(), local.port())
            }
        };
        let (c, b) = self.conns.pair_mut(k, bk);
        let client = SocketAddr::new(c.peer_ip, c.peer_port);
        let mut header = [0u8; proxy_protocol::V1_MAX_BYTES];
        let n = proxy_protocol::write(version, client, local, &mut header);
        match b.sock.write(&header[..n]) {
            Ok(written) if written == n => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "PROXY header not written whole",
            )),
            Err(e) => Err(e),
        }
    }
}

/// Reads exactly `buf.len()` bytes that a peek showed are waiting.
fn take_exactly(sock: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match sock.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_told_apart_by_the_two_signatures() {
        assert_eq!(looks_like_header(b"PROXY TCP4 "), Looks::Header);
        assert_eq!(
            looks_like_header(&proxy_protocol::V2_SIGNATURE),
            Looks::Header
        );
        assert_eq!(looks_like_header(b"PROX"), Looks::Undecided);
        assert_eq!(looks_like_header(b"\r\n\r\n\0"), Looks::Undecided);
        assert_eq!(looks_like_header(b"\r\n"), Looks::Undecided);
        assert_eq!(looks_like_header(b"GET / HTTP/1.1"), Looks::Other);
        assert_eq!(looks_like_header(b"PROXZ"), Looks::Other);
        assert_eq!(looks_like_header(b""), Looks::Other);
    }
}
