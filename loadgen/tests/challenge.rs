//! The challenge client straight against a flaky1 server: with no balancer in between, every
//! answer is the ledger's verdict, so the two must agree exactly.

mod common;

use std::time::Duration;

use common::init_logger;
use loadgen::challenge::{self, ChallengeConfig};
use loadgen::sim::{Profile, Sim, SimConfig};

#[test]
fn challenge_client_against_flaky1_agrees_with_the_ledger() {
    init_logger();
    let sim = Sim::start(
        SimConfig::new(Profile::Flaky1)
            .with_seed(3)
            .with_service_time_ms(1),
    )
    .unwrap();
    let target = sim.server_addrs()[4].to_string();
    let mut cfg = ChallengeConfig::new(target, sim.control_addr());
    cfg.rps = 50.0;
    cfg.duration = Duration::from_secs(2);
    cfg.seed = Some(11);
    let report = challenge::run(&cfg).unwrap();

    assert_eq!(report.ids_sent, 100);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let ok = report.status.get("200").copied().unwrap_or(0);
    assert_eq!(report.accepted, ok);
    assert_eq!(
        (
            report.attempts,
            report.penalty_attempts,
            report.never_attempted
        ),
        (100, 0, 0)
    );
    assert_eq!(report.disagreements, 0);
    assert_eq!(report.score, ok as i64);
    // The simulator's whole ledger is this run's (the client reset it first).
    assert_eq!((report.sim.ids, report.sim.accepted), (100, ok));

    // Without limits the oracle puts all three attempts on the best server.
    let best = sim
        .servers()
        .iter()
        .map(|s| s.success_rate)
        .fold(0.0, f64::max);
    let share = 1.0 - (1.0 - best).powi(3);
    assert!((report.oracle_accepted_share - share).abs() < 1e-9);
    assert!((report.oracle_bound - share * 100.0).abs() < 1e-6);
    let failures: u64 = report
        .status
        .iter()
        .filter(|(k, _)| *k != "200")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(ok + failures, 100);
}
