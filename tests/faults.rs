//! Faults on real sockets. Each time the client gets the right status or a clean close, nothing
//! hangs, a bystander on the same worker keeps being served, and afterwards no connection or
//! request is left behind (the counts of /api/status return to zero).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use sluice::config::{Mode, ProxyConfig};
use sluice::strategy::StrategyKind;

/// sluice (passive ejection off, so a faulty backend stays in the rotation).
fn lb_with(cfg: ProxyConfig, backends: &[SocketAddr]) -> Sluice {
    let mut s = settings_for(cfg, backends, StrategyKind::RoundRobin);
    s.control.eject_after = 0;
    s.proxy.eject_after = 0;
    Sluice::with_settings(s)
}

fn one_worker() -> ProxyConfig {
    ProxyConfig {
        workers: 1,
        ..test_config(Mode::Http)
    }
}

/// Waits until sluice holds no client connection and no request in flight.
#[track_caller]
fn assert_no_leaks(lb: &Sluice) {
    let mut last = serde_json::Value::Null;
    let clean = wait_until(IO_TIMEOUT, || {
        last = lb.api("GET", "/api/status", None).1;
        last["active_connections"] == 0
            && last["backends"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["in_flight"] == 0)
    });
    assert!(clean, "left behind: {last}");
}

/// A client on its own connection to the same sluice (one worker: the same event loop as the
/// faulty requests), sending requests the backend answers properly.
struct Bystander {
    stop: Arc<AtomicBool>,
    served: Arc<std::sync::atomic::AtomicUsize>,
    thread: thread::JoinHandle<(usize, Vec<String>)>,
}

fn bystander(lb: SocketAddr) -> Bystander {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s, count) = (stop.clone(), served.clone());
    let thread = thread::spawn(move || {
        let mut ok = 0;
        let mut failures = Vec::new();
        let conn = connect(lb);
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        while !s.load(Ordering::SeqCst) {
            w.write_all(b"GET /bystander HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            match read_response(&mut r, false) {
                Ok(resp) if resp.status == 200 => {
                    ok += 1;
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(resp) => failures.push(format!("{} {}", resp.status, resp.text())),
                Err(e) => {
                    failures.push(e.to_string());
                    break;
                }
            }
        }
        (ok, failures)
    });
    Bystander {
        stop,
        served,
        thread,
    }
}

impl Bystander {
    /// Waits until the bystander is served once more, then stops it; returns its successes.
    fn finish(self) -> usize {
        let before = self.served.load(Ordering::SeqCst);
        assert!(
            wait_until(IO_TIMEOUT, || self.served.load(Ordering::SeqCst) > before),
            "the bystander is stuck"
        );
        self.stop.store(true, Ordering::SeqCst);
        let (ok, failures) = self.thread.join().unwrap();
        assert!(failures.is_empty(), "the bystander was hurt: {failures:?}");
        ok
    }
}

/// A backend that answers `/bystander` properly and does `fault` to everything else.
fn faulty(fault: fn(std::net::TcpStream)) -> RawBackend {
    RawBackend::start(move |s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s.try_clone().unwrap();
        loop {
            let Ok(Some(req)) = read_request(&mut r) else {
                return;
            };
            if req.target == "/bystander" {
                if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            } else {
                fault(s);
                return;
            }
        }
    })
}

fn run_fault(
    fault: fn(std::net::TcpStream),
    cfg: ProxyConfig,
    expect: impl Fn(std::io::Result<Resp>),
) {
    let backend = faulty(fault);
    let lb = lb_with(cfg, &[backend.addr]);
    let by = bystander(lb.addr);
    // Three at once, so a fault that takes a timeout to show costs one timeout.
    let addr = lb.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut s = connect(addr);
                s.write_all(&get("/fault")).unwrap();
                read_response(&mut BufReader::new(s), false)
            })
        })
        .collect();
    for c in clients {
        expect(c.join().unwrap());
    }
    assert!(by.finish() > 0);
    assert_no_leaks(&lb);
}

#[test]
fn backend_killed_mid_response() {
    run_fault(
        |mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this");
            let _ = s.shutdown(Shutdown::Both);
        },
        one_worker(),
        |r| assert!(r.is_err(), "a truncated body must not look complete: {r:?}"),
    );
}

#[test]
fn backend_reset() {
    run_fault(
        |s| {
            // SO_LINGER 0: close sends a reset.
            let s2 = socket2::SockRef::from(&s);
            s2.set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
        },
        one_worker(),
        |r| assert_eq!(r.unwrap().status, 502),
    );
}

#[test]
fn backend_that_never_answers() {
    run_fault(
        |mut s| {
            let mut buf = [0u8; 64];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        },
        // Long enough that no bystander request on a busy machine is cut short by it.
        ProxyConfig {
            response_timeout_ms: 3_000,
            ..one_worker()
        },
        |r| assert_eq!(r.unwrap().status, 504),
    );
}

#[test]
fn backend_answering_garbage() {
    run_fault(
        |mut s| {
            let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
        },
        one_worker(),
        |r| assert_eq!(r.unwrap().status, 502),
    );
}

#[test]
fn flapping_backend_loses_no_request() {
    let steady = HttpBackend::start(|_| Reply::ok(b"steady"));
    let flappy = HttpBackend::start(|_| Reply::ok(b"flappy"));
    let lb = lb_with(test_config(Mode::Http), &[steady.addr, refused_addr()]);
    // Swap the second backend between a refusing and a working address while traffic flows.
    let traffic = Traffic::start(lb.addr, 4);
    // The second backend that is not draining (a removed one stays listed until drained).
    let second = || {
        let (_, list) = lb.api("GET", "/api/backends", None);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|b| b["draining"] == false)
            .nth(1)
            .unwrap()["address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for i in 0..10 {
        let old = second();
        let new = if i % 2 == 0 {
            flappy.addr
        } else {
            refused_addr()
        };
        assert_eq!(
            lb.api(
                "POST",
                "/api/backends",
                Some(&format!(r#"{{"address": "{new}"}}"#))
            )
            .0,
            201
        );
        assert_eq!(
            lb.api("DELETE", &format!("/api/backends/{old}"), None).0,
            200
        );
        let served = steady.requests().len();
        assert!(wait_until(IO_TIMEOUT, || steady.requests().len() > served + 20));
    }
    let (seen, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(seen.get("flappy").is_some_and(|&n| n > 0), "{seen:?}");
    assert_no_leaks(&lb);
}

#[test]
fn client_gone_mid_request() {
    let backend = HttpBackend::start(|r| Reply::ok(&r.body));
    let lb = lb_with(one_worker(), &[backend.addr]);
    let by = bystander(lb.addr);
    for _ in 0..5 {
        let mut s = lb.connect();
        s.write_all(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nonly a little",
        )
        .unwrap();
        drop(s);
    }
    assert!(by.finish() > 0);
    assert_no_leaks(&lb);
}

#[test]
fn client_gone_mid_response() {
    let big = vec![b'z'; 8 << 20];
    let body: &'static [u8] = Box::leak(big.into_boxed_slice());
    let backend = HttpBackend::start(move |r| {
        if r.target == "/bystander" {
            Reply::ok(b"ok")
        } else {
            Reply::ok(body)
        }
    });
    let lb = lb_with(one_worker(), &[backend.addr]);
    let by = bystander(lb.addr);
    for _ in 0..5 {
        let mut s = lb.connect();
        s.write_all(&get("/big")).unwrap();
        let mut some = [0u8; 4096];
        s.read_exact(&mut some).unwrap();
        drop(s);
    }
    assert!(by.finish() > 0);
    assert_no_leaks(&lb);
}

#[test]
fn all_backends_down_and_back() {
    let (down, addr) = bound_not_listening();
    let lb = lb_with(one_worker(), &[addr]);
    assert_eq!(roundtrip(lb.addr, &get("/")).status, 503);
    // The backend comes up on the same address: served again, no restart needed.
    down.listen(128).unwrap();
    let listener = TcpListener::from(down);
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                while let Ok(Some(_)) = read_request(&mut r) {
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nback")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    assert_eq!(roundtrip(lb.addr, &get("/")).text(), "back");
    assert_no_leaks(&lb);
}
