//! Retries and the per-id attempt budget over real sockets (the flaky-servers challenge's rules,
//! README.md): what is retried under which policy, that no id ever gets more than three attempts,
//! and that an accepted id is answered without another attempt.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use sluice::backend::BackendSpec;
use sluice::config::{Mode, RequestIds, Settings};
use sluice::retry::RetryPolicy;
use sluice::strategy::StrategyKind;

const ID: &str = "ABCDEFGHIJKLMNOPQRSTUVWX";

fn post_id(id: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{id}",
        id.len()
    )
    .into_bytes()
}

/// A round-robin sluice in front of `backends` with request ids from 24-character bodies and the
/// Idempotency-Key field (`--request-id body-alnum24,header:Idempotency-Key`).
fn lb(backends: &[SocketAddr], policy: &str, methods: &str) -> Sluice {
    lb_with_ids(
        backends,
        policy,
        methods,
        "body-alnum24,header:Idempotency-Key",
    )
}

/// As [`lb`], with `--request-id ids` ("off": the default, no request ids).
fn lb_with_ids(backends: &[SocketAddr], policy: &str, methods: &str, ids: &str) -> Sluice {
    let mut s = settings_for(test_config(Mode::Http), backends, StrategyKind::RoundRobin);
    s.proxy.retry = RetryPolicy::parse(policy, methods).unwrap();
    s.proxy.eject_after = 0;
    s.proxy.request_id = RequestIds::parse_all(&[ids.to_string()]).unwrap();
    Sluice::with_settings(s)
}

/// A POST of `body` to `path` carrying `field: value`.
fn post_with(path: &str, field: &str, value: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\n{field}: {value}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A backend answering every request with `status`, counting them.
fn fixed(status: u16) -> (HttpBackend, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let b = HttpBackend::start(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        Reply::status(status, format!("status {status}").as_bytes())
    });
    (b, n)
}

#[test]
fn default_policy_retries_gateway_errors_for_idempotent_methods_only() {
    let (bad, bad_n) = fixed(503);
    let (good, _) = fixed(200);
    let lb = lb(&[bad.addr, good.addr], "connect,gateway", "idempotent");
    for _ in 0..4 {
        assert_eq!(
            roundtrip(lb.addr, &get("/")).status,
            200,
            "a GET that met 503 went on to the good backend"
        );
    }
    assert!(bad_n.load(Ordering::SeqCst) >= 1);
    // A POST is not idempotent: the 503 reaches the client when the bad backend gets it.
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            roundtrip(
                lb.addr,
                b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            )
            .status
        })
        .collect();
    assert!(statuses.contains(&503), "{statuses:?}");
}

#[test]
fn the_challenge_policy_retries_any_method_on_any_5xx_and_429() {
    let (e500, _) = fixed(500);
    let (e429, _) = fixed(429);
    let (good, good_n) = fixed(200);
    let lb = lb(
        &[e500.addr, e429.addr, good.addr],
        "connect,timeout,5xx,429",
        "any",
    );
    for i in 0..9 {
        let resp = roundtrip(lb.addr, &post_id(&format!("{ID:.20}{i:04}")));
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.text(), "status 200");
    }
    assert_eq!(good_n.load(Ordering::SeqCst), 9);
}

#[test]
fn an_id_never_gets_more_than_three_attempts_even_when_sent_again() {
    let backends: Vec<(HttpBackend, Arc<AtomicUsize>)> = (0..4).map(|_| fixed(500)).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.0.addr).collect();
    let lb = lb(&addrs, "connect,timeout,5xx,429", "any");
    let first = roundtrip(lb.addr, &post_id(ID));
    assert_eq!(first.status, 500, "the last downstream status: {first:?}");
    let attempts = || {
        backends
            .iter()
            .map(|b| b.1.load(Ordering::SeqCst))
            .sum::<usize>()
    };
    assert_eq!(attempts(), 3);
    // The same id again, on new connections: no attempt left.
    for _ in 0..3 {
        let again = roundtrip(lb.addr, &post_id(ID));
        assert_eq!(again.status, 503, "{again:?}");
        assert!(again.text().contains("no attempts left"));
    }
    assert_eq!(attempts(), 3);
    // An Idempotency-Key works the same way.
    let keyed = b"POST /k HTTP/1.1\r\nHost: t\r\nIdempotency-Key: order-17\r\nContent-Length: 5\r\n\r\nhello";
    roundtrip(lb.addr, keyed);
    roundtrip(lb.addr, keyed);
    assert_eq!(attempts(), 6);
}

#[test]
fn an_accepted_id_is_answered_without_another_attempt() {
    let (good, n) = fixed(200);
    let lb = lb(&[good.addr], "connect,timeout,5xx,429", "any");
    assert_eq!(roundtrip(lb.addr, &post_id(ID)).status, 200);
    let again = roundtrip(lb.addr, &post_id(ID));
    assert_eq!(again.status, 200);
    assert!(again.text().contains("already accepted"), "{again:?}");
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn request_ids_are_off_by_default_so_a_repeated_body_reaches_the_backend_each_time() {
    let (good, n) = fixed(200);
    let lb = lb_with_ids(&[good.addr], "connect,timeout,5xx,429", "any", "off");
    for _ in 0..2 {
        let resp = roundtrip(lb.addr, &post_id(ID));
        assert_eq!((resp.status, resp.text()), (200, "status 200".into()));
    }
    let keyed = post_with("/", "Idempotency-Key", "order-1", "x");
    roundtrip(lb.addr, &keyed);
    roundtrip(lb.addr, &keyed);
    assert_eq!(
        n.load(Ordering::SeqCst),
        4,
        "every request reached the backend"
    );
}

#[test]
fn an_id_is_scoped_by_method_host_and_path() {
    let (good, n) = fixed(200);
    let lb = lb(&[good.addr], "connect,timeout,5xx,429", "any");
    let on = |method: &str, host: &str, path: &str| {
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 24\r\n\r\n{ID}");
        roundtrip(lb.addr, req.as_bytes()).text()
    };
    assert_eq!(on("POST", "t", "/a"), "status 200");
    assert!(on("POST", "t", "/a").contains("already accepted"));
    // The query is not part of the scope; the method, the host and the path are.
    assert!(on("POST", "t", "/a?x=1").contains("already accepted"));
    assert_eq!(on("POST", "t", "/b"), "status 200");
    assert_eq!(on("PUT", "t", "/a"), "status 200");
    assert_eq!(on("POST", "u", "/a"), "status 200");
    assert_eq!(n.load(Ordering::SeqCst), 4);
}

#[test]
fn a_header_names_the_id_when_asked_to() {
    let backends: Vec<(HttpBackend, Arc<AtomicUsize>)> = (0..4).map(|_| fixed(500)).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.0.addr).collect();
    let lb = lb_with_ids(
        &addrs,
        "connect,timeout,5xx,429",
        "any",
        "header:X-Request-Id",
    );
    let attempts = || {
        backends
            .iter()
            .map(|b| b.1.load(Ordering::SeqCst))
            .sum::<usize>()
    };
    let keyed = post_with("/k", "x-request-id", "r-17", "hello");
    assert_eq!(roundtrip(lb.addr, &keyed).status, 500);
    assert_eq!(attempts(), 3);
    let again = roundtrip(lb.addr, &keyed);
    assert_eq!(again.status, 503, "{again:?}");
    assert!(again.text().contains("no attempts left"));
    assert_eq!(attempts(), 3);
    // Only the named header: a 24-character body is not an id in this mode, nor Idempotency-Key.
    roundtrip(lb.addr, &post_id(ID));
    roundtrip(lb.addr, &post_id(ID));
    assert_eq!(attempts(), 9);
    let other = post_with("/k", "Idempotency-Key", "r-18", "hello");
    roundtrip(lb.addr, &other);
    roundtrip(lb.addr, &other);
    assert_eq!(attempts(), 15);
}

#[test]
fn failed_connects_do_not_use_up_the_budget() {
    let (r1, r2, r3) = (refused_addr(), refused_addr(), refused_addr());
    let lb = lb(&[r1, r2, r3], "connect", "any");
    // Three attempts, none delivered: no backend could be connected.
    assert_eq!(roundtrip(lb.addr, &post_id(ID)).status, 503);
    // A backend that works comes along; the same id still has its whole budget.
    let (good, n) = fixed(200);
    let body = format!(r#"{{"address": "{}"}}"#, good.addr);
    assert_eq!(lb.api("POST", "/api/backends", Some(&body)).0, 201);
    for r in [r1, r2, r3] {
        assert_eq!(lb.api("DELETE", &format!("/api/backends/{r}"), None).0, 200);
    }
    let resp = roundtrip(lb.addr, &post_id(ID));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn a_body_split_from_its_head_is_waited_for_before_the_budget_check() {
    let (good, n) = fixed(200);
    let lb = lb(&[good.addr], "connect", "any");
    let mut s = lb.connect();
    use std::io::Write;
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 24\r\n\r\n")
        .unwrap();
    s.write_all(&ID.as_bytes()[..10]).unwrap();
    s.write_all(&ID.as_bytes()[10..]).unwrap();
    let resp = read_response(&mut std::io::BufReader::new(s), false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(good.requests()[0].body, ID.as_bytes());
    // The id was recorded: sending it again gets no new attempt.
    assert!(roundtrip(lb.addr, &post_id(ID))
        .text()
        .contains("already accepted"));
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn requests_larger_than_the_retry_buffer_are_not_retried() {
    let (bad, bad_n) = fixed(503);
    let lb = {
        let specs = vec![
            BackendSpec {
                addr: bad.addr.into(),
                weight: 1,
            },
            BackendSpec {
                addr: fixed(200).0.addr.into(),
                weight: 1,
            },
        ];
        let mut s = Settings::local(test_config(Mode::Http), specs, StrategyKind::RoundRobin);
        s.proxy.retry = RetryPolicy::parse("5xx", "any").unwrap();
        s.proxy.retry_buffer = 1024;
        s.proxy.eject_after = 0;
        Sluice::with_settings(s)
    };
    let big = "x".repeat(4096);
    let raw = format!(
        "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let statuses: Vec<u16> = (0..4)
        .map(|_| roundtrip(lb.addr, raw.as_bytes()).status)
        .collect();
    assert!(
        statuses.contains(&503),
        "a 4 KiB request is over the 1 KiB retry buffer: {statuses:?}"
    );
    assert!(bad_n.load(Ordering::SeqCst) >= 1);
}

/// `bandit` in front of one backend, with request ids (`body-alnum24`), the challenge's retry
/// policy and `--max-pacing-wait` of `max_pacing_wait_ms`.
fn bandit_with_ids(backend: std::net::SocketAddr, max_pacing_wait_ms: u64) -> Sluice {
    Sluice::with_settings(bandit_settings(backend, max_pacing_wait_ms))
}

/// The settings of [`bandit_with_ids`].
fn bandit_settings(backend: std::net::SocketAddr, max_pacing_wait_ms: u64) -> Settings {
    let specs = vec![BackendSpec {
        addr: backend.into(),
        weight: 1,
    }];
    let mut s = Settings::local(test_config(Mode::Http), specs, StrategyKind::Bandit);
    s.proxy.retry = RetryPolicy::parse("connect,timeout,5xx,429", "any").unwrap();
    s.proxy.request_id = RequestIds::parse_all(&["body-alnum24".into()]).unwrap();
    s.proxy.max_pacing_wait_ms = max_pacing_wait_ms;
    s
}

#[test]
fn bandit_waits_out_a_retry_after_instead_of_spending_an_attempt() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let backend = HttpBackend::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::raw(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n",
                false,
            )
        } else {
            Reply::ok(b"accepted")
        }
    });
    let lb = bandit_with_ids(backend.addr, 3_000);
    let resp = roundtrip(lb.addr, &post_id(ID));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "accepted");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one 429, then one attempt after the pause"
    );
}

#[test]
fn bandit_answers_503_at_once_when_no_backend_has_room_instead_of_a_sure_429() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let backend = HttpBackend::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        Reply::raw(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Length: 0\r\n\r\n",
            false,
        )
    });
    let lb = bandit_with_ids(backend.addr, 50);
    // The first attempt learns the Retry-After; the retry finds no room within twice the pacing
    // wait and is answered by sluice, with no second attempt.
    let resp = roundtrip(lb.addr, &post_id(ID));
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(resp.text().contains("rate limit"), "{resp:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A new id is answered the same without reaching the backend.
    let resp = roundtrip(lb.addr, &post_id("ZYXWVUTSRQPONMLKJIHGFEDC"));
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no attempt sure to be refused"
    );
}

#[test]
fn bandit_stops_waiting_for_room_once_the_requests_whole_pacing_budget_is_spent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let backend = HttpBackend::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        Reply::raw(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Length: 0\r\n\r\n",
            false,
        )
    });
    // Each attempt may wait a minute for room, twice over; the request as a whole only 50 ms
    // from its arrival: the retry gives up waiting then, and sluice answers, as it does once an
    // attempt's own waits are over.
    let mut settings = bandit_settings(backend.addr, 60_000);
    settings.proxy.max_pacing_total_ms = 50;
    let lb = Sluice::with_settings(settings);
    let resp = roundtrip(lb.addr, &post_id(ID));
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(resp.text().contains("rate limit"), "{resp:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no attempt sure to be refused"
    );
}
