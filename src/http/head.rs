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
pub const MAX_HEADERS: usize = 256;
/// Bytes a rewrite may add to a head (X-Forwarded-*, Connection); buffers keep this much spare room
/// while a head is read so the rewritten head always fits.
pub const REWRITE_RESERVE_BYTES: usize = 512;

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
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response bodies only: the body runs until the backend closes.
    UntilClose,
}

/// Why a head was refused; [`HeadError::status`] is what the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    Malformed(&'static str),
    TooLarge,
    TooManyHeaders,
    NotImplemented(&'static str),
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::NotImplemented(_) => 501,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HeadError::Malformed(why) | HeadError::NotImplemented(why) => why,
            HeadError::TooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many header fields",
        }
    }
}

/// What the worker needs to know about a request it forwards. Ranges index the rewritten head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
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
    /// Value of the Idempotency-Key field, when present.
    pub idempotency_key: Option<Range<usize>>,
    /// Value of the Host field, when present.
    pub host: Option<Range<usize>>,
    /// Value of the field named by [`RequestOptions::key_field`], when asked for and present.
    pub key_field: Option<Range<usize>>,
}

/// Facts from the request that shape how its response is forwarded.
#[derive(Clone, Copy, Debug)]
pub struct ResponseContext<'a> {
    pub method: Method,
    pub client_minor_version: u8,
    pub client_keep_alive: bool,
    pub upgrade_requested: bool,
    /// A `Set-Cookie` value to add to the final response (sticky sessions).
    pub set_cookie: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
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
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// A field sluice treats specially.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
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
    IdempotencyKey,
    RetryAfter,
    Other,
}

/// Whether `name` equals `lower` (lower-case letters and `-`) ignoring case, eight bytes at a time.
/// `b | 0x20` folds an ASCII capital to its lower case and leaves `-` alone; no other token byte
/// (httparse has checked the name) folds onto a lower-case letter or `-`.
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
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
fn classify(name: &str) -> Field {
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
        15 if is("idempotency-key") => Field::IdempotencyKey,
        16 if is("proxy-connection") => Field::ProxyConnection,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::XForwardedProto,
        _ => Field::Other,
    }
}

/// Each field's class, worked out once per head and read by both passes.
fn classify_all(headers: &[httparse::Header<'_>]) -> [Field; MAX_HEADERS] {
    let mut fields = [Field::Other; MAX_HEADERS];
    for (slot, h) in fields.iter_mut().zip(headers) {
        *slot = classify(h.name);
    }
    fields
}

/// The Connection field's options: close, keep-alive, upgrade, and the other fields it names.
#[derive(Default)]
struct ConnectionOptions<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    named: [&'a [u8]; 8],
    named_len: usize,
}

impl<'a> ConnectionOptions<'a> {
    fn add(&mut self, value: &'a [u8]) -> Result<(), HeadError> {
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

    fn names(&self, name: &str) -> bool {
        self.named[..self.named_len]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Hop-by-hop fields are not forwarded. Framing fields stay whatever Connection says: dropping
/// Content-Length while forwarding the body would let the next hop read the body as a new request.
/// `Trailer` is not hop-by-hop (RFC 2616 section 13.5.1 listed "Trailers", meaning TE's value; RFC
/// 9110 section 7.6.1 does not), so it passes with the trailer fields it announces.
fn is_hop_by_hop(field: Field, name: &str, conn: &ConnectionOptions<'_>) -> bool {
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

/// Writes into a fixed slice; running out of room means the head is too large.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), HeadError> {
        let end = self.len + bytes.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(HeadError::TooLarge)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn field(&mut self, name: &str, value: &[u8]) -> Result<(), HeadError> {
        self.put(name.as_bytes())?;
        self.put(b": ")?;
        self.put(value)?;
        self.put(b"\r\n")
    }
}

/// Where `part`, a slice of `src`, ends within `src` (`None` if it is not a slice of `src`).
fn end_in(src: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(src.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= src.len()).then_some(end)
}

/// Refuses line endings other than CRLF: httparse accepts a bare LF, RFC 9112 section 2.2 lets a
/// recipient do so, and a proxy must not, since the next hop might not.
///
/// httparse refuses an LF inside a line and a CR not followed by LF, so a bare LF can only end a
/// line, and it is enough to look at the byte ending each line httparse found: the first line,
/// every field (past trailing whitespace), and the empty last line. That costs a few instructions
/// per line instead of a branch per byte; when a line's end is unknown (an empty reason phrase or
/// field value may not point into the buffer) every byte is counted instead. The fuzz invariant
/// `check::no_bare_line_endings` verifies the reasoning byte by byte.
fn check_line_endings(
    head: &[u8],
    first_line: Option<(usize, usize)>,
    fields: &[httparse::Header<'_>],
) -> Result<(), HeadError> {
    let bare = HeadError::Malformed("bare LF or CR in head");
    let cr_at = |mut at: usize| {
        while matches!(head.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        head.get(at) == Some(&b'\r')
    };
    let Some((start, end)) = first_line else {
        return count_line_endings(head);
    };
    // Empty lines before the first line are skipped (RFC 9112 section 2.2), CRLF ones only.
    if start % 2 != 0 || !head[..start].chunks(2).all(|pair| pair == b"\r\n") || !cr_at(end) {
        return Err(bare);
    }
    for f in fields {
        match end_in(head, f.value) {
            Some(at) if !f.value.is_empty() => {
                if !cr_at(at) {
                    return Err(bare);
                }
            }
            _ => return count_line_endings(head),
        }
    }
    if !head.ends_with(b"\r\n") {
        return Err(bare);
    }
    Ok(())
}

/// The slow way: every CR starts a CRLF (httparse saw to that), so a bare LF shows as one LF more
/// than there are CRs.
fn count_line_endings(head: &[u8]) -> Result<(), HeadError> {
    let count = |c: u8| head.iter().filter(|&&b| b == c).count();
    if count(b'\n') != count(b'\r') {
        return Err(HeadError::Malformed("bare LF or CR in head"));
    }
    Ok(())
}

/// Parses a Content-Length value: digits only (RFC 9110 section 8.6), no sign, no list.
fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("bad Content-Length"));
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The transfer codings a message lists, read from its Transfer-Encoding fields in order (several
/// fields make one list, RFC 9110 section 5.3).
#[derive(Clone, Copy, Default)]
struct TransferCodings {
    /// A Transfer-Encoding field was seen.
    present: bool,
    chunked_seen: bool,
    /// The last coding so far is `chunked`: sluice can find where the body ends.
    final_chunked: bool,
}

impl TransferCodings {
    /// Adds one Transfer-Encoding field value. The rule (RFC 9112 section 6.1 and 7), checked per
    /// coding in list order:
    /// - a coding is a token (RFC 9110 section 5.6.2) with optional whitespace around each comma; an
    ///   empty element or other bytes are malformed (400), since a parser that skips an empty
    ///   element and one that doesn't would disagree on which coding is final;
    /// - `chunked` may appear once (RFC 9112 section 6.1: never applied twice), else 400;
    /// - the other codings sluice forwards are the registered ones of RFC 9112 section 7.2: `gzip`,
    ///   `deflate`, `compress` and their `x-gzip`, `x-compress` aliases. sluice only frames by the
    ///   final `chunked`, so the codings under it are the backend's business;
    /// - `identity` is not a transfer coding (RFC 7230 removed it, Appendix A.2; nginx answers 501)
    ///   and neither is anything else, nor a coding with parameters (none is defined): 501, as RFC
    ///   9112 section 6.1 asks of a server that does not understand a coding.
    ///
    /// Whether the final coding must be `chunked` depends on the direction; see
    /// [`forward_request`] and [`forward_response`].
    fn add(&mut self, value: &[u8]) -> Result<(), HeadError> {
        let ows = |b: &u8| *b == b' ' || *b == b'\t';
        self.present = true;
        for element in value.split(|&b| b == b',') {
            let start = element
                .iter()
                .position(|b| !ows(b))
                .unwrap_or(element.len());
            let end = element
                .iter()
                .rposition(|b| !ows(b))
                .map_or(start, |i| i + 1);
            let element = &element[start..end];
            let name_len = element
                .iter()
                .position(|&b| !is_tchar(b))
                .unwrap_or(element.len());
            let (name, rest) = element.split_at(name_len);
            let params = rest.iter().find(|b| !ows(b)) == Some(&b';');
            if name.is_empty() || (!rest.is_empty() && !params) {
                return Err(HeadError::Malformed("malformed Transfer-Encoding"));
            }
            if params {
                return Err(HeadError::NotImplemented(
                    "transfer coding parameters are not supported",
                ));
            }
            let is = |coding: &str| name.eq_ignore_ascii_case(coding.as_bytes());
            if is("chunked") {
                if self.chunked_seen {
                    return Err(HeadError::Malformed("chunked applied twice"));
                }
                self.chunked_seen = true;
                self.final_chunked = true;
            } else if is("gzip")
                || is("deflate")
                || is("compress")
                || is("x-gzip")
                || is("x-compress")
            {
                self.final_chunked = false;
            } else if is("identity") {
                return Err(HeadError::NotImplemented(
                    "identity is not a transfer coding",
                ));
            } else {
                return Err(HeadError::NotImplemented("unknown transfer coding"));
            }
        }
        Ok(())
    }
}

/// Decimal text of every byte value: `(digits, len)`, built at compile time.
const OCTET_TEXT: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let (h, t, o) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        table[i] = if i >= 100 {
            ([b'0' + h, b'0' + t, b'0' + o], 3)
        } else if i >= 10 {
            ([b'0' + t, b'0' + o, 0], 2)
        } else {
            ([b'0' + o, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// Writes a client address in its usual text form.
fn write_ip(out: &mut Out<'_>, ip: IpAddr) -> Result<(), HeadError> {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                let (digits, len) = OCTET_TEXT[usize::from(octet)];
                text[n..n + 3].copy_from_slice(&digits);
                n += usize::from(len);
            }
            out.put(&text[..n])
        }
        IpAddr::V6(v6) => {
            let mut text = [0u8; 48];
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            write!(cursor, "{v6}").map_err(|_| HeadError::TooLarge)?;
            let n = cursor.position() as usize;
            out.put(&text[..n])
        }
    }
}

/// Finds cookie `name` in a Cookie field value (`a=1; b=2`, RFC 6265 section 5.4); returns the
/// position of its value within `value`.
pub fn cookie_value(value: &[u8], name: &str) -> Option<Range<usize>> {
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

/// Settings for forwarding requests.
#[derive(Clone, Copy, Debug)]
pub struct RequestOptions<'a> {
    pub client_ip: IpAddr,
    /// Value of X-Forwarded-Proto.
    pub proto: &'static str,
    /// Most header fields accepted (at most [`MAX_HEADERS`]).
    pub max_headers: usize,
    /// A field whose value's position to report in [`RequestHead::key_field`].
    pub key_field: Option<&'a str>,
}

/// Parses the request head at the front of `src` and writes the head to forward into `out`.
/// `Ok(None)`: the head is not complete yet.
///
/// Transfer-Encoding: every coding must pass [`TransferCodings::add`] (else 400, or 501 for
/// `identity` and codings sluice does not know, like nginx), and the final one must be `chunked`:
/// RFC 9112 section 6.3 says a request whose final coding is anything else has no reliable length
/// and MUST get 400 and a closed connection. `gzip, chunked` is forwarded as it is.
pub fn forward_request(
    src: &[u8],
    opts: &RequestOptions<'_>,
    out: &mut [u8],
) -> Result<Option<RequestHead>, HeadError> {
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let max = opts.max_headers.clamp(1, MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(src, &mut storage[..max]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("unsupported HTTP version"))
        }
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    let (Some(method_str), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("malformed request line"));
    };
    // The request line runs from the method to the target and " HTTP/1.x" (one space each).
    let line_start = end_in(src, method_str.as_bytes()).map(|end| end - method_str.len());
    let line_end = end_in(src, target.as_bytes()).map(|end| end + " HTTP/1.1".len());
    check_line_endings(&src[..head_len], line_start.zip(line_end), req.headers)?;
    let method = Method::parse(method_str);
    if method == Method::Connect {
        return Err(HeadError::NotImplemented("CONNECT is not supported"));
    }
    let headers = &*req.headers;

    let mut conn = ConnectionOptions::default();
    let mut length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    let mut hosts = 0;
    let mut has_upgrade_field = false;
    let fields = classify_all(headers);
    for (h, &field) in headers.iter().zip(&fields) {
        match field {
            Field::Connection => conn.add(h.value)?,
            Field::ContentLength => {
                if length.is_some() {
                    return Err(HeadError::Malformed("more than one Content-Length"));
                }
                length = Some(parse_length(h.value)?);
            }
            Field::TransferEncoding => codings.add(h.value)?,
            Field::Host => hosts += 1,
            Field::Upgrade => has_upgrade_field = true,
            _ => {}
        }
    }
    // RFC 9112 section 6.3: a request whose final coding is not chunked has no knowable length.
    if codings.present && !codings.final_chunked {
        return Err(HeadError::Malformed(
            "chunked is not the final transfer coding",
        ));
    }
    let chunked = codings.present;
    if chunked && length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if chunked && minor == 0 {
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if hosts > 1 || (hosts == 0 && minor == 1) {
        return Err(HeadError::Malformed("a request needs exactly one Host"));
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if minor == 1 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    let upgrade = conn.upgrade && has_upgrade_field && minor == 1;

    let mut o = Out { buf: out, len: 0 };
    o.put(method_str.as_bytes())?;
    o.put(b" ")?;
    let target_start = o.len;
    o.put(target.as_bytes())?;
    let target_range = target_start..o.len;
    o.put(if minor == 1 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    })?;

    let mut cookie = None;
    let mut idempotency_key = None;
    let mut host = None;
    let mut key_field = None;
    let mut forwarded_for = false;
    for (h, &field) in headers.iter().zip(&fields) {
        forwarded_for |= field == Field::XForwardedFor;
        let drop = match field {
            Field::XForwardedFor | Field::XForwardedProto => true,
            Field::Upgrade if upgrade => false,
            _ => is_hop_by_hop(field, h.name, &conn),
        };
        if drop {
            continue;
        }
        let value_start = o.len + h.name.len() + 2;
        o.field(h.name, h.value)?;
        let value = value_start..value_start + h.value.len();
        match field {
            Field::Cookie if cookie.is_none() => cookie = Some(value.clone()),
            Field::IdempotencyKey => idempotency_key = Some(value.clone()),
            Field::Host => host = Some(value.clone()),
            _ => {}
        }
        if key_field.is_none()
            && opts
                .key_field
                .is_some_and(|k| k.eq_ignore_ascii_case(h.name))
        {
            key_field = Some(value);
        }
    }
    // One X-Forwarded-For: the client's list, then the client itself.
    o.put(b"X-Forwarded-For: ")?;
    if forwarded_for {
        for (h, _) in headers
            .iter()
            .zip(&fields)
            .filter(|(_, &f)| f == Field::XForwardedFor)
        {
            o.put(h.value)?;
            o.put(b", ")?;
        }
    }
    write_ip(&mut o, opts.client_ip)?;
    o.put(b"\r\n")?;
    o.field("X-Forwarded-Proto", opts.proto.as_bytes())?;
    if upgrade {
        o.put(b"Connection: Upgrade\r\n")?;
    } else if minor == 0 {
        // Backend connections are pooled; ask an HTTP/1.0 backend to keep this one.
        o.put(b"Connection: keep-alive\r\n")?;
    }
    o.put(b"\r\n")?;

    Ok(Some(RequestHead {
        method,
        minor_version: minor,
        framing,
        keep_alive,
        upgrade,
        head_len,
        out_len: o.len,
        target: target_range,
        cookie,
        idempotency_key,
        host,
        key_field,
    }))
}

/// Parses the response head at the front of `src` and writes the head to send the client into `out`.
/// `Ok(None)`: the head is not complete yet.
///
/// Transfer-Encoding: a final `chunked` frames the body; any other final coding means the body
/// ends when the backend closes (RFC 9112 section 6.3). Codings that fail [`TransferCodings::add`]
/// (`identity, chunked`, unknown codings) are refused, and the worker answers 502, rather than
/// forwarded: a client that reads `identity` as "no coding" would wait for the close while sluice
/// keeps the connection for the next response, and two readings of where a body ends is how a
/// response queue gets poisoned. nginx, as a proxy, refuses them too.
pub fn forward_response(
    src: &[u8],
    ctx: &ResponseContext<'_>,
    out: &mut [u8],
) -> Result<Option<ResponseHead>, HeadError> {
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        src,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed("malformed response head")),
    };
    let line_end = resp
        .reason
        .filter(|r| !r.is_empty())
        .and_then(|r| end_in(src, r.as_bytes()));
    let line_start = src.starts_with(b"HTTP/").then_some(0);
    check_line_endings(&src[..head_len], line_start.zip(line_end), resp.headers)?;
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("malformed status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(HeadError::Malformed("bad status code"));
    }
    let headers = &*resp.headers;

    let mut conn = ConnectionOptions::default();
    let mut length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    let mut retry_after_s = None;
    let fields = classify_all(headers);
    for (h, &field) in headers.iter().zip(&fields) {
        match field {
            Field::Connection => conn.add(h.value)?,
            Field::ContentLength => {
                let n = parse_length(h.value)?;
                if length.is_some_and(|m| m != n) {
                    return Err(HeadError::Malformed("differing Content-Length values"));
                }
                length = Some(n);
            }
            Field::TransferEncoding => {
                if codings.present {
                    return Err(HeadError::Malformed("Transfer-Encoding repeated"));
                }
                codings.add(h.value)?;
            }
            Field::RetryAfter => {
                retry_after_s = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u32>().ok());
            }
            _ => {}
        }
    }
    if codings.present && length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let interim = (100..200).contains(&status);
    let switching = status == 101 && ctx.upgrade_requested;
    if status == 101 && !ctx.upgrade_requested {
        return Err(HeadError::Malformed("101 without an upgrade request"));
    }
    // RFC 9112 section 6.3: HEAD, 1xx, 204 and 304 responses end at their head.
    let framing = if ctx.method == Method::Head || interim || status == 204 || status == 304 {
        Framing::None
    } else {
        // RFC 9112 section 6.3: a response whose final coding is not chunked ends at close.
        match (codings.present.then_some(codings.final_chunked), length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::None,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let backend_keep_alive = !switching
        && framing != Framing::UntilClose
        && if minor == 1 {
            !conn.close
        } else {
            conn.keep_alive && !conn.close
        };
    // A chunked body cannot reach an HTTP/1.0 client with its end marked, except by closing.
    let client_keep_alive = !switching
        && ctx.client_keep_alive
        && framing != Framing::UntilClose
        && !(framing == Framing::Chunked && ctx.client_minor_version == 0);

    let mut o = Out { buf: out, len: 0 };
    o.put(if minor == 1 {
        b"HTTP/1.1 "
    } else {
        b"HTTP/1.0 "
    })?;
    let code = [
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    o.put(&code)?;
    o.put(b" ")?;
    o.put(resp.reason.unwrap_or("").as_bytes())?;
    o.put(b"\r\n")?;
    for (h, &field) in headers.iter().zip(&fields) {
        if !(field == Field::Upgrade && switching) && is_hop_by_hop(field, h.name, &conn) {
            continue;
        }
        o.field(h.name, h.value)?;
    }
    if switching {
        o.put(b"Connection: Upgrade\r\n")?;
    } else if interim {
        // Interim responses say nothing about the connection.
    } else if !client_keep_alive {
        o.put(b"Connection: close\r\n")?;
    } else if ctx.client_minor_version == 0 {
        o.put(b"Connection: keep-alive\r\n")?;
    }
    if let (Some(cookie), false) = (ctx.set_cookie, interim) {
        o.field("Set-Cookie", cookie)?;
    }
    o.put(b"\r\n")?;

    Ok(Some(ResponseHead {
        status,
        framing,
        backend_keep_alive,
        client_keep_alive,
        retry_after_s,
        head_len,
        out_len: o.len,
    }))
}

#[cfg(test)]
mod tests;
