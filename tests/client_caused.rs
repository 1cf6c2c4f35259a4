//! What a client can bring about is not charged to the backend: a response head over sluice's
//! limits (a large request header that the backend echoes is enough), a request body that stops
//! coming, an answer the client stops reading. Each is answered or closed, counted in a metric of
//! its own, and never feeds passive ejection: a healthy backend stays in service.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use sluice::config::{Mode, ProxyConfig, Settings};
use sluice::strategy::StrategyKind;

/// `cfg` in front of `backend`, passive ejection after `eject_after` failures in a row.
fn lb(cfg: ProxyConfig, backend: SocketAddr, eject_after: u32) -> Sluice {
    let mut s: Settings = settings_for(cfg, &[backend], StrategyKind::RoundRobin);
    s.proxy.eject_after = eject_after;
    s.control.eject_after = eject_after;
    Sluice::with_settings(s)
}

/// A backend that puts the request's `X-Echo` field into its response head, as many echo cookies
/// or tracing fields.
fn echoing_backend() -> HttpBackend {
    HttpBackend::start(|r| {
        let echo = r.header("x-echo").unwrap_or("");
        let head = format!("HTTP/1.1 200 OK\r\nX-Echo: {echo}\r\nContent-Length: 2\r\n\r\nok");
        Reply::raw(head, false)
    })
}

fn echo_request(n: usize) -> Vec<u8> {
    format!(
        "GET /echo HTTP/1.1\r\nHost: t\r\nX-Echo: {}\r\n\r\n",
        "e".repeat(n)
    )
    .into_bytes()
}

/// Waits until `/metrics` shows `want` for `name` of `backend`.
#[track_caller]
fn wait_for_count(lb: &Sluice, name: &str, backend: SocketAddr, want: f64) {
    let series = format!("{name}{{backend=\"{backend}\"}}");
    let mut last = None;
    let reached = wait_until(IO_TIMEOUT, || {
        last = value(&scrape(lb), &series);
        last == Some(want)
    });
    assert!(reached, "{series} is {last:?}, not {want}");
}

#[track_caller]
fn assert_in_service(lb: &Sluice, backend: SocketAddr) {
    let view = backend_view(lb, backend).unwrap();
    assert_eq!(view["ejected"], false, "{view}");
    let metrics = scrape(lb);
    for failures in [
        "sluice_backend_broken_total",
        "sluice_backend_timeouts_total",
    ] {
        let series = format!("{failures}{{backend=\"{backend}\"}}");
        assert_eq!(value(&metrics, &series), Some(0.0), "{series}");
    }
}

#[test]
fn six_response_heads_over_the_limit_get_502_and_the_backend_stays_in_service() {
    let backend = echoing_backend();
    let cfg = ProxyConfig {
        max_header_bytes: 64 * 1024,
        max_response_header_bytes: 8 * 1024,
        ..test_config(Mode::Http)
    };
    let lb = lb(cfg, backend.addr, 5);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..6 {
        w.write_all(&echo_request(10_000)).unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 502);
        assert_eq!(
            resp.text(),
            "response head larger than --max-response-header-bytes\n"
        );
        assert_eq!(
            resp.header("connection"),
            None,
            "the client connection stays"
        );
    }
    wait_for_count(
        &lb,
        "sluice_response_head_too_large_total",
        backend.addr,
        6.0,
    );
    assert_in_service(&lb, backend.addr);
    w.write_all(&echo_request(10)).unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!((resp.status, resp.text()), (200, "ok".to_string()));
    assert_eq!(
        backend.requests().len(),
        7,
        "every request reached the backend"
    );
}

#[test]
fn a_response_head_larger_than_a_buffer_is_read_into_a_grown_one() {
    // `GET /head/N` is answered with a head of about N bytes.
    let backend = HttpBackend::start(|r| {
        let n: usize = r.target.trim_start_matches("/head/").parse().unwrap_or(0);
        let field = "h".repeat(n);
        Reply::raw(
            format!("HTTP/1.1 200 OK\r\nX-Big: {field}\r\nContent-Length: 2\r\n\r\nok"),
            false,
        )
    });
    let cfg = ProxyConfig {
        buffer_size: 8 * 1024,
        retry_buffer: 4 * 1024,
        ..test_config(Mode::Http)
    };
    let lb = lb(cfg, backend.addr, 5);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for n in [30_000, 10, 60_000] {
        w.write_all(&get(&format!("/head/{n}"))).unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 200, "a head of {n} bytes");
        assert_eq!(resp.header("x-big").map(str::len), Some(n));
        assert_eq!(resp.text(), "ok");
    }
    w.write_all(&get("/head/70000")).unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 502, "the default limit is 64 KiB");
}

#[test]
fn a_response_head_with_more_fields_than_sluice_parses_gets_502_and_is_counted_apart() {
    let backend = HttpBackend::start(|_| {
        let fields: String = (0..300).map(|i| format!("X-F{i}: v\r\n")).collect();
        Reply::raw(
            format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 0\r\n\r\n"),
            false,
        )
    });
    let lb = lb(test_config(Mode::Http), backend.addr, 1);
    let resp = roundtrip(lb.addr, &get("/"));
    assert_eq!(resp.status, 502);
    assert_eq!(resp.text(), "response head with more than 256 fields\n");
    wait_for_count(
        &lb,
        "sluice_response_head_too_large_total",
        backend.addr,
        1.0,
    );
    assert_in_service(&lb, backend.addr);
}

/// Defaults with a short `--response-timeout`: the stall under test.
fn short_response_timeout() -> ProxyConfig {
    ProxyConfig {
        response_timeout_ms: 300,
        ..test_config(Mode::Http)
    }
}

#[test]
fn clients_that_stop_sending_their_body_get_408_and_the_backend_stays_in_service() {
    let backend = HttpBackend::start(|r| Reply::ok(format!("{}", r.body.len()).as_bytes()));
    let lb = lb(short_response_timeout(), backend.addr, 2);
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = lb.connect();
            s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten..")
                .unwrap();
            s
        })
        .collect();
    for s in stalled {
        let resp = read_response(&mut BufReader::new(s), false).unwrap();
        assert_eq!(resp.status, 408);
        assert_eq!(resp.header("connection"), Some("close"));
    }
    wait_for_count(&lb, "sluice_client_stalls_total", backend.addr, 3.0);
    assert_in_service(&lb, backend.addr);
    assert_eq!(roundtrip(lb.addr, &get("/")).status, 200);
}

#[test]
fn clients_that_stop_reading_are_closed_and_the_backend_stays_in_service() {
    // Answers every request with an endless body, written until the connection breaks.
    let backend = RawBackend::start(|s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let Ok(Some(req)) = read_request(&mut r) else {
            return;
        };
        if req.target == "/small" {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let _ = read_request(&mut r);
            return;
        }
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n");
        let chunk = [b'x'; 64 * 1024];
        while w.write_all(&chunk).is_ok() {}
    });
    let lb = lb(short_response_timeout(), backend.addr, 2);
    let readers: Vec<TcpStream> = (0..2)
        .map(|_| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            // A small window, so that sluice's buffers fill soon.
            sock.set_recv_buffer_size(4096).unwrap();
            sock.connect(&lb.addr.into()).unwrap();
            let mut s: TcpStream = sock.into();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.write_all(&get("/endless")).unwrap();
            s
        })
        .collect();
    wait_for_count(&lb, "sluice_client_stalls_total", backend.addr, 2.0);
    for mut s in readers {
        // What was in flight arrives, then the end.
        let mut buf = vec![0u8; 1 << 20];
        let ended = loop {
            match s.read(&mut buf) {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e.kind()),
            }
        };
        assert!(
            matches!(ended, None | Some(ErrorKind::ConnectionReset)),
            "{ended:?}"
        );
    }
    assert_in_service(&lb, backend.addr);
    let resp = roundtrip(lb.addr, &get("/small"));
    assert_eq!((resp.status, resp.text()), (200, "ok".to_string()));
}

#[test]
fn a_backend_that_refuses_a_large_body_early_is_heard_and_stays_in_service() {
    // Reads the head, answers 413 and closes without reading the body (the kernel then resets
    // the connection, since the body is left unread).
    let backend = RawBackend::start(|mut s| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read_exact(&mut byte).is_err() {
                return;
            }
            head.push(byte[0]);
        }
        if head.starts_with(b"GET") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            return;
        }
        let _ = s.write_all(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large",
        );
    });
    let lb = lb(test_config(Mode::Http), backend.addr, 2);
    for _ in 0..3 {
        let s = lb.connect();
        let mut w = s.try_clone().unwrap();
        let body = 16 << 20;
        let sender = std::thread::spawn(move || {
            let head =
                format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {body}\r\n\r\n");
            let _ = w.write_all(head.as_bytes());
            let chunk = vec![b'b'; 64 * 1024];
            for _ in 0..body / chunk.len() {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let resp = read_response(&mut BufReader::new(s), false).unwrap();
        assert_eq!((resp.status, resp.text()), (413, "too large".to_string()));
        sender.join().unwrap();
    }
    let answered = format!(
        "sluice_backend_responses_total{{backend=\"{}\",class=\"4xx\"}}",
        backend.addr
    );
    assert!(wait_until(IO_TIMEOUT, || {
        value(&scrape(&lb), &answered) == Some(3.0)
    }));
    assert_in_service(&lb, backend.addr);
    assert_eq!(roundtrip(lb.addr, &get("/")).status, 200);
}
