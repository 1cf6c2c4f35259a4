//! `/metrics` and `/api/history` under traffic: the counters move as the traffic says, and
//! `promtool check metrics` (installed by scripts/test.sh) accepts the exposition.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn counters_follow_the_traffic_and_promtool_accepts_them() {
    let backend = HttpBackend::start(|r| {
        if r.target == "/fail" {
            Reply::status(503, b"no")
        } else {
            Reply::ok(b"hello")
        }
    });
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..30 {
        w.write_all(&get(if i % 3 == 0 { "/fail" } else { "/ok" }))
            .unwrap();
        read_response(&mut r, false).unwrap();
    }
    drop((w, r));
    // Workers hand over their counts once a second.
    let b = format!("backend=\"{}\"", backend.addr);
    let inf = format!("sluice_backend_latency_seconds_bucket{{{b},le=\"+Inf\"}}");
    let mut text = String::new();
    assert!(
        wait_until(IO_TIMEOUT, || {
            text = scrape(&lb);
            value(&text, "sluice_responses_total{class=\"2xx\"}") == Some(20.0)
                && value(&text, "sluice_connections_closed_total") == Some(1.0)
                && value(&text, &inf) == Some(30.0)
        }),
        "{text}"
    );
    assert_eq!(
        value(&text, "sluice_responses_total{class=\"5xx\"}"),
        Some(10.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("sluice_backend_responses_total{{{b},class=\"2xx\"}}")
        ),
        Some(20.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("sluice_backend_responses_total{{{b},class=\"5xx\"}}")
        ),
        Some(10.0)
    );
    assert_eq!(value(&text, "sluice_attempts_total"), Some(30.0));
    assert_eq!(value(&text, "sluice_retries_total"), Some(0.0));
    assert_eq!(value(&text, "sluice_connections_accepted_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            &format!("sluice_backend_latency_seconds_count{{{b}}}")
        ),
        Some(30.0)
    );
    assert!(value(&text, &format!("sluice_backend_latency_seconds_sum{{{b}}}")).unwrap() > 0.0);
    let b2 = format!("code=\"2xx\",{b}");
    let b5 = format!("code=\"5xx\",{b}");
    assert_eq!(
        value(&text, &format!("sluice_http_requests_total{{{b2}}}")),
        Some(20.0)
    );
    assert_eq!(
        value(&text, &format!("sluice_http_requests_total{{{b5}}}")),
        Some(10.0)
    );
    assert_eq!(
        value(&text, "sluice_http_request_duration_seconds_count"),
        Some(30.0)
    );
    assert!(value(&text, "sluice_received_bytes_total").unwrap() >= 30.0 * 30.0);
    assert!(value(&text, "sluice_sent_bytes_total").unwrap() > 0.0);
    assert_eq!(
        value(&text, &format!("sluice_backend_up{{{b}}}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("sluice_backend_in_flight{{{b}}}")),
        Some(0.0)
    );
    assert_eq!(value(&text, "sluice_table_version"), Some(1.0));

    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: scripts/test.sh installs it (Debian package prometheus)");
    promtool
        .stdin
        .as_ref()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn history_has_one_point_per_second_with_the_traffic() {
    let backend = HttpBackend::start(|_| Reply::ok(b"x"));
    let lb = Sluice::http(&[backend.addr]);
    for _ in 0..10 {
        assert_eq!(roundtrip(lb.addr, &get("/")).status, 200);
    }
    let mut history = serde_json::Value::Null;
    assert!(
        wait_until(IO_TIMEOUT, || {
            history = lb.api("GET", "/api/history", None).1;
            history.as_array().is_some_and(|h| {
                h.iter()
                    .map(|p| p["requests_per_s"].as_f64().unwrap())
                    .sum::<f64>()
                    >= 10.0
            })
        }),
        "{history}"
    );
    let points = history.as_array().unwrap();
    let busy = points
        .iter()
        .find(|p| p["requests_per_s"].as_f64().unwrap() > 0.0)
        .unwrap();
    assert!(
        busy["p50_ms"].is_number() && busy["t_ms"].as_u64().unwrap() > 1_600_000_000_000,
        "{busy}"
    );
}
