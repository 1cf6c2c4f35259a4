//! The `sluice` binary as a user runs it: start-up messages, durable state across `kill -9`, a
//! corrupt state file, `sluice ctl` end to end, and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

use common::proc::{ctl, SluiceProc as Proc, NO_ARGS, SLUICE};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn state_survives_kill_9() {
    let dir = temp_dir("kill9");
    let state = dir.join("state.json");
    let state_arg = state.to_str().unwrap();
    let p = Proc::start(&["--state-file", state_arg, "--backend", "127.0.0.1:7001"]);
    assert_eq!(
        p.api(
            "POST",
            "/api/backends",
            Some(r#"{"address": "127.0.0.1:7002", "weight": 7}"#)
        )
        .0,
        201
    );
    assert_eq!(
        p.api("POST", "/api/backends/127.0.0.1:7001/disable", None)
            .0,
        200
    );
    assert_eq!(
        p.api(
            "PUT",
            "/api/strategy",
            Some(r#"{"strategy": "least-connections"}"#)
        )
        .0,
        200
    );
    let before = p.api("GET", "/api/backends", None).1;
    drop(p); // SIGKILL: no chance to save anything on the way out

    // Different flags this time: the state file wins.
    let p = Proc::start(&[
        "--state-file",
        state_arg,
        "--backend",
        "127.0.0.1:7999",
        "--strategy",
        "random",
    ]);
    // The configuration is what survives; revisions count on from the new start.
    let config = |list: serde_json::Value| -> Vec<serde_json::Value> {
        let mut list = list.as_array().unwrap().clone();
        for b in &mut list {
            b.as_object_mut().unwrap().remove("revision");
        }
        list
    };
    assert_eq!(
        config(p.api("GET", "/api/backends", None).1),
        config(before)
    );
    assert_eq!(
        p.api("GET", "/api/strategy", None).1["configured"],
        "least-connections"
    );
}

#[test]
fn a_corrupt_state_file_stops_start_up_and_is_left_alone() {
    let dir = temp_dir("corrupt");
    let state = dir.join("state.json");
    std::fs::write(&state, "{ not json").unwrap();
    let out = Command::new(SLUICE)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--state-file",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(state.to_str().unwrap()) && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{ not json");
}

#[test]
fn bad_flags_get_a_message_and_a_non_zero_exit() {
    for args in [
        &["--backend", "nowhere"][..],
        &["--strategy", "fastest"],
        &["--max-attempts", "0"],
        &["--buffer-size", "1024"],
        &["--connect-timeout", "3 parsecs"],
        &["--hash-key", "shoe-size"],
        &["--listen", "127.0.0.1:0", "--admin", "not an address"],
        &["--per-try-timeout", "2s", "--response-timeout", "1s"],
        &["--per-try-budget", "101"],
    ] {
        let out = Command::new(SLUICE).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
    let out = Command::new(SLUICE).arg("--help").output().unwrap();
    assert!(
        text(&out.stdout).contains("[default: 3s]"),
        "--help shows defaults"
    );
}

#[test]
fn header_buffer_and_upgrade_flags_out_of_range_are_refused_with_the_reason() {
    for (args, message) in [
        (
            &["--max-headers", "300"][..],
            "--max-headers must be between 1 and 256, not 300",
        ),
        (
            &["--request-id", "body"],
            "bad --request-id \"body\" (expected body-alnum24, header:NAME or off)",
        ),
        (
            &["--max-header-bytes", "100"],
            "--max-header-bytes must be between 256 and",
        ),
        (
            &["--buffer-size", "512"],
            "--buffer-size must be between 1024 and",
        ),
        (
            &["--max-response-header-bytes", "100"],
            "--max-response-header-bytes must be between 256 and",
        ),
        (
            &["--idle-timeout", "0"],
            "--idle-timeout must be longer than zero",
        ),
        (
            &["--allow-upgrade", "h2c"],
            "--allow-upgrade h2c is refused",
        ),
        (&["--allow-upgrade", "two words"], "is not a protocol name"),
        (
            &["--rate-limit-per-client", "fast"],
            "--rate-limit-per-client: rate must be a positive number",
        ),
        (
            &["--rate-limit-per-client", "10/h"],
            "rate unit must be /s or /m",
        ),
        (
            &["--max-conns-per-client", "0"],
            "--max-conns-per-client must be at least 1",
        ),
    ] {
        let out = Command::new(SLUICE).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn max_header_bytes_above_the_buffer_size_starts() {
    let p = Proc::start(&[
        "--max-headers",
        "256",
        "--max-header-bytes",
        "65536",
        "--buffer-size",
        "16384",
        "--retry-buffer",
        "8192",
    ]);
    assert_ne!(p.proxy.port(), 0);
}

#[test]
fn quiet_tunnels_may_stay_open_for_ever_and_response_heads_may_be_larger_than_a_buffer() {
    let help = Command::new(SLUICE).arg("--help").output().unwrap();
    let help = text(&help.stdout);
    for shown in [
        "--tunnel-idle-timeout <DURATION>",
        "[default: 1h]",
        "--max-response-header-bytes <BYTES>",
        "[default: 65536]",
    ] {
        assert!(help.contains(shown), "--help lacks {shown:?}");
    }
    let p = Proc::start(&[
        "--tunnel-idle-timeout",
        "0",
        "--max-response-header-bytes",
        "1048576",
        "--buffer-size",
        "16384",
        "--retry-buffer",
        "8192",
    ]);
    assert_ne!(p.proxy.port(), 0);
}

#[test]
fn ctl_end_to_end() {
    let p = Proc::start(&["--backend", "127.0.0.1:7101"]);
    let ok = |args: &[&str]| {
        let out = p.ctl(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let added = ok(&["backends", "add", "127.0.0.1:7102", "--weight", "3"]);
    assert!(
        added.contains("127.0.0.1:7102") && added.contains("ADDRESS"),
        "{added}"
    );
    let list = ok(&["backends", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(ok(&["backends", "disable", "127.0.0.1:7101"]).contains("disabled"));
    assert!(ok(&["backends", "enable", "127.0.0.1:7101"]).contains("up"));
    assert!(ok(&["backends", "weight", "127.0.0.1:7102", "9"]).contains(" 9 "));
    assert!(ok(&["strategy", "set", "least-connections"]).contains("configured: least-connections"));
    assert!(ok(&["strategy", "get"]).contains("active:     least-connections"));
    let status = ok(&["status"]);
    assert!(
        status.contains("table version")
            && status.contains("P99 MS")
            && status.contains("127.0.0.1:7102"),
        "{status}"
    );
    let top = ok(&["top", "-n", "2"]);
    assert_eq!(top.matches("table version").count(), 2, "{top}");
    assert!(ok(&["backends", "remove", "127.0.0.1:7102"]).contains("removing"));

    let missing = p.ctl(&["backends", "remove", "127.0.0.1:7999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("no backend 127.0.0.1:7999 (HTTP 404)"),
        "{}",
        text(&missing.stderr)
    );
    let bad = p.ctl(&["strategy", "set", "fastest"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("unknown strategy"));

    let nobody = ctl(&refused_addr().to_string(), &["status"]);
    assert_eq!(nobody.status.code(), Some(3));
    assert!(
        text(&nobody.stderr).contains("cannot reach"),
        "{}",
        text(&nobody.stderr)
    );
}

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let p = Proc::start(NO_ARGS);
    let resp = roundtrip(p.proxy, &get("/"));
    assert_eq!(resp.status, 503, "no backends yet: {resp:?}");
    p.signal(libc::SIGTERM);
    let (status, err) = p.wait_and_log();
    assert_eq!(status.code(), Some(0));
    assert!(
        err.contains("shutting down") && err.contains("stopped"),
        "{err}"
    );
}

#[test]
fn a_second_sluice_on_a_taken_port_refuses_to_start_unless_asked_to_share() {
    let first = Proc::start(NO_ARGS);
    let taken = first.proxy.to_string();
    let out = Command::new(SLUICE)
        .args(["--listen", &taken, "--admin", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("another process listens there"),
        "{}",
        text(&out.stderr)
    );
    let shared = Proc::start_listening_as(&[
        "--listen",
        &taken,
        "--admin",
        "off",
        "--reuse-port",
        "shared",
    ]);
    assert_eq!(shared.proxy, first.proxy);
}

#[test]
fn a_taken_admin_port_suggests_another_or_off() {
    let first = Proc::start(NO_ARGS);
    let out = Command::new(SLUICE)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            &first.admin.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--admin off"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn listen_takes_a_bare_port_or_colon_port() {
    // Port 0 in both forms: the kernel picks a free port, so parallel tests never collide.
    for form in ["0", ":0"] {
        let p = Proc::start_listening_as(&["--listen", form, "--admin", "off"]);
        assert_eq!(p.proxy.ip(), std::net::Ipv4Addr::UNSPECIFIED, "{form}");
        assert_ne!(p.proxy.port(), 0, "{form}");
    }
}

#[test]
fn ctl_takes_the_admin_address_as_a_url_too() {
    let p = Proc::start(&["--backend", "127.0.0.1:7301"]);
    for admin in [
        format!("http://{}", p.admin),
        format!("http://{}/", p.admin),
    ] {
        let out = ctl(&admin, &["backends", "list"]);
        assert!(out.status.success(), "{admin}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("127.0.0.1:7301"));
    }
    let out = ctl(&format!("https://{}", p.admin), &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("https"), "{}", text(&out.stderr));
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(SLUICE).arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = text(&out.stdout);
    assert!(line.starts_with("sluice 0."), "{line}");
    let commit = line
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
}

#[test]
fn start_up_says_what_the_state_file_restored_and_which_flags_it_overrides() {
    let dir = temp_dir("restored");
    let state = dir.join("state.json");
    let state_arg = state.to_str().unwrap();
    let p = Proc::start(&["--state-file", state_arg, "--backend", "127.0.0.1:7401"]);
    let add = r#"{"address": "127.0.0.1:7402"}"#;
    assert_eq!(p.api("POST", "/api/backends", Some(add)).0, 201);
    drop(p);
    let p = Proc::start(&[
        "--state-file",
        state_arg,
        "--backend",
        "127.0.0.1:7409",
        "--strategy",
        "least-connections",
    ]);
    let log = p.kill_and_log();
    assert!(
        log.contains("restored 2 backends and strategy round-robin from the state file"),
        "{log}"
    );
    assert!(
        log.contains("--backend 127.0.0.1:7409 ignored: the state file"),
        "{log}"
    );
    assert!(
        log.contains("the --strategy flag (least-connections) does not apply"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_first_runtime_change_without_a_state_file_warns_once_that_it_is_not_saved() {
    let p = Proc::start(&["--backend", "127.0.0.1:7501"]);
    for port in [7502, 7503] {
        let add = format!(r#"{{"address": "127.0.0.1:{port}"}}"#);
        assert_eq!(p.api("POST", "/api/backends", Some(&add)).0, 201);
    }
    let log = p.kill_and_log();
    assert_eq!(
        log.matches("this runtime change is not saved").count(),
        1,
        "{log}"
    );
}

#[test]
fn sigusr1_and_ctl_log_reopen_reopen_the_access_log_after_a_rename() {
    let dir = temp_dir("reopen");
    let path = dir.join("access.log");
    let backend = HttpBackend::start(|_| Reply::ok(b"ok"));
    let p = Proc::start(&[
        "--backend",
        &backend.addr.to_string(),
        "--access-log",
        path.to_str().unwrap(),
    ]);
    let lines = |f: &std::path::Path| {
        std::fs::read_to_string(f)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let reopens = || {
        p.api("GET", "/api/log", None).1["reopens"]
            .as_u64()
            .unwrap()
    };
    let send = |n: usize| {
        for _ in 0..n {
            assert_eq!(roundtrip(p.proxy, &get("/")).status, 200);
        }
    };
    send(5);
    assert!(wait_until(IO_TIMEOUT, || lines(&path) == 5));
    std::fs::rename(&path, dir.join("access.log.1")).unwrap();
    p.signal(libc::SIGUSR1);
    assert!(wait_until(IO_TIMEOUT, || reopens() == 1));
    send(3);
    assert!(wait_until(IO_TIMEOUT, || lines(&path) == 3));
    std::fs::rename(&path, dir.join("access.log.2")).unwrap();
    let out = p.ctl(&["log", "reopen"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(wait_until(IO_TIMEOUT, || reopens() == 2));
    send(2);
    assert!(wait_until(IO_TIMEOUT, || lines(&path) == 2));
    assert_eq!(lines(&dir.join("access.log.1")), 5);
    assert_eq!(lines(&dir.join("access.log.2")), 3);
}

#[test]
fn an_access_log_that_cannot_be_opened_stops_start_up_with_a_message() {
    let out = Command::new(SLUICE)
        .args(["--listen", "127.0.0.1:0", "--admin", "off"])
        .args(["--access-log", "/nonexistent-dir/sluice/access.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--access-log /nonexistent-dir/sluice/access.log"),
        "{}",
        text(&out.stderr)
    );
}
