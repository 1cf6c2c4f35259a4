//! HTTP errors are answered, never dropped: each status sluice produces, with a one-line body and
//! `Connection: close` when the connection cannot go on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Read, Write};
use std::net::Shutdown;

use common::*;
use sluice::config::{Mode, ProxyConfig};
use sluice::strategy::StrategyKind;

fn lb_with(cfg: ProxyConfig, backends: &[std::net::SocketAddr]) -> Sluice {
    Sluice::start(cfg, backends, StrategyKind::RoundRobin)
}

#[track_caller]
fn assert_error(resp: &Resp, status: u16, close: bool) {
    assert_eq!(resp.status, status, "{resp:?}");
    assert!(
        resp.text().ends_with('\n') && resp.text().lines().count() == 1,
        "one-line body: {resp:?}"
    );
    assert_eq!(
        resp.header("connection") == Some("close"),
        close,
        "{resp:?}"
    );
}

#[test]
fn malformed_request_gets_400_and_close() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\nHost: t\n\n",
    ] {
        let resp = roundtrip(lb.addr, raw);
        assert_error(&resp, 400, true);
    }
    assert!(
        backend.requests().is_empty(),
        "nothing malformed was forwarded"
    );
}

#[test]
fn bad_chunked_body_gets_400() {
    let backend = RawBackend::start(|s| {
        // Accepts and reads whatever comes, never answers.
        let mut s = s;
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let lb = Sluice::http(&[backend.addr]);
    let resp = roundtrip(
        lb.addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_error(&resp, 400, true);
}

/// Sends `raw` on a new connection; returns the response and whether the connection then ended.
#[track_caller]
fn answer_and_close(lb: &Sluice, raw: &[u8]) -> (Resp, bool) {
    let mut s = lb.connect();
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).expect("response");
    let mut rest = Vec::new();
    let closed = r.read_to_end(&mut rest).is_ok() && rest.is_empty();
    (resp, closed)
}

#[test]
fn identity_and_unknown_transfer_codings_get_501_and_close() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    for codings in ["identity, chunked", "identity", "br, chunked"] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: {codings}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let (resp, closed) = answer_and_close(&lb, raw.as_bytes());
        assert_error(&resp, 501, true);
        assert!(closed, "{codings}: the connection is closed");
    }
    let (resp, _) = answer_and_close(
        &lb,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(resp.text(), "identity is not a transfer coding\n");
    assert!(backend.requests().is_empty(), "nothing was forwarded");
}

#[test]
fn a_request_whose_final_coding_is_not_chunked_gets_400_and_close() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    for codings in ["gzip", "chunked, gzip", "chunked, chunked"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: {codings}\r\n\r\n");
        let (resp, closed) = answer_and_close(&lb, raw.as_bytes());
        assert_error(&resp, 400, true);
        assert!(closed, "{codings}: the connection is closed");
    }
    assert!(backend.requests().is_empty(), "nothing was forwarded");
}

#[test]
fn chunk_size_with_trailing_whitespace_gets_400_and_close() {
    let backend = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let lb = Sluice::http(&[backend.addr]);
    for size_line in ["5 \r\n", "5\t\r\n", "5;a=1 \r\n"] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{size_line}hello\r\n0\r\n\r\n"
        );
        let (resp, closed) = answer_and_close(&lb, raw.as_bytes());
        assert_error(&resp, 400, true);
        assert_eq!(resp.text(), "bad chunked request body\n");
        assert!(closed, "{size_line:?}: the connection is closed");
    }
}

#[test]
fn whitespace_before_a_chunk_extension_is_accepted() {
    let backend = HttpBackend::start(|r| Reply::ok(&r.body));
    let lb = Sluice::http(&[backend.addr]);
    let resp = roundtrip(
        lb.addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 ;ext\r\nhello\r\n1;a=1\r\n!\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"hello!");
}

#[test]
fn a_response_chunk_size_with_trailing_whitespace_aborts_the_response() {
    let backend = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        );
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let lb = Sluice::http(&[backend.addr]);
    let mut s = lb.connect();
    s.write_all(&get("/")).unwrap();
    let got = read_to_eof(&mut s);
    let text = String::from_utf8_lossy(&got);
    // The head may have gone out before the bad size line arrived; the body never does.
    assert!(!text.contains("hello"), "{text:?}");
}

#[test]
fn a_response_with_identity_coding_gets_502() {
    let backend = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let lb = Sluice::http(&[backend.addr]);
    let resp = roundtrip(lb.addr, &get("/"));
    assert_error(&resp, 502, false);
}

#[test]
fn oversized_head_gets_431() {
    let lb = lb_with(
        ProxyConfig {
            max_header_bytes: 1024,
            ..test_config(Mode::Http)
        },
        &[refused_addr()],
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4000)
    );
    assert_error(&roundtrip(lb.addr, big.as_bytes()), 431, true);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let lb = Sluice::http(&[refused_addr()]);
    assert_error(&roundtrip(lb.addr, many.as_bytes()), 431, true);
}

#[test]
fn backend_garbage_gets_502() {
    let backend = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.0\r\n\r\n");
    });
    let lb = Sluice::http(&[backend.addr]);
    assert_error(&roundtrip(lb.addr, &get("/")), 502, false);
}

#[test]
fn backend_closing_without_an_answer_gets_502() {
    let backend = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.shutdown(Shutdown::Both);
    });
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(&get("/")).unwrap();
    assert_error(&read_response(&mut r, false).unwrap(), 502, false);
    // The client connection is still good for the next request.
    w.write_all(&get("/")).unwrap();
    assert_error(&read_response(&mut r, false).unwrap(), 502, false);
}

#[test]
fn no_backend_configured_gets_503() {
    let lb = Sluice::http(&[]);
    assert_error(&roundtrip(lb.addr, &get("/")), 503, false);
}

#[test]
fn all_backends_down_gets_503() {
    let lb = Sluice::http(&[refused_addr(), refused_addr(), refused_addr()]);
    assert_error(&roundtrip(lb.addr, &get("/")), 503, false);
}

#[test]
fn refused_backend_is_retried_on_another() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[refused_addr(), backend.addr, refused_addr()]);
    for i in 0..9 {
        let resp = roundtrip(
            lb.addr,
            format!("POST /r{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi").as_bytes(),
        );
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.text(), format!("POST /r{i}"));
    }
    assert!(backend.requests().iter().all(|r| r.body == b"hi"));
}

#[test]
fn silent_backend_gets_504() {
    let backend = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let lb = lb_with(
        ProxyConfig {
            response_timeout_ms: 300,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    assert_error(&roundtrip(lb.addr, &get("/")), 504, false);
}

#[test]
fn slow_request_head_gets_408() {
    let lb = lb_with(
        ProxyConfig {
            head_timeout_ms: 200,
            ..test_config(Mode::Http)
        },
        &[refused_addr()],
    );
    let mut s = lb.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    assert_error(&resp, 408, true);
}

#[test]
fn backend_reset_mid_body_closes_the_client() {
    let backend = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial");
        let _ = s.shutdown(Shutdown::Both);
    });
    let lb = Sluice::http(&[backend.addr]);
    let mut s = lb.connect();
    s.write_all(&get("/")).unwrap();
    let mut got = Vec::new();
    // The client sees the start of the response, then the connection ends short of 100000 bytes.
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(got.len() < 1000);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let backend = HttpBackend::echo_target();
    let lb = lb_with(
        ProxyConfig {
            // The idle clock starts at accept: long enough for the first request to arrive.
            idle_timeout_ms: 1_000,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(&get("/")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    assert_eq!(
        read_to_eof(&mut r),
        b"",
        "closed quietly, no error response"
    );
}
