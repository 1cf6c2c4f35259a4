//! Address families: IPv6 listeners (one dual-stack) and backends, Unix-domain socket backends
//! (from the flags and through the API), in HTTP and TCP mode, with health checks that see each
//! kind of backend go away and come back. And what `/api/status` says of a TCP-mode balancer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use common::edge::{Place, StoppableBackend, TempDir};
use common::*;
use sluice::backend::{BackendAddr, BackendSpec};
use sluice::config::{Mode, ProbeKind, Settings};
use sluice::strategy::StrategyKind;

fn echo_target(r: &Req) -> Reply {
    Reply::ok(format!("{} {}", r.method, r.target).as_bytes())
}

fn settings(mode: Mode, backends: &[&Place]) -> Settings {
    let specs = backends
        .iter()
        .map(|p| BackendSpec {
            addr: BackendAddr::parse_literal(&p.backend_text()).unwrap(),
            weight: 1,
        })
        .collect();
    Settings::local(test_config(mode), specs, StrategyKind::RoundRobin)
}

#[track_caller]
fn get_on(s: &TcpStream, path: &str) -> Resp {
    (&*s).write_all(&get(path)).unwrap();
    read_response(&mut BufReader::new(s), false).expect("response")
}

/// A backend's entry in `GET /api/backends`, by the address text the API shows.
fn listed(lb: &Sluice, address: &str) -> Option<serde_json::Value> {
    listed_backend(lb.admin, address)
}

#[test]
fn ipv6_listener_and_backend_in_both_modes() {
    let backend = StoppableBackend::tcp("[::1]:0".parse().unwrap(), echo_target);
    for mode in [Mode::Http, Mode::Tcp] {
        let mut s = settings(mode, &[&backend.place]);
        s.listen = "[::1]:0".parse().unwrap();
        let lb = Sluice::with_settings(s);
        assert!(lb.addr.is_ipv6());
        let c = connect(lb.addr);
        assert_eq!(get_on(&c, "/six").text(), "GET /six", "{mode:?}");
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("x-forwarded-for"), Some("::1"), "HTTP mode");
    assert_eq!(
        seen[1].header("x-forwarded-for"),
        None,
        "TCP mode passes bytes"
    );
}

#[test]
fn a_dual_stack_listener_takes_ipv4_clients_and_names_them_as_ipv4() {
    let backend = HttpBackend::start(echo_target);
    let mut s = common::settings_for(
        test_config(Mode::Http),
        &[backend.addr],
        StrategyKind::RoundRobin,
    );
    s.listen = "[::]:0".parse().unwrap();
    let lb = Sluice::with_settings(s);
    let port = lb.addr.port();
    for (via, client) in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")] {
        let addr = SocketAddr::new(via.parse().unwrap(), port);
        let c = connect(addr);
        assert_eq!(get_on(&c, "/dual").status, 200, "via {via}");
        let last = backend.requests().pop().unwrap();
        assert_eq!(last.header("x-forwarded-for"), Some(client), "via {via}");
    }
}

#[test]
fn unix_socket_backends_serve_in_both_modes() {
    let dir = TempDir::new("unix-backend");
    let backend = StoppableBackend::unix(&dir.join("app.sock"), echo_target);
    for mode in [Mode::Http, Mode::Tcp] {
        let lb = Sluice::with_settings(settings(mode, &[&backend.place]));
        let c = lb.connect();
        for i in 0..2 {
            let resp = get_on(&c, &format!("/unix/{i}"));
            assert_eq!(resp.text(), format!("GET /unix/{i}"), "{mode:?}");
        }
        let (_, status) = lb.api("GET", "/api/status", None);
        assert_eq!(
            status["backends"][0]["address"],
            backend.place.backend_text()
        );
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 4);
    // The client's address is the client's, whatever the backend's socket is.
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn a_unix_backend_is_added_and_removed_through_the_api() {
    let dir = TempDir::new("unix-api");
    let tcp = HttpBackend::start(|_| Reply::ok(b"tcp"));
    let unix = StoppableBackend::unix(&dir.join("api.sock"), |_| Reply::ok(b"unix"));
    let lb = Sluice::http(&[tcp.addr]);
    let address = unix.place.backend_text();
    let body = format!(r#"{{"address": "{address}", "weight": 1}}"#);
    let (status, added) = lb.api("POST", "/api/backends", Some(&body));
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["address"], address);
    assert!(listed(&lb, &address).is_some());
    // Round robin over both: a handful of requests reach the unix backend.
    let c = lb.connect();
    let bodies: Vec<String> = (0..4).map(|_| get_on(&c, "/").text()).collect();
    assert!(bodies.iter().any(|b| b == "unix"), "{bodies:?}");
    assert!(bodies.iter().any(|b| b == "tcp"), "{bodies:?}");
    let (status, _) = lb.api(
        "POST",
        "/api/backends",
        Some(r#"{"address": "unix:relative.sock"}"#),
    );
    assert_eq!(status, 400);
    let path = format!("/api/backends/{}", address.replace('/', "%2F"));
    let (status, body) = lb.api("DELETE", &path, None);
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(IO_TIMEOUT, || listed(&lb, &address).is_none()));
}

#[test]
fn health_checks_see_ipv6_and_unix_backends_go_and_come_back() {
    let dir = TempDir::new("unix-health");
    let cases = [
        (Mode::Http, Some("/health"), "[::1]:0"),
        (Mode::Tcp, None, "[::1]:0"),
        (Mode::Http, Some("/health"), "unix"),
        (Mode::Tcp, None, "unix"),
    ];
    for (i, (mode, path, at)) in cases.into_iter().enumerate() {
        let mut backend = if at == "unix" {
            StoppableBackend::unix(&dir.join(&format!("h{i}.sock")), |_| Reply::ok(b"up"))
        } else {
            StoppableBackend::tcp(at.parse().unwrap(), |_| Reply::ok(b"up"))
        };
        let mut s = settings(mode, &[&backend.place]);
        s.control.health.kind = match path {
            Some(p) => ProbeKind::Http { path: p.into() },
            None => ProbeKind::Tcp,
        };
        s.control.health.interval_ms = 20;
        s.control.health.timeout_ms = 500;
        s.control.health.rise = 1;
        s.control.health.fall = 1;
        let lb = Sluice::with_settings(s);
        let address = backend.place.backend_text();
        let healthy = |want: bool| {
            wait_until(IO_TIMEOUT, || {
                listed(&lb, &address).is_some_and(|b| b["healthy"] == want)
            })
        };
        if path.is_some() {
            // The HTTP probe reached the backend over its own kind of socket.
            assert!(wait_until(IO_TIMEOUT, || backend
                .requests()
                .iter()
                .any(|r| r.target == "/health")));
        }
        backend.pause();
        assert!(healthy(false), "{address} ({mode:?}) never went down");
        backend.resume();
        assert!(healthy(true), "{address} ({mode:?}) never came back");
    }
}

#[test]
fn status_in_tcp_mode_counts_open_tunnels_and_connections_per_second() {
    let backend = echo_backend(b"");
    let lb = Sluice::tcp(&[backend.addr]);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = lb.connect();
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        std::io::Read::read_exact(&mut s, &mut got).unwrap();
        open.push(s);
    }
    let mut last = serde_json::Value::Null;
    let counted = wait_until(IO_TIMEOUT, || {
        let (_, status) = lb.api("GET", "/api/status", None);
        last = status.clone();
        let b = &status["backends"][0];
        status["active_connections"] == 3
            && b["in_flight"] == 3
            && b["connections_per_s"].as_f64() > Some(0.0)
            && status["connections_per_s"].as_f64() > Some(0.0)
    });
    assert!(counted, "{last}");
    assert_eq!(last["mode"], "tcp");
    assert_eq!(last["backends"][0]["error_rate"], 0.0, "{last}");
    let text = sluice::ctl::status_text(&serde_json::from_value(last).unwrap());
    assert!(text.contains("3 open connections"), "{text}");
    assert!(text.contains("CONN/S"), "{text}");
    let exposition = scrape(&lb);
    let series = format!(
        "sluice_backend_tunnels_opened_total{{backend=\"{}\"}}",
        backend.addr
    );
    assert_eq!(value(&exposition, &series), Some(3.0), "{exposition}");
}
