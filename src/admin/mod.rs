//! The admin listener: a small HTTP/1.1 server on the control thread's mio loop.
//!
//! It is deliberately separate from the proxy's workers: a burst of API calls or a slow dashboard
//! never shares an event loop with client traffic, and the admin address defaults to loopback so it
//! is not exposed by accident. Requests are small JSON documents; bodies need Content-Length and are
//! capped ([`MAX_BODY_BYTES`], 413 beyond it), heads are capped (431). The routes live in [`routes`];
//! the control thread answers them.

pub(crate) mod routes;
pub(crate) mod schema;

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use serde::Serialize;
use slab::Slab;

/// Largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest request head accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// An admin connection idle this long is closed.
pub(crate) const IDLE_TIMEOUT_MS: u64 = 60_000;

/// A complete admin request.
#[derive(Debug, Default)]
pub(crate) struct AdminRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl AdminRequest {
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// What a handler makes of a request: the response, or a ticket for one that comes later (a
/// change waiting for the configuration store). The connection answers nothing else meanwhile.
#[derive(Debug)]
pub(crate) enum Reply {
    Now(AdminResponse),
    Later(u64),
}

/// A response to write back.
#[derive(Debug)]
pub(crate) struct AdminResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl AdminResponse {
    pub(crate) fn json<T: Serialize>(status: u16, value: &T) -> AdminResponse {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                AdminResponse {
                    status,
                    content_type: "application/json",
                    headers: Vec::new(),
                    body,
                }
            }
            Err(e) => AdminResponse::error(500, &format!("cannot encode response: {e}")),
        }
    }

    /// `{"error": message}` with `status`.
    pub(crate) fn error(status: u16, message: &str) -> AdminResponse {
        let mut body = serde_json::json!({ "error": message })
            .to_string()
            .into_bytes();
        body.push(b'\n');
        AdminResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    pub(crate) fn with_body(
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> AdminResponse {
        AdminResponse {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

struct AdminConn {
    sock: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    close_after_write: bool,
    last_active_ms: u64,
    /// A request whose answer comes later: its ticket, whether to close after it, and whether it
    /// was a HEAD.
    waiting: Option<Waiting>,
}

#[derive(Clone, Copy, Debug)]
struct Waiting {
    ticket: u64,
    close: bool,
    head_only: bool,
}

/// The admin listener and its connections. Connection tokens are `token_base + slab key`.
pub(crate) struct AdminServer {
    listener: TcpListener,
    conns: Slab<AdminConn>,
    token_base: usize,
}

/// What parsing the front of a connection's input found.
enum Parsed {
    Incomplete,
    Request(AdminRequest, usize),
    /// Refuse with this response and close.
    Refuse(AdminResponse),
}

impl AdminServer {
    /// Serves on a listener bound already (or inherited in a live upgrade).
    pub(crate) fn from_std(
        listener: std::net::TcpListener,
        token_base: usize,
    ) -> io::Result<AdminServer> {
        listener.set_nonblocking(true)?;
        Ok(AdminServer {
            listener: TcpListener::from_std(listener),
            conns: Slab::new(),
            token_base,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && self.conns.contains(token.0 - self.token_base)
    }

    pub(crate) fn accept(&mut self, registry: &Registry, now_ms: u64) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(self.token_base + entry.key());
                    if registry
                        .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(AdminConn {
                            sock,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            close_after_write: false,
                            last_active_ms: now_ms,
                            waiting: None,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("admin accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what the connection sent, answers every complete request with `handler`, writes.
    pub(crate) fn on_ready(
        &mut self,
        token: Token,
        now_ms: u64,
        handler: &mut dyn FnMut(&AdminRequest) -> Reply,
    ) {
        let key = token.0 - self.token_base;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_active_ms = now_ms;
        let mut closed = false;
        let mut chunk = [0u8; 8192];
        while !conn.close_after_write {
            match conn.sock.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => conn.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(key);
                    return;
                }
            }
            if conn.inbuf.len() > MAX_HEAD_BYTES + MAX_BODY_BYTES + 1 {
                break;
            }
        }
        if closed {
            // The client sent all it will (perhaps only half-closed): an answer still to come
            // is the last one.
            if let Some(w) = conn.waiting.as_mut() {
                w.close = true;
            }
        }
        Self::answer_queued(conn, handler);
        self.finish(key, closed);
    }

    /// Answers the request that waited for `ticket`, then any requests queued behind it.
    pub(crate) fn complete(
        &mut self,
        ticket: u64,
        resp: AdminResponse,
        handler: &mut dyn FnMut(&AdminRequest) -> Reply,
    ) {
        let Some(key) = self
            .conns
            .iter()
            .find(|(_, c)| c.waiting.is_some_and(|w| w.ticket == ticket))
            .map(|(k, _)| k)
        else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(w) = conn.waiting.take() {
            write_response(&mut conn.out, &resp, w.close, w.head_only);
            conn.close_after_write = w.close;
        }
        Self::answer_queued(conn, handler);
        self.finish(key, false);
    }

    /// Answers complete requests in the input until one must wait.
    fn answer_queued(conn: &mut AdminConn, handler: &mut dyn FnMut(&AdminRequest) -> Reply) {
        while !conn.close_after_write && conn.waiting.is_none() {
            match parse(&conn.inbuf) {
                Parsed::Incomplete => break,
                Parsed::Refuse(resp) => {
                    write_response(&mut conn.out, &resp, true, false);
                    conn.close_after_write = true;
                }
                Parsed::Request(req, used) => {
                    conn.inbuf.drain(..used);
                    let close = wants_close(&req);
                    let head_only = req.method == "HEAD";
                    match handler(&req) {
                        Reply::Now(resp) => {
                            write_response(&mut conn.out, &resp, close, head_only);
                            conn.close_after_write = close;
                        }
                        Reply::Later(ticket) => {
                            conn.waiting = Some(Waiting {
                                ticket,
                                close,
                                head_only,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Writes what is pending and closes the connection when it is done with.
    fn finish(&mut self, key: usize, peer_closed: bool) {
        if self.flush(key)
            && self.conns.get(key).is_some_and(|c| {
                c.waiting.is_none() && c.out.is_empty() && (peer_closed || c.close_after_write)
            })
        {
            self.close(key);
        }
    }

    /// Writes pending output; false if the connection failed and was closed.
    fn flush(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        while !conn.out.is_empty() {
            match conn.sock.write(&conn.out) {
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(key);
                    return false;
                }
            }
        }
        true
    }

    fn close(&mut self, key: usize) {
        self.conns.try_remove(key);
    }

    /// Closes connections idle longer than [`IDLE_TIMEOUT_MS`].
    pub(crate) fn sweep_idle(&mut self, now_ms: u64) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ms.saturating_sub(c.last_active_ms) > IDLE_TIMEOUT_MS)
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            self.close(k);
        }
    }
}

fn wants_close(req: &AdminRequest) -> bool {
    let conn = req.header("connection").map(|v| v.to_ascii_lowercase());
    conn.is_some_and(|v| v.windows(5).any(|w| w == b"close"))
}

fn parse(input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if input.len() > MAX_HEAD_BYTES {
                return Parsed::Refuse(AdminResponse::error(431, "request head too large"));
            }
            return Parsed::Incomplete;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(AdminResponse::error(431, "too many header fields"))
        }
        Err(e) => {
            return Parsed::Refuse(AdminResponse::error(
                400,
                &format!("malformed request: {e}"),
            ))
        }
    };
    if head_len > MAX_HEAD_BYTES {
        return Parsed::Refuse(AdminResponse::error(431, "request head too large"));
    }
    let mut out = AdminRequest {
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
        body: Vec::new(),
    };
    if out.header("transfer-encoding").is_some() {
        return Parsed::Refuse(AdminResponse::error(
            411,
            "send the body with Content-Length",
        ));
    }
    let length = match out.header("content-length").map(|v| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
    }) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return Parsed::Refuse(AdminResponse::error(400, "bad Content-Length")),
    };
    if length > MAX_BODY_BYTES {
        return Parsed::Refuse(AdminResponse::error(
            413,
            &format!("body larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    if input.len() < head_len + length {
        return Parsed::Incomplete;
    }
    out.body = input[head_len..head_len + length].to_vec();
    Parsed::Request(out, head_len + length)
}

fn write_response(out: &mut Vec<u8>, resp: &AdminResponse, close: bool, head_only: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        resp.status,
        status_text(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (name, value) in &resp.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
}

/// Compares a presented bearer token with the configured one in time independent of where they
/// differ, so the token cannot be guessed byte by byte from response times.
pub(crate) fn token_matches(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some(presented) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let expected = token.as_bytes();
    let mut diff = presented.len() ^ expected.len();
    for i in 0..presented.len().max(expected.len()) {
        let a = presented.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= usize::from(a ^ b);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_requests_and_waits_for_partial_ones() {
        let raw = b"POST /api/backends HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /";
        match parse(raw) {
            Parsed::Request(r, used) => {
                assert_eq!(r.method, "POST");
                assert_eq!(r.body, b"{}");
                assert_eq!(&raw[used..], b"GET /");
            }
            _ => panic!("expected a request"),
        }
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn refuses_oversized_and_malformed_requests() {
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert!(matches!(parse(big.as_bytes()), Parsed::Refuse(r) if r.status == 413));
        assert!(matches!(parse(b"GARBAGE\r\n\r\n"), Parsed::Refuse(r) if r.status == 400));
        assert!(
            matches!(parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Parsed::Refuse(r) if r.status == 411)
        );
        let huge_head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 10));
        assert!(matches!(parse(huge_head.as_bytes()), Parsed::Refuse(r) if r.status == 431));
    }

    #[test]
    fn token_check_needs_the_exact_bearer_token() {
        assert!(token_matches(Some(b"Bearer s3cret"), "s3cret"));
        assert!(!token_matches(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!token_matches(Some(b"Bearer s3cretx"), "s3cret"));
        assert!(!token_matches(Some(b"Basic s3cret"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }
}
