//! The simulator over real sockets: profiles, health, control API patches.

mod common;

use common::{body_text, get, init_logger, post};
use loadgen::sim::{Profile, Score, ServerPatch, ServerReport, Sim, SimConfig};

const ID: &[u8] = b"abcdefghijklmnopqrstuvwx";

#[test]
fn health_goes_503_when_a_server_is_marked_down() {
    init_logger();
    let sim = Sim::start(SimConfig::new(Profile::Uniform).with_servers(2)).unwrap();
    let addr = sim.server_addrs()[1];
    assert_eq!(get(addr, "/health").status, 200);
    let down = ServerPatch {
        down: Some(true),
        ..Default::default()
    };
    let report = sim.patch(1, down).unwrap();
    assert!(report.down);
    assert_eq!(get(addr, "/health").status, 503);
    assert_eq!(get(addr, "/work").status, 503);
    assert_eq!(get(sim.server_addrs()[0], "/health").status, 200);
    // And back up through the control API.
    let r = post(sim.control_addr(), "/servers/1", br#"{"down":false}"#);
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(get(addr, "/health").status, 200);
}

#[test]
fn control_api_patch_changes_behaviour() {
    init_logger();
    let sim = Sim::start(
        SimConfig::new(Profile::Flaky1)
            .with_servers(3)
            .with_service_time_ms(0),
    )
    .unwrap();
    let control = sim.control_addr();
    let port = sim.server_addrs()[2].port();
    // Select by port: success 0 means every attempt fails with 500 or 503.
    let r = post(
        control,
        &format!("/servers/{port}"),
        br#"{"success_rate":0.0}"#,
    );
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let report: ServerReport = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((report.index, report.success_rate), (2, 0.0));
    for _ in 0..20 {
        let status = post(sim.server_addrs()[2], "/", ID).status;
        assert!(status == 500 || status == 503, "{status}");
    }
    post(control, "/servers/2", br#"{"success_rate":1.0}"#);
    assert_eq!(post(sim.server_addrs()[2], "/", ID).status, 200);

    let r = get(control, "/servers");
    let servers: Vec<ServerReport> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(servers.len(), 3);
    assert_eq!(servers[2].requests, 21);
    assert_eq!(servers[2].status.get("200"), Some(&1));
}

#[test]
fn control_api_rejects_bad_input_with_json_errors() {
    init_logger();
    let sim = Sim::start(SimConfig::new(Profile::Flaky1).with_servers(2)).unwrap();
    let control = sim.control_addr();
    for (path, body, status) in [
        ("/servers/7", &br#"{"down":true}"#[..], 404),
        ("/servers/0", br#"{"success_rate":2}"#, 400),
        ("/servers/0", br#"{"nonsense":1}"#, 400),
        ("/servers/0", b"not json", 400),
        ("/ledger/lookup", br#"{"ids":["short"]}"#, 400),
        ("/nowhere", b"", 404),
    ] {
        let r = post(control, path, body);
        assert_eq!(r.status, status, "{path}: {}", body_text(&r));
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(json["error"].is_string(), "{path}: {json}");
    }
}

#[test]
fn ledger_counts_attempts_and_reset_clears_it() {
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
            success_rate: Some(0.0),
            ..Default::default()
        },
    )
    .unwrap();
    let server = sim.server_addrs()[0];
    for _ in 0..5 {
        post(server, "/", ID);
    }
    assert_eq!(post(server, "/", b"not an id").status, 400);
    let score: Score = serde_json::from_slice(&get(sim.control_addr(), "/score").body).unwrap();
    assert_eq!(
        (
            score.ids,
            score.attempts,
            score.penalty_attempts,
            score.score
        ),
        (1, 5, 2, -2)
    );
    assert_eq!(score.oracle_accepted_share, 0.0);
    let r = post(
        sim.control_addr(),
        "/ledger/lookup",
        br#"{"ids":["abcdefghijklmnopqrstuvwx"]}"#,
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["entries"]["abcdefghijklmnopqrstuvwx"]["attempts"], 5);
    post(sim.control_addr(), "/reset", b"");
    assert_eq!(sim.score().ids, 0);
    assert_eq!(sim.servers()[0].requests, 0);
}

#[test]
fn flaky2_answers_429_over_its_limit_and_still_counts_the_attempt() {
    init_logger();
    let sim = Sim::start(
        SimConfig::new(Profile::Flaky2)
            .with_servers(1)
            .with_service_time_ms(0),
    )
    .unwrap();
    sim.patch(
        0,
        ServerPatch {
            rate_limit_rps: Some(Some(2)),
            success_rate: Some(1.0),
            ..Default::default()
        },
    )
    .unwrap();
    let server = sim.server_addrs()[0];
    let statuses: Vec<u16> = (0..3).map(|_| post(server, "/", ID).status).collect();
    assert_eq!(statuses, vec![200, 200, 429]);
    assert_eq!(
        sim.ledger_entry(&ID.try_into().unwrap()).unwrap().attempts,
        3
    );
}

#[test]
fn stopping_the_sim_closes_its_ports() {
    init_logger();
    let sim = Sim::start(SimConfig::new(Profile::Uniform).with_servers(1)).unwrap();
    let addr = sim.server_addrs()[0];
    assert_eq!(get(addr, "/").status, 200);
    sim.stop();
    assert!(loadgen::client::request(addr, "GET", "/", None).is_err());
}

/// Polls `cond` until it holds (no fixed sleeps: it returns as soon as the state is reached).
#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        // A short pause between checks leaves the CPU to the threads being waited for.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn bounded_workers_queue_the_rest_and_report_the_queue() {
    use std::io::Write;
    init_logger();
    let mut cfg = SimConfig::new(Profile::Heavytail)
        .with_servers(1)
        .with_service_time_ms(600_000);
    cfg.workers_per_server = 1;
    let sim = Sim::start(cfg).unwrap();
    let addr = sim.server_addrs()[0];
    let mut clients: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /work HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let queue = |sim: &loadgen::sim::SimHandle| {
        let s = &sim.servers()[0];
        (s.active, s.queue_depth)
    };
    wait_for("one in service, two queued", || queue(&sim) == (1, 2));
    // A queued client that leaves is no longer queued.
    clients.pop();
    wait_for("one queued", || queue(&sim) == (1, 1));
    // Unbounded workers: the queue drains into service at the next release; a fresh request
    // is admitted at once.
    sim.patch(
        0,
        ServerPatch {
            workers: Some(None),
            ..Default::default()
        },
    )
    .unwrap();
    let mut extra = std::net::TcpStream::connect(addr).unwrap();
    extra
        .write_all(b"GET /work HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_for("two in service", || queue(&sim) == (2, 1));
}

#[test]
fn sim_servers_spread_over_threads_all_answer() {
    init_logger();
    let mut cfg = SimConfig::new(Profile::Uniform)
        .with_servers(5)
        .with_service_time_ms(0);
    cfg.threads = 2;
    let sim = Sim::start(cfg).unwrap();
    for addr in sim.server_addrs() {
        assert_eq!(get(addr, "/work").status, 200);
    }
    assert!(sim.servers().iter().all(|s| s.requests == 1));
}
