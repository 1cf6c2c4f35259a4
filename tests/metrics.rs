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

/// Prometheus' `histogram_quantile(q, sum by (le) (...))` over the `_bucket` series named `name`
/// of several scrapes: buckets summed by `le`, then linear interpolation inside the bucket where
/// the rank falls (the first bucket's lower bound is 0).
fn histogram_quantile(q: f64, name: &str, scrapes: &[String]) -> f64 {
    let mut by_le: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    for text in scrapes {
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{")) else {
                continue;
            };
            let le = rest
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            // Ordered by bound: f64 bits of positive numbers sort like the numbers.
            by_le.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += n;
        }
    }
    let buckets: Vec<(f64, f64)> = by_le.into_values().collect();
    let total = buckets.last().unwrap().1;
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &buckets {
        if count >= rank {
            assert!(bound.is_finite(), "the quantile is in +Inf");
            return lower.0 + (bound - lower.0) * (rank - lower.1) / (count - lower.1);
        }
        lower = (bound, count);
    }
    unreachable!()
}

/// The smallest bucket bound (seconds) at or above `v`: where a value of `v` is counted.
fn bucket_bound(v: f64) -> f64 {
    const BOUNDS: [f64; 18] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0,
    ];
    BOUNDS
        .into_iter()
        .find(|&b| b >= v)
        .unwrap_or(f64::INFINITY)
}

/// The `q` quantile (nearest rank) of `values`.
fn nearest_rank(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

#[test]
fn histogram_quantile_over_two_instances_finds_the_p99_of_all_their_requests() {
    // Instance A serves 90 quick requests; instance B 10 that its backend holds for 300 ms.
    // Over all 100, the 99th falls among the slow ones, so histogram_quantile over the summed
    // buckets must land at 300 ms or more (in the bucket above 0.25 s), where A alone would
    // not. What sluice measures of a request is within what its client measured, so the
    // client's own timings bound the answer from above, whatever the machine's speed.
    let quick = HttpBackend::start(|_| Reply::ok(b"q"));
    let slow = HttpBackend::start(|_| {
        std::thread::sleep(std::time::Duration::from_millis(300)); // the backend's service time
        Reply::ok(b"s")
    });
    let a = Sluice::http(&[quick.addr]);
    let b = Sluice::http(&[slow.addr]);
    let timed = |addr| {
        let t = std::time::Instant::now();
        assert_eq!(roundtrip(addr, &get("/")).status, 200);
        t.elapsed().as_secs_f64()
    };
    let mut seen: Vec<f64> = (0..90).map(|_| timed(a.addr)).collect();
    let seen_by_a = seen.clone();
    let slow_clients: Vec<_> = (0..10)
        .map(|_| {
            let addr = b.addr;
            std::thread::spawn(move || timed(addr))
        })
        .collect();
    seen.extend(slow_clients.into_iter().map(|c| c.join().unwrap()));
    let count = "sluice_http_request_duration_seconds_count";
    let (mut ta, mut tb) = (String::new(), String::new());
    assert!(wait_until(IO_TIMEOUT, || {
        ta = scrape(&a);
        tb = scrape(&b);
        value(&ta, count) == Some(90.0) && value(&tb, count) == Some(10.0)
    }));
    let both = [ta.clone(), tb.clone()];
    for name in [
        "sluice_http_request_duration_seconds",
        "sluice_backend_latency_seconds",
    ] {
        let p99 = histogram_quantile(0.99, name, &both);
        assert!(p99 > 0.25, "{name}: p99 {p99} is among the 300 ms requests");
        let upper = bucket_bound(nearest_rank(&seen, 0.99));
        assert!(
            p99 <= upper,
            "{name}: p99 {p99}, the clients saw at most {upper}"
        );
        let p50 = histogram_quantile(0.5, name, &both);
        assert!(
            p50 <= bucket_bound(nearest_rank(&seen, 0.5)),
            "{name}: p50 {p50}"
        );
        let p99_of_a = histogram_quantile(0.99, name, std::slice::from_ref(&ta));
        assert!(
            p99_of_a <= bucket_bound(nearest_rank(&seen_by_a, 0.99)),
            "{name}: A alone {p99_of_a}"
        );
    }
}
