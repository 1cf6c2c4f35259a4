//! The loadgen binary: exit codes, clear errors, and the JSON last line.

mod common;

use std::process::{Command, Output};

use common::init_logger;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("running loadgen {args:?}: {e}"))
}

#[track_caller]
fn assert_usage_error(args: &[&str], needle: &str) {
    let out = loadgen(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

fn last_json_line(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    assert_usage_error(&["http", "ftp://x/"], "only http:// and https:// URLs");
    assert_usage_error(&["http", "http://127.0.0.1:1/", "--rate=-5"], "--rate");
    assert_usage_error(
        &["http", "http://127.0.0.1:1/", "--header", "nocolon"],
        "Name: value",
    );
    assert_usage_error(
        &[
            "http",
            "http://127.0.0.1:1/",
            "--source-ips",
            "127.0.0.9-127.0.0.1",
        ],
        "ends before it starts",
    );
    assert_usage_error(&["sim", "--ports", "4000-4000"], "empty range");
    assert_usage_error(&["sim", "--profile", "flaky9"], "unknown profile");
    assert_usage_error(
        &["sim", "--challenge", "--profile", "uniform"],
        "cannot be used with",
    );
    assert_usage_error(&["hold", "127.0.0.1:1", "-c", "40000"], "--procs 3");
    assert_usage_error(
        &["challenge", "--target", "127.0.0.1:1", "--rps", "0"],
        "--rps",
    );
}

#[test]
fn http_json_is_the_last_line() {
    init_logger();
    let sim = common::instant_sim();
    let url = format!("http://{}/work", sim.server_addrs()[0]);
    let out = loadgen(&[
        "http", &url, "--rate", "100", "-d", "500ms", "-c", "2", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = last_json_line(&out);
    assert_eq!(json["requests"], 50);
    assert_eq!(json["status"]["200"], 50);
    assert_eq!(json["errors"], serde_json::json!({}));
}

#[test]
fn hold_with_procs_merges_its_children() {
    init_logger();
    let sim = common::instant_sim();
    let target = sim.server_addrs()[0].to_string();
    let out = loadgen(&[
        "hold",
        &target,
        "-c",
        "20",
        "--procs",
        "2",
        "-d",
        "1500ms",
        "--ping-interval",
        "200ms",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = last_json_line(&out);
    assert_eq!(json["connections"], 20);
    assert_eq!(json["procs"], 2);
    assert_eq!(json["established_at_end"], 20);
    assert_eq!(json["failed"], 0);
    assert_eq!(sim.servers()[0].requests, json["pings"].as_u64().unwrap());
}
