//! `--per-try-timeout`: an attempt whose backend has not started answering in time is sent to
//! another backend (hedging's cheaper cousin, within the early-retry budget), and a request that
//! may not be sent again keeps waiting for its backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::SocketAddr;
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use sluice::config::{Mode, ProxyConfig};
use sluice::strategy::StrategyKind;

fn lb(backends: &[SocketAddr], per_try_timeout_ms: u64) -> Sluice {
    let cfg = ProxyConfig {
        workers: 1,
        per_try_timeout_ms,
        ..test_config(Mode::Http)
    };
    let mut s = settings_for(cfg, backends, StrategyKind::RoundRobin);
    s.proxy.eject_after = 0;
    Sluice::with_settings(s)
}

/// A backend that answers nothing until the returned sender is dropped.
fn silent() -> (HttpBackend, mpsc::Sender<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let b = HttpBackend::start(move |_| {
        let _ = wait.lock().unwrap().recv();
        Reply::ok(b"late")
    });
    (b, release)
}

fn early_retries(lb: &Sluice) -> u64 {
    value(&scrape(lb), "sluice_early_retries_total").unwrap_or(0.0) as u64
}

#[test]
fn a_request_with_no_answer_after_the_per_try_timeout_goes_to_another_backend() {
    let (slow, release) = silent();
    let fast = HttpBackend::start(|_| Reply::ok(b"fast"));
    // Long enough that the fast backend always answers within it, even on a busy machine.
    let lb = lb(&[slow.addr, fast.addr], 300);
    for _ in 0..4 {
        // The response timeout (20 s in tests) would be the only way out without the early retry.
        let resp = roundtrip(lb.addr, &get("/"));
        assert_eq!((resp.status, resp.text().as_str()), (200, "fast"));
    }
    let sent_to_slow = slow.requests().len();
    assert!(
        sent_to_slow >= 1,
        "round robin sent nothing to the slow backend"
    );
    assert_eq!(fast.requests().len(), 4);
    // Metrics arrive with the workers' once-a-second flush.
    assert!(
        wait_until(IO_TIMEOUT, || early_retries(&lb) == sent_to_slow as u64),
        "early retries {} for {sent_to_slow} silent attempts",
        early_retries(&lb)
    );
    drop(release);
}

#[test]
fn a_request_that_may_not_be_sent_again_waits_for_its_backend() {
    // The slow backend answers after 300 ms, six per-try timeouts.
    let slow = HttpBackend::start(|_| {
        thread::sleep(Duration::from_millis(300));
        Reply::ok(b"slow")
    });
    let fast = HttpBackend::start(|_| Reply::ok(b"fast"));
    let lb = lb(&[slow.addr, fast.addr], 50);
    let post = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";
    // Round robin: one POST each. A POST is not idempotent, so the slow one is waited for.
    let mut bodies: Vec<String> = (0..2).map(|_| roundtrip(lb.addr, post).text()).collect();
    bodies.sort();
    assert_eq!(bodies, ["fast", "slow"]);
    assert_eq!(fast.requests().len(), 1, "the POST was not sent twice");
    assert_eq!(slow.requests().len(), 1);
}
