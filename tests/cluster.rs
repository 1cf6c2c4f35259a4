//! Cluster mode against real etcd processes: several sluice instances follow one configuration,
//! changes are linearizable and never lost, and a store outage stops changes but not traffic.
//! Every etcd runs on ephemeral loopback ports with a temporary data directory and is killed by
//! its PID when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::etcd::{urls, Etcd, Relay};
use common::*;
use serde_json::Value;
use sluice::config::{ClusterConfig, Mode};
use sluice::strategy::StrategyKind;

/// Upper bound for anything that crosses the store: a hang, not a slow machine, is what hits it.
const LIMIT: Duration = Duration::from_secs(30);

/// One instance in-process: `store` are the etcd URLs, `backends` its `--backend` flags.
fn instance(store: &str, id: &str, backends: &[SocketAddr]) -> Sluice {
    let mut cfg = test_config(Mode::Http);
    // One event loop, so that round robin is exact across new connections.
    cfg.workers = 1;
    let mut s = settings_for(cfg, backends, StrategyKind::RoundRobin);
    s.control.cluster = Some(ClusterConfig::new(store, "t", id, 2, None).unwrap());
    Sluice::with_settings(s)
}

fn revision(lb: &Sluice) -> u64 {
    lb.api("GET", "/api/status", None).1["revision"]
        .as_u64()
        .unwrap()
}

fn cluster(lb: &Sluice) -> Value {
    let (status, view) = lb.api("GET", "/api/cluster", None);
    assert_eq!(status, 200, "{view}");
    view
}

fn store_up(lb: &Sluice) -> bool {
    cluster(lb)["store_up"].as_bool().unwrap()
}

fn addresses(lb: &Sluice) -> Vec<String> {
    let (_, list) = lb.api("GET", "/api/backends", None);
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !b["draining"].as_bool().unwrap())
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn add(lb: &Sluice, addr: SocketAddr) -> (u16, Value) {
    lb.api(
        "POST",
        "/api/backends",
        Some(&format!(r#"{{"address": "{addr}"}}"#)),
    )
}

/// One proxied GET on a new connection; its status.
fn proxied(lb: SocketAddr) -> u16 {
    roundtrip(
        lb,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .status
}

/// Requests through `targets` one after another until stopped: (sent, failed).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(targets: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (st, se, fa) = (stop.clone(), sent.clone(), failed.clone());
        let thread = thread::spawn(move || {
            let mut i = 0;
            while !st.load(Ordering::SeqCst) {
                if proxied(targets[i % targets.len()]) != 200 {
                    fa.fetch_add(1, Ordering::SeqCst);
                }
                se.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        });
        Load {
            stop,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    /// Lets at least `n` more requests through, so a phase of the test is covered by load.
    fn cover(&self, n: u64) {
        let from = self.sent.load(Ordering::SeqCst);
        assert!(wait_until(LIMIT, || self.sent.load(Ordering::SeqCst) >= from + n));
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

#[test]
fn a_change_through_one_instance_is_installed_on_all_three_at_the_same_revision() {
    let etcd = Etcd::single();
    let store = urls(&[&etcd]);
    let (one, two) = (HttpBackend::echo_target(), HttpBackend::echo_target());
    let a = instance(&store, "a", &[one.addr]);
    // B and C start with other flags: the cluster's configuration wins.
    let b = instance(&store, "b", &[]);
    let c = instance(&store, "c", &[two.addr]);
    let seeded = revision(&a);
    for lb in [&b, &c] {
        assert_eq!(revision(lb), seeded);
        assert_eq!(addresses(lb), vec![one.addr.to_string()]);
    }

    let (status, added) = add(&a, two.addr);
    assert_eq!(status, 201, "{added}");
    let at = added["revision"].as_u64().unwrap();
    assert!(at > seeded);
    assert_eq!(
        revision(&a),
        at,
        "the instance that took the call answers once it installed it"
    );
    for lb in [&a, &b, &c] {
        assert!(wait_until(LIMIT, || revision(lb) == at), "{}", revision(lb));
        assert_eq!(addresses(lb), {
            let mut v = vec![one.addr.to_string(), two.addr.to_string()];
            v.sort();
            v
        });
    }
    // Round robin over both backends, on every instance.
    for lb in [&a, &b, &c] {
        let before = two.requests().len();
        for _ in 0..4 {
            assert_eq!(proxied(lb.addr), 200);
        }
        assert_eq!(two.requests().len(), before + 2);
    }
    // Every member is listed, and each reports the revision it installed.
    assert!(wait_until(LIMIT, || {
        let view = cluster(&b);
        let members = view["members"].as_array().unwrap();
        members.len() == 3 && members.iter().all(|m| m["revision"] == at)
    }));
    let view = cluster(&c);
    assert_eq!(view["instance"], "c");
    assert_eq!(view["name"], "t");
    assert!(view["store_up"].as_bool().unwrap());
}

/// Two instances increment one backend's weight by read-modify-write (read it with its revision,
/// write weight + 1 with that revision) while a third client toggles it on another instance.
#[test]
fn concurrent_changes_serialize_and_none_accepted_is_lost() {
    let etcd = Etcd::single();
    let store = urls(&[&etcd]);
    let backend = HttpBackend::echo_target();
    let a = instance(&store, "a", &[backend.addr]);
    let b = instance(&store, "b", &[]);
    let path = format!("/api/backends/{}", backend.addr);
    const ROUNDS: usize = 40;

    let increments = |lb: SocketAddr, path: String| {
        thread::spawn(move || {
            let (mut accepted, mut refused) = (Vec::new(), 0);
            for _ in 0..ROUNDS {
                let (_, list) = api_call(lb, "GET", "/api/backends", None, None);
                let me = list.as_array().unwrap()[0].clone();
                let (w, r) = (
                    me["weight"].as_u64().unwrap(),
                    me["revision"].as_u64().unwrap(),
                );
                let body = format!(r#"{{"weight": {}, "revision": {r}}}"#, w + 1);
                let (status, resp) = api_call(lb, "PUT", &path, Some(&body), None);
                match status {
                    200 => accepted.push((resp["revision"].as_u64().unwrap(), w + 1)),
                    409 => {
                        assert!(resp["error"].as_str().unwrap().contains("read it again"));
                        refused += 1;
                    }
                    other => panic!("unexpected {other}: {resp}"),
                }
            }
            (accepted, refused)
        })
    };
    let toggles = {
        let (lb, path) = (b.admin, path.clone());
        thread::spawn(move || {
            let mut accepted = Vec::new();
            for i in 0..ROUNDS {
                let enabled = i % 2 == 1;
                let action = if enabled { "enable" } else { "disable" };
                let (status, resp) = api_call(lb, "POST", &format!("{path}/{action}"), None, None);
                assert_eq!(status, 200, "{resp}");
                assert_eq!(resp["enabled"], enabled);
                accepted.push((resp["revision"].as_u64().unwrap(), enabled));
            }
            accepted
        })
    };
    let on_a = increments(a.admin, path.clone());
    let on_b = increments(b.admin, path.clone());
    let (acc_a, ref_a) = on_a.join().unwrap();
    let (acc_b, ref_b) = on_b.join().unwrap();
    let toggled = toggles.join().unwrap();

    // In commit order, the accepted increments made 2, 3, 4, ...: each read the one before.
    let mut inc: Vec<(u64, u64)> = acc_a.iter().chain(&acc_b).copied().collect();
    inc.sort();
    let weights: Vec<u64> = inc.iter().map(|&(_, w)| w).collect();
    let serial: Vec<u64> = (2..2 + inc.len() as u64).collect();
    assert_eq!(weights, serial, "lost or reordered increments: {inc:?}");
    assert_eq!(inc.len() + ref_a + ref_b, 2 * ROUNDS);
    // The toggles (blind writes of one field) never conflict: all 40 went in, and none undid an
    // increment (or the other way round).
    let last_toggle = toggled.iter().max().unwrap().1;
    let final_weight = 1 + inc.len() as u64;
    let at = inc.last().unwrap().0.max(toggled.iter().max().unwrap().0);
    for lb in [&a, &b] {
        assert!(wait_until(LIMIT, || revision(lb) >= at));
        let me = backend_view(lb, backend.addr).unwrap();
        assert_eq!(me["weight"].as_u64().unwrap(), final_weight);
        assert_eq!(me["enabled"].as_bool().unwrap(), last_toggle);
    }
}

#[test]
fn with_etcd_killed_traffic_goes_on_changes_get_503_and_instances_catch_up() {
    let mut etcd = Etcd::single();
    let store = urls(&[&etcd]);
    let (one, two) = (HttpBackend::echo_target(), HttpBackend::echo_target());
    let a = instance(&store, "a", &[one.addr]);
    let b = instance(&store, "b", &[]);
    let load = Load::start(vec![a.addr, b.addr]);
    load.cover(50);

    etcd.kill();
    for lb in [&a, &b] {
        assert!(wait_until(LIMIT, || !store_up(lb)));
    }
    let (status, body) = add(&a, two.addr);
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("configuration store unavailable"))
    );
    let (status, _) = b.api("POST", &format!("/api/backends/{}/disable", one.addr), None);
    assert_eq!(status, 503);
    assert_eq!(addresses(&a), vec![one.addr.to_string()], "nothing changed");
    load.cover(200);

    etcd.restart();
    for lb in [&a, &b] {
        assert!(wait_until(LIMIT, || store_up(lb)));
    }
    let (status, added) = add(&b, two.addr);
    assert_eq!(status, 201, "{added}");
    let at = added["revision"].as_u64().unwrap();
    assert!(wait_until(LIMIT, || revision(&a) == at));
    assert_eq!(addresses(&a).len(), 2);
    load.cover(50);
    let (sent, failed) = load.finish();
    assert_eq!(failed, 0, "{failed} of {sent} proxied requests failed");
}

#[test]
fn a_three_member_store_takes_changes_without_one_member_and_refuses_them_without_quorum() {
    let mut members = Etcd::cluster(3);
    let store = urls(&members.iter().collect::<Vec<_>>());
    let backends: Vec<HttpBackend> = (0..3).map(|_| HttpBackend::echo_target()).collect();
    let a = instance(&store, "a", &[backends[0].addr]);
    let b = instance(&store, "b", &[]);
    let load = Load::start(vec![a.addr, b.addr]);

    // The first endpoint both instances use goes: they fail over to the others.
    members[0].kill();
    assert!(wait_until(LIMIT, || members[1].healthy() && members[2].healthy()));
    let (status, added) = add(&a, backends[1].addr);
    assert_eq!(status, 201, "{added}");
    let at = added["revision"].as_u64().unwrap();
    assert!(wait_until(LIMIT, || revision(&b) == at));
    load.cover(50);

    // One member left: no quorum, so no change, but traffic is not affected.
    members[1].kill();
    assert!(wait_until(LIMIT, || add(&a, backends[2].addr).0 == 503));
    assert_eq!(
        b.api(
            "DELETE",
            &format!("/api/backends/{}", backends[0].addr),
            None
        )
        .0,
        503
    );
    load.cover(200);
    assert_eq!(addresses(&a).len(), 2);
    assert_eq!(addresses(&b).len(), 2);

    // Quorum back: changes go through again.
    members[1].restart();
    assert!(wait_until(LIMIT, || store_up(&b)));
    let (status, added) = add(&b, backends[2].addr);
    assert_eq!(status, 201, "{added}");
    assert!(wait_until(LIMIT, || addresses(&a).len() == 3));
    let (sent, failed) = load.finish();
    assert_eq!(failed, 0, "{failed} of {sent} proxied requests failed");
}

#[test]
fn an_instance_behind_a_compaction_reads_everything_again_and_converges() {
    let etcd = Etcd::single();
    let relay = Relay::to(&etcd.client_url);
    let backends: Vec<HttpBackend> = (0..3).map(|_| HttpBackend::echo_target()).collect();
    let a = instance(&etcd.client_url, "a", &[backends[0].addr, backends[1].addr]);
    let c = instance(&relay.url, "c", &[]);
    assert_eq!(revision(&c), revision(&a));

    relay.cut();
    assert!(wait_until(LIMIT, || !store_up(&c)));
    assert_eq!(add(&a, backends[2].addr).0, 201);
    let path = format!("/api/backends/{}", backends[0].addr);
    assert_eq!(a.api("PUT", &path, Some(r#"{"weight": 7}"#)).0, 200);
    assert_eq!(
        a.api(
            "DELETE",
            &format!("/api/backends/{}", backends[1].addr),
            None
        )
        .0,
        200
    );
    etcd.compact();
    let at = revision(&a);
    assert!(revision(&c) < at);

    // C's watch resumes from a revision that is gone: it must read the whole prefix again.
    relay.restore();
    assert!(wait_until(LIMIT, || revision(&c) == at), "{}", revision(&c));
    assert_eq!(addresses(&c), addresses(&a));
    assert_eq!(
        backend_view(&c, backends[0].addr).unwrap()["weight"].as_u64(),
        Some(7)
    );
    assert!(wait_until(LIMIT, || store_up(&c)));
}

/// A sluice process of its own, so that it can be killed with SIGKILL.
struct Process {
    child: Child,
    admin: SocketAddr,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--workers",
                "1",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"));
        Process { child, admin }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_instance_killed_with_sigkill_leaves_the_member_list_when_its_lease_expires() {
    let etcd = Etcd::single();
    let backend = HttpBackend::echo_target();
    let a = instance(&etcd.client_url, "a", &[backend.addr]);
    let mut doomed = Process::start(&[
        "--cluster-store",
        &etcd.client_url,
        "--cluster-name",
        "t",
        "--cluster-id",
        "doomed",
        "--cluster-ttl",
        "2s",
    ]);
    let ids = |lb: &Sluice| -> Vec<String> {
        cluster(lb)["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(wait_until(LIMIT, || ids(&a) == ["a", "doomed"]));
    let ctl = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["ctl", "--admin", &a.admin.to_string(), "cluster"])
        .output()
        .expect("sluice ctl");
    let text = String::from_utf8_lossy(&ctl.stdout);
    assert!(ctl.status.success(), "{text}");
    assert!(
        text.contains("cluster t") && text.contains("doomed"),
        "{text}"
    );
    let (status, view) = api_call(doomed.admin, "GET", "/api/cluster", None, None);
    assert_eq!((status, view["instance"].as_str()), (200, Some("doomed")));

    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    assert!(wait_until(LIMIT, || ids(&a) == ["a"]), "{:?}", ids(&a));
}

#[test]
fn without_a_cluster_the_cluster_route_says_so() {
    let lb = Sluice::http(&[]);
    let (status, body) = lb.api("GET", "/api/cluster", None);
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("--cluster-store"));
}

#[test]
fn a_deleted_configuration_is_written_back_instead_of_emptying_the_instances() {
    let etcd = Etcd::single();
    let backend = HttpBackend::echo_target();
    let a = instance(&etcd.client_url, "a", &[backend.addr]);
    let before = revision(&a);
    // `etcdctl del --prefix /sluice/t/`: keys "/sluice/t/" to "/sluice/t0", base64-encoded.
    let (status, _) = common::etcd::call(
        &etcd.client_url,
        "/v3/kv/deleterange",
        r#"{"key": "L3NsdWljZS90Lw==", "range_end": "L3NsdWljZS90MA=="}"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(wait_until(LIMIT, || revision(&a) > before));
    assert_eq!(addresses(&a), vec![backend.addr.to_string()]);
    assert_eq!(proxied(a.addr), 200);
    let (status, _) = a.api(
        "PUT",
        &format!("/api/backends/{}", backend.addr),
        Some(r#"{"weight": 4}"#),
    );
    assert_eq!(
        status, 200,
        "the written-back configuration takes changes again"
    );
}

#[test]
fn with_a_fallback_copy_an_instance_starts_while_the_store_is_down_and_refuses_changes() {
    let backend = HttpBackend::echo_target();
    let dir = std::env::temp_dir().join(format!("sluice-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("last.json");
    std::fs::write(
        &copy,
        format!(
            r#"{{"format": 1, "strategy": "least-connections",
                "backends": [{{"address": "{}", "weight": 2, "enabled": true}}]}}"#,
            backend.addr
        ),
    )
    .unwrap();
    let store = format!("http://{}", refused_addr());
    let mut s = settings_for(test_config(Mode::Http), &[], StrategyKind::RoundRobin);
    s.control.cluster = Some(ClusterConfig::new(&store, "t", "a", 2, Some(copy)).unwrap());
    let lb = Sluice::with_settings(s);

    assert_eq!(addresses(&lb), vec![backend.addr.to_string()]);
    assert_eq!(
        lb.api("GET", "/api/strategy", None).1["configured"],
        "least-connections"
    );
    assert_eq!(proxied(lb.addr), 200);
    assert!(!store_up(&lb));
    let (status, body) = lb.api(
        "POST",
        &format!("/api/backends/{}/disable", backend.addr),
        None,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("configuration store unavailable"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
