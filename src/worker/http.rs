//! The HTTP/1.1 proxy session: read a request head, forward the request, stream the response back,
//! then read the next request on the same connection (keep-alive, pipelining answered in order).
//!
//! Client states ([`ClientState`]) and their handlers:
//! - `Head` ([`Core::http_head`]): read until a complete head, rewrite it, pick a backend.
//! - `Proxy` ([`Core::http_proxy`]): pump request bytes to the backend and response bytes to the
//!   client, both at once (a backend may answer before the body is sent, or send 100 Continue).
//! - `Answer` ([`Core::http_answer`]): send a response sluice wrote itself (an error).
//! - `Linger` ([`Core::linger`]): after the last response, drain input until the client closes.
//!
//! Bodies are never held whole: each direction has one buffer and stops reading while it is full.
//! A request stays in its buffer until the response head arrives, so a failed attempt can be sent
//! again; a body too large for the buffer is streamed and its request can no longer be retried.

use std::io::Write as _;
use std::net::Shutdown;

use crate::worker::buffer::Buf;
use crate::worker::conn::{read_into, write_from, Body, ClientState, Io, RespPhase};
use std::ops::Range;

use crate::config::RequestAttr;
use crate::http::head::Framing;
use crate::http::head::{
    self, cookie_value, RequestHead, RequestOptions, ResponseContext, REWRITE_RESERVE_BYTES,
};
use crate::retry::budget::{id_hash, request_id};
use crate::retry::Outcome;
use crate::strategy::sticky::STICKY_COOKIE_NAME;
use crate::strategy::RequestKey;
use crate::strategy::StrategyKind;
use crate::worker::conn::Exchange;
use crate::worker::dispatch::now_s;
use crate::worker::dispatch::Failure;
use crate::worker::{Core, Next};

/// How long a closing connection may keep sending before it is closed anyway.
const LINGER_MS: u64 = 2_000;

/// The reason phrase for statuses sluice answers itself.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl Core {
    /// Largest number of bytes a buffer holds before a head is parsed, so the rewrite always fits.
    fn head_limit(&self) -> usize {
        self.bufs.buf_size() - REWRITE_RESERVE_BYTES
    }

    /// `Head`: reads and parses the next request head. A head that fills a pooled buffer, while
    /// `--max-header-bytes` allows more, goes on in a buffer grown for it (freed after the request).
    pub fn http_head(&mut self, k: usize) -> Next {
        let max_header_bytes = self.cfg.max_header_bytes;
        loop {
            let c = &mut self.clients[k];
            let ex = match c.ex.as_mut() {
                Some(ex) => ex,
                None => {
                    if !c.ready.readable {
                        return Next::Wait;
                    }
                    let mut ex = self.spare_exchanges.pop().unwrap_or_default();
                    ex.started_ms = self.now_ms;
                    c.ex.insert(ex)
                }
            };
            let buf = ex.req.get_or_insert_with(|| self.bufs.get());
            if !buf.is_empty() {
                // A grown buffer's rewrite needs room as large: allocated for each parse, which costs
                // about what the parse does (both linear in the head), and freed, not pooled.
                let mut out = self.bufs.get_at_least(buf.capacity());
                let opts = RequestOptions {
                    client_ip: c.peer_ip,
                    proto: "http",
                    max_headers: self.cfg.max_headers,
                    key_field: match &self.cfg.hash_key {
                        RequestAttr::Header(name) => Some(name.as_str()),
                        _ => None,
                    },
                    allow_upgrade: &self.cfg.allow_upgrade,
                };
                match head::forward_request(buf.bytes(), &opts, out.tail_mut()) {
                    Ok(Some(_)) if request_line_len(buf.bytes()) > self.cfg.max_request_line => {
                        self.bufs.put(out);
                        return self.answer(k, 414, "request line too long", true);
                    }
                    Ok(Some(h)) if matches!(h.framing, Framing::Length(n) if self.cfg.max_body_bytes != 0 && n > self.cfg.max_body_bytes) =>
                    {
                        self.bufs.put(out);
                        return self.answer(k, 413, "request body too large", true);
                    }
                    Ok(Some(h)) => {
                        out.fill(h.out_len);
                        if !out.extend(&buf.bytes()[h.head_len..]) {
                            self.bufs.put(out);
                            return self.answer(k, 431, "request head too large", true);
                        }
                        let old = std::mem::replace(buf, out);
                        self.bufs.put(old);
                        ex.method = h.method;
                        ex.minor_version = h.minor_version;
                        ex.client_keep_alive = h.keep_alive;
                        ex.upgrade = h.upgrade;
                        ex.key = key_range(
                            &h,
                            buf.bytes(),
                            self.table.strategy.request_key(),
                            &self.cfg.hash_key,
                        );
                        ex.req_body = Body::new(h.framing);
                        ex.req_len = h.out_len;
                        ex.started_ms = self.now_ms;
                        c.state = ClientState::Proxy;
                        if let Err(e) =
                            classify_request(ex.req_body_mut_parts(), self.cfg.max_body_bytes)
                        {
                            return self.answer(k, e.0, e.1, true);
                        }
                        if self.cfg.id_budget {
                            find_request_id(ex, &h);
                        }
                        if ex.awaiting_id {
                            c.deadline.set(
                                self.now_ms + self.cfg.head_timeout_ms,
                                k,
                                &mut self.timers,
                            );
                            return Next::Again;
                        }
                        return self.dispatch(k);
                    }
                    Ok(None) => {
                        self.bufs.put(out);
                        if buf.len() > self.cfg.max_request_line
                            && request_line_len(buf.bytes()) > self.cfg.max_request_line
                        {
                            return self.answer(k, 414, "request line too long", true);
                        }
                        if buf.len() >= max_header_bytes {
                            return self.answer(k, 431, "request head too large", true);
                        }
                        if buf.len() + REWRITE_RESERVE_BYTES >= buf.capacity() {
                            buf.grow(max_header_bytes + REWRITE_RESERVE_BYTES);
                        }
                    }
                    Err(e) => {
                        self.bufs.put(out);
                        return self.answer(k, e.status(), e.reason(), true);
                    }
                }
            }
            let was_empty = buf.is_empty();
            // Room is kept so that the rewritten head always fits.
            let limit = buf.capacity().saturating_sub(REWRITE_RESERVE_BYTES);
            match read_into(
                &mut c.sock,
                &mut c.ready,
                buf,
                limit.min(max_header_bytes + 1),
            ) {
                Io::Done(n) => {
                    self.metrics.current.bytes_in += n as u64;
                    if was_empty {
                        c.deadline
                            .set(self.now_ms + self.cfg.head_timeout_ms, k, &mut self.timers);
                    }
                }
                Io::Blocked => {
                    if buf.is_empty() {
                        // Idle between requests: hold no buffer and no exchange.
                        if let Some(ex) = c.ex.take() {
                            self.recycle_exchange(ex);
                        }
                    }
                    return Next::Wait;
                }
                Io::Eof | Io::Err(_) => return Next::Close,
            }
        }
    }

    /// A deadline passed in `Head`: idle keep-alive connections close quietly, slow heads get 408.
    pub fn http_head_timed_out(&mut self, k: usize) -> Next {
        let c = &self.clients[k];
        let partial =
            c.ex.as_ref()
                .and_then(|ex| ex.req.as_ref())
                .is_some_and(|b| !b.is_empty());
        if partial {
            self.answer(k, 408, "request head timed out", true)
        } else {
            Next::Close
        }
    }

    /// `Proxy`: moves request bytes to the backend and response bytes to the client.
    pub fn http_proxy(&mut self, k: usize) -> Next {
        let Some(bk) = self.clients[k].ex.as_ref().and_then(|ex| ex.backend) else {
            return self.http_unbound(k);
        };
        match self.ensure_connected(k, bk) {
            Ok(true) => {}
            Ok(false) => return Next::Wait,
            Err(next) => return next,
        }
        let limit = self.head_limit();
        let mut moved = false;
        loop {
            let c = &mut self.clients[k];
            let b = &mut self.backends[bk];
            let Some(ex) = c.ex.as_mut() else {
                return Next::Close;
            };
            let mut progress = false;

            // Request bytes to the backend.
            if ex.req_sent < ex.req_len {
                let Some(req) = ex.req.as_ref() else {
                    return Next::Close;
                };
                match write_from(
                    &mut b.sock,
                    &mut b.ready,
                    &req.bytes()[ex.req_sent..ex.req_len],
                ) {
                    Io::Done(n) => {
                        ex.req_sent += n;
                        progress = true;
                    }
                    Io::Blocked => {}
                    Io::Eof | Io::Err(_) => return self.attempt_failed(k, Failure::Broken),
                }
            }

            // More of the request body from the client.
            if !ex.req_body.is_done() && c.ready.readable {
                let Some(req) = ex.req.as_mut() else {
                    return Next::Close;
                };
                if req.len() >= limit && ex.req_sent > 0 {
                    // Full: let go of what the backend has, and with it the chance to retry.
                    req.consume(ex.req_sent);
                    ex.req_len -= ex.req_sent;
                    ex.req_sent = 0;
                    ex.replayable = false;
                }
                match read_into(&mut c.sock, &mut c.ready, req, limit) {
                    Io::Done(n) => {
                        self.metrics.current.bytes_in += n as u64;
                        progress = true;
                        if let Err(e) =
                            classify_request(ex.req_body_mut_parts(), self.cfg.max_body_bytes)
                        {
                            return self.fail_client(k, e.0, e.1);
                        }
                    }
                    Io::Blocked => {}
                    // The client left before sending its whole request.
                    Io::Eof | Io::Err(_) => return Next::Close,
                }
            }

            // Response bytes from the backend.
            let resp = ex.resp.get_or_insert_with(|| self.bufs.get());
            match read_into(&mut b.sock, &mut b.ready, resp, limit) {
                Io::Done(_) => {
                    progress = true;
                    ex.per_try_pending = false;
                }
                Io::Blocked => {}
                Io::Eof => {
                    if ex.resp_phase == RespPhase::Body && matches!(ex.resp_body, Body::UntilClose)
                    {
                        ex.resp_body = Body::Done;
                        ex.backend_overran = true;
                        progress = true;
                    } else {
                        return self.attempt_failed(k, Failure::Broken);
                    }
                }
                Io::Err(_) => return self.attempt_failed(k, Failure::Broken),
            }

            // A response head, once everything before it went out.
            if ex.resp_phase == RespPhase::Head && ex.resp_len == 0 && !resp.is_empty() {
                let mut cookie_buf = [0u8; 96];
                let set_cookie = ex
                    .set_cookie
                    .as_ref()
                    .map(|token| sticky_cookie(&mut cookie_buf, token));
                let ctx = ResponseContext {
                    method: ex.method,
                    client_minor_version: ex.minor_version,
                    client_keep_alive: ex.client_keep_alive && !self.shutting_down,
                    upgrade_requested: ex.upgrade,
                    set_cookie,
                };
                let mut out = self.bufs.get();
                match head::forward_response(resp.bytes(), &ctx, out.tail_mut()) {
                    Ok(Some(h)) => {
                        if !h.is_interim() {
                            // This attempt's answer: count it, learn from it, maybe retry it.
                            let latency_us = self.now_us.saturating_sub(ex.attempt_started_us);
                            self.metrics
                                .backend(b.backend_id, b.table_index)
                                .record_response(h.status, latency_us);
                            if self.table.latency_aware {
                                b.stats
                                    .record_response(latency_us, h.status < 500, self.now_ms);
                            }
                            b.stats.note_success();
                            if self.table.strategy == StrategyKind::Bandit {
                                if h.status == 429 {
                                    b.stats.learned.rate_limited(h.retry_after_s, self.now_ms);
                                } else {
                                    b.stats.learned.observe(h.status < 500, self.now_ms);
                                }
                            }
                            let now_s = now_s(self.now_ms);
                            let retry = self.cfg.retry.allows(Outcome::Status(h.status), ex.method)
                                && ex.attempts < self.cfg.max_attempts
                                && ex.replayable
                                && ex.req_body.is_done()
                                && ex.req_len <= self.cfg.retry_buffer
                                && ex.id.is_none_or(|id| {
                                    self.budget.would_grant(id, self.cfg.max_attempts, now_s)
                                });
                            if retry {
                                // Drop the answer; keep the connection if its whole body is here.
                                let rest = resp.len() - h.head_len;
                                let body_here = match h.framing {
                                    Framing::None => rest == 0,
                                    Framing::Length(n) => rest as u64 == n,
                                    Framing::Chunked | Framing::UntilClose => false,
                                };
                                let reuse =
                                    body_here && h.backend_keep_alive && ex.req_sent == ex.req_len;
                                self.bufs.put(out);
                                resp.clear();
                                self.unbind_backend(k, reuse);
                                self.reset_attempt(k);
                                return self.dispatch(k);
                            }
                            self.metrics.current.client_responses
                                [usize::from(h.status / 100).min(5)] += 1;
                            if let (Some(id), 200..=299) = (ex.id, h.status) {
                                self.budget.accept(id, now_s);
                            }
                        }
                        out.fill(h.out_len);
                        if !out.extend(&resp.bytes()[h.head_len..]) {
                            self.bufs.put(out);
                            return self.attempt_failed(k, Failure::Garbage);
                        }
                        let old = std::mem::replace(resp, out);
                        self.bufs.put(old);
                        ex.resp_len = h.out_len;
                        ex.resp_started = true;
                        progress = true;
                        if h.status == 101 {
                            // The rest of both buffers is the new protocol: tunnel it.
                            if let Some(req) = ex.req.as_mut() {
                                req.consume(ex.req_sent);
                            }
                            ex.req_len = 0;
                            ex.req_sent = 0;
                            ex.resp_len = 0;
                            ex.resp_head = Some(h);
                            c.state = ClientState::Tunnel;
                            return Next::Again;
                        }
                        if !h.is_interim() {
                            ex.resp_phase = RespPhase::Body;
                            ex.resp_body = Body::new(h.framing);
                            ex.resp_head = Some(h);
                        }
                    }
                    Ok(None) => {
                        self.bufs.put(out);
                        if resp.len() >= limit {
                            return self.attempt_failed(k, Failure::Garbage);
                        }
                    }
                    Err(_) => {
                        self.bufs.put(out);
                        return self.attempt_failed(k, Failure::Garbage);
                    }
                }
            }

            // Count body bytes; anything after the body's end is the backend misbehaving.
            if ex.resp_phase == RespPhase::Body && ex.resp_len < resp.len() {
                match ex.resp_body.advance(&resp.bytes()[ex.resp_len..]) {
                    Ok(n) => {
                        ex.resp_len += n;
                        if ex.resp_body.is_done() && ex.resp_len < resp.len() {
                            resp.truncate(ex.resp_len);
                            ex.backend_overran = true;
                        }
                    }
                    Err(_) => return self.attempt_failed(k, Failure::Garbage),
                }
            }

            // Response bytes to the client.
            if ex.resp_len > 0 {
                match write_from(&mut c.sock, &mut c.ready, &resp.bytes()[..ex.resp_len]) {
                    Io::Done(n) => {
                        self.metrics.current.bytes_out += n as u64;
                        resp.consume(n);
                        ex.resp_len -= n;
                        progress = true;
                    }
                    Io::Blocked => {}
                    Io::Eof | Io::Err(_) => return Next::Close,
                }
            }

            if ex.resp_phase == RespPhase::Body && ex.resp_body.is_done() && ex.resp_len == 0 {
                return self.finish_exchange(k);
            }
            if !progress {
                break;
            }
            moved = true;
        }
        if moved {
            let wait_ms = self.response_wait_ms(k);
            self.set_deadline(k, wait_ms);
        }
        Next::Wait
    }

    /// `Proxy` with no backend yet: the request's id is its body and is still arriving, or the
    /// request waits for a backend's rate budget (its timer wakes it).
    fn http_unbound(&mut self, k: usize) -> Next {
        let limit = self.head_limit();
        let c = &mut self.clients[k];
        let Some(ex) = c.ex.as_mut() else {
            return Next::Close;
        };
        if !ex.awaiting_id {
            return if ex.pace_until_ms != 0 {
                Next::Wait
            } else {
                Next::Close
            };
        }
        while !ex.req_body.is_done() {
            let Some(req) = ex.req.as_mut() else {
                return Next::Close;
            };
            match read_into(&mut c.sock, &mut c.ready, req, limit) {
                Io::Done(n) => {
                    self.metrics.current.bytes_in += n as u64;
                    if let Err(e) =
                        classify_request(ex.req_body_mut_parts(), self.cfg.max_body_bytes)
                    {
                        return self.answer(k, e.0, e.1, true);
                    }
                }
                Io::Blocked => return Next::Wait,
                Io::Eof | Io::Err(_) => return Next::Close,
            }
        }
        ex.awaiting_id = false;
        let body = ex
            .req
            .as_ref()
            .and_then(|r| r.bytes().get(ex.req_len.saturating_sub(24)..ex.req_len));
        ex.id = request_id(body, None).map(id_hash);
        self.dispatch(k)
    }

    /// The response is complete: pool the backend connection if it can carry another request, then
    /// read the next request or close.
    fn finish_exchange(&mut self, k: usize) -> Next {
        let (reuse_backend, keep_client) = {
            let Some(ex) = self.clients[k].ex.as_ref() else {
                return Next::Close;
            };
            let Some(h) = ex.resp_head.as_ref() else {
                return Next::Close;
            };
            let reuse = ex.request_done() && h.backend_keep_alive && !ex.backend_overran;
            let keep = h.client_keep_alive
                && ex.req_body.is_done()
                && !ex.client_eof
                && !self.shutting_down;
            (reuse, keep)
        };
        self.unbind_backend(k, reuse_backend);
        if !keep_client {
            return self.begin_close(k);
        }
        self.next_request(k)
    }

    /// Resets the exchange for the next request on a kept-alive connection.
    fn next_request(&mut self, k: usize) -> Next {
        let c = &mut self.clients[k];
        let Some(ex) = c.ex.as_mut() else {
            return Next::Close;
        };
        if let Some(req) = ex.req.as_mut() {
            req.consume(ex.req_len.min(req.len()));
        }
        ex.reset();
        self.bufs.release_if_empty(&mut ex.req);
        self.bufs.release(&mut ex.resp);
        if ex.req.is_none() {
            if let Some(ex) = c.ex.take() {
                self.spare_exchanges.push(ex);
            }
        }
        c.state = ClientState::Head;
        c.deadline
            .set(self.now_ms + self.cfg.idle_timeout_ms, k, &mut self.timers);
        Next::Again
    }

    /// A request that broke after it was forwarded: answer if nothing was sent yet, else close.
    fn fail_client(&mut self, k: usize, status: u16, why: &str) -> Next {
        let started = self.clients[k]
            .ex
            .as_ref()
            .is_some_and(|ex| ex.resp_started);
        if started {
            return Next::Close;
        }
        self.unbind_backend(k, false);
        self.answer(k, status, why, true)
    }

    /// Starts sending a response sluice writes itself: `status`, a one-line body, and
    /// `Connection: close` when the connection cannot carry another request.
    pub fn answer(&mut self, k: usize, status: u16, why: &str, close: bool) -> Next {
        let shutting_down = self.shutting_down;
        let c = &mut self.clients[k];
        let ex = c.ex.get_or_insert_with(Default::default);
        let then_close = close || shutting_down || !ex.client_keep_alive || !ex.req_body.is_done();
        self.metrics.current.client_responses[usize::from(status / 100).min(5)] += 1;
        let resp = ex.resp.get_or_insert_with(|| self.bufs.get());
        resp.clear();
        write_error_response(resp, status, why, then_close);
        ex.resp_len = resp.len();
        ex.resp_started = true;
        c.state = ClientState::Answer { then_close };
        c.deadline.set(
            self.now_ms + self.cfg.response_timeout_ms,
            k,
            &mut self.timers,
        );
        Next::Again
    }

    /// `Answer`: writes sluice's own response, then closes or goes on with the next request.
    pub fn http_answer(&mut self, k: usize, then_close: bool) -> Next {
        let c = &mut self.clients[k];
        let Some(ex) = c.ex.as_mut() else {
            return Next::Close;
        };
        let Some(resp) = ex.resp.as_mut() else {
            return Next::Close;
        };
        while ex.resp_len > 0 {
            match write_from(&mut c.sock, &mut c.ready, &resp.bytes()[..ex.resp_len]) {
                Io::Done(n) => {
                    self.metrics.current.bytes_out += n as u64;
                    resp.consume(n);
                    ex.resp_len -= n;
                }
                Io::Blocked => return Next::Wait,
                Io::Eof | Io::Err(_) => return Next::Close,
            }
        }
        if then_close {
            self.begin_close(k)
        } else {
            self.next_request(k)
        }
    }

    /// Closes after the last response. If the client may still be sending, shut our side and drain
    /// its input for a while first ([`ClientState::Linger`]).
    fn begin_close(&mut self, k: usize) -> Next {
        let c = &mut self.clients[k];
        let unread = c.ready.readable
            || c.ex
                .as_ref()
                .and_then(|ex| ex.req.as_ref())
                .is_some_and(|req| !req.is_empty());
        if !unread || c.sock.shutdown(Shutdown::Write).is_err() {
            return Next::Close;
        }
        c.state = ClientState::Linger;
        c.deadline.set(self.now_ms + LINGER_MS, k, &mut self.timers);
        Next::Again
    }

    /// `Linger`: discards input until the client closes.
    pub fn linger(&mut self, k: usize) -> Next {
        let c = &mut self.clients[k];
        let ex = c.ex.get_or_insert_with(Default::default);
        let buf = ex.req.get_or_insert_with(|| self.bufs.get());
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

/// Writes the sticky-session cookie for `token` into `buf`.
fn sticky_cookie<'a>(buf: &'a mut [u8; 96], token: &[u8]) -> &'a [u8] {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = cursor.write_all(STICKY_COOKIE_NAME.as_bytes());
    let _ = cursor.write_all(b"=");
    let _ = cursor.write_all(token);
    let _ = cursor.write_all(b"; Path=/; HttpOnly; SameSite=Lax");
    let n = cursor.position() as usize;
    &buf[..n]
}

/// Length of the first line of `head` (the whole of it if no line ends yet).
fn request_line_len(head: &[u8]) -> usize {
    head.iter().position(|&b| b == b'\n').unwrap_or(head.len())
}

/// Sets the exchange's id for the attempt budget: the Idempotency-Key field, or a 24-byte body
/// (which may not have arrived yet: then `awaiting_id`).
fn find_request_id(ex: &mut Exchange, h: &RequestHead) {
    ex.id = None;
    ex.awaiting_id = false;
    let Some(req) = ex.req.as_ref() else { return };
    let key = h.idempotency_key.clone().and_then(|r| req.bytes().get(r));
    if h.framing == Framing::Length(24) && key.is_none() {
        match req.bytes().get(h.out_len..h.out_len + 24) {
            Some(body) => ex.id = request_id(Some(body), None).map(id_hash),
            None => ex.awaiting_id = true,
        }
    } else {
        ex.id = request_id(None, key).map(id_hash);
    }
}

/// Counts request body bytes that arrived after what was counted before. Returns a reason on a
/// malformed chunked body.
fn classify_request(
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

impl crate::worker::conn::Exchange {
    /// The fields [`classify_request`] works on, borrowed together.
    fn req_body_mut_parts(&mut self) -> (&mut Body, Option<&Buf>, &mut usize, &mut u64) {
        (
            &mut self.req_body,
            self.req.as_deref(),
            &mut self.req_len,
            &mut self.body_bytes,
        )
    }
}

/// Writes a complete small response: status line, plain-text body of one line.
pub fn write_error_response(buf: &mut Buf, status: u16, why: &str, close: bool) {
    let mut head = [0u8; 256];
    let mut cursor = std::io::Cursor::new(&mut head[..]);
    let _ = write!(
        cursor,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
        reason_phrase(status),
        why.len() + 1,
        if close { "Connection: close\r\n" } else { "" },
    );
    let n = cursor.position() as usize;
    buf.extend(&head[..n]);
    buf.extend(why.as_bytes());
    buf.extend(b"\n");
}
