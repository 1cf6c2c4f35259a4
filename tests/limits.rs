//! Limits: request line (414), header fields and head size (431), body size (413), client
//! connections (--max-conns), and connections per backend with a bounded wait queue.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use sluice::config::{Mode, ProxyConfig};
use sluice::strategy::StrategyKind;

fn lb_with(cfg: ProxyConfig, backends: &[SocketAddr]) -> Sluice {
    Sluice::start(cfg, backends, StrategyKind::RoundRobin)
}

#[test]
fn a_long_request_line_gets_414() {
    let backend = HttpBackend::echo_target();
    let lb = lb_with(
        ProxyConfig {
            max_request_line: 1024,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    let resp = roundtrip(lb.addr, long.as_bytes());
    assert_eq!(resp.status, 414);
    assert_eq!(resp.header("connection"), Some("close"));
    // Still too long while the line has not even ended.
    let mut s = lb.connect();
    s.write_all(format!("GET /{}", "b".repeat(4000)).as_bytes())
        .unwrap();
    assert_eq!(
        read_response(&mut BufReader::new(s), false).unwrap().status,
        414
    );
    assert!(backend.requests().is_empty());
}

/// A GET with `fields` header fields in all, Host included.
fn head_with_fields(fields: usize) -> String {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 1..fields {
        head.push_str(&format!("X-F{i}: {i}\r\n"));
    }
    head + "\r\n"
}

#[test]
fn two_hundred_header_fields_pass_with_max_headers_256() {
    let backend = HttpBackend::start(|r| Reply::ok(r.headers.len().to_string().as_bytes()));
    let lb = lb_with(
        ProxyConfig {
            max_headers: 256,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    let resp = roundtrip(lb.addr, head_with_fields(200).as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "202", "200 fields, X-Forwarded-For and -Proto");
    assert_eq!(
        roundtrip(lb.addr, head_with_fields(257).as_bytes()).status,
        431
    );
    // The default stays at 100 fields.
    let lb = Sluice::http(&[backend.addr]);
    assert_eq!(
        roundtrip(lb.addr, head_with_fields(103).as_bytes()).status,
        431
    );
}

/// A GET whose Cookie field carries a `bytes`-long value.
fn cookie_request(bytes: usize) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: t\r\nCookie: s={}\r\n\r\n",
        "c".repeat(bytes - 2)
    )
}

fn cookie_length_backend() -> HttpBackend {
    HttpBackend::start(|r| {
        let cookie = r.header("cookie").map_or(0, str::len);
        Reply::ok(format!("cookie {cookie} body {}", r.body.len()).as_bytes())
    })
}

#[test]
fn a_20_kb_cookie_needs_only_max_header_bytes_raised() {
    let backend = cookie_length_backend();
    let lb = lb_with(
        ProxyConfig {
            max_header_bytes: 32 * 1024,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    let resp = roundtrip(lb.addr, cookie_request(20_000).as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "cookie 20000 body 0");
    let lb = Sluice::http(&[backend.addr]);
    assert_eq!(
        roundtrip(lb.addr, cookie_request(20_000).as_bytes()).status,
        431,
        "the default --max-header-bytes is 16 KiB"
    );
}

#[test]
fn a_head_larger_than_a_buffer_is_read_into_a_grown_one() {
    let body = pattern(100_000, 7);
    let expected = body.clone();
    let backend = HttpBackend::start(move |r| {
        let cookie = r.header("cookie").map_or(0, str::len);
        let intact = r.body.is_empty() || r.body == expected;
        Reply::ok(format!("cookie {cookie} body {} {intact}", r.body.len()).as_bytes())
    });
    let lb = lb_with(
        ProxyConfig {
            buffer_size: 8 * 1024,
            retry_buffer: 4 * 1024,
            max_header_bytes: 64 * 1024,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    // In pieces, so sluice finds the head incomplete several times before it grows the buffer.
    for piece in cookie_request(40_000).as_bytes().chunks(3_000) {
        w.write_all(piece).unwrap();
    }
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.text(), "cookie 40000 body 0 true");
    // A large head with a body larger than any buffer, on the same connection.
    let post = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nCookie: s={}\r\nContent-Length: {}\r\n\r\n",
        "d".repeat(29_998),
        body.len()
    );
    w.write_all(post.as_bytes()).unwrap();
    w.write_all(&body).unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.text(), "cookie 30000 body 100000 true");
    w.write_all(&get("/small")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    assert_eq!(
        roundtrip(lb.addr, cookie_request(70_000).as_bytes()).status,
        431
    );
}

#[test]
fn bodies_over_the_limit_get_413() {
    let backend = HttpBackend::start(|r| Reply::ok(format!("{}", r.body.len()).as_bytes()));
    let lb = lb_with(
        ProxyConfig {
            max_body_bytes: 100,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    let ok = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{}",
        "x".repeat(100)
    );
    assert_eq!(roundtrip(lb.addr, ok.as_bytes()).text(), "100");
    let big = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n{}",
        "x".repeat(101)
    );
    assert_eq!(roundtrip(lb.addr, big.as_bytes()).status, 413);
    // A chunked body is counted as it streams.
    let backend2 = RawBackend::start(|mut s| {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let lb2 = lb_with(
        ProxyConfig {
            max_body_bytes: 100,
            ..test_config(Mode::Http)
        },
        &[backend2.addr],
    );
    let chunked = format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{}\r\n1\r\nx\r\n0\r\n\r\n", "y".repeat(100));
    assert_eq!(roundtrip(lb2.addr, chunked.as_bytes()).status, 413);
}

#[test]
fn beyond_max_conns_sluice_stops_accepting_until_a_connection_closes() {
    let backend = HttpBackend::echo_target();
    let lb = lb_with(
        ProxyConfig {
            workers: 1,
            max_conns: 2,
            ..test_config(Mode::Http)
        },
        &[backend.addr],
    );
    let a = lb.connect();
    let b = lb.connect();
    for s in [&a, &b] {
        let mut w = s.try_clone().unwrap();
        w.write_all(&get("/held")).unwrap();
        read_response(&mut BufReader::new(s.try_clone().unwrap()), false).unwrap();
    }
    // The third connection waits in the kernel's backlog: its request is not answered...
    let mut c = lb.connect();
    c.write_all(&get("/third")).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = c.read(&mut byte).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    // ...until one of the first two goes away.
    drop(a);
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let resp = read_response(&mut BufReader::new(c), false).unwrap();
    assert_eq!(resp.text(), "GET /third");
}

/// A backend that holds each request until the test lets it go.
fn held_backend() -> (HttpBackend, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let arrived_tx = Arc::new(Mutex::new(arrived_tx));
    let release_rx = Arc::new(Mutex::new(release_rx));
    let backend = HttpBackend::start(move |r| {
        arrived_tx.lock().unwrap().send(()).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
        Reply::ok(r.target.as_bytes())
    });
    (backend, arrived, release)
}

#[test]
fn requests_beyond_a_backends_connection_limit_queue_and_the_queue_is_bounded() {
    let (backend, arrived, release) = held_backend();
    let cfg = ProxyConfig {
        workers: 1,
        backend_max_conns: 1,
        backend_queue: 2,
        ..test_config(Mode::Http)
    };
    let lb = lb_with(cfg, &[backend.addr]);
    let addr = lb.addr;
    let clients: Vec<_> = (0..3)
        .map(|i| thread::spawn(move || roundtrip(addr, &get(&format!("/q{i}")))))
        .collect();
    arrived.recv().unwrap(); // one request holds the only connection; two wait in the queue
    assert!(wait_until(IO_TIMEOUT, || {
        let (_, s) = lb.api("GET", "/api/status", None);
        s["backends"][0]["queued"].as_u64() == Some(2)
    }));
    // A fourth finds the queue full.
    let full = roundtrip(addr, &get("/q3"));
    assert_eq!(full.status, 503, "{full:?}");
    assert!(full.text().contains("queue is full"));
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    let mut bodies: Vec<String> = clients
        .into_iter()
        .map(|t| t.join().unwrap().text())
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec!["/q0", "/q1", "/q2"]);
    let (_, s) = lb.api("GET", "/api/status", None);
    assert_eq!(
        s["backends"][0]["queued"], 0,
        "the queue count follows the queue"
    );
    assert_eq!(
        backend.accepts(),
        1,
        "the queued requests reused the one connection"
    );
}

#[test]
fn a_request_queued_too_long_gets_503() {
    let (backend, arrived, release) = held_backend();
    let cfg = ProxyConfig {
        workers: 1,
        backend_max_conns: 1,
        queue_timeout_ms: 200,
        ..test_config(Mode::Http)
    };
    let lb = lb_with(cfg, &[backend.addr]);
    let addr = lb.addr;
    let first = thread::spawn(move || roundtrip(addr, &get("/first")));
    arrived.recv().unwrap();
    let second = roundtrip(addr, &get("/second"));
    assert_eq!(second.status, 503);
    assert!(second.text().contains("queue timeout"), "{second:?}");
    let (_, s) = lb.api("GET", "/api/status", None);
    assert_eq!(s["backends"][0]["queued"], 0, "it left the queue");
    release.send(()).unwrap();
    assert_eq!(first.join().unwrap().text(), "/first");
}
