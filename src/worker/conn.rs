//! Connection state held in a worker's slabs, and the non-blocking I/O helpers that drive it.
//!
//! A client connection is small on purpose: an idle keep-alive client is a socket, its address, a
//! state and a deadline, and owns no buffer. Everything a request in flight needs lives in an
//! [`Exchange`], taken from the worker's free list when the first byte of a request arrives and given
//! back when the response is done. A backend connection is a socket bound to one backend and, while
//! busy, to one client.
//!
//! Readiness is cached per socket ([`Ready`]): mio is edge-triggered, so a socket that was readable
//! stays marked readable until a read says otherwise (`WouldBlock`, or a short read with no pending
//! hang-up, the rule nginx uses to save the extra `read` per event). A side that cannot be read now
//! because its buffer is full keeps its mark and is read as soon as there is room.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use mio::net::TcpStream;

use crate::backend::{BackendId, BackendStats};
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::head::{Framing, Method, ResponseHead};
use crate::strategy::sticky::STICKY_TOKEN_LEN;
use crate::worker::buffer::Buf;
use crate::worker::timer::Deadline;

/// Cached readiness of one socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// The peer hung up or reset; reads must continue until they return 0 or an error.
    pub hup: bool,
}

impl Ready {
    pub fn update(&mut self, event: &mio::event::Event) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.writable = true;
        }
        if event.is_read_closed() || event.is_error() {
            self.hup = true;
        }
    }
}

/// The result of one non-blocking read or write.
#[derive(Debug)]
pub enum Io {
    /// This many bytes moved.
    Done(usize),
    /// Not now: not ready, or no room (read) / nothing to send (write).
    Blocked,
    /// The peer closed its sending side (reads only).
    Eof,
    Err(io::Error),
}

/// Reads from `sock` into `buf`, keeping at most `limit` bytes held.
pub fn read_into(sock: &mut TcpStream, ready: &mut Ready, buf: &mut Buf, limit: usize) -> Io {
    if !ready.readable {
        return Io::Blocked;
    }
    let spare = buf.spare(limit);
    if spare.is_empty() {
        return Io::Blocked;
    }
    let want = spare.len();
    loop {
        match sock.read(spare) {
            Ok(0) => {
                ready.readable = false;
                return Io::Eof;
            }
            Ok(n) => {
                buf.fill(n);
                if n < want && !ready.hup {
                    ready.readable = false;
                }
                return Io::Done(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.readable = false;
                return Io::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                ready.readable = false;
                return Io::Err(e);
            }
        }
    }
}

/// Writes as much of `bytes` to `sock` as it takes now.
pub fn write_from(sock: &mut TcpStream, ready: &mut Ready, bytes: &[u8]) -> Io {
    if !ready.writable || bytes.is_empty() {
        return Io::Blocked;
    }
    loop {
        match sock.write(bytes) {
            Ok(n) => {
                if n < bytes.len() {
                    ready.writable = false;
                }
                return Io::Done(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.writable = false;
                return Io::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                ready.writable = false;
                return Io::Err(e);
            }
        }
    }
}

/// What a client connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Waiting for (the rest of) a request head; in TCP mode, waiting for a backend.
    Head,
    /// A request is bound to a backend connection, which may still be connecting.
    Proxy,
    /// Sending a response sluice wrote itself; then close or read the next request.
    Answer { then_close: bool },
    /// Bytes both ways: TCP mode, or HTTP after `101 Switching Protocols`.
    Tunnel,
    /// Response sent, write side shut; reading and discarding until the client closes, so that
    /// unread input does not turn the close into a reset that destroys the response in flight.
    Linger,
}

pub struct ClientConn {
    pub sock: TcpStream,
    pub ready: Ready,
    pub state: ClientState,
    pub peer_ip: IpAddr,
    pub deadline: Deadline,
    pub ex: Option<Box<Exchange>>,
}

/// Progress through a message body.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        match framing {
            Framing::None | Framing::Length(0) => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Body::Done)
    }

    /// Counts how many of `bytes` (the next bytes after what was counted before) belong to the body.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
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
pub enum RespPhase {
    /// Waiting for a head (the first, or the next after a 1xx).
    Head,
    /// Head forwarded; body bytes flowing.
    Body,
}

/// The most backends one request may be tried on.
pub const MAX_TRIED: usize = 8;

/// One request in flight (HTTP) or one tunnel (TCP), with the buffers it uses.
pub struct Exchange {
    /// Bytes from the client: the current request (its first `req_len` bytes), then whatever the
    /// client pipelined after it.
    pub req: Option<Box<Buf>>,
    /// Bytes for the client: the first `resp_len` are ready to send, the rest not yet parsed.
    pub resp: Option<Box<Buf>>,
    /// Key of the bound backend connection.
    pub backend: Option<usize>,

    pub method: Method,
    pub minor_version: u8,
    pub client_keep_alive: bool,
    pub upgrade: bool,
    /// Where the strategy's hash key (the request target) sits in `req`.
    pub key: Range<usize>,
    pub req_body: Body,
    /// Request body bytes counted so far (for `--max-body-bytes`).
    pub body_bytes: u64,
    pub req_len: usize,
    pub req_sent: usize,
    /// The whole request is still in `req`, so it can be sent again to another backend.
    pub replayable: bool,
    /// The client closed its sending side.
    pub client_eof: bool,

    pub resp_phase: RespPhase,
    pub resp_body: Body,
    pub resp_len: usize,
    pub resp_head: Option<ResponseHead>,
    /// Some response bytes went to the client: a failure now can only close the connection.
    pub resp_started: bool,
    /// The backend sent bytes past the end of its response; its connection is not reused.
    pub backend_overran: bool,

    pub attempts: u8,
    pub tried: [BackendId; MAX_TRIED],
    /// The request's id for the attempt budget ([`crate::retry::budget`]), hashed.
    pub id: Option<u64>,
    /// The request's body is its id and has not fully arrived: no attempt until it has.
    pub awaiting_id: bool,
    /// Waiting for a backend's rate budget until this time (ms); 0 = not waiting.
    pub pace_until_ms: u64,
    /// Waiting in a backend's queue for a connection.
    pub queued: bool,
    /// Sticky sessions: the cookie token to set on the response (the client is re-pinned).
    pub set_cookie: Option<[u8; STICKY_TOKEN_LEN]>,
    /// A request that died on a stale pooled connection was sent again once already.
    pub stale_retried: bool,
    /// The bound backend connection came from the idle pool.
    pub reused_conn: bool,
    pub started_ms: u64,
    /// When the current attempt was sent, in us of [`crate::clock`].
    pub attempt_started_us: u64,
    /// `--per-try-timeout` is on and the current attempt has had no answer byte yet: its deadline
    /// is the per-try one.
    pub per_try_pending: bool,

    /// Tunnel: each side's sending half has ended (EOF read) and been passed on (shutdown written).
    pub up_eof: bool,
    pub up_shut: bool,
    pub down_eof: bool,
    pub down_shut: bool,
}

impl Exchange {
    pub fn new() -> Exchange {
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
            attempts: 0,
            tried: [0; MAX_TRIED],
            id: None,
            awaiting_id: false,
            pace_until_ms: 0,
            queued: false,
            set_cookie: None,
            stale_retried: false,
            reused_conn: false,
            started_ms: 0,
            attempt_started_us: 0,
            per_try_pending: false,
            up_eof: false,
            up_shut: false,
            down_eof: false,
            down_shut: false,
        }
    }

    /// Resets per-request state, keeping buffers (and any pipelined bytes in them).
    pub fn reset(&mut self) {
        let req = self.req.take();
        let resp = self.resp.take();
        *self = Exchange::new();
        self.req = req;
        self.resp = resp;
    }

    pub fn tried(&self) -> &[BackendId] {
        &self.tried[..usize::from(self.attempts).min(MAX_TRIED)]
    }

    pub fn request_done(&self) -> bool {
        self.req_body.is_done() && self.req_sent == self.req_len
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

/// What a backend connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// Non-blocking connect in progress for `client`.
    Connecting,
    /// Carrying a request (or tunnel) for `client`.
    Busy,
    /// In the worker's idle pool.
    Idle,
}

pub struct BackendConn {
    pub sock: TcpStream,
    pub ready: Ready,
    pub state: BackendState,
    pub backend_id: BackendId,
    /// Position of the backend in the table the connection was made under (a hint; checked by id).
    pub table_index: usize,
    pub stats: Arc<BackendStats>,
    pub client: usize,
    pub deadline: Deadline,
}
