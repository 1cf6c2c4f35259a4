//! One request in flight (HTTP) or one tunnel (TCP): its buffers, how far each message got, and the
//! attempts made for it.
//!
//! An exchange is taken from the worker's free list when the first byte of a request arrives and
//! given back when the response is done, so an idle keep-alive client holds none and a request does
//! not allocate. The request stays in `req` until the response head arrives, so a failed attempt can
//! be sent again from its first byte ([`Exchange::restart_attempt`]); the attempts made so far
//! (`tried`, `attempts`) are what the retry decision and the strategy's candidate list read.

use std::ops::Range;

use crate::backend::BackendId;
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::head::{Framing, Method, ResponseHead};
use crate::strategy::ResponseCookie;
use crate::worker::buffer::Buf;
use crate::worker::keys::BackendConnKey;

/// Progress through a message body.
#[derive(Clone, Copy, Debug)]
pub(super) enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl Body {
    pub(super) fn new(framing: Framing) -> Body {
        match framing {
            Framing::None | Framing::Length(0) => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self, Body::Done)
    }

    /// Counts how many of `bytes` (the next bytes after what was counted before) belong to the body.
    pub(super) fn advance(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        match self {
            Body::Length(remaining) => {
                let take = (bytes.len() as u64).min(*remaining);
                *remaining -= take;
                if *remaining == 0 {
                    *self = Body::Done;
                }
                Ok(take as usize)
            }
            Body::Chunked(decoder) => {
                let n = decoder.advance(bytes)?;
                if decoder.is_done() {
                    *self = Body::Done;
                }
                Ok(n)
            }
            Body::UntilClose => Ok(bytes.len()),
            Body::Done => Ok(0),
        }
    }
}

/// Where the response to the current request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RespPhase {
    /// Waiting for a head (the first, or the next after a 1xx).
    Head,
    /// Head forwarded; body bytes flowing.
    Body,
}

/// The most backends one request may be tried on.
pub(super) const MAX_TRIED: usize = 8;

/// One request in flight (HTTP) or one tunnel (TCP), with the buffers it uses.
pub(super) struct Exchange {
    /// Bytes from the client: the current request (its first `req_len` bytes), then whatever the
    /// client pipelined after it.
    pub(super) req: Option<Box<Buf>>,
    /// Bytes for the client: the first `resp_len` are ready to send, the rest not yet parsed.
    pub(super) resp: Option<Box<Buf>>,
    /// The bound backend connection.
    pub(super) backend: Option<BackendConnKey>,

    pub(super) method: Method,
    pub(super) minor_version: u8,
    pub(super) client_keep_alive: bool,
    pub(super) upgrade: bool,
    /// Where the strategy's hash key (the request target) sits in `req`.
    pub(super) key: Range<usize>,
    pub(super) req_body: Body,
    /// Request body bytes counted so far (for `--max-body-bytes`).
    pub(super) body_bytes: u64,
    pub(super) req_len: usize,
    pub(super) req_sent: usize,
    /// The whole request is still in `req`, so it can be sent again to another backend.
    pub(super) replayable: bool,
    /// The client closed its sending side.
    pub(super) client_eof: bool,

    pub(super) resp_phase: RespPhase,
    pub(super) resp_body: Body,
    pub(super) resp_len: usize,
    pub(super) resp_head: Option<ResponseHead>,
    /// Some response bytes went to the client: a failure now can only close the connection.
    pub(super) resp_started: bool,
    /// The backend sent bytes past the end of its response; its connection is not reused.
    pub(super) backend_overran: bool,
    /// Sending the request failed: the backend closed, maybe after answering early. Nothing more
    /// is sent on this attempt, and its connection is not reused.
    pub(super) backend_stopped_reading: bool,

    pub(super) attempts: u8,
    pub(super) tried: [BackendId; MAX_TRIED],
    /// The request's id for the attempt budget ([`crate::retry::budget`]), hashed.
    pub(super) id: Option<u64>,
    /// The request's body is its id and has not fully arrived: no attempt until it has. Holds the
    /// id's scope ([`crate::retry::budget::scope_hash`]) meanwhile.
    pub(super) awaiting_id: Option<u64>,
    /// Waiting for a backend's rate budget until this time (ms); 0 = not waiting.
    pub(super) pace_until_ms: u64,
    /// Waiting in a backend's queue for a connection.
    pub(super) queued: bool,
    /// What the strategy adds to the response (a sticky session's cookie re-pins the client).
    pub(super) set_cookie: Option<ResponseCookie>,
    /// A request that died on a stale pooled connection was sent again once already.
    pub(super) stale_retried: bool,
    /// The bound backend connection came from the idle pool.
    pub(super) reused_conn: bool,
    /// The last connect failed in its TLS handshake (`--backend-tls`): a final failure is 502,
    /// not the 503 of a backend that could not be reached.
    pub(super) backend_tls_failed: bool,
    /// When the request's head was read (a tunnel: made), in us of [`crate::clock`].
    pub(super) started_us: u64,
    /// Bytes from the client: HTTP, the request head (its body is `body_bytes`); a tunnel, all.
    pub(super) bytes_in: u64,
    /// Bytes written to the client for this request (or tunnel).
    pub(super) bytes_out: u64,
    /// The status of an answer sluice wrote itself.
    pub(super) answered_status: u16,
    /// With the access log on: the request line up to the target, for its line.
    pub(super) log_request: Vec<u8>,
    /// When the current attempt was sent, in us of [`crate::clock`].
    pub(super) attempt_started_us: u64,
    /// `--per-try-timeout` is on and the current attempt has had no answer byte yet: its deadline
    /// is the per-try one.
    pub(super) per_try_pending: bool,

    /// Tunnel of a peer not listed in `--proxy-protocol-from`: its first bytes are still to be
    /// checked for a PROXY header ([`crate::worker::origin`]).
    pub(super) vet_first_bytes: bool,
    /// Tunnel: each side's sending half has ended (EOF read) and been passed on (shutdown written).
    pub(super) up_eof: bool,
    pub(super) up_shut: bool,
    pub(super) down_eof: bool,
    pub(super) down_shut: bool,
    /// Tunnel: TCP keepalive was turned on for both sockets.
    pub(super) keepalive_on: bool,
}

impl Exchange {
    pub(super) fn new() -> Exchange {
        Exchange {
            req: None,
            resp: None,
            backend: None,
            method: Method::Get,
            minor_version: 1,
            client_keep_alive: false,
            upgrade: false,
            key: 0..0,
            req_body: Body::Done,
            body_bytes: 0,
            req_len: 0,
            req_sent: 0,
            replayable: true,
            client_eof: false,
            resp_phase: RespPhase::Head,
            resp_body: Body::Done,
            resp_len: 0,
            resp_head: None,
            resp_started: false,
            backend_overran: false,
            backend_stopped_reading: false,
            attempts: 0,
            tried: [0; MAX_TRIED],
            id: None,
            awaiting_id: None,
            pace_until_ms: 0,
            queued: false,
            set_cookie: None,
            stale_retried: false,
            reused_conn: false,
            backend_tls_failed: false,
            started_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            answered_status: 0,
            log_request: Vec::new(),
            attempt_started_us: 0,
            per_try_pending: false,
            vet_first_bytes: false,
            up_eof: false,
            up_shut: false,
            down_eof: false,
            down_shut: false,
            keepalive_on: false,
        }
    }

    /// Resets per-request state, keeping buffers (and any pipelined bytes in them).
    pub(super) fn reset(&mut self) {
        let req = self.req.take();
        let resp = self.resp.take();
        let mut log_request = std::mem::take(&mut self.log_request);
        log_request.clear();
        *self = Exchange::new();
        self.req = req;
        self.resp = resp;
        self.log_request = log_request;
    }

    /// Prepares another attempt: the request is sent again from its start and whatever the last
    /// backend answered is forgotten.
    pub(super) fn restart_attempt(&mut self) {
        self.req_sent = 0;
        self.resp_len = 0;
        self.resp_phase = RespPhase::Head;
        self.resp_head = None;
        self.backend_overran = false;
        self.backend_stopped_reading = false;
        if let Some(resp) = self.resp.as_mut() {
            resp.clear();
        }
    }

    /// Backends tried for this request, oldest first.
    pub(super) fn tried(&self) -> &[BackendId] {
        &self.tried[..usize::from(self.attempts).min(MAX_TRIED)]
    }

    /// The whole request was read from the client and sent to the backend.
    pub(super) fn request_done(&self) -> bool {
        self.req_body.is_done() && self.req_sent == self.req_len
    }

    /// The whole request is still held, within `retry_buffer` bytes, so it can be sent again.
    pub(super) fn whole_request_held(&self, retry_buffer: usize) -> bool {
        self.replayable && self.req_body.is_done() && self.req_len <= retry_buffer
    }

    /// The fields [`crate::worker::http::classify_request`] works on, borrowed together.
    pub(super) fn req_body_mut_parts(&mut self) -> (&mut Body, Option<&Buf>, &mut usize, &mut u64) {
        (
            &mut self.req_body,
            self.req.as_deref(),
            &mut self.req_len,
            &mut self.body_bytes,
        )
    }

    /// The exchange is held up by its client, not its backend: answer bytes wait for a client that
    /// does not read them, or everything the client sent went to the backend and the rest of the
    /// request body has not come.
    pub(super) fn waits_on_client(&self) -> bool {
        self.resp_len > 0 || (!self.req_body.is_done() && self.req_sent == self.req_len)
    }

    /// No byte of an answer arrived for the current attempt.
    pub(super) fn no_answer_byte(&self) -> bool {
        !self.resp_started && self.resp.as_ref().is_none_or(|r| r.is_empty())
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}
