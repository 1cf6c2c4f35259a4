//! The HTTP/1.1 session, request side: read a request head, hand the request to routing, write the
//! answers sluice gives itself, and close politely. Keep-alive and pipelining: after a response the
//! session reads the next request on the same connection, in order.
//!
//! Client states ([`ClientState`]) and their handlers:
//! - `Head` ([`Core::http_head`]): read until a complete head, check it against the limits
//!   (`--max-request-line`, `--max-header-bytes`, `--max-body-bytes`), rewrite it, find the request's
//!   id for the attempt budget (an `Idempotency-Key`, or a 24-byte body), and dispatch.
//! - `Proxy` ([`crate::worker::proxy`]): the request is bound to a backend; before it is, a request
//!   whose id is its body reads that body here ([`Core::http_unbound`]).
//! - `Answer` ([`Core::http_answer`], in `answer.rs`): send a response sluice wrote itself (an error,
//!   a refusal).
//! - `Linger` ([`Core::linger`]): after the last response, drain input until the client closes.

use std::ops::Range;

use crate::config::{ProxyConfig, RequestAttr};
use crate::http::head::{
    self, cookie_value, Framing, RequestHead, RequestOptions, REWRITE_RESERVE_BYTES,
};
use crate::retry::budget::{is_alnum24, scope_hash, scoped_id_hash};
use crate::strategy::{RequestKey, STICKY_COOKIE_NAME};
use crate::worker::buffer::Buf;
use crate::worker::conn::{read_into, ClientConn, ClientKey, ClientState, Io};
use crate::worker::exchange::{Body, Exchange};
use crate::worker::{Core, IoParts, Next, Now};

/// How long a closing connection may keep sending before it is closed anyway.
const LINGER_MS: u64 = 2_000;

/// What reading a request head came to.
enum Parse {
    /// Not a whole head yet.
    Incomplete,
    /// A whole head, rewritten into the exchange: the request may be routed.
    Request,
    /// Refused with this status and reason.
    Refused(u16, &'static str),
    /// No more bytes for now.
    Wait,
    /// The client closed or failed.
    Close,
}

impl Core {
    /// Largest number of bytes a buffer holds before a head is parsed, so the rewrite always fits.
    pub(super) fn head_limit(&self) -> usize {
        self.io.bufs.buf_size() - REWRITE_RESERVE_BYTES
    }

    /// `Head`: reads and parses the next request head. A head that fills a pooled buffer, while
    /// `--max-header-bytes` allows more, goes on in a buffer grown for it (freed after the request).
    pub(super) fn http_head(&mut self, k: ClientKey) -> Next {
        let Core {
            conns,
            io,
            cfg,
            routing,
            metrics,
            now,
            ..
        } = self;
        let reader = HeadReader {
            k,
            c: &mut conns[k],
            io,
            cfg,
            request_key: routing.table.strategy.request_key(),
            bytes_in: &mut metrics.current.bytes_in,
            now: *now,
        };
        match reader.read() {
            Parse::Incomplete | Parse::Wait => Next::Wait,
            Parse::Close => Next::Close,
            Parse::Request => self.route_request(k),
            Parse::Refused(..) if self.refused_as_untrusted_header(k) => Next::Close,
            Parse::Refused(status, why) => self.answer(k, status, why, true),
        }
    }

    /// A whole request head was read: route it, unless its id is its body and still arriving.
    fn route_request(&mut self, k: ClientKey) -> Next {
        if self.ops.clients.is_some() {
            if let Some(refused) = self.rate_limit_request(k) {
                return refused;
            }
        }
        if self
            .conns
            .exchange(k)
            .is_some_and(|ex| ex.awaiting_id.is_some())
        {
            self.set_deadline(k, self.cfg.head_timeout_ms);
            return Next::Again;
        }
        self.dispatch(k)
    }

    /// A deadline passed in `Head`: idle keep-alive connections close quietly, slow heads get 408.
    pub(super) fn http_head_timed_out(&mut self, k: ClientKey) -> Next {
        let partial = self
            .conns
            .exchange(k)
            .and_then(|ex| ex.req.as_ref())
            .is_some_and(|b| !b.is_empty());
        if partial {
            self.answer(k, 408, "request head timed out", true)
        } else {
            Next::Close
        }
    }

    /// `Proxy` with no backend yet: the request's id is its body and is still arriving, or the
    /// request waits for a backend's rate budget (its timer wakes it).
    pub(super) fn http_unbound(&mut self, k: ClientKey) -> Next {
        let limit = self.head_limit();
        let Core {
            conns,
            cfg,
            metrics,
            ..
        } = self;
        let c = &mut conns[k];
        let Some(ex) = c.ex.as_deref_mut() else {
            return Next::Close;
        };
        if ex.awaiting_id.is_none() {
            return if ex.pace_until_ms != 0 {
                Next::Wait
            } else {
                Next::Close
            };
        }
        while !ex.req_body.is_done() {
            let Some(req) = ex.req.as_deref_mut() else {
                return Next::Close;
            };
            match read_into(&mut c.sock, &mut c.ready, req, limit) {
                Io::Done(n) => {
                    metrics.current.bytes_in += n as u64;
                    let counted = classify_request(ex.req_body_mut_parts(), cfg.max_body_bytes);
                    if let Err((status, why)) = counted {
                        return self.answer(k, status, why, true);
                    }
                }
                Io::Blocked => return Next::Wait,
                Io::Eof | Io::Err(_) => return Next::Close,
            }
        }
        let scope = ex.awaiting_id.take().unwrap_or(0);
        let body = ex
            .req
            .as_ref()
            .and_then(|r| r.bytes().get(ex.req_len.saturating_sub(24)..ex.req_len));
        ex.id = body
            .filter(|b| is_alnum24(b))
            .map(|b| scoped_id_hash(scope, b));
        self.dispatch(k)
    }

    /// Resets the exchange for the next request on a kept-alive connection.
    pub(super) fn next_request(&mut self, k: ClientKey) -> Next {
        let Core {
            conns,
            io,
            cfg,
            now,
            ..
        } = self;
        let c = &mut conns[k];
        let Some(ex) = c.ex.as_deref_mut() else {
            return Next::Close;
        };
        if let Some(req) = ex.req.as_mut() {
            req.consume(ex.req_len.min(req.len()));
        }
        ex.reset();
        io.bufs.release_if_empty(&mut ex.req);
        io.bufs.release(&mut ex.resp);
        if ex.req.is_none() {
            if let Some(ex) = c.ex.take() {
                io.keep_spare(ex);
            }
        }
        c.state = ClientState::Head;
        c.deadline
            .set(now.ms + cfg.idle_timeout_ms, k.token(), &mut io.timers);
        Next::Again
    }

    /// Closes after the last response. If the client may still be sending, shut our side and drain
    /// its input for a while first ([`ClientState::Linger`]).
    pub(super) fn begin_close(&mut self, k: ClientKey) -> Next {
        let c = &mut self.conns[k];
        // TLS records still to send keep the connection open too (Linger sends them).
        let unread = c.ready.readable
            || c.sock.wants_flush()
            || c.ex
                .as_ref()
                .and_then(|ex| ex.req.as_ref())
                .is_some_and(|req| !req.is_empty());
        if !unread || c.sock.shut_write().is_err() {
            return Next::Close;
        }
        c.state = ClientState::Linger;
        c.deadline
            .set(self.now.ms + LINGER_MS, k.token(), &mut self.io.timers);
        Next::Again
    }

    /// `Linger`: discards input until the client closes.
    pub(super) fn linger(&mut self, k: ClientKey) -> Next {
        let c = &mut self.conns[k];
        let ex = c.ex.get_or_insert_with(Default::default);
        let buf = ex.req.get_or_insert_with(|| self.io.bufs.get());
        loop {
            buf.clear();
            match read_into(&mut c.sock, &mut c.ready, buf, usize::MAX) {
                Io::Done(_) => continue,
                Io::Blocked => return Next::Wait,
                Io::Eof | Io::Err(_) => return Next::Close,
            }
        }
    }
}

/// What reading a request head touches, borrowed from the worker for one run of the handler.
struct HeadReader<'a> {
    k: ClientKey,
    c: &'a mut ClientConn,
    io: &'a mut IoParts,
    cfg: &'a ProxyConfig,
    /// What the strategy keys on, to be found in the head.
    request_key: RequestKey,
    bytes_in: &'a mut u64,
    now: Now,
}

impl HeadReader<'_> {
    /// Reads and parses until a whole head, a refusal, or no more bytes for now.
    fn read(mut self) -> Parse {
        loop {
            if !self.hold_request_buffer() {
                return Parse::Wait;
            }
            match self.parse() {
                Parse::Incomplete => {}
                done => return done,
            }
            if let Some(done) = self.read_more() {
                return done;
            }
        }
    }

    /// Gives the client an exchange and a request buffer, once it has something to read; false
    /// while an idle client has nothing to say.
    fn hold_request_buffer(&mut self) -> bool {
        let c = &mut *self.c;
        let ex = match c.ex.as_deref_mut() {
            Some(ex) => ex,
            None if !c.ready.readable => return false,
            None => c.ex.insert(self.io.take_exchange(self.now.us)),
        };
        ex.req.get_or_insert_with(|| self.io.bufs.get());
        true
    }

    /// Parses what the client sent so far; a whole head is rewritten for the backend.
    fn parse(&mut self) -> Parse {
        let (c, bufs, cfg) = (&mut *self.c, &mut self.io.bufs, self.cfg);
        let Some(ex) = c.ex.as_deref_mut() else {
            return Parse::Incomplete;
        };
        let Some(buf) = ex.req.as_mut().filter(|b| !b.is_empty()) else {
            return Parse::Incomplete;
        };
        // A grown buffer's rewrite needs room as large: allocated for each parse, which costs about
        // what the parse does (both linear in the head), and freed, not pooled.
        let mut out = bufs.get_at_least(buf.capacity());
        let opts = RequestOptions {
            client_ip: c.peer_ip,
            proto: if c.sock.is_tls() { "https" } else { "http" },
            max_headers: cfg.max_headers,
            key_field: match &cfg.hash_key {
                RequestAttr::Header(name) => Some(name.as_str()),
                _ => None,
            },
            id_field: cfg.request_id.header.as_deref(),
            allow_upgrade: &cfg.allow_upgrade,
        };
        let h = match head::forward_request(buf.bytes(), &opts, out.tail_mut()) {
            Ok(Some(h)) => h,
            Ok(None) => {
                bufs.put(out);
                return incomplete_head(buf, cfg);
            }
            Err(e) => {
                bufs.put(out);
                return Parse::Refused(e.status(), e.reason());
            }
        };
        if let Err((status, why)) = check_head(&h, buf.bytes(), cfg) {
            bufs.put(out);
            return Parse::Refused(status, why);
        }
        out.fill(h.out_len);
        if !out.extend(&buf.bytes()[h.head_len..]) {
            bufs.put(out);
            return Parse::Refused(431, "request head too large");
        }
        let old = std::mem::replace(buf, out);
        bufs.put(old);
        let key = key_range(&h, buf.bytes(), self.request_key, &cfg.hash_key);
        if cfg.access_log.is_some() {
            let line = buf.bytes().get(..h.target.end).unwrap_or_default();
            ex.log_request.extend_from_slice(line);
        }
        start_request(ex, &h, key, self.now.us);
        c.state = ClientState::Proxy;
        if let Err((status, why)) = classify_request(ex.req_body_mut_parts(), cfg.max_body_bytes) {
            return Parse::Refused(status, why);
        }
        if cfg.request_id.is_on() {
            find_request_id(ex, &h, cfg.request_id.body_alnum24);
        }
        Parse::Request
    }

    /// Reads more of a request head; `Some` when the handler should stop.
    fn read_more(&mut self) -> Option<Parse> {
        let c = &mut *self.c;
        let buf = c.ex.as_deref_mut().and_then(|ex| ex.req.as_deref_mut())?;
        let was_empty = buf.is_empty();
        // Room is kept so that the rewritten head always fits.
        let limit = buf
            .capacity()
            .saturating_sub(REWRITE_RESERVE_BYTES)
            .min(self.cfg.max_header_bytes + 1);
        match read_into(&mut c.sock, &mut c.ready, buf, limit) {
            Io::Done(n) => {
                *self.bytes_in += n as u64;
                if was_empty {
                    let at_ms = self.now.ms + self.cfg.head_timeout_ms;
                    c.deadline.set(at_ms, self.k.token(), &mut self.io.timers);
                }
                None
            }
            Io::Blocked => {
                if buf.is_empty() {
                    // Idle between requests: hold no buffer and no exchange.
                    if let Some(ex) = c.ex.take() {
                        self.io.recycle_exchange(ex);
                    }
                }
                Some(Parse::Wait)
            }
            Io::Eof | Io::Err(_) => Some(Parse::Close),
        }
    }
}

/// An incomplete head is refused once it can no longer become a valid one: its request line is
/// over `--max-request-line` (414), or it fills `--max-header-bytes` (431). A head that fills a
/// pooled buffer while `--max-header-bytes` allows more goes on in the buffer grown for it (freed
/// after the request): the two limits are independent.
fn incomplete_head(buf: &mut Buf, cfg: &ProxyConfig) -> Parse {
    if buf.len() > cfg.max_request_line && request_line_len(buf.bytes()) > cfg.max_request_line {
        return Parse::Refused(414, "request line too long");
    }
    if buf.len() >= cfg.max_header_bytes {
        return Parse::Refused(431, "request head too large");
    }
    if buf.len() + REWRITE_RESERVE_BYTES >= buf.capacity() {
        buf.grow(cfg.max_header_bytes + REWRITE_RESERVE_BYTES);
    }
    Parse::Incomplete
}

/// The limits a whole request head must meet: its request line within `--max-request-line`, and
/// a declared body length within `--max-body-bytes` (0 = no limit).
fn check_head(h: &RequestHead, raw: &[u8], cfg: &ProxyConfig) -> Result<(), (u16, &'static str)> {
    if request_line_len(raw) > cfg.max_request_line {
        return Err((414, "request line too long"));
    }
    match h.framing {
        Framing::Length(n) if cfg.max_body_bytes != 0 && n > cfg.max_body_bytes => {
            Err((413, "request body too large"))
        }
        _ => Ok(()),
    }
}

/// Fills the exchange from a request head, the strategy's key at `key` in the rewritten head.
pub(super) fn start_request(ex: &mut Exchange, h: &RequestHead, key: Range<usize>, now_us: u64) {
    ex.method = h.method;
    ex.minor_version = h.minor_version;
    ex.client_keep_alive = h.keep_alive;
    ex.upgrade = h.upgrade;
    ex.key = key;
    ex.req_body = Body::new(h.framing);
    ex.req_len = h.out_len;
    ex.started_us = now_us;
    ex.bytes_in = h.head_len as u64;
}

/// Where the strategy's key sits in the rewritten head `head`: what [`RequestKey`] asks for.
/// Empty means "no key" (hashing strategies then use the client address).
fn key_range(h: &RequestHead, head: &[u8], key: RequestKey, attr: &RequestAttr) -> Range<usize> {
    let cookie = |name: &str| {
        let field = h.cookie.clone()?;
        let value = cookie_value(head.get(field.clone())?, name)?;
        Some(field.start + value.start..field.start + value.end)
    };
    let path = || {
        let target = h.target.clone();
        let query = head
            .get(target.clone())
            .and_then(|t| t.iter().position(|&b| b == b'?'));
        target.start..query.map_or(target.end, |q| target.start + q)
    };
    let found = match key {
        RequestKey::None => None,
        RequestKey::PathAndQuery => Some(h.target.clone()),
        RequestKey::StickyCookie => cookie(STICKY_COOKIE_NAME),
        RequestKey::Configured => match attr {
            RequestAttr::ClientIp => None,
            RequestAttr::Path => Some(path()),
            RequestAttr::PathQuery => Some(h.target.clone()),
            RequestAttr::Host => h.host.clone(),
            RequestAttr::Header(_) => h.key_field.clone(),
            RequestAttr::Cookie(name) => cookie(name),
        },
    };
    found.unwrap_or(0..0)
}

/// Length of the first line of `head` (the whole of it if no line ends yet).
fn request_line_len(head: &[u8]) -> usize {
    head.iter().position(|&b| b == b'\n').unwrap_or(head.len())
}

/// Sets the exchange's id for the attempt budget (`--request-id`), scoped by method, host and
/// path: the configured header field's value when the request has it, else a body of 24 letters
/// and digits when `body_alnum24` (it may not have arrived yet: then `awaiting_id`).
fn find_request_id(ex: &mut Exchange, h: &RequestHead, body_alnum24: bool) {
    ex.id = None;
    ex.awaiting_id = None;
    let Some(req) = ex.req.as_ref() else { return };
    let head = req.bytes();
    let part = |r: Option<std::ops::Range<usize>>| r.and_then(|r| head.get(r)).unwrap_or(b"");
    let target = part(Some(h.target.clone()));
    let path = target
        .iter()
        .position(|&b| b == b'?')
        .map_or(target, |q| &target[..q]);
    let method = part(Some(0..h.target.start.saturating_sub(1)));
    let scope = scope_hash(method, part(h.host.clone()), path);
    let field = part(h.id_field.clone());
    if !field.is_empty() {
        ex.id = Some(scoped_id_hash(scope, field));
    } else if body_alnum24 && h.framing == Framing::Length(24) {
        match head.get(h.out_len..h.out_len + 24) {
            Some(body) => ex.id = is_alnum24(body).then(|| scoped_id_hash(scope, body)),
            None => ex.awaiting_id = Some(scope),
        }
    }
}

/// Counts request body bytes that arrived after what was counted before. Returns a reason on a
/// malformed chunked body or a body over `max_body_bytes`.
pub(super) fn classify_request(
    (body, req, req_len, body_bytes): (&mut Body, Option<&Buf>, &mut usize, &mut u64),
    max_body_bytes: u64,
) -> Result<(), (u16, &'static str)> {
    let Some(req) = req else { return Ok(()) };
    if *req_len >= req.len() || body.is_done() {
        return Ok(());
    }
    let n = body
        .advance(&req.bytes()[*req_len..])
        .map_err(|_| (400, "bad chunked request body"))?;
    *req_len += n;
    *body_bytes += n as u64;
    if max_body_bytes != 0 && *body_bytes > max_body_bytes {
        return Err((413, "request body too large"));
    }
    Ok(())
}
