//! Control-plane behaviour over real sockets: active health checks, passive ejection and its cap,
//! drain timeouts, state-file failures, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use common::*;
use sluice::config::ProbeKind;
use sluice::config::{Mode, Settings};
use sluice::strategy::StrategyKind;

fn settings(mode: Mode, backends: &[SocketAddr]) -> Settings {
    settings_for(test_config(mode), backends, StrategyKind::RoundRobin)
}

/// A backend whose `/health` answers as the test says, one probe at a time: each probe waits
/// for the next verdict (true: 200, false: 503), so the test knows exactly which probes failed.
/// Other requests are served with `name`.
struct Checked {
    backend: HttpBackend,
    verdicts: mpsc::Sender<bool>,
}

impl Checked {
    fn start(name: &'static str) -> Checked {
        let (verdicts, rx) = mpsc::channel::<bool>();
        let rx = Mutex::new(rx);
        let backend = HttpBackend::start(move |r| {
            if r.target == "/health" {
                return match rx.lock().unwrap().recv_timeout(IO_TIMEOUT) {
                    Ok(true) => Reply::ok(b"fine"),
                    _ => Reply::status(503, b"sick"),
                };
            }
            Reply::ok(name.as_bytes())
        });
        Checked { backend, verdicts }
    }

    /// Probes that reached the backend, answered or waiting for their verdict.
    fn probes(&self) -> usize {
        self.backend
            .requests()
            .iter()
            .filter(|r| r.target == "/health")
            .count()
    }

    /// Answers the waiting probe with `pass`, then waits for the next probe to arrive: sluice
    /// starts it only after it applied this one's result.
    fn answer(&self, pass: bool) {
        let next = self.probes() + 1;
        self.verdicts.send(pass).unwrap();
        assert!(wait_until(IO_TIMEOUT, || self.probes() >= next));
    }

    fn served(&self) -> usize {
        self.backend
            .requests()
            .iter()
            .filter(|r| r.target != "/health")
            .count()
    }
}

#[test]
fn failing_health_checks_take_a_backend_out_and_passing_ones_bring_it_back() {
    let a = Checked::start("a");
    let b = HttpBackend::start(|_| Reply::ok(b"b"));
    let served_b = || b.requests().len();
    let mut s = settings(Mode::Http, &[a.backend.addr, b.addr]);
    s.control.health.kind = ProbeKind::Http {
        path: "/health".into(),
    };
    s.control.health.interval_ms = 50;
    // A probe waits for the test's verdict; it must not time out meanwhile.
    s.control.health.timeout_ms = 60_000;
    s.control.health.rise = 2;
    s.control.health.fall = 3;
    let lb = Sluice::with_settings(s);
    let traffic = Traffic::start(lb.addr, 2);
    assert!(wait_until(IO_TIMEOUT, || a.served() > 10 && served_b() > 10));
    let healthy = || backend_view(&lb, a.backend.addr).unwrap()["healthy"] == true;

    // Fall is 3: two failed checks leave it in, the third takes it out.
    assert!(wait_until(IO_TIMEOUT, || a.probes() >= 1));
    a.answer(false);
    a.answer(false);
    assert!(healthy(), "down after 2 failed checks, fall is 3");
    a.answer(false);
    assert!(!healthy(), "still up after 3 failed checks");

    // Once every worker routes by the new table and a's last requests are answered, nothing more.
    assert!(wait_settled(&lb, a.backend.addr));
    let frozen = a.served();
    let mark = served_b();
    assert!(wait_until(IO_TIMEOUT, || served_b() > mark + 50));
    assert_eq!(a.served(), frozen, "a down backend got traffic");

    // Rise is 2: one passed check is not enough, the second brings it back.
    a.answer(true);
    assert!(!healthy(), "up after 1 passed check, rise is 2");
    a.answer(true);
    assert!(healthy(), "still down after 2 passed checks");
    assert!(
        wait_until(IO_TIMEOUT, || a.served() > frozen),
        "a recovered backend gets traffic again"
    );

    let (_, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn consecutive_failures_eject_a_backend_within_the_cap() {
    let ok = HttpBackend::start(|_| Reply::ok(b"ok"));
    let (r1, r2) = (refused_addr(), refused_addr());
    let mut s = settings(Mode::Http, &[r1, r2, ok.addr]);
    s.control.eject_after = 3;
    s.control.max_ejection_percent = 34; // one of three
    s.proxy.eject_after = 3;
    let lb = Sluice::with_settings(s);
    let ejected = || {
        [r1, r2]
            .iter()
            .filter(|&&a| backend_view(&lb, a).unwrap()["ejected"] == true)
            .count()
    };
    let mut sent = 0;
    assert!(wait_until(IO_TIMEOUT, || {
        for _ in 0..10 {
            assert_eq!(
                roundtrip(lb.addr, &get("/")).status,
                200,
                "refused backends are retried"
            );
            sent += 1;
        }
        ejected() == 1
    }));
    // More failures on the other refused backend: the cap keeps it in.
    for _ in 0..60 {
        assert_eq!(roundtrip(lb.addr, &get("/")).status, 200);
    }
    assert_eq!(
        ejected(),
        1,
        "the cap allows one ejection of three backends"
    );
}

#[test]
fn a_passing_active_check_ends_an_ejection_early() {
    // Accepts connections (so TCP checks pass) but answers requests with garbage.
    let bad = RawBackend::start(|mut s| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(b"garbage\r\n\r\n").is_err() {
                break;
            }
        }
    });
    let ok = HttpBackend::start(|_| Reply::ok(b"ok"));
    let mut s = settings(Mode::Http, &[bad.addr, ok.addr]);
    s.control.eject_after = 2;
    s.proxy.eject_after = 2;
    s.control.eject_base_ms = 3_600_000;
    s.control.health.interval_ms = 50;
    let lb = Sluice::with_settings(s);
    let mut saw_ejection = false;
    let ended = wait_until(IO_TIMEOUT, || {
        let _ = roundtrip(lb.addr, &get("/"));
        let view = backend_view(&lb, bad.addr).unwrap();
        saw_ejection |= view["ejected"] == true;
        saw_ejection && view["ejected"] == false
    });
    assert!(saw_ejection, "never ejected");
    assert!(
        ended,
        "an hour-long ejection did not end at the next passing check"
    );
}

#[test]
fn tcp_connections_to_a_disabled_backend_close_after_the_drain_timeout() {
    let echo = echo_backend(b"");
    let mut s = settings(Mode::Tcp, &[echo.addr]);
    // Long enough for the pong below to make its round trip on a busy machine.
    s.control.drain_timeout_ms = 2_000;
    let lb = Sluice::with_settings(s);
    let mut c = lb.connect();
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(
        lb.api(
            "POST",
            &format!("/api/backends/{}/disable", echo.addr),
            None
        )
        .0,
        200
    );
    // Still open for now: the tunnel carries on until the drain timeout.
    c.write_all(b"pong").unwrap();
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn a_failed_state_write_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("sluice-failwrite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = HttpBackend::start(|_| Reply::ok(b"a"));
    let mut s = settings(Mode::Http, &[a.addr]);
    s.control.state_file = Some(dir.join("state.json"));
    let lb = Sluice::with_settings(s);
    std::fs::remove_dir_all(&dir).unwrap();
    let (status, err) = lb.api(
        "POST",
        "/api/backends",
        Some(r#"{"address": "127.0.0.1:5"}"#),
    );
    assert_eq!(status, 500, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("state file"),
        "{err}"
    );
    assert_eq!(
        lb.api("PUT", "/api/strategy", Some(r#"{"strategy": "random"}"#))
            .0,
        500
    );
    let (_, list) = lb.api("GET", "/api/backends", None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        lb.api("GET", "/api/strategy", None).1["configured"],
        "round-robin"
    );
    assert_eq!(
        roundtrip(lb.addr, &get("/")).text(),
        "a",
        "still routing by the old state"
    );
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    // The backend holds each request until the test releases it.
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let arrived_tx = Arc::new(Mutex::new(arrived_tx));
    let backend = HttpBackend::start(move |_| {
        arrived_tx.lock().unwrap().send(()).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
        Reply::ok(b"finished")
    });
    let lb = Sluice::http(&[backend.addr]);
    let addr = lb.addr;
    let client = thread::spawn(move || roundtrip(addr, &get("/slow")));
    arrived.recv().unwrap();
    let stopper = thread::spawn(move || lb.stop());
    // Shutdown has begun once the listeners are closed.
    assert!(wait_until(IO_TIMEOUT, || std::net::TcpStream::connect(
        addr
    )
    .is_err()));
    release.send(()).unwrap();
    let resp = client.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "finished");
    stopper.join().unwrap();
}
