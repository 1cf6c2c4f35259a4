//! The connection holder against the simulator, in-process.

mod common;

use std::time::Duration;

use common::init_logger;
use loadgen::hold::{self, HoldConfig};

#[test]
fn holder_keeps_every_connection_and_pings_them() {
    init_logger();
    let sim = common::instant_sim();
    let mut cfg = HoldConfig::new(sim.server_addrs()[0]);
    cfg.connections = 50;
    cfg.ping_interval = Duration::from_millis(200);
    cfg.duration = Duration::from_millis(1_500);
    let mut ticks = Vec::new();
    let summary = hold::run(&cfg, |t| ticks.push(t.clone())).unwrap();
    assert_eq!(
        (summary.max_established, summary.established_at_end),
        (50, 50)
    );
    assert_eq!((summary.failed, summary.ping_errors), (0, 0));
    assert!(summary.pings > 0);
    assert_eq!(ticks.first().map(|t| t.established), Some(50));
    // Every ping reached the simulator as a request.
    assert_eq!(sim.servers()[0].requests, summary.pings);
}

#[test]
fn holder_counts_failures_against_a_closed_port() {
    init_logger();
    let addr = common::refused_addr();
    let mut cfg = HoldConfig::new(addr);
    cfg.connections = 5;
    cfg.duration = Duration::from_millis(300);
    let summary = hold::run(&cfg, |_| {}).unwrap();
    assert_eq!(summary.established_at_end, 0);
    assert!(summary.failed >= 5, "{summary:?}");
}
