//! Just enough HTTP/1.1 for loadgen: incremental request and response readers built on
//! `httparse`, a chunked-body decoder, and writers for the few messages loadgen sends.
//!
//! Every reader is incremental: feed it the bytes read so far, it returns how many it consumed
//! (the caller drains them, so buffers stay small) and the message once complete. Running out
//! of bytes is not an error. Framing follows RFC 9112 section 6.
//!
//! The load generator and the simulator keep only what they act on. A reader built with
//! `whole()` also keeps every header field, the version, the method as sent and a chunked
//! request body as framed: sluice's integration tests read what the proxy sent with it.

mod chunked;

use std::fmt;
use std::io::Write;

pub use chunked::ChunkedDecoder;

/// Largest request or response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body the simulator buffers.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_HEADERS: usize = 64;
/// Header fields a `whole()` reader accepts: more than sluice forwards (its `--max-headers` is at
/// most 256).
const WHOLE_MAX_HEADERS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H1Error {
    Syntax(httparse::Error),
    HeadTooLarge,
    BodyTooLarge,
    BadContentLength,
    BadChunk,
}

impl fmt::Display for H1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H1Error::Syntax(e) => write!(f, "malformed HTTP message: {e}"),
            H1Error::HeadTooLarge => write!(f, "HTTP head larger than {MAX_HEAD_BYTES} bytes"),
            H1Error::BodyTooLarge => write!(f, "HTTP body larger than {MAX_BODY_BYTES} bytes"),
            H1Error::BadContentLength => write!(f, "invalid or conflicting Content-Length"),
            H1Error::BadChunk => write!(f, "invalid chunked encoding"),
        }
    }
}

impl std::error::Error for H1Error {}

/// How the body after a head is delimited.
#[derive(Debug, Clone)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Framing and connection headers common to requests and responses.
#[derive(Debug, Default)]
struct HeadInfo {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

fn head_info(headers: &[httparse::Header<'_>]) -> Result<HeadInfo, H1Error> {
    let mut info = HeadInfo::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| H1Error::BadContentLength)?;
            let n: u64 = text.trim().parse().map_err(|_| H1Error::BadContentLength)?;
            if info.content_length.is_some_and(|old| old != n) {
                return Err(H1Error::BadContentLength);
            }
            info.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            info.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                info.close |= token.eq_ignore_ascii_case(b"close");
                info.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    Ok(info)
}

/// What a reader keeps of each message beyond what loadgen acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Status or request line and framing only (the generator's and simulator's hot paths).
    Framing,
    /// Also the body.
    Body,
    /// Also every header field, and interim responses are returned instead of skipped.
    Whole,
}

/// The header fields of a head, as text (values decoded lossily as UTF-8).
fn fields(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The value of the first field called `name` (any case).
fn field<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A complete response, as far as loadgen cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// Every header field in order, only when the reader was built with
    /// [`ResponseReader::whole`].
    pub headers: Vec<(String, String)>,
    /// The body (decoded when chunked), only when the reader was built with
    /// [`ResponseReader::capturing`] or [`ResponseReader::whole`].
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header field called `name` (any case); needs
    /// [`ResponseReader::whole`].
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response after another from a connection.
#[derive(Debug)]
pub struct ResponseReader {
    framing: Option<BodyFraming>,
    status: u16,
    keep_alive: bool,
    version: u8,
    keep: Keep,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    /// A reader that skips bodies (the load generator's hot path).
    pub fn new() -> Self {
        ResponseReader {
            framing: None,
            status: 0,
            keep_alive: false,
            version: 1,
            keep: Keep::Framing,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A reader that keeps each body in [`Response::body`].
    pub fn capturing() -> Self {
        ResponseReader {
            keep: Keep::Body,
            ..Self::new()
        }
    }

    /// A reader that keeps each body and every header field, and returns interim (1xx)
    /// responses one by one instead of skipping them: for a test that checks what a proxy sent.
    pub fn whole() -> Self {
        ResponseReader {
            keep: Keep::Whole,
            ..Self::new()
        }
    }

    /// True once a head has been read and the body is still arriving.
    pub fn in_body(&self) -> bool {
        self.framing.is_some()
    }

    /// Consumes what it can of `buf`. `head_request` says the request was a `HEAD` (no body).
    pub fn advance(
        &mut self,
        buf: &[u8],
        head_request: bool,
    ) -> Result<(usize, Option<Response>), H1Error> {
        let mut used = 0;
        loop {
            if self.framing.is_none() {
                let mut few = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut many;
                let headers: &mut [httparse::Header<'_>] = if self.keep == Keep::Whole {
                    many = [httparse::EMPTY_HEADER; WHOLE_MAX_HEADERS];
                    &mut many
                } else {
                    &mut few
                };
                let mut parsed = httparse::Response::new(headers);
                let n = match parsed.parse(&buf[used..]).map_err(H1Error::Syntax)? {
                    httparse::Status::Partial => {
                        if buf.len() - used > MAX_HEAD_BYTES {
                            return Err(H1Error::HeadTooLarge);
                        }
                        return Ok((used, None));
                    }
                    httparse::Status::Complete(n) => n,
                };
                used += n;
                let status = parsed.code.unwrap_or(0);
                let interim = (100..200).contains(&status) && status != 101;
                if interim && self.keep != Keep::Whole {
                    continue; // e.g. 100 Continue
                }
                let info = head_info(parsed.headers)?;
                let http11 = parsed.version == Some(1);
                self.status = status;
                self.version = parsed.version.unwrap_or(1);
                // After 101 Switching Protocols the connection no longer speaks HTTP/1.1.
                self.keep_alive = !info.close && (http11 || info.keep_alive) && status != 101;
                self.body.clear();
                if self.keep == Keep::Whole {
                    self.headers = fields(parsed.headers);
                }
                // RFC 9112 section 6.3: no body after HEAD, 1xx, 204 or 304.
                let no_body =
                    head_request || (100..200).contains(&status) || status == 204 || status == 304;
                self.framing = Some(if no_body {
                    BodyFraming::None
                } else if info.chunked {
                    BodyFraming::Chunked(ChunkedDecoder::default())
                } else if let Some(n) = info.content_length {
                    BodyFraming::Length(n)
                } else {
                    self.keep_alive = false;
                    BodyFraming::UntilClose
                });
            }
            let rest = &buf[used..];
            let out = (self.keep != Keep::Framing).then_some(&mut self.body);
            let done = match self.framing.as_mut() {
                None | Some(BodyFraming::None) => true,
                Some(BodyFraming::Length(left)) => {
                    let take = rest.len().min(*left as usize);
                    if let Some(out) = out {
                        out.extend_from_slice(&rest[..take]);
                    }
                    *left -= take as u64;
                    used += take;
                    *left == 0
                }
                Some(BodyFraming::Chunked(dec)) => {
                    let (n, done) = dec.decode(rest, out)?;
                    used += n;
                    done
                }
                Some(BodyFraming::UntilClose) => {
                    if let Some(out) = out {
                        out.extend_from_slice(rest);
                    }
                    used += rest.len();
                    false
                }
            };
            if !done {
                return Ok((used, None));
            }
            return Ok((used, Some(self.finish())));
        }
    }

    /// Called when the peer closed: completes a read-until-close body.
    pub fn at_eof(&mut self) -> Option<Response> {
        matches!(self.framing, Some(BodyFraming::UntilClose)).then(|| self.finish())
    }

    fn finish(&mut self) -> Response {
        self.framing = None;
        Response {
            status: self.status,
            keep_alive: self.keep_alive,
            version: self.version,
            headers: std::mem::take(&mut self.headers),
            body: std::mem::take(&mut self.body),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// A complete request, as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub keep_alive: bool,
    /// The body (decoded when chunked).
    pub body: Vec<u8>,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// The method as sent; only from [`RequestReader::whole`], empty otherwise.
    pub method_name: String,
    /// Every header field in order; only from [`RequestReader::whole`].
    pub headers: Vec<(String, String)>,
    /// The body as it came on the wire (chunk sizes, extensions and trailers included); only
    /// from [`RequestReader::whole`].
    pub raw_body: Vec<u8>,
}

impl Request {
    /// A request with no body and nothing beyond what the simulator acts on.
    pub fn new(method: Method, path: &str) -> Self {
        Request {
            method,
            path: path.to_string(),
            keep_alive: true,
            body: Vec::new(),
            version: 1,
            method_name: String::new(),
            headers: Vec::new(),
            raw_body: Vec::new(),
        }
    }

    /// The value of the first header field called `name` (any case); needs
    /// [`RequestReader::whole`].
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }
}

/// Reads one request after another from a connection (the simulator's side).
#[derive(Debug)]
pub struct RequestReader {
    pending: Option<(Request, BodyFraming)>,
    keep: Keep,
    max_body_bytes: usize,
}

impl Default for RequestReader {
    /// The simulator's reader: bodies up to [`MAX_BODY_BYTES`].
    fn default() -> Self {
        RequestReader {
            pending: None,
            keep: Keep::Body,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

impl RequestReader {
    /// A reader that also keeps the method as sent, every header field and the body as framed,
    /// with no limit on the body's size: for a test backend that checks what a proxy sent.
    pub fn whole() -> Self {
        RequestReader {
            keep: Keep::Whole,
            max_body_bytes: usize::MAX,
            ..Self::default()
        }
    }

    pub fn advance(&mut self, buf: &[u8]) -> Result<(usize, Option<Request>), H1Error> {
        let mut used = 0;
        if self.pending.is_none() {
            let mut few = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut many;
            let headers: &mut [httparse::Header<'_>] = if self.keep == Keep::Whole {
                many = [httparse::EMPTY_HEADER; WHOLE_MAX_HEADERS];
                &mut many
            } else {
                &mut few
            };
            let mut parsed = httparse::Request::new(headers);
            used = match parsed.parse(buf).map_err(H1Error::Syntax)? {
                httparse::Status::Partial => {
                    if buf.len() > MAX_HEAD_BYTES {
                        return Err(H1Error::HeadTooLarge);
                    }
                    return Ok((0, None));
                }
                httparse::Status::Complete(n) => n,
            };
            let info = head_info(parsed.headers)?;
            let method_name = parsed.method.unwrap_or("");
            let method = match method_name {
                "GET" => Method::Get,
                "HEAD" => Method::Head,
                "POST" => Method::Post,
                _ => Method::Other,
            };
            let http11 = parsed.version == Some(1);
            let framing = if info.chunked {
                BodyFraming::Chunked(ChunkedDecoder::default())
            } else {
                match info.content_length {
                    Some(n) if n > self.max_body_bytes as u64 => return Err(H1Error::BodyTooLarge),
                    Some(n) => BodyFraming::Length(n),
                    None => BodyFraming::None,
                }
            };
            let mut request = Request::new(method, parsed.path.unwrap_or("/"));
            request.keep_alive = !info.close && (http11 || info.keep_alive);
            request.version = parsed.version.unwrap_or(1);
            if self.keep == Keep::Whole {
                request.method_name = method_name.to_string();
                request.headers = fields(parsed.headers);
            }
            self.pending = Some((request, framing));
        }
        let rest = &buf[used..];
        let Some((request, framing)) = self.pending.as_mut() else {
            return Ok((used, None));
        };
        let before = used;
        let done = match framing {
            BodyFraming::None | BodyFraming::UntilClose => true,
            BodyFraming::Length(left) => {
                let take = rest.len().min(*left as usize);
                request.body.extend_from_slice(&rest[..take]);
                *left -= take as u64;
                used += take;
                *left == 0
            }
            BodyFraming::Chunked(dec) => {
                let (n, done) = dec.decode(rest, Some(&mut request.body))?;
                used += n;
                if request.body.len() > self.max_body_bytes {
                    return Err(H1Error::BodyTooLarge);
                }
                done
            }
        };
        if self.keep == Keep::Whole {
            request.raw_body.extend_from_slice(&buf[before..used]);
        }
        if !done {
            return Ok((used, None));
        }
        Ok((used, self.pending.take().map(|(r, _)| r)))
    }
}

/// Standard reason phrase for the statuses loadgen produces.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends a response with a `Content-Length` body.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, String)],
    body: &[u8],
    close: bool,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends a request. `headers` are written verbatim as `name: value` lines.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    close: bool,
) {
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if let Some(body) = body {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut ResponseReader, mut buf: &[u8]) -> Vec<Response> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (n, resp) = reader.advance(buf, false).unwrap();
            buf = &buf[n..];
            match resp {
                Some(r) => out.push(r),
                None => assert!(buf.is_empty(), "stalled with {} bytes", buf.len()),
            }
        }
        out
    }

    #[test]
    fn content_length_responses_back_to_back() {
        let mut r = ResponseReader::capturing();
        let got = read_all(
            &mut r,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].status, got[0].body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(got[1].status, 503);
        assert!(got[1].keep_alive);
    }

    #[test]
    fn chunked_response_split_at_every_byte() {
        let msg = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: 1\r\n\r\n";
        for split in 1..msg.len() {
            let mut r = ResponseReader::capturing();
            let mut buf = msg[..split].to_vec();
            let (n, first) = r.advance(&buf, false).unwrap();
            buf.drain(..n);
            let resp = first.or_else(|| {
                buf.extend_from_slice(&msg[split..]);
                let (n, resp) = r.advance(&buf, false).unwrap();
                buf.drain(..n);
                resp
            });
            let resp = resp.unwrap_or_else(|| panic!("split {split} incomplete"));
            assert_eq!(resp.body, b"hello world", "split {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn response_without_length_reads_until_close() {
        let mut r = ResponseReader::new();
        let (n, resp) = r.advance(b"HTTP/1.0 200 OK\r\n\r\nabc", false).unwrap();
        assert_eq!((n, resp), (22, None));
        let resp = r.at_eof().unwrap();
        assert!(!resp.keep_alive);
    }

    #[test]
    fn head_and_204_have_no_body_and_100_is_skipped() {
        let mut r = ResponseReader::new();
        let (_, resp) = r
            .advance(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .unwrap();
        assert_eq!(resp.unwrap().status, 200);
        let (_, resp) = r
            .advance(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No\r\nConnection: close\r\n\r\n",
                false,
            )
            .unwrap();
        let resp = resp.unwrap();
        assert_eq!(resp.status, 204);
        assert!(!resp.keep_alive);
    }

    #[test]
    fn malformed_responses_are_errors() {
        let mut r = ResponseReader::new();
        assert!(r.advance(b"HTTX/1.1 200 OK\r\n\r\n", false).is_err());
        let mut r = ResponseReader::new();
        let bad = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(r.advance(bad, false), Err(H1Error::BadContentLength));
    }

    #[test]
    fn requests_with_length_chunked_and_close() {
        let mut r = RequestReader::default();
        let msg = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /health HTTP/1.0\r\n\r\n";
        let (n, req) = r.advance(msg).unwrap();
        let req = req.unwrap();
        assert_eq!(
            (req.method, req.path.as_str(), req.body.as_slice()),
            (Method::Post, "/", &b"abc"[..])
        );
        assert!(req.keep_alive);
        let (_, req) = r.advance(&msg[n..]).unwrap();
        let req = req.unwrap();
        assert_eq!(req.path, "/health");
        assert!(!req.keep_alive, "HTTP/1.0 closes by default");

        let mut r = RequestReader::default();
        let msg = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (n, req) = r.advance(msg).unwrap();
        assert_eq!(n, msg.len());
        let req = req.unwrap();
        assert_eq!(req.body, b"abc");
        assert!(!req.keep_alive);
    }

    #[test]
    fn oversized_request_bodies_are_refused() {
        let mut r = RequestReader::default();
        let msg = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(r.advance(msg.as_bytes()), Err(H1Error::BodyTooLarge));
    }

    #[test]
    fn whole_reader_keeps_fields_and_returns_interim_and_switching_responses() {
        let mut r = ResponseReader::whole();
        let msg = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok";
        let (n, interim) = r.advance(msg, false).unwrap();
        assert_eq!(interim.unwrap().status, 100);
        let (_, resp) = r.advance(&msg[n..], false).unwrap();
        let resp = resp.unwrap();
        assert_eq!(
            (resp.status, resp.header("x-a"), resp.text().as_str()),
            (200, Some("1"), "ok")
        );

        let msg = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nwelcome";
        let (n, resp) = r.advance(msg, false).unwrap();
        let resp = resp.unwrap();
        assert_eq!((resp.status, resp.keep_alive), (101, false));
        assert_eq!(&msg[n..], b"welcome", "a tunnel's bytes are not a body");
    }

    #[test]
    fn whole_request_reader_keeps_the_method_fields_and_chunked_framing() {
        let msg = b"DELETE /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\nX-B: 2\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        let (n, req) = RequestReader::whole().advance(msg).unwrap();
        let req = req.unwrap();
        assert_eq!(n, msg.len());
        assert_eq!(
            (req.method, req.method_name.as_str()),
            (Method::Other, "DELETE")
        );
        assert_eq!((req.version, req.header("x-b")), (0, Some("2")));
        assert_eq!(req.body, b"abc");
        assert_eq!(req.raw_body, b"3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n");

        let big = format!(
            "PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        let (_, req) = RequestReader::whole().advance(big.as_bytes()).unwrap();
        assert!(req.is_none(), "no size limit: waits for the body");
    }

    #[test]
    fn written_messages_parse_back() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            429,
            "text/plain",
            &[("Retry-After", "1".into())],
            b"slow down",
            true,
        );
        let mut r = ResponseReader::capturing();
        let (_, resp) = r.advance(&out, false).unwrap();
        let resp = resp.unwrap();
        assert_eq!((resp.status, resp.keep_alive), (429, false));
        assert_eq!(resp.body, b"slow down");

        out.clear();
        write_request(
            &mut out,
            "POST",
            "h:1",
            "/",
            &[("X-A".into(), "b".into())],
            Some(b"id"),
            false,
        );
        let (_, req) = RequestReader::default().advance(&out).unwrap();
        assert_eq!(req.unwrap().body, b"id");
    }
}
