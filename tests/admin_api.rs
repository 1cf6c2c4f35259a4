//! The admin API over real sockets: every route, every error status, the token, and changes made
//! while traffic flows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::SocketAddr;

use common::*;
use sluice::config::{Mode, Settings};
use sluice::strategy::StrategyKind;

fn lb_for(backends: &[SocketAddr]) -> Sluice {
    Sluice::http(backends)
}

#[test]
fn backends_can_be_listed_added_reweighted_disabled_and_removed() {
    let a = HttpBackend::start(|_| Reply::ok(b"a"));
    let lb = lb_for(&[a.addr]);
    let (status, list) = lb.api("GET", "/api/backends", None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["address"], a.addr.to_string());
    assert_eq!(list[0]["weight"], 1);
    assert_eq!(list[0]["enabled"], true);
    assert_eq!(list[0]["healthy"], true);

    let (status, added) = lb.api(
        "POST",
        "/api/backends",
        Some(r#"{"address": "127.0.0.1:1", "weight": 5}"#),
    );
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["weight"], 5);

    let (status, changed) = lb.api("PUT", "/api/backends/127.0.0.1:1", Some(r#"{"weight": 9}"#));
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["weight"], 9);

    let (status, disabled) = lb.api("POST", "/api/backends/127.0.0.1:1/disable", None);
    assert_eq!(status, 200);
    assert_eq!(disabled["enabled"], false);
    let (status, enabled) = lb.api("POST", "/api/backends/127.0.0.1:1/enable", None);
    assert_eq!(status, 200);
    assert_eq!(enabled["enabled"], true);

    let (status, removed) = lb.api("DELETE", "/api/backends/127.0.0.1:1", None);
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["draining"], true);
    assert!(
        wait_until(IO_TIMEOUT, || backend_view(
            &lb,
            "127.0.0.1:1".parse().unwrap()
        )
        .is_none()),
        "an idle backend leaves at once"
    );
}

#[test]
fn every_error_is_json_with_the_right_status() {
    let lb = lb_for(&["127.0.0.1:2".parse().unwrap()]);
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        (
            "POST",
            "/api/backends",
            Some(r#"{"address": "nonsense", "weight": 1}"#),
            400,
        ),
        (
            "POST",
            "/api/backends",
            Some(r#"{"address": "127.0.0.1:3", "weight": 1000}"#),
            400,
        ),
        (
            "POST",
            "/api/backends",
            Some(r#"{"address": "127.0.0.1:3", "weight": -1}"#),
            400,
        ),
        (
            "POST",
            "/api/backends",
            Some(r#"{"address": "127.0.0.1:3""#),
            400,
        ),
        (
            "POST",
            "/api/backends",
            Some(r#"{"address": "127.0.0.1:3", "colour": "red"}"#),
            400,
        ),
        ("POST", "/api/backends", None, 400),
        (
            "POST",
            "/api/backends",
            Some(r#"{"address": "127.0.0.1:2"}"#),
            409,
        ),
        (
            "PUT",
            "/api/strategy",
            Some(r#"{"strategy": "fastest"}"#),
            400,
        ),
        (
            "PUT",
            "/api/backends/127.0.0.1:9",
            Some(r#"{"weight": 2}"#),
            404,
        ),
        ("POST", "/api/backends/127.0.0.1:9/disable", None, 404),
        ("DELETE", "/api/backends/127.0.0.1:9", None, 404),
        ("DELETE", "/api/backends/not-an-address", None, 400),
        ("GET", "/api/nothing", None, 404),
        ("PATCH", "/api/backends", None, 405),
    ];
    for &(method, path, body, want) in cases {
        let (status, json) = lb.api(method, path, body);
        assert_eq!(status, want, "{method} {path} {body:?}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {json}"
        );
    }
}

#[test]
fn wrong_media_type_and_oversized_bodies_are_refused() {
    let lb = lb_for(&[]);
    let mut s = connect(lb.admin);
    use std::io::Write;
    s.write_all(b"POST /api/backends HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    let resp = read_response(&mut std::io::BufReader::new(s), false).unwrap();
    assert_eq!(resp.status, 415);
    let big = format!(
        r#"{{"address": "127.0.0.1:3", "pad": "{}"}}"#,
        "x".repeat(70_000)
    );
    let (status, json) = lb.api("POST", "/api/backends", Some(&big));
    assert_eq!(status, 413, "{json}");
    let (status, allow) = lb.api("DELETE", "/api/strategy", None);
    assert_eq!(status, 405, "{allow}");
}

#[test]
fn cross_site_requests_cannot_change_anything() {
    let lb = lb_for(&[]);
    let send = |origin: &str| {
        let mut s = connect(lb.admin);
        use std::io::Write;
        let host = lb.admin.to_string();
        let body = r#"{"address": "127.0.0.1:6"}"#;
        write!(
            s,
            "POST /api/backends HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        read_response(&mut std::io::BufReader::new(s), false)
            .unwrap()
            .status
    };
    assert_eq!(send("http://evil.example"), 403);
    assert_eq!(send("null"), 403);
    assert_eq!(
        send(&format!("http://{}", lb.admin)),
        201,
        "the dashboard's own origin"
    );
}

#[test]
fn openapi_document_is_served() {
    let lb = lb_for(&[]);
    let (status, doc) = lb.api("GET", "/api/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/backends/{address}/disable"]["post"].is_object());
}

#[test]
fn the_token_guards_mutations_only() {
    let mut settings = Settings::local(test_config(Mode::Http), vec![], StrategyKind::RoundRobin);
    settings.control.admin_token = Some("s3cret".into());
    let lb = Sluice::with_settings(settings);
    let body = Some(r#"{"address": "127.0.0.1:4"}"#);
    assert_eq!(
        api_call(lb.admin, "POST", "/api/backends", body, None).0,
        401
    );
    assert_eq!(
        api_call(lb.admin, "POST", "/api/backends", body, Some("wrong")).0,
        401
    );
    assert_eq!(
        api_call(
            lb.admin,
            "PUT",
            "/api/strategy",
            Some(r#"{"strategy": "round-robin"}"#),
            None
        )
        .0,
        401
    );
    assert_eq!(
        api_call(lb.admin, "GET", "/api/backends", None, None).0,
        200,
        "reads need no token"
    );
    assert_eq!(
        api_call(lb.admin, "POST", "/api/backends", body, Some("s3cret")).0,
        201
    );
}

#[test]
fn status_reports_version_and_live_numbers() {
    let a = HttpBackend::start(|_| Reply::ok(b"a"));
    let lb = lb_for(&[a.addr]);
    for _ in 0..20 {
        assert_eq!(roundtrip(lb.addr, &get("/")).status, 200);
    }
    // Numbers arrive with the workers' once-a-second metrics; wait for them.
    assert!(wait_until(IO_TIMEOUT, || {
        let (_, s) = lb.api("GET", "/api/status", None);
        s["backends"][0]["p50_ms"].is_number()
    }));
    let (status, s) = lb.api("GET", "/api/status", None);
    assert_eq!(status, 200);
    assert!(s["version"].as_u64().unwrap() >= 1);
    assert_eq!(
        s["installed_version"], s["version"],
        "every worker applied it"
    );
    assert_eq!(s["strategy"]["configured"], "round-robin");
    let b = &s["backends"][0];
    assert_eq!(b["address"], a.addr.to_string());
    for field in [
        "in_flight",
        "active_connections",
        "requests_per_s",
        "error_rate",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(b[field].is_number(), "{field} in {b}");
    }
    assert_eq!(b["in_flight"], 0);
    assert!(b.get("learned").is_none(), "only bandit learns: {b}");
}

#[test]
fn status_shows_what_bandit_believes_of_each_backend() {
    let (lb, refusing, good) = bandit_after_a_refusal();
    let (status, s) = lb.api("GET", "/api/status", None);
    assert_eq!(status, 200);
    let learned = |addr: SocketAddr| {
        let backends = s["backends"].as_array().unwrap();
        let b = backends
            .iter()
            .find(|b| b["address"] == addr.to_string())
            .unwrap();
        b["learned"].clone()
    };
    let r = learned(refusing.addr);
    assert_eq!(r["pacing"], "backing-off", "{r}");
    assert!(
        r["backoff_ms"].as_u64().unwrap() > 3_000_000,
        "Retry-After: 3600 {r}"
    );
    assert_eq!(r["limit"], 1, "one 429 with nothing admitted: {r}");
    assert_eq!(r["window_ms"], 1000);
    let g = learned(good.addr);
    assert_eq!(g["pacing"], "unlimited", "{g}");
    assert!(g["limit"].is_null(), "{g}");
    assert!(g["success_estimate"].as_f64().unwrap() > 0.8, "{g}");
    assert!(g["evidence"].as_f64().unwrap() >= 9.0, "{g}");
}

#[test]
fn changes_under_traffic_lose_no_request() {
    let a = HttpBackend::start(|_| Reply::ok(b"a"));
    let b = HttpBackend::start(|_| Reply::ok(b"b"));
    let c = HttpBackend::start(|_| Reply::ok(b"c"));
    let lb = lb_for(&[a.addr, b.addr]);
    let traffic = Traffic::start(lb.addr, 4);

    // A new backend gets traffic.
    let (status, _) = lb.api(
        "POST",
        "/api/backends",
        Some(&format!(r#"{{"address": "{}"}}"#, c.addr)),
    );
    assert_eq!(status, 201);
    assert!(
        wait_until(IO_TIMEOUT, || !c.requests().is_empty()),
        "the added backend got no request"
    );

    // Re-weighting and a strategy change under load.
    assert_eq!(
        lb.api(
            "PUT",
            &format!("/api/backends/{}", a.addr),
            Some(r#"{"weight": 3}"#)
        )
        .0,
        200
    );
    assert_eq!(
        lb.api(
            "PUT",
            "/api/strategy",
            Some(r#"{"strategy": "least-connections"}"#)
        )
        .0,
        200
    );
    let (_, strategy) = lb.api("GET", "/api/strategy", None);
    assert_eq!(strategy["active"], "least-connections");

    // A disabled backend gets nothing new; enabled again, it does. Requests already on their way
    // finish, so the count is taken once every worker routes by the new table and nothing is in
    // flight to it, and checked over the next 50 requests.
    assert_eq!(
        lb.api("POST", &format!("/api/backends/{}/disable", b.addr), None)
            .0,
        200
    );
    assert!(wait_settled(&lb, b.addr));
    let frozen = b.requests().len();
    let others = || a.requests().len() + c.requests().len();
    let mark = others();
    assert!(wait_until(IO_TIMEOUT, || others() > mark + 50));
    assert_eq!(
        b.requests().len(),
        frozen,
        "a disabled backend got new requests"
    );
    assert_eq!(
        lb.api("POST", &format!("/api/backends/{}/enable", b.addr), None)
            .0,
        200
    );
    assert!(wait_until(IO_TIMEOUT, || b.requests().len() > frozen));

    // A removed backend drains, leaves the list, and gets nothing after that.
    assert_eq!(
        lb.api("DELETE", &format!("/api/backends/{}", a.addr), None)
            .0,
        200
    );
    assert!(wait_until(IO_TIMEOUT, || backend_view(&lb, a.addr).is_none()));
    let frozen = a.requests().len();
    let others = || b.requests().len() + c.requests().len();
    let mark = others();
    assert!(wait_until(IO_TIMEOUT, || others() > mark + 100));
    assert_eq!(
        a.requests().len(),
        frozen,
        "a removed backend got new requests"
    );

    let (seen, failures) = traffic.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(seen.values().sum::<usize>() > 200, "{seen:?}");
}
