//! Request and response heads: parse, decide framing, and write the head sluice forwards.
//!
//! A head is parsed with httparse straight from the connection's buffer and rewritten into a fresh
//! buffer in one pass: hop-by-hop fields are dropped (RFC 9110 section 7.6.1: Connection, Keep-Alive,
//! Proxy-Connection, TE, Upgrade, and every field the Connection header names), sluice's own
//! connection handling is written instead, and requests gain X-Forwarded-For and X-Forwarded-Proto.
//! Everything else passes unchanged, `Trailer` included: it is end to end (RFC 9110 section 6.6.2)
//! and describes trailer fields that sluice forwards. Message framing follows RFC 9112 section 6.3,
//! strictly: anything that two parsers could read differently (Content-Length with
//! Transfer-Encoding, differing lengths, a request whose final transfer coding is not `chunked`,
//! codings that are not codings, bare LF line endings) is refused, because a proxy that guesses is
//! what request smuggling exploits.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::ops::Range;

use super::chunked::is_tchar;

/// Most header fields a head may carry; `--max-headers` sets the request limit up to it, responses
/// get all of it. The parse keeps one 32-byte slot per field on the worker's stack (8 KiB).
pub(crate) const MAX_HEADERS: usize = 256;
/// Bytes a rewrite may add to a head (X-Forwarded-*, Connection); buffers keep this much spare room
/// while a head is read so the rewritten head always fits.
pub(crate) const REWRITE_RESERVE_BYTES: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
    Other,
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            "TRACE" => Method::Trace,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Idempotent methods (RFC 9110 section 9.2.2) may be retried on another backend.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// How a message body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response bodies only: the body runs until the backend closes.
    UntilClose,
}

/// Why a head was refused; [`HeadError::status`] is what the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    Malformed(&'static str),
    TooLarge,
    TooManyHeaders,
    NotImplemented(&'static str),
}

impl HeadError {
    pub(crate) fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::NotImplemented(_) => 501,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            HeadError::Malformed(why) | HeadError::NotImplemented(why) => why,
            HeadError::TooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many header fields",
        }
    }
}

/// What the worker needs to know about a request it forwards. Ranges index the rewritten head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestHead {
    pub method: Method,
    pub minor_version: u8,
    pub framing: Framing,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// A protocol upgrade (WebSocket) was requested; Upgrade fields were kept.
    pub upgrade: bool,
    /// Length of the head in the client's bytes.
    pub head_len: usize,
    /// Length of the rewritten head.
    pub out_len: usize,
    /// Request target (path and query) in the rewritten head.
    pub target: Range<usize>,
    /// Value of the Cookie field, when present.
    pub cookie: Option<Range<usize>>,
    /// Value of the field named by [`RequestOptions::id_field`], when asked for and present.
    pub id_field: Option<Range<usize>>,
    /// Value of the Host field, when present.
    pub host: Option<Range<usize>>,
    /// Value of the field named by [`RequestOptions::key_field`], when asked for and present.
    pub key_field: Option<Range<usize>>,
}

/// Facts from the request that shape how its response is forwarded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResponseContext<'a> {
    pub method: Method,
    pub client_minor_version: u8,
    pub client_keep_alive: bool,
    pub upgrade_requested: bool,
    /// A `Set-Cookie` value to add to the final response (sticky sessions).
    pub set_cookie: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// The backend connection may carry another request after this response.
    pub backend_keep_alive: bool,
    /// The client connection stays open after this response.
    pub client_keep_alive: bool,
    /// `Retry-After` in seconds, when given as a number (HTTP dates are ignored).
    pub retry_after_s: Option<u32>,
    pub head_len: usize,
    pub out_len: usize,
}

impl ResponseHead {
    /// 1xx other than 101: another head follows.
    pub(crate) fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

mod fields;
mod framing;
mod request;
mod response;

pub(crate) use fields::cookie_value;
pub(crate) use request::{forward_request, RequestOptions};
pub(crate) use response::forward_response;

/// Writes into a fixed slice; running out of room means the head is too large.
struct Out<'a> {
    pub(super) buf: &'a mut [u8],
    pub(super) len: usize,
}

impl Out<'_> {
    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<(), HeadError> {
        let end = self.len + bytes.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(HeadError::TooLarge)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    pub(super) fn field(&mut self, name: &str, value: &[u8]) -> Result<(), HeadError> {
        self.put(name.as_bytes())?;
        self.put(b": ")?;
        self.put(value)?;
        self.put(b"\r\n")
    }
}

#[cfg(test)]
mod tests;
