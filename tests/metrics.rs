//! `/metrics` and `/api/history` under traffic: the counters move as the traffic says, and
//! `promtool check metrics` (installed by scripts/test.sh) accepts the exposition.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Write};

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
    let p99 = format!("sluice_backend_latency_seconds{{{b},quantile=\"0.99\"}}");
    // Latency quantiles follow once the control thread closes the second.
    let mut text = String::new();
    assert!(
        wait_until(IO_TIMEOUT, || {
            text = scrape(&lb);
            value(&text, "sluice_responses_total{class=\"2xx\"}") == Some(20.0)
                && value(&text, "sluice_connections_closed_total") == Some(1.0)
                && value(&text, &p99).is_some()
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
    assert!(value(&text, &p99).unwrap() > 0.0);
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

    promtool_check(&text);
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
