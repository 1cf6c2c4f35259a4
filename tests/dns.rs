//! Backends given by DNS name, against a real DNS server on loopback (tests/dns/server.py, with
//! dnslib) whose answer a test changes by replacing its zone file: sluice follows the answer
//! (new addresses join, old ones drain, no request fails), keeps the last answer when the server
//! goes away (logging it once), keeps the name (not its addresses) in the state file, checks a
//! name at start and through the API, and health-checks each address of a name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::edge::{StoppableBackend, TempDir};
use common::proc::{SluiceProc, SLUICE};
use common::*;

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns/server.py");
/// How long a test waits for sluice to follow a change of the answer.
const FOLLOW: Duration = Duration::from_secs(20);

/// The DNS server, stopped by its PID on drop.
struct DnsServer {
    child: Child,
    addr: SocketAddr,
    zone: PathBuf,
}

impl DnsServer {
    /// Serves `zone` (name → addresses) with a TTL of one second.
    fn start(dir: &TempDir, zone: &[(&str, &[&str])]) -> DnsServer {
        let path = dir.join("zone.json");
        write_zone(&path, zone);
        let mut child = Command::new("python3")
            .arg(SERVER)
            .arg(&path)
            .arg("1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let port: u16 = match (read, line.trim().parse()) {
            (Ok(_), Ok(port)) => port,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the DNS server did not start ({line:?}); scripts/test.sh installs dnslib \
                     (Debian package python3-dnslib)"
                );
            }
        };
        DnsServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone: path,
        }
    }

    /// Replaces the answers: the server reads the zone file again for every question.
    fn set(&self, zone: &[(&str, &[&str])]) {
        write_zone(&self.zone, zone);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes the zone file whole (a temporary file renamed over it), so the server never reads half.
fn write_zone(path: &std::path::Path, zone: &[(&str, &[&str])]) {
    let map: serde_json::Map<String, serde_json::Value> = zone
        .iter()
        .map(|(name, ips)| (format!("{name}."), serde_json::json!(ips)))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::Value::Object(map).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// sluice with two workers on ephemeral ports; health checks are off unless a test asks for them.
fn start(args: &[&str]) -> SluiceProc {
    SluiceProc::start_bare(&flags(args))
}

fn flags(args: &[&str]) -> Vec<String> {
    let checks: &[&str] = if args.contains(&"--health-interval") {
        &[]
    } else {
        &["--health-interval", "0"]
    };
    [&["--workers", "2"], checks, args]
        .concat()
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// The backend `address` in `GET /api/backends`.
fn backend(lb: &SluiceProc, address: &str) -> Option<serde_json::Value> {
    listed_backend(lb.admin, address)
}

/// The addresses the name `address` stands for now.
fn addresses(lb: &SluiceProc, address: &str) -> Vec<String> {
    backend(lb, address)
        .and_then(|b| serde_json::from_value(b["addresses"].clone()).ok())
        .unwrap_or_default()
}

/// Two HTTP backends on one port at 127.0.0.2 and 127.0.0.3 (a name gives every address the same
/// port), answering `a` and `b`.
fn two_backends() -> (StoppableBackend, StoppableBackend, u16) {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        // The kernel chose the port for 127.0.0.2; 127.0.0.3 may have it taken: try another.
        if let Ok(b) = TcpListener::bind(("127.0.0.3", port)) {
            return (
                StoppableBackend::on(a, |_| Reply::ok(b"a")),
                StoppableBackend::on(b, |_| Reply::ok(b"b")),
                port,
            );
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn body_of(lb: &SluiceProc) -> String {
    roundtrip(lb.proxy, &get("/")).text()
}

#[test]
fn a_moving_answer_adds_the_new_address_drains_the_old_and_no_request_fails() {
    let dir = TempDir::new("dns-move");
    let (a, b, port) = two_backends();
    let mut dns = DnsServer::start(&dir, &[("app.test", &["127.0.0.2"])]);
    let name = format!("app.test:{port}");
    let (a_addr, b_addr) = (format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}"));
    // The answer's TTL (1 s) decides when sluice asks again, not the long interval.
    let lb = start(&[
        "--backend",
        &name,
        "--dns-server",
        &dns.addr.to_string(),
        "--resolve-interval",
        "1h",
    ]);
    // Resolved at start: the first table routes to the answer's address.
    assert_eq!(addresses(&lb, &name), vec![a_addr.clone()]);
    let view = backend(&lb, &name).unwrap();
    assert_eq!(view["lookup"], "resolved");
    assert_eq!(view["members"][0]["address"], a_addr.as_str());
    assert_eq!(view["members"][0]["name"], name.as_str());

    let traffic = Traffic::start(lb.proxy, 4);
    assert!(wait_until(FOLLOW, || a.requests().len() >= 20));

    dns.set(&[("app.test", &["127.0.0.3"])]);
    assert!(
        wait_until(FOLLOW, || addresses(&lb, &name) == vec![b_addr.clone()]),
        "{:?}",
        backend(&lb, &name)
    );
    // The old address drains and leaves; from then on every request goes to the new one.
    assert!(wait_until(FOLLOW, || {
        let view = backend(&lb, &name).unwrap();
        let members = view["members"].as_array().unwrap().clone();
        let list = lb.api("GET", "/api/backends", None).1;
        members.len() == 1 && !list.to_string().contains(&a_addr)
    }));
    let to_a = a.requests().len();
    let to_b = b.requests().len();
    assert!(wait_until(FOLLOW, || b.requests().len() >= to_b + 50));
    assert_eq!(
        a.requests().len(),
        to_a,
        "a drained address gets no request"
    );

    // The DNS server goes away: the last answer stays, and requests keep being answered.
    dns.stop();
    assert!(wait_until(FOLLOW, || {
        let view = backend(&lb, &name).unwrap();
        view["lookup"] == "failing" && view["lookup_failures"].as_u64() >= Some(3)
    }));
    let view = backend(&lb, &name).unwrap();
    assert_eq!(addresses(&lb, &name), vec![b_addr.clone()], "{view}");
    assert!(
        view["lookup_error"]
            .as_str()
            .unwrap()
            .contains("did not resolve"),
        "{view}"
    );
    let to_b = b.requests().len();
    assert!(wait_until(FOLLOW, || b.requests().len() >= to_b + 50));

    let (seen, failures) = traffic.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(seen["a"] > 0 && seen["b"] > 0, "{seen:?}");
    let log = lb.kill_and_log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lookup failed"))
        .collect();
    assert_eq!(failed.len(), 1, "one line for three failed lookups:\n{log}");
    assert!(failed[0].contains(&name), "{}", failed[0]);
    assert!(
        log.contains(&format!("{a_addr} left the answer; draining")),
        "{log}"
    );
}

#[test]
fn the_state_file_keeps_the_name_and_a_restart_resolves_it_again() {
    let dir = TempDir::new("dns-state");
    let (_a, _b, port) = two_backends();
    let dns = DnsServer::start(&dir, &[("app.test", &["127.0.0.2"])]);
    let name = format!("app.test:{port}");
    let state = dir.join("state.json");
    let dns_flags = [
        "--dns-server",
        &dns.addr.to_string(),
        "--resolve-interval",
        "1s",
    ]
    .map(String::from);
    let state_flag = ["--state-file".to_string(), state.display().to_string()];
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = dns_flags.iter().chain(&state_flag).cloned().collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let first = args(&["--backend", &name]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let lb = start(&first);
    assert_eq!(body_of(&lb), "a");
    let (status, _) = lb.api(
        "PUT",
        &format!("/api/backends/{name}"),
        Some(r#"{"weight": 4}"#),
    );
    assert_eq!(status, 200);
    drop(lb);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["backends"][0]["address"], name.as_str(), "{saved}");
    assert_eq!(saved["backends"][0]["weight"], 4, "{saved}");
    assert!(
        !saved.to_string().contains("127.0.0.2"),
        "the name, not its addresses: {saved}"
    );

    // Restarted from the state file alone, while the name has moved: it comes back and resolves.
    dns.set(&[("app.test", &["127.0.0.3"])]);
    let again = args(&[]);
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let lb = start(&again);
    let view = backend(&lb, &name).unwrap();
    assert_eq!(view["weight"], 4);
    assert_eq!(addresses(&lb, &name), vec![format!("127.0.0.3:{port}")]);
    assert_eq!(
        view["members"][0]["weight"], 4,
        "members take the name's weight"
    );
    assert_eq!(body_of(&lb), "b");
}

#[test]
fn a_backend_name_that_does_not_resolve_stops_start_up_unless_allowed() {
    let dir = TempDir::new("dns-start");
    let (_a, _b, port) = two_backends();
    let dns = DnsServer::start(&dir, &[("app.test", &["127.0.0.2"])]);
    let name = format!("later.test:{port}");
    let server = dns.addr.to_string();
    let out = Command::new(SLUICE)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(flags(&["--backend", &name, "--dns-server", &server]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("--backend {name}")) && err.contains("did not resolve"),
        "{err}"
    );
    assert!(err.contains("--allow-unresolved"), "{err}");

    let lb = start(&[
        "--backend",
        &name,
        "--dns-server",
        &server,
        "--resolve-interval",
        "1s",
        "--allow-unresolved",
    ]);
    let view = backend(&lb, &name).unwrap();
    assert_eq!(view["lookup"], "failing", "{view}");
    assert_eq!(view["addresses"], serde_json::json!([]));
    assert_eq!(
        roundtrip(lb.proxy, &get("/")).status,
        503,
        "nothing to route to yet"
    );
    dns.set(&[("later.test", &["127.0.0.2"])]);
    assert!(wait_until(FOLLOW, || addresses(&lb, &name)
        == vec![format!("127.0.0.2:{port}")]));
    assert_eq!(body_of(&lb), "a");
    let log = lb.kill_and_log();
    assert!(
        log.contains(&format!("backend {name} resolves again")),
        "{log}"
    );
}

#[test]
fn the_api_adds_a_name_that_resolves_refuses_one_that_does_not_and_deletes_it_whole() {
    let dir = TempDir::new("dns-api");
    let (_a, _b, port) = two_backends();
    let dns = DnsServer::start(&dir, &[("app.test", &["127.0.0.2", "127.0.0.3"])]);
    let lb = start(&["--dns-server", &dns.addr.to_string()]);
    let name = format!("app.test:{port}");
    let body = |address: &str, extra: &str| format!(r#"{{"address": "{address}"{extra}}}"#);

    let (status, view) = lb.api(
        "POST",
        "/api/backends",
        Some(&body(&name, r#", "weight": 2"#)),
    );
    assert_eq!(status, 201, "{view}");
    let both = vec![format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")];
    assert_eq!(view["addresses"], serde_json::json!(both));
    assert_eq!(view["members"].as_array().unwrap().len(), 2);
    assert_eq!(view["members"][1]["weight"], 2);
    let (status, _) = lb.api("POST", "/api/backends", Some(&body(&name, "")));
    assert_eq!(status, 409);
    let mut seen: Vec<String> = (0..4).map(|_| body_of(&lb)).collect();
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"], "every address is a member");

    // The status lists the members, each with the name it stands for.
    let (_, status_view) = lb.api("GET", "/api/status", None);
    let members: Vec<(String, String)> = status_view["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().into(),
                b["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        members,
        both.iter()
            .map(|a| (a.clone(), name.clone()))
            .collect::<Vec<_>>()
    );

    // sluice ctl shows the name and the addresses under it.
    let out = lb.ctl(&["backends", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&name) && text.contains(&format!("  127.0.0.3:{port}")),
        "{text}"
    );

    let missing = format!("missing.test:{port}");
    let (status, err) = lb.api("POST", "/api/backends", Some(&body(&missing, "")));
    assert_eq!(status, 422, "{err}");
    let message = err["error"].as_str().unwrap();
    assert!(
        message.contains("did not resolve") && message.contains("allow_unresolved"),
        "{message}"
    );
    assert!(backend(&lb, &missing).is_none(), "nothing was added");
    let (status, view) = lb.api(
        "POST",
        "/api/backends",
        Some(&body(&missing, r#", "allow_unresolved": true"#)),
    );
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["addresses"], serde_json::json!([]));

    let (status, _) = lb.api("DELETE", &format!("/api/backends/{name}"), None);
    assert_eq!(status, 200);
    assert!(backend(&lb, &name).is_none());
    assert!(
        wait_until(FOLLOW, || {
            let list = lb.api("GET", "/api/backends", None).1;
            !list.to_string().contains("127.0.0.2")
        }),
        "both addresses drain and leave"
    );
    let (status, err) = lb.api("DELETE", &format!("/api/backends/127.0.0.9:{port}"), None);
    assert_eq!(status, 404, "{err}");
}

#[test]
fn each_address_of_a_name_is_health_checked_on_its_own() {
    let dir = TempDir::new("dns-health");
    let (_a, mut b, port) = two_backends();
    b.pause();
    let dns = DnsServer::start(&dir, &[("app.test", &["127.0.0.2", "127.0.0.3"])]);
    let name = format!("app.test:{port}");
    let lb = start(&[
        "--backend",
        &name,
        "--dns-server",
        &dns.addr.to_string(),
        "--health-interval",
        "100ms",
        "--rise",
        "1",
        "--fall",
        "1",
    ]);
    let healthy = |lb: &SluiceProc, ip: &str| -> Option<bool> {
        let view = backend(lb, &name)?;
        view["members"]
            .as_array()?
            .iter()
            .find(|m| m["address"] == format!("{ip}:{port}"))
            .and_then(|m| m["healthy"].as_bool())
    };
    assert!(wait_until(FOLLOW, || healthy(&lb, "127.0.0.3") == Some(false)));
    assert_eq!(healthy(&lb, "127.0.0.2"), Some(true));
    assert!(
        (0..10).all(|_| body_of(&lb) == "a"),
        "the down address gets nothing"
    );
    b.resume();
    assert!(wait_until(FOLLOW, || healthy(&lb, "127.0.0.3") == Some(true)));
    assert!(wait_until(FOLLOW, || body_of(&lb) == "b"));
}

/// An instance of a cluster on `store`, in-process, asking `dns` for names.
fn clustered(store: &str, id: &str, dns: SocketAddr) -> Sluice {
    let mut s = settings_for(
        test_config(sluice::config::Mode::Http),
        &[],
        sluice::strategy::StrategyKind::RoundRobin,
    );
    s.control.cluster =
        Some(sluice::config::ClusterConfig::new(store, "dns", id, 2, None).unwrap());
    s.control.resolve.dns_server = Some(dns);
    s.control.resolve.interval_ms = 1_000;
    Sluice::with_settings(s)
}

fn addresses_on(lb: &Sluice, name: &str) -> Vec<String> {
    let (_, list) = lb.api("GET", "/api/backends", None);
    list.as_array()
        .and_then(|l| l.iter().find(|b| b["address"] == name))
        .and_then(|b| serde_json::from_value(b["addresses"].clone()).ok())
        .unwrap_or_default()
}

#[test]
fn in_a_cluster_the_name_is_shared_and_each_instance_resolves_it_itself() {
    let etcd = common::etcd::Etcd::single();
    let dir = TempDir::new("dns-cluster");
    let (_a, _b, port) = two_backends();
    let dns = DnsServer::start(&dir, &[("app.test", &["127.0.0.2"])]);
    let one = clustered(&etcd.client_url, "one", dns.addr);
    let two = clustered(&etcd.client_url, "two", dns.addr);
    let name = format!("app.test:{port}");
    let (status, view) = one.api(
        "POST",
        "/api/backends",
        Some(&format!(r#"{{"address": "{name}"}}"#)),
    );
    assert_eq!(status, 201, "{view}");
    let first = vec![format!("127.0.0.2:{port}")];
    assert_eq!(
        view["addresses"],
        serde_json::json!(first),
        "the check's answer"
    );
    // The store holds the name; the other instance installs it and looks it up itself.
    assert!(wait_until(FOLLOW, || addresses_on(&two, &name) == first));
    assert_eq!(roundtrip(two.addr, &get("/")).text(), "a");
    dns.set(&[("app.test", &["127.0.0.3"])]);
    let moved = vec![format!("127.0.0.3:{port}")];
    assert!(wait_until(FOLLOW, || {
        addresses_on(&one, &name) == moved && addresses_on(&two, &name) == moved
    }));
    assert!(wait_until(FOLLOW, || roundtrip(one.addr, &get("/")).text() == "b"));
    let (status, _) = one.api("DELETE", &format!("/api/backends/{name}"), None);
    assert_eq!(status, 200);
    assert!(wait_until(FOLLOW, || addresses_on(&two, &name).is_empty()));
}
