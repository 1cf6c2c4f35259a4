//! The dashboard at `GET /` of the admin listener. One test reads the page over plain HTTP; the
//! other is end to end: a real headless Chromium (Debian's, driven by playwright-core through
//! `tests/browser/dashboard.mjs`) opens the dashboard of an in-process sluice under traffic, waits
//! for the four charts to be drawn and the backend rows to appear, clicks Disable on one backend and
//! waits for its row to say so; the API must then agree. Others check the certificate banner, the
//! top-clients panel and the columns of what `bandit` learned. scripts/test.sh installs Chromium and the
//! node package.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;

/// Longer than the script's own watchdog, so the script normally reports its own failure.
const BROWSER_LIMIT: Duration = Duration::from_secs(300);
const INSTALL_HELP: &str =
    "run scripts/test.sh, which installs them (Debian package chromium; npm ci --prefix tests/browser)";
const CHARTS: [&str; 4] = ["chart-rps", "chart-errors", "chart-conns", "chart-latency"];

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Fails with a pointer to scripts/test.sh when something the browser needs is missing.
fn require_browser_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: the dashboard test drives Chromium from node; {INSTALL_HELP}"
    );
    assert!(
        Path::new(&chromium()).exists(),
        "no Chromium at {}; {INSTALL_HELP}",
        chromium()
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is not in tests/browser/node_modules; {INSTALL_HELP}"
    );
}

/// Runs `node tests/browser/dashboard.mjs ARGS`; returns whether it exited 0, its stdout and
/// stderr. Killed if it outlives [`BROWSER_LIMIT`].
fn run_browser(args: &[String]) -> (bool, String, String) {
    let mut child = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .args(args)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node ({e}); {INSTALL_HELP}"));
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let exited = wait_until(BROWSER_LIMIT, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut stderr = stderr.join().unwrap();
    if !exited {
        stderr.push_str(&format!("\n(killed after {BROWSER_LIMIT:?})"));
    }
    (status.success(), stdout.join().unwrap(), stderr)
}

#[test]
fn the_dashboard_is_one_html_document_that_loads_nothing_else() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    let resp = roundtrip(lb.admin, &get("/"));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = resp.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let page = resp.text();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("<canvas") && page.contains("window.SluiceCharts"));
    assert!(!page.contains("<script src") && !page.contains("stylesheet"));

    let head = roundtrip(lb.admin, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn a_click_on_disable_in_the_dashboard_disables_the_backend() {
    require_browser_tools();
    let backends: Vec<HttpBackend> = (0..3)
        .map(|i| HttpBackend::start(move |_| Reply::ok(format!("backend {i}").as_bytes())))
        .collect();
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let lb = Sluice::http(&addrs);
    let traffic = Traffic::start(lb.addr, 2);
    let target = addrs[1];

    let (ok, stdout, stderr) = run_browser(&[
        format!("http://{}/", lb.admin),
        "--disable".into(),
        target.to_string(),
        "--rows".into(),
        addrs.len().to_string(),
    ]);
    assert!(ok, "the browser check failed:\n{stderr}\n{stdout}");
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no summary from dashboard.mjs ({e}):\n{stdout}\n{stderr}"));
    for chart in CHARTS {
        assert!(
            seen["charts"][chart].as_u64() >= Some(2),
            "{chart} drew too little: {seen}"
        );
    }
    let rows: Vec<String> = seen["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    assert_eq!(rows, expected);
    assert_eq!(seen["disabled"], target.to_string());

    for addr in &addrs {
        let view = backend_view(&lb, *addr).unwrap();
        assert_eq!(view["enabled"], *addr != target, "{view}");
    }
    let (by_body, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(by_body.contains_key("backend 0") && by_body.contains_key("backend 2"));
}

#[test]
fn the_dashboard_warns_of_a_certificate_that_expires_within_14_days() {
    use common::edge::TempDir;
    use common::proc::SluiceProc;
    use common::tls_files::{tls_flag, TestCa};
    require_browser_tools();
    let ca = TestCa::new("sluice test CA");
    let dir = TempDir::new("tls-dashboard");
    let lasting = ca
        .leaf_for_days(&["site.test"], 1, 90)
        .write(&dir.0, "site");
    let soon = ca.leaf_for_days(&["soon.test"], 2, 5).write(&dir.0, "soon");
    let backend = HttpBackend::start(|_| Reply::ok(b"x"));
    let p = SluiceProc::start(&[
        "--backend".into(),
        backend.addr.to_string(),
        "--tls".into(),
        tls_flag(&lasting),
        "--tls".into(),
        tls_flag(&soon),
    ]);
    let soon_file = soon.0.display().to_string();
    let (ok, stdout, stderr) = run_browser(&[
        format!("http://{}/", p.admin),
        "--tls-warning".into(),
        soon_file.clone(),
    ]);
    assert!(ok, "the browser check failed:\n{stderr}\n{stdout}");
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no summary from dashboard.mjs ({e}):\n{stdout}\n{stderr}"));
    let banner = seen["tlsWarning"].as_str().unwrap();
    assert!(
        banner.contains("soon.test") && banner.contains("expires in 5 days"),
        "{banner}"
    );
    assert!(!banner.contains("site.test"), "{banner}");
    let rows = seen["certs"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{seen}");
    assert_eq!(rows[0]["file"], lasting.0.display().to_string());
    assert_eq!(rows[0]["expiring"], false);
    assert_eq!(rows[1]["file"], soon_file);
    assert_eq!(rows[1]["expiring"], true);
    assert_eq!(rows[1]["daysLeft"], 5);
}

#[test]
fn the_top_clients_panel_shows_the_busiest_and_the_refused_clients() {
    require_browser_tools();
    let backend = HttpBackend::start(|_| Reply::ok(b"ok"));
    let mut cfg = test_config(sluice::config::Mode::Http);
    cfg.client_limits = Some(sluice::limits::ClientLimits {
        max_conns: None,
        rate: Some(sluice::limits::RateLimit::parse("5/s,burst=5").unwrap()),
        hash_seed: Some(1),
    });
    let lb = Sluice::start(
        cfg,
        &[backend.addr],
        sluice::strategy::StrategyKind::RoundRobin,
    );
    // One client from 127.0.0.1 sends as fast as it can: most of it refused with 429.
    let traffic = Traffic::start(lb.addr, 1);
    let (ok, stdout, stderr) = run_browser(&[
        format!("http://{}/", lb.admin),
        "--clients".into(),
        "1".into(),
    ]);
    let (_, failures) = traffic.finish();
    assert!(ok, "the browser check failed:\n{stderr}\n{stdout}");
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no summary from dashboard.mjs ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(
        seen["clients"]["requests"][0]["client"], "127.0.0.1",
        "{seen}"
    );
    assert_eq!(
        seen["clients"]["refusals"][0]["client"], "127.0.0.1",
        "{seen}"
    );
    assert!(
        failures.iter().any(|f| f.starts_with("429")),
        "the client was refused: {failures:?}"
    );
}

#[test]
fn the_backend_rows_show_what_bandit_learned() {
    require_browser_tools();
    let (lb, refusing, good) = bandit_after_a_refusal();
    let (ok, stdout, stderr) = run_browser(&[
        format!("http://{}/", lb.admin),
        "--rows".into(),
        "2".into(),
        "--learned".into(),
        "2".into(),
    ]);
    assert!(ok, "the browser check failed:\n{stderr}\n{stdout}");
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no summary from dashboard.mjs ({e}):\n{stdout}\n{stderr}"));
    let row = |addr: SocketAddr| {
        seen["learned"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == addr.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("no row for {addr}: {seen}"))
    };
    // What tests/admin_api.rs reads from /api/status after the same traffic, as the page shows it.
    let r = row(refusing.addr);
    assert_eq!(r["limit"], "1 / 1000 ms", "{r}");
    let pacing = r["pacing"].as_str().unwrap();
    assert!(
        pacing.starts_with("backing-off "),
        "backing off for the Retry-After, with the time left: {r}"
    );
    let g = row(good.addr);
    assert_eq!(g["limit"], "none yet", "{g}");
    assert_eq!(g["pacing"], "unlimited", "{g}");
    let belief = g["belief"].as_str().unwrap();
    let percent: f64 = belief
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("{g}"));
    assert!(percent > 80.0, "a success estimate as a percentage: {g}");
}
