//! A small blocking HTTP/1.1 client for control-plane calls: the simulator's control API from
//! the challenge client, scripts and tests. Its readers also serve sluice's integration tests,
//! which read whole requests and responses off blocking sockets with them.
//!
//! Blocking on purpose: these are single request/response exchanges outside any event loop,
//! with a timeout, where a mio loop would add code and no benefit. The data plane (generator,
//! holder, simulator) never uses it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::h1::{self, H1Error, Request, RequestReader, Response, ResponseReader};

/// Connect, read and write timeout of every call.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let timeout = Duration::from_millis(DEFAULT_TIMEOUT_MS);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut out = Vec::new();
    let headers = match body {
        Some(_) => vec![("Content-Type".to_string(), "application/json".to_string())],
        None => Vec::new(),
    };
    h1::write_request(
        &mut out,
        method,
        &addr.to_string(),
        path,
        &headers,
        body,
        true,
    );
    stream.write_all(&out)?;
    read_response(
        &mut BufReader::new(stream),
        &mut ResponseReader::capturing(),
        method == "HEAD",
    )
}

/// Reads one response from `r` with `reader`, taking from `r` only the bytes of that response:
/// whatever follows (the next response, or a tunnel's first bytes after a 101) stays in `r`.
pub fn read_response(
    r: &mut impl BufRead,
    reader: &mut ResponseReader,
    head_request: bool,
) -> io::Result<Response> {
    match feed(r, |buf| reader.advance(buf, head_request))? {
        Some(response) => Ok(response),
        None => reader.at_eof().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            )
        }),
    }
}

/// Reads one request from `r` with `reader`, taking from `r` only the bytes of that request.
/// `Ok(None)` when the connection closed before its first byte.
pub fn read_request(
    r: &mut impl BufRead,
    reader: &mut RequestReader,
) -> io::Result<Option<Request>> {
    let mut started = false;
    let request = feed(r, |buf| {
        started = true;
        reader.advance(buf)
    })?;
    if request.is_none() && started {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-request",
        ));
    }
    Ok(request)
}

/// Feeds `advance` (an incremental reader) from `r` until it returns a message, or `None` at end
/// of stream. Bytes the reader has not used yet (a head split over reads) are held here, and only
/// what the message used is consumed from `r`.
fn feed<T>(
    r: &mut impl BufRead,
    mut advance: impl FnMut(&[u8]) -> Result<(usize, Option<T>), H1Error>,
) -> io::Result<Option<T>> {
    let invalid = |e: H1Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut held: Vec<u8> = Vec::new();
    loop {
        let fresh = r.fill_buf()?;
        if fresh.is_empty() {
            return Ok(None);
        }
        let fresh_len = fresh.len();
        let (used, message) = if held.is_empty() {
            let (used, message) = advance(fresh).map_err(invalid)?;
            if message.is_none() {
                held.extend_from_slice(&fresh[used..]);
            }
            (used, message)
        } else {
            held.extend_from_slice(fresh);
            let (used, message) = advance(&held).map_err(invalid)?;
            // Of what was used, the part held from earlier reads is already out of `r`.
            let from_fresh = used.saturating_sub(held.len() - fresh_len);
            if message.is_none() {
                held.drain(..used);
            }
            (from_fresh, message)
        };
        match message {
            Some(message) => {
                r.consume(used);
                return Ok(Some(message));
            }
            None => r.consume(fresh_len),
        }
    }
}

/// `GET path`, expecting 2xx and a JSON body.
pub fn get_json<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> io::Result<T> {
    decode(request(addr, "GET", path, None)?, path)
}

/// `POST path` with a JSON body, expecting 2xx and a JSON body.
pub fn post_json<B: Serialize, T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    body: &B,
) -> io::Result<T> {
    let body = serde_json::to_vec(body).map_err(io::Error::other)?;
    decode(request(addr, "POST", path, Some(&body))?, path)
}

fn decode<T: DeserializeOwned>(response: Response, path: &str) -> io::Result<T> {
    if !(200..300).contains(&response.status) {
        return Err(io::Error::other(format!(
            "{path}: HTTP {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body).trim()
        )));
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_takes_only_the_message_even_when_its_head_is_split_over_reads() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\nrest";
        // A 5-byte buffer splits the head over many reads.
        let mut r = BufReader::with_capacity(5, &wire[..]);
        let resp = read_response(&mut r, &mut ResponseReader::whole(), false).unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
        let req = read_request(&mut r, &mut RequestReader::whole())
            .unwrap()
            .unwrap();
        assert_eq!(req.path, "/");
        let mut rest = Vec::new();
        io::Read::read_to_end(&mut r, &mut rest).unwrap();
        assert_eq!(rest, b"rest");
    }

    #[test]
    fn end_of_stream_is_none_before_a_request_and_an_error_inside_one() {
        let mut r = BufReader::new(&b""[..]);
        assert!(read_request(&mut r, &mut RequestReader::whole())
            .unwrap()
            .is_none());
        let mut r = BufReader::new(&b"GET / HT"[..]);
        let err = read_request(&mut r, &mut RequestReader::whole()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut r = BufReader::new(&b"HTTP/1.0 200 OK\r\n\r\nuntil close"[..]);
        let resp = read_response(&mut r, &mut ResponseReader::capturing(), false).unwrap();
        assert_eq!(resp.body, b"until close");
    }
}
