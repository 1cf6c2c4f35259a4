//! The adaptive decision engine end to end: `loadgen sim` makes one backend slow, and
//! `adaptive` moves from round-robin to a latency-aware strategy within the switch interval, then
//! back when the backend recovers. Every switch is visible in `GET /api/strategy` with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::*;
use loadgen::sim::{Profile, ServerPatch, Sim, SimConfig, SimHandle};
use sluice::config::Mode;
use sluice::strategy::StrategyKind;

/// Three simulated servers of `profile` and `adaptive` sluice in front of them.
fn adaptive_over_sim(
    profile: Profile,
    service_time_ms: u64,
    switch_interval_ms: u64,
) -> (SimHandle, Sluice) {
    let sim = Sim::start(
        SimConfig::new(profile)
            .with_servers(3)
            .with_service_time_ms(service_time_ms),
    )
    .unwrap();
    let mut s = settings_for(
        test_config(Mode::Http),
        &sim.server_addrs(),
        StrategyKind::Adaptive,
    );
    s.control.switch_interval_ms = switch_interval_ms;
    (sim, Sluice::with_settings(s))
}

#[test]
fn adaptive_leaves_round_robin_for_a_slow_backend_and_returns_when_it_recovers() {
    let (sim, lb) = adaptive_over_sim(Profile::Uniform, 20, 2_000);
    let traffic = Traffic::start(lb.addr, 4);
    let strategy = || lb.api("GET", "/api/strategy", None).1;
    assert_eq!(strategy()["configured"], "adaptive");
    assert_eq!(strategy()["active"], "round-robin");

    // One backend slows down 20-fold. (Service times of tens of ms keep scheduling jitter on a
    // busy machine small next to them: the rules compare latencies.)
    sim.patch(
        1,
        ServerPatch {
            service_time_ms: Some(400),
            ..Default::default()
        },
    )
    .unwrap();
    let limit = Duration::from_secs(60);
    assert!(
        wait_until(limit, || strategy()["active"] == "least-time"),
        "still {} after the slowdown",
        strategy()
    );
    let view = strategy();
    assert!(
        view["reason"].as_str().unwrap().contains("latency spread"),
        "{view}"
    );
    assert!(view["switches"].as_u64().unwrap() >= 1);

    // It recovers: the spread goes away and round-robin comes back.
    sim.patch(
        1,
        ServerPatch {
            service_time_ms: Some(20),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(90), || strategy()["active"]
            == "round-robin"),
        "still {} after the recovery",
        strategy()
    );
    assert!(strategy()["reason"]
        .as_str()
        .unwrap()
        .contains("look alike"));

    let (_, failures) = traffic.finish();
    assert!(failures.is_empty(), "switching lost requests: {failures:?}");
    let (_, metrics) = lb.api("GET", "/api/status", None);
    assert_eq!(metrics["strategy"]["configured"], "adaptive");
}

#[test]
fn adaptive_runs_least_connections_for_a_heavy_tail_and_stays() {
    // Heavy-tailed backends: 5% of requests take 10-50x the service time, four workers each.
    let (_sim, lb) = adaptive_over_sim(Profile::Heavytail, 2, 1_000);
    let traffic = Traffic::start(lb.addr, 6);
    let strategy = || lb.api("GET", "/api/strategy", None).1;
    assert!(
        wait_until(Duration::from_secs(60), || strategy()["active"]
            == "least-connections"),
        "still {}",
        strategy()
    );
    let view = strategy();
    assert!(
        view["reason"].as_str().unwrap().contains("heavy tail"),
        "{view}"
    );
    // Least connections evens out the queues; the tail stays, and so does the choice, although
    // the switch interval would allow a switch every second.
    let switches = view["switches"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let later = strategy();
    assert_eq!(later["active"], "least-connections", "{later}");
    assert_eq!(later["switches"].as_u64().unwrap(), switches, "{later}");
    let (_, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
}
