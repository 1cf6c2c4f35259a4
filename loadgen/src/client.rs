//! A small blocking HTTP/1.1 client for control-plane calls: the simulator's control API from
//! the challenge client, scripts and tests.
//!
//! Blocking on purpose: these are single request/response exchanges outside any event loop,
//! with a timeout, where a mio loop would add code and no benefit. The data plane (generator,
//! holder, simulator) never uses it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::h1::{self, Response, ResponseReader};

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
    let mut reader = ResponseReader::capturing();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return reader.at_eof().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-response",
                )
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        let (used, response) = reader
            .advance(&buf, method == "HEAD")
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        buf.drain(..used);
        if let Some(response) = response {
            return Ok(response);
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
