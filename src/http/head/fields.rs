//! Header fields sluice treats specially: hop-by-hop fields and the Connection header's options
//! (RFC 9110 section 7.6.1), and cookies (RFC 6265).

use std::ops::Range;

use super::*;

/// A field sluice treats specially.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Upgrade,
    TransferEncoding,
    ContentLength,
    Host,
    XForwardedFor,
    XForwardedProto,
    Cookie,
    RetryAfter,
    Other,
}

/// Whether `name` equals `lower` (lower-case letters and `-`) ignoring case, eight bytes at a time.
/// `b | 0x20` folds an ASCII capital to its lower case and leaves `-` alone; no other token byte
/// (httparse has checked the name) folds onto a lower-case letter or `-`.
pub(super) fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    let fold = |chunk: &[u8]| -> u64 {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(word) | 0x2020_2020_2020_2020
    };
    name.chunks(8)
        .zip(lower.chunks(8))
        .all(|(a, b)| fold(a) == fold(b))
}

/// Classifies a field name: length first, so most names cost one comparison or none.
pub(super) fn classify(name: &str) -> Field {
    let n = name.as_bytes();
    let is = |s: &str| eq_lower(n, s.as_bytes());
    match n.len() {
        2 if is("te") => Field::Te,
        4 if is("host") => Field::Host,
        6 if is("cookie") => Field::Cookie,
        7 if is("upgrade") => Field::Upgrade,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::KeepAlive,
        11 if is("retry-after") => Field::RetryAfter,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::XForwardedFor,
        16 if is("proxy-connection") => Field::ProxyConnection,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::XForwardedProto,
        _ => Field::Other,
    }
}

/// Each field's class, worked out once per head and read by both passes.
pub(super) fn classify_all(headers: &[httparse::Header<'_>]) -> [Field; MAX_HEADERS] {
    let mut fields = [Field::Other; MAX_HEADERS];
    for (slot, h) in fields.iter_mut().zip(headers) {
        *slot = classify(h.name);
    }
    fields
}

/// The Connection field's options: close, keep-alive, upgrade, and the other fields it names.
#[derive(Default)]
pub(super) struct ConnectionOptions<'a> {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
    pub(super) named: [&'a [u8]; 8],
    pub(super) named_len: usize,
}

impl<'a> ConnectionOptions<'a> {
    pub(super) fn add(&mut self, value: &'a [u8]) -> Result<(), HeadError> {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if self.named_len < self.named.len() {
                self.named[self.named_len] = token;
                self.named_len += 1;
            } else {
                return Err(HeadError::Malformed("too many Connection options"));
            }
        }
        Ok(())
    }

    pub(super) fn names(&self, name: &str) -> bool {
        self.named[..self.named_len]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Hop-by-hop fields are not forwarded. Framing fields stay whatever Connection says: dropping
/// Content-Length while forwarding the body would let the next hop read the body as a new request.
/// `Trailer` is not hop-by-hop (RFC 2616 section 13.5.1 listed "Trailers", meaning TE's value; RFC
/// 9110 section 7.6.1 does not), so it passes with the trailer fields it announces.
// Called for every field of every head: left to itself, LLVM stops inlining it into the worker's
// large loop function as soon as that grows a little, which costs about 80 instructions a request.
#[inline]
pub(super) fn is_hop_by_hop(field: Field, name: &str, conn: &ConnectionOptions<'_>) -> bool {
    match field {
        Field::Connection
        | Field::KeepAlive
        | Field::ProxyConnection
        | Field::Te
        | Field::Upgrade => true,
        Field::ContentLength | Field::TransferEncoding | Field::Host => false,
        _ => conn.named_len > 0 && conn.names(name),
    }
}

/// Finds cookie `name` in a Cookie field value (`a=1; b=2`, RFC 6265 section 5.4); returns the
/// position of its value within `value`.
pub(crate) fn cookie_value(value: &[u8], name: &str) -> Option<Range<usize>> {
    let mut at = 0;
    for pair in value.split(|&b| b == b';') {
        let start = at + pair.len() - pair.trim_ascii_start().len();
        at += pair.len() + 1;
        let pair = pair.trim_ascii();
        let (key, val) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => continue,
        };
        if key == name.as_bytes() {
            let val_start = start + key.len() + 1;
            return Some(val_start..val_start + val.len());
        }
    }
    None
}
