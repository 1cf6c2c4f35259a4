//! The load generator against the simulator, in-process, on free ports.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::init_logger;
use loadgen::http::{self, Body, ErrorKind, HttpConfig};
use loadgen::sim::{Profile, ServerPatch, Sim, SimConfig};

fn config(addr: std::net::SocketAddr, rate_rps: f64, duration_ms: u64) -> HttpConfig {
    let mut cfg = HttpConfig::for_addr(addr);
    cfg.rate_rps = rate_rps;
    cfg.duration = Duration::from_millis(duration_ms);
    cfg.connections = 4;
    cfg
}

#[test]
fn open_loop_against_uniform_sim_gets_every_scheduled_answer() {
    init_logger();
    let sim = Sim::start(
        SimConfig::new(Profile::Uniform)
            .with_servers(1)
            .with_service_time_ms(1),
    )
    .unwrap();
    let mut cfg = config(sim.server_addrs()[0], 500.0, 2_000);
    cfg.path = "/work".into();
    let report = http::run(&cfg).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.scheduled, 1_000);
    assert_eq!(
        (report.sent, report.requests, report.unsent),
        (1_000, 1_000, 0)
    );
    assert_eq!(report.status_count(200), 1_000);
    assert_eq!(report.status.len(), 1);
    // The simulator saw exactly what the generator sent.
    let server = &sim.servers()[0];
    assert_eq!(server.requests, 1_000);
    assert_eq!(server.status.get("200"), Some(&1_000));
    assert!(
        report.latency_us.p50 >= 1_000,
        "service time is 1 ms: {:?}",
        report.latency_us
    );
}

#[test]
fn closed_loop_with_two_threads_counts_match_the_sim() {
    init_logger();
    let sim = Sim::start(
        SimConfig::new(Profile::Uniform)
            .with_servers(2)
            .with_service_time_ms(0),
    )
    .unwrap();
    let mut cfg = config(sim.server_addrs()[1], 0.0, 500);
    cfg.threads = 2;
    let report = http::run(&cfg).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.requests > 100, "{}", report.requests);
    assert_eq!(report.requests, report.sent);
    assert_eq!(sim.servers()[1].requests, report.requests);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["requests"], report.requests);
    assert_eq!(json["status"]["200"], report.requests);
    assert!(json["errors"].as_object().unwrap().is_empty());
    for p in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        assert!(json["latency_us"][p].is_u64(), "{p}");
    }
    assert!(json["throughput_rps"].is_f64());
}

#[test]
fn id24_bodies_reach_the_ledger_as_distinct_ids() {
    init_logger();
    let sim = Sim::start(
        SimConfig::new(Profile::Flaky1)
            .with_servers(1)
            .with_service_time_ms(0),
    )
    .unwrap();
    sim.patch(
        0,
        ServerPatch {
            success_rate: Some(1.0),
            ..Default::default()
        },
    )
    .unwrap();
    let mut cfg = config(sim.server_addrs()[0], 200.0, 1_000);
    cfg.method = "POST".into();
    cfg.body = Body::Id24;
    cfg.seed = Some(7);
    let report = http::run(&cfg).unwrap();
    assert_eq!(report.status_count(200), 200);
    let score = sim.score();
    assert_eq!((score.ids, score.accepted, score.attempts), (200, 200, 200));
}

#[test]
fn close_mode_and_source_addresses_use_a_connection_per_request() {
    init_logger();
    let sim = common::instant_sim();
    let mut cfg = config(sim.server_addrs()[0], 200.0, 500);
    cfg.close = true;
    cfg.source_ips = vec![
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
    ];
    let report = http::run(&cfg).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.status_count(200), 100);
}

#[test]
fn a_stalled_server_produces_timeouts_and_the_run_still_ends() {
    init_logger();
    let sim = common::instant_sim();
    sim.patch(
        0,
        ServerPatch {
            stall_ms: Some(60_000),
            ..Default::default()
        },
    )
    .unwrap();
    let mut cfg = config(sim.server_addrs()[0], 50.0, 500);
    cfg.timeout = Duration::from_millis(200);
    let report = http::run(&cfg).unwrap();
    assert_eq!(report.requests, 0);
    assert!(
        report.error_count(ErrorKind::Timeout) >= 4,
        "{:?}",
        report.errors
    );
    assert_eq!(report.errors.keys().collect::<Vec<_>>(), vec!["timeout"]);
}

#[test]
fn a_closed_port_counts_connect_errors() {
    init_logger();
    let addr = common::refused_addr();
    let report = http::run(&config(addr, 100.0, 300)).unwrap();
    assert_eq!(report.requests, 0);
    assert!(
        report.error_count(ErrorKind::Connect) > 0,
        "{:?}",
        report.errors
    );
}

#[test]
fn warmup_requests_are_sent_but_not_counted() {
    init_logger();
    let sim = common::instant_sim();
    let mut cfg = config(sim.server_addrs()[0], 200.0, 500);
    cfg.warmup = Duration::from_millis(500);
    let report = http::run(&cfg).unwrap();
    assert_eq!((report.scheduled, report.requests), (100, 100));
    assert_eq!(sim.servers()[0].requests, 200);
}
