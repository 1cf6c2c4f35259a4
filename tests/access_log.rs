//! The access log: a line per HTTP request (per connection in TCP mode) with the fields an
//! operator needs; a file renamed and reopened under load loses no line that was not counted as
//! dropped; a sink that cannot keep up costs dropped lines, never stalled requests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use common::*;
use sluice::access_log::{AccessLogConfig, LogFormat, LogTarget};
use sluice::config::Mode;
use sluice::strategy::StrategyKind;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn with_log(mode: Mode, path: &Path, format: LogFormat) -> sluice::config::ProxyConfig {
    let mut cfg = test_config(mode);
    cfg.access_log = Some(AccessLogConfig {
        target: LogTarget::File(path.to_path_buf()),
        format,
    });
    cfg
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn log_counts(lb: &Sluice) -> (u64, u64, u64) {
    let (status, v) = lb.api("GET", "/api/log", None);
    assert_eq!(status, 200, "{v}");
    let n = |k: &str| v[k].as_u64().unwrap();
    (n("written_lines"), n("dropped_lines"), n("reopens"))
}

#[test]
fn each_request_gets_a_json_line_with_its_fields() {
    let dir = temp_dir("fields");
    let path = dir.join("access.log");
    let backend = HttpBackend::start(|r| {
        if r.target.starts_with("/missing") {
            Reply::status(404, b"no such thing")
        } else {
            Reply::ok(b"hello")
        }
    });
    let mut cfg = with_log(Mode::Http, &path, LogFormat::Json);
    // Request ids are opt-in; the POST below carries one in Idempotency-Key.
    cfg.request_id = sluice::config::RequestIds::parse_all(&["header:Idempotency-Key".into()])
        .expect("a valid --request-id");
    let lb = Sluice::start(cfg, &[backend.addr], StrategyKind::RoundRobin);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(&get("/a/b?x=1&y=%22q%22")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    w.write_all(
        b"POST /submit HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k-1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    w.write_all(&get("/missing")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 404);
    // A malformed request: sluice answers 400 itself, no backend tried.
    w.write_all(b"GET /bad\x01 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 400);
    let client_port = w.local_addr().unwrap().port();
    drop((w, r));

    let mut got = Vec::new();
    assert!(wait_until(IO_TIMEOUT, || {
        got = json_lines(&path);
        got.len() == 4
    }));
    let first = &got[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/a/b?x=1&y=%22q%22");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["client_port"], client_port);
    assert_eq!(first["backend"], backend.addr.to_string());
    assert_eq!(first["attempts"], 1);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert!(n(first, "bytes_in") >= get("/a/b?x=1&y=%22q%22").len() as u64);
    assert!(n(first, "bytes_out") > "hello".len() as u64);
    assert!(n(first, "duration_us") >= n(first, "backend_us"));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(first.get("request_id").is_none() && first.get("tls_version").is_none());

    let post = &got[1];
    assert_eq!(
        (&post["method"], &post["status"]),
        (&"POST".into(), &200.into())
    );
    assert_eq!(post["request_id"].as_str().map(str::len), Some(16));
    assert!(n(post, "bytes_in") >= n(first, "bytes_in") + 5);
    assert_eq!(got[2]["status"], 404);
    let bad = &got[3];
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["attempts"], 0);
    assert!(bad.get("backend").is_none() && bad.get("backend_us").is_none());
    assert_eq!(log_counts(&lb), (4, 0, 0));
}

#[test]
fn combined_format_and_tcp_connections_get_their_lines() {
    let dir = temp_dir("combined");
    let path = dir.join("access.log");
    let backend = HttpBackend::start(|_| Reply::ok(b"hello"));
    let lb = Sluice::start(
        with_log(Mode::Http, &path, LogFormat::Combined),
        &[backend.addr],
        StrategyKind::RoundRobin,
    );
    assert_eq!(roundtrip(lb.addr, &get("/x?y=1")).status, 200);
    let mut got = Vec::new();
    assert!(wait_until(IO_TIMEOUT, || {
        got = lines(&path);
        got.len() == 1
    }));
    let line = &got[0];
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("] \"GET /x?y=1 HTTP/1.1\" 200 ") && line.ends_with(" \"-\" \"-\""),
        "{line}"
    );

    let tcp_path = dir.join("tcp.log");
    let echo = echo_backend(b"bye");
    let tcp = Sluice::start(
        with_log(Mode::Tcp, &tcp_path, LogFormat::Json),
        &[echo.addr],
        StrategyKind::RoundRobin,
    );
    let mut s = tcp.connect();
    s.write_all(b"ping").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"pingbye");
    drop(s);
    let mut got = Vec::new();
    assert!(wait_until(IO_TIMEOUT, || {
        got = json_lines(&tcp_path);
        got.len() == 1
    }));
    let conn = &got[0];
    assert_eq!(conn["bytes_in"], 4);
    assert_eq!(conn["bytes_out"], 7);
    assert_eq!(conn["backend"], echo.addr.to_string());
    assert!(conn.get("method").is_none() && conn.get("status").is_none());
}

/// Sends `n` keep-alive requests from each of `threads` connections; returns the statuses seen.
fn send_requests(addr: std::net::SocketAddr, threads: usize, n: usize) -> Vec<u16> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let s = connect(addr);
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                (0..n)
                    .map(|_| {
                        w.write_all(&get("/load")).unwrap();
                        read_response(&mut r, false).unwrap().status
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn a_file_rotated_under_load_loses_no_line_that_is_not_counted_as_dropped() {
    let dir = temp_dir("rotate");
    let path = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let backend = HttpBackend::start(|_| Reply::ok(b"ok"));
    let lb = Sluice::start(
        with_log(Mode::Http, &path, LogFormat::Json),
        &[backend.addr],
        StrategyKind::RoundRobin,
    );
    let addr = lb.addr;
    let load = std::thread::spawn(move || send_requests(addr, 4, 1_500));
    // Rotate once lines are flowing, while the load goes on.
    assert!(wait_until(IO_TIMEOUT, || lines(&path).len() > 200));
    std::fs::rename(&path, &rotated).unwrap();
    let (status, body) = lb.api("POST", "/api/log/reopen", None);
    assert_eq!(status, 202, "{body}");
    assert!(wait_until(IO_TIMEOUT, || log_counts(&lb).2 == 1));
    let statuses = load.join().unwrap();
    assert!(statuses.iter().all(|&s| s == 200));
    let requests = statuses.len() as u64;
    let mut counts = (0, 0, 0);
    assert!(wait_until(IO_TIMEOUT, || {
        counts = log_counts(&lb);
        counts.0 + counts.1 == requests
    }));
    let (old, new) = (lines(&rotated).len() as u64, lines(&path).len() as u64);
    assert!(old > 0 && new > 0, "both files got lines: {old} and {new}");
    assert_eq!(old + new + counts.1, requests, "{counts:?}");
    let scraped = scrape(&lb);
    assert_eq!(
        value(&scraped, "sluice_access_log_dropped_total"),
        Some(counts.1 as f64)
    );
}

#[test]
fn a_log_sink_that_reads_slowly_never_stalls_requests_and_drops_are_counted() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("access.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Open the reading end first (non-blocking, so the open does not wait for a writer), so that
    // sluice's open for writing finds a reader.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let backend = HttpBackend::start(|_| Reply::ok(b"ok"));
    let lb = Sluice::start(
        with_log(Mode::Http, &fifo, LogFormat::Json),
        &[backend.addr],
        StrategyKind::RoundRobin,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    // The slow sink: 512 bytes every 10 ms, about 50 KB/s.
    let slow = std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 512];
        let mut read = 0usize;
        while !stop_reader.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(n) = reader.read(&mut buf) {
                read += n;
            }
            std::thread::sleep(std::time::Duration::from_millis(10)); // the sink's pace
        }
        read
    });
    let statuses = send_requests(lb.addr, 4, 5_000);
    assert_eq!(statuses.len(), 20_000);
    assert!(statuses.iter().all(|&s| s == 200), "every request answered");
    let mut counts = (0, 0, 0);
    assert!(
        wait_until(IO_TIMEOUT, || {
            counts = log_counts(&lb);
            counts.1 > 0
        }),
        "lines the sink could not take are dropped and counted: {counts:?}"
    );
    assert!(counts.0 + counts.1 <= 20_000, "{counts:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(slow.join().unwrap() > 0, "the sink read some lines");
}
