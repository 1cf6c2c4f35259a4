//! The HTTP session's `Proxy` state: request bytes to the backend and response bytes to the client,
//! both at once (a backend may answer before the body is sent, or send 100 Continue), until the
//! response ends; then the backend connection is pooled or closed and the client connection kept
//! for the next request or closed ([`after_response`]).
//!
//! Bodies are never held whole: each direction has one buffer and stops reading while it is full.
//! A request stays in its buffer until the response head arrives, so a failed attempt can be sent
//! again; a body too large for the buffer is streamed and its request can no longer be retried.
//! The final response head is where a successful attempt is settled ([`crate::worker::attempt`]):
//! an answer the retry policy retries is dropped, its connection kept only if its whole body is
//! already here ([`answer_fully_here`]), and the request sent again. A head over sluice's own
//! limits (`--max-response-header-bytes`, or more fields than it parses) is not the backend
//! failing: it is cut off ([`crate::worker::cutoff`]).
//!
//! Each pass of the loop borrows the exchange's two sockets and buffers as a [`Pump`], whose steps
//! move bytes and report what stops the loop ([`Stop`]); the worker-wide effects (settling,
//! retrying, answering) happen between passes.

use crate::worker::sock::ClientSock;

use crate::backend::BackendStream;
use crate::http::head::{
    self, Framing, HeadError, ResponseContext, ResponseHead, REWRITE_RESERVE_BYTES,
};
use crate::metrics::WorkerSnapshot;
use crate::strategy::SET_COOKIE_MAX_LEN;
use crate::worker::attempt::{AttemptBackend, Cutoff, End, Failure, RequestFacts, Verdict};
use crate::worker::buffer::{Buf, BufPool};
use crate::worker::conn::{
    read_into, write_from, BackendConnKey, ClientKey, ClientState, Io, Ready,
};
use crate::worker::exchange::{Body, Exchange, RespPhase};
use crate::worker::http::classify_request;
use crate::worker::{Core, Next};

/// Why the proxy loop stops before the response is done.
#[derive(Debug)]
enum Stop {
    /// The attempt failed.
    Failed(Failure),
    /// sluice ends the attempt, though not for the backend's failure.
    Cut(Cutoff),
    /// The request broke after it was forwarded: answered if nothing was sent yet.
    BadRequest(u16, &'static str),
    /// The client went away (or its exchange did).
    Close,
}

/// How a pass of the proxy loop ended.
enum Pass {
    /// Nothing moved: wait for an event.
    Idle,
    /// Bytes moved: go round again.
    Moved,
    /// The handler is done with this state.
    Done(Next),
}

/// One side's socket and cached readiness.
struct Side<'a, S> {
    sock: &'a mut S,
    ready: &'a mut Ready,
}

/// One exchange's sockets and buffers, borrowed for a pass of the proxy loop.
struct Pump<'a> {
    client: Side<'a, ClientSock>,
    backend: Side<'a, BackendStream>,
    ex: &'a mut Exchange,
    state: &'a mut ClientState,
    bufs: &'a mut BufPool,
    counts: &'a mut WorkerSnapshot,
    /// Most bytes a buffer holds, so that a head rewrite always fits.
    limit: usize,
    max_body_bytes: u64,
    /// `--max-response-header-bytes`.
    max_resp_head: usize,
}

impl Pump<'_> {
    /// Request bytes to the backend.
    fn send_request(&mut self) -> Result<bool, Stop> {
        let ex = &mut *self.ex;
        if ex.req_sent >= ex.req_len || ex.backend_stopped_reading {
            return Ok(false);
        }
        let req = ex.req.as_ref().ok_or(Stop::Close)?;
        let unsent = &req.bytes()[ex.req_sent..ex.req_len];
        match write_from(self.backend.sock, self.backend.ready, unsent) {
            Io::Done(n) => {
                ex.req_sent += n;
                Ok(true)
            }
            Io::Blocked => Ok(false),
            Io::Eof | Io::Err(_) => {
                // The backend may have answered before it closed (a 413 for a body it will not
                // take, which the client's request brought about): that answer is read and
                // forwarded; the attempt is broken only if none comes.
                ex.backend_stopped_reading = true;
                self.backend.ready.readable = true;
                Ok(true)
            }
        }
    }

    /// More of the request body from the client.
    fn read_request_body(&mut self) -> Result<bool, Stop> {
        let ex = &mut *self.ex;
        if ex.req_body.is_done() || !self.client.ready.readable {
            return Ok(false);
        }
        let req = ex.req.as_mut().ok_or(Stop::Close)?;
        if req.len() >= self.limit && ex.req_sent > 0 {
            // Full: let go of what the backend has, and with it the chance to retry.
            req.consume(ex.req_sent);
            ex.req_len -= ex.req_sent;
            ex.req_sent = 0;
            ex.replayable = false;
        }
        match read_into(self.client.sock, self.client.ready, req, self.limit) {
            Io::Done(n) => {
                self.counts.bytes_in += n as u64;
                classify_request(ex.req_body_mut_parts(), self.max_body_bytes)
                    .map_err(|(status, why)| Stop::BadRequest(status, why))?;
                Ok(true)
            }
            Io::Blocked => Ok(false),
            // The client left before sending its whole request.
            Io::Eof | Io::Err(_) => Err(Stop::Close),
        }
    }

    /// Response bytes from the backend. While a head is awaited, up to one byte more than
    /// `--max-response-header-bytes`, so that a head over it is known as such.
    fn read_response(&mut self) -> Result<bool, Stop> {
        let ex = &mut *self.ex;
        let resp = ex.resp.get_or_insert_with(|| self.bufs.get());
        let limit = if ex.resp_phase == RespPhase::Head && ex.resp_len == 0 {
            let room = resp.capacity().saturating_sub(REWRITE_RESERVE_BYTES);
            room.min(self.max_resp_head + 1)
        } else {
            self.limit
        };
        match read_into(self.backend.sock, self.backend.ready, resp, limit) {
            Io::Done(_) => {
                ex.per_try_pending = false;
                Ok(true)
            }
            Io::Blocked => Ok(false),
            Io::Eof
                if ex.resp_phase == RespPhase::Body && matches!(ex.resp_body, Body::UntilClose) =>
            {
                ex.resp_body = Body::Done;
                ex.backend_overran = true;
                Ok(true)
            }
            Io::Eof | Io::Err(_) => Err(Stop::Failed(Failure::Broken)),
        }
    }

    /// A response head, once everything before it went out: parsed and rewritten into a fresh
    /// buffer, not yet installed. A head over sluice's limits is cut off, not the backend's
    /// failure; one that fills a pooled buffer while `--max-response-header-bytes` allows more
    /// goes on in a buffer grown for it (freed after the response).
    fn parse_response_head(
        &mut self,
        shutting_down: bool,
    ) -> Result<Option<(ResponseHead, Box<Buf>)>, Stop> {
        let ex = &mut *self.ex;
        let waiting = ex.resp_phase == RespPhase::Head && ex.resp_len == 0;
        if !waiting || ex.resp.as_ref().is_none_or(|r| r.is_empty()) {
            return Ok(None);
        }
        let mut cookie_buf = [0u8; SET_COOKIE_MAX_LEN];
        let set_cookie = ex.set_cookie.as_ref().map(|c| c.write(&mut cookie_buf));
        let ctx = response_context(ex, shutting_down, set_cookie);
        let Some(resp) = ex.resp.as_deref_mut() else {
            return Ok(None);
        };
        // As large as what it rewrites: a pooled buffer unless the head outgrew one.
        let mut out = self.bufs.get_at_least(resp.capacity());
        let parsed = head::forward_response(resp.bytes(), &ctx, out.tail_mut());
        match parsed {
            Ok(Some(h)) if h.head_len <= self.max_resp_head => return Ok(Some((h, out))),
            Ok(Some(_)) => {}
            Ok(None) if resp.len() < self.max_resp_head => {
                if resp.len() + REWRITE_RESERVE_BYTES >= resp.capacity() {
                    resp.grow(self.max_resp_head + REWRITE_RESERVE_BYTES);
                }
                self.bufs.put(out);
                return Ok(None);
            }
            Ok(None) => {}
            Err(HeadError::TooManyHeaders) => {
                self.bufs.put(out);
                return Err(Stop::Cut(Cutoff::ResponseHeadTooManyFields));
            }
            Err(_) => {
                self.bufs.put(out);
                return Err(Stop::Failed(Failure::Garbage));
            }
        }
        self.bufs.put(out);
        Err(Stop::Cut(Cutoff::ResponseHeadTooLarge))
    }

    /// Puts the rewritten head `h` (in `out`) in front of the body bytes already here. Returns
    /// true on `101 Switching Protocols`: the rest of both buffers is the new protocol.
    fn install_head(&mut self, h: ResponseHead, mut out: Box<Buf>) -> Result<bool, Stop> {
        let ex = &mut *self.ex;
        let resp = ex.resp.as_mut().ok_or(Stop::Close)?;
        out.fill(h.out_len);
        if !out.extend(&resp.bytes()[h.head_len..]) {
            self.bufs.put(out);
            return Err(Stop::Failed(Failure::Garbage));
        }
        let old = std::mem::replace(resp, out);
        self.bufs.put(old);
        ex.resp_len = h.out_len;
        ex.resp_started = true;
        if h.status == 101 {
            if let Some(req) = ex.req.as_mut() {
                req.consume(ex.req_sent);
            }
            ex.req_len = 0;
            ex.req_sent = 0;
            ex.resp_len = 0;
            ex.resp_head = Some(h);
            *self.state = ClientState::Tunnel;
            return Ok(true);
        }
        if !h.is_interim() {
            ex.resp_phase = RespPhase::Body;
            ex.resp_body = Body::new(h.framing);
            ex.resp_head = Some(h);
        }
        Ok(false)
    }

    /// Counts body bytes; anything after the body's end is the backend misbehaving.
    fn count_body(&mut self) -> Result<(), Stop> {
        let ex = &mut *self.ex;
        let Some(resp) = ex.resp.as_mut() else {
            return Ok(());
        };
        if ex.resp_phase != RespPhase::Body || ex.resp_len >= resp.len() {
            return Ok(());
        }
        let n = ex
            .resp_body
            .advance(&resp.bytes()[ex.resp_len..])
            .map_err(|_| Stop::Failed(Failure::Garbage))?;
        ex.resp_len += n;
        if ex.resp_body.is_done() && ex.resp_len < resp.len() {
            resp.truncate(ex.resp_len);
            ex.backend_overran = true;
        }
        Ok(())
    }

    /// Response bytes to the client.
    fn send_response(&mut self) -> Result<bool, Stop> {
        let ex = &mut *self.ex;
        let Some(resp) = ex.resp.as_mut().filter(|_| ex.resp_len > 0) else {
            return Ok(false);
        };
        match write_from(
            self.client.sock,
            self.client.ready,
            &resp.bytes()[..ex.resp_len],
        ) {
            Io::Done(n) => {
                self.counts.bytes_out += n as u64;
                resp.consume(n);
                ex.resp_len -= n;
                Ok(true)
            }
            Io::Blocked => Ok(false),
            Io::Eof | Io::Err(_) => Err(Stop::Close),
        }
    }

    fn response_done(&self) -> bool {
        self.ex.resp_phase == RespPhase::Body
            && self.ex.resp_body.is_done()
            && self.ex.resp_len == 0
    }
}

/// What the codec needs to rewrite a response head for the client that sent `ex`'s request.
fn response_context<'a>(
    ex: &Exchange,
    shutting_down: bool,
    set_cookie: Option<&'a [u8]>,
) -> ResponseContext<'a> {
    ResponseContext {
        method: ex.method,
        client_minor_version: ex.minor_version,
        client_keep_alive: ex.client_keep_alive && !shutting_down,
        upgrade_requested: ex.upgrade,
        set_cookie,
    }
}

/// What becomes of both connections once a response is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AfterResponse {
    /// The backend connection may carry another request (it goes back to the pool).
    pub(super) reuse_backend: bool,
    /// The client connection stays open for the next request.
    pub(super) keep_client: bool,
}

/// Decides [`AfterResponse`] from the response head `h` (which already says what the codec saw:
/// `Connection: close` either way, HTTP/1.0 without keep-alive, a body framed by the connection's
/// close, a chunked body an HTTP/1.0 client cannot delimit) and what happened to the request.
pub(super) fn after_response(
    h: &ResponseHead,
    ex: &Exchange,
    shutting_down: bool,
) -> AfterResponse {
    AfterResponse {
        reuse_backend: ex.request_done() && h.backend_keep_alive && !ex.backend_overran,
        keep_client: h.client_keep_alive
            && ex.req_body.is_done()
            && !ex.client_eof
            && !shutting_down,
    }
}

/// Whether the whole body of an answer being dropped (to send its request again) is already
/// here, `rest` bytes after its head: only then can its connection carry another request.
pub(super) fn answer_fully_here(framing: Framing, rest: usize) -> bool {
    match framing {
        Framing::None => rest == 0,
        Framing::Length(n) => rest as u64 == n,
        Framing::Chunked | Framing::UntilClose => false,
    }
}

impl Core {
    /// `Proxy`: moves request bytes to the backend and response bytes to the client.
    pub(super) fn http_proxy(&mut self, k: ClientKey) -> Next {
        let Some(bk) = self.conns.exchange(k).and_then(|ex| ex.backend) else {
            return self.http_unbound(k);
        };
        match self.ensure_connected(k, bk) {
            Ok(true) => {}
            Ok(false) => return Next::Wait,
            Err(next) => return next,
        }
        let mut moved = false;
        loop {
            match self.proxy_pass(k, bk) {
                Ok(Pass::Moved) => moved = true,
                Ok(Pass::Idle) => break,
                Ok(Pass::Done(next)) => return next,
                Err(Stop::Failed(failure)) => return self.attempt_failed(k, failure),
                Err(Stop::Cut(cutoff)) => return self.attempt_cut(k, cutoff),
                Err(Stop::BadRequest(status, why)) => return self.fail_client(k, status, why),
                Err(Stop::Close) => return Next::Close,
            }
        }
        if moved {
            let wait_ms = self.response_wait_ms(k);
            self.set_deadline(k, wait_ms);
        }
        Next::Wait
    }

    fn pump(&mut self, k: ClientKey, bk: BackendConnKey) -> Result<Pump<'_>, Stop> {
        let limit = self.head_limit();
        let Core {
            conns,
            io,
            metrics,
            cfg,
            ..
        } = self;
        let (c, b) = conns.pair_mut(k, bk);
        Ok(Pump {
            client: Side {
                sock: &mut c.sock,
                ready: &mut c.ready,
            },
            backend: Side {
                sock: &mut b.sock,
                ready: &mut b.ready,
            },
            ex: c.ex.as_deref_mut().ok_or(Stop::Close)?,
            state: &mut c.state,
            bufs: &mut io.bufs,
            counts: &mut metrics.current,
            limit,
            max_body_bytes: cfg.max_body_bytes,
            max_resp_head: cfg.max_response_header_bytes,
        })
    }

    /// One pass: request bytes out, body bytes in, response bytes in; a response head is settled
    /// and installed; body bytes counted and sent on.
    fn proxy_pass(&mut self, k: ClientKey, bk: BackendConnKey) -> Result<Pass, Stop> {
        let shutting_down = self.life.shutting_down;
        let mut pump = self.pump(k, bk)?;
        let sent = pump.send_request()?;
        let read = pump.read_request_body()?;
        let answered = pump.read_response()?;
        let mut progress = sent | read | answered;
        if let Some((h, out)) = pump.parse_response_head(shutting_down)? {
            // Settling needs the whole worker; the pump is borrowed again after it.
            if !h.is_interim() && self.settle_answer(k, bk, &h) == Verdict::Retry {
                return Ok(Pass::Done(self.retry_answered(k, &h, out)));
            }
            pump = self.pump(k, bk)?;
            if pump.install_head(h, out)? {
                return Ok(Pass::Done(Next::Again));
            }
            progress = true;
        }
        pump.count_body()?;
        progress |= pump.send_response()?;
        if pump.response_done() {
            return Ok(Pass::Done(self.finish_exchange(k)));
        }
        Ok(if progress { Pass::Moved } else { Pass::Idle })
    }

    /// The backend answered the attempt with the final head `h`: settle it.
    fn settle_answer(&mut self, k: ClientKey, bk: BackendConnKey, h: &ResponseHead) -> Verdict {
        let (mut settle, conns) = self.settle_view();
        let Some(ex) = conns.exchange(k) else {
            return Verdict::Final;
        };
        let req = RequestFacts::of(ex, settle.cfg.retry_buffer);
        let end = End::Answered {
            status: h.status,
            retry_after_s: h.retry_after_s,
        };
        settle.settle(&req, Some(AttemptBackend::bound(&conns[bk])), end)
    }

    /// Drops the answer `h` (rewritten into `out`) and sends the request again; the connection is
    /// kept when the whole answer is here and the request was fully sent.
    fn retry_answered(&mut self, k: ClientKey, h: &ResponseHead, out: Box<Buf>) -> Next {
        self.io.bufs.put(out);
        let mut reusable = false;
        if let Some(ex) = self.conns.exchange_mut(k) {
            if let Some(resp) = ex.resp.as_mut() {
                let rest = resp.len() - h.head_len;
                reusable = answer_fully_here(h.framing, rest)
                    && h.backend_keep_alive
                    && ex.req_sent == ex.req_len;
                resp.clear();
            }
        }
        self.send_again(k, reusable)
    }

    /// The response is complete: pool the backend connection if it can carry another request, then
    /// read the next request or close.
    fn finish_exchange(&mut self, k: ClientKey) -> Next {
        let Some(ex) = self.conns.exchange(k) else {
            return Next::Close;
        };
        let Some(h) = ex.resp_head.as_ref() else {
            return Next::Close;
        };
        let after = after_response(h, ex, self.life.shutting_down);
        self.unbind_backend(k, after.reuse_backend);
        if !after.keep_client {
            return self.begin_close(k);
        }
        self.next_request(k)
    }

    /// A request that broke after it was forwarded: answer if nothing was sent yet, else close.
    fn fail_client(&mut self, k: ClientKey, status: u16, why: &str) -> Next {
        if self.conns.exchange(k).is_some_and(|ex| ex.resp_started) {
            return Next::Close;
        }
        self.unbind_backend(k, false);
        self.answer(k, status, why, true)
    }
}

#[cfg(test)]
mod tests;
