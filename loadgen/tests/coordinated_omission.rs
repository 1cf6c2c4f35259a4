//! The generator does not coordinate with a stalled server: a 1 s stall during a 10 s
//! fixed-rate run shows in the tail, and the send schedule holds. The only long test, and the
//! only one with timing bounds (generous ones).

mod common;

use std::time::Duration;

use common::init_logger;
use loadgen::http::{self, HttpConfig};
use loadgen::sim::ServerPatch;

const RATE_RPS: f64 = 200.0;
const DURATION_S: u64 = 10;

#[test]
fn a_one_second_stall_shows_in_p99_and_the_schedule_holds() {
    init_logger();
    let sim = common::instant_sim();
    // Every answer due between 4 s and 5 s into the run waits until 5 s.
    let stall = ServerPatch {
        stall_after_ms: Some(4_000),
        stall_ms: Some(1_000),
        ..Default::default()
    };
    sim.patch(0, stall).unwrap();
    let mut cfg = HttpConfig::for_addr(sim.server_addrs()[0]);
    cfg.rate_rps = RATE_RPS;
    cfg.duration = Duration::from_secs(DURATION_S);
    cfg.connections = 8;
    let report = http::run(&cfg).unwrap();

    let expected = RATE_RPS * DURATION_S as f64;
    assert_eq!(report.scheduled as f64, expected);
    let on_schedule = (report.sent as f64 - expected).abs() / expected;
    assert!(on_schedule < 0.03, "sent {} of {expected}", report.sent);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // About 10% of requests fall due in the stall, waiting up to 1 s: 5% wait over 500 ms.
    assert!(
        report.latency_us.p99 >= 500_000,
        "p99 {} us hides the stall",
        report.latency_us.p99
    );
    assert!(
        report.latency_us.max >= 900_000,
        "max {}",
        report.latency_us.max
    );
}
