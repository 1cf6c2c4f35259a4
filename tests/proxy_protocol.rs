//! The PROXY protocol with a real peer: HAProxy in front of sluice (`send-proxy`,
//! `send-proxy-v2`) and behind it (`accept-proxy`), clients connecting from loopback addresses of
//! their own (127.0.0.7, 127.0.0.8) so that every hop can be told apart. And what sluice refuses:
//! headers from peers it does not trust, none from a peer it does, garbage, truncated and slow
//! headers, each closed and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};

use common::edge::{connect_from, haproxy_defaults, Haproxy, HAPROXY_FD};
use common::*;
use sluice::config::{Cidr, Mode, ProxyConfig};
use sluice::proxy_protocol::{self, Version};
use sluice::strategy::StrategyKind;

const CLIENT: &str = "127.0.0.7";
const OTHER_CLIENT: &str = "127.0.0.8";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// sluice reading PROXY headers from peers in `from`.
fn accepting(mode: Mode, from: &str, backends: &[SocketAddr]) -> Sluice {
    let cfg = ProxyConfig {
        proxy_protocol_from: Some(vec![from.parse::<Cidr>().unwrap()]),
        ..test_config(mode)
    };
    Sluice::start(cfg, backends, StrategyKind::RoundRobin)
}

/// HAProxy as an L4 balancer in front of `target`, sending `send` (`send-proxy` or
/// `send-proxy-v2`) on each connection to it.
fn haproxy_in_front(target: SocketAddr, send: &str) -> Haproxy {
    Haproxy::start(&format!(
        "{}frontend edge\n  bind fd@{HAPROXY_FD}\n  default_backend lb\n\n\
         backend lb\n  server sluice {target} {send}\n",
        haproxy_defaults("tcp")
    ))
}

/// HAProxy behind sluice: takes a PROXY header on every connection (`accept-proxy`) and names
/// the client it carries in `X-Client` to `backend`.
fn haproxy_behind(backend: SocketAddr) -> Haproxy {
    Haproxy::start(&format!(
        "{}frontend app\n  bind fd@{HAPROXY_FD} accept-proxy\n  \
         option forwardfor header X-Client\n  default_backend app\n\n\
         backend app\n  server app {backend}\n",
        haproxy_defaults("http")
    ))
}

/// A GET for `path` on `s`, its response read.
#[track_caller]
fn get_on(s: &TcpStream, path: &str) -> Resp {
    (&*s).write_all(&get(path)).unwrap();
    read_response(&mut BufReader::new(s), false).expect("response")
}

/// The count of PROXY headers with `outcome`, once the workers have reported at least `min`.
#[track_caller]
fn headers_counted(lb: &Sluice, outcome: &str, min: f64) -> f64 {
    let series = format!("sluice_proxy_protocol_headers_total{{outcome=\"{outcome}\"}}");
    let mut seen = 0.0;
    let reached = wait_until(IO_TIMEOUT, || {
        seen = value(&scrape(lb), &series).unwrap_or(0.0);
        seen >= min
    });
    assert!(
        reached,
        "{series} stayed at {seen}, expected at least {min}"
    );
    seen
}

/// Whether sluice closed `s` without answering: EOF, or a reset.
#[track_caller]
fn closed_without_answer(mut s: TcpStream) {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "got {:?}", String::from_utf8_lossy(&got)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn behind_haproxy_the_backend_sees_the_original_client_with_either_version() {
    let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
    let lb = accepting(Mode::Http, "127.0.0.1/32", &[backend.addr]);
    for send in ["send-proxy", "send-proxy-v2"] {
        let haproxy = haproxy_in_front(lb.addr, send);
        let s = connect_from(ip(CLIENT), haproxy.addr);
        for _ in 0..2 {
            let resp = get_on(&s, &format!("/{send}"));
            assert_eq!(resp.status, 200, "{send}");
        }
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 4);
    for r in &seen {
        assert_eq!(r.header("x-forwarded-for"), Some(CLIENT), "{}", r.target);
    }
    headers_counted(&lb, "accepted", 2.0);
}

#[test]
fn in_tcp_mode_the_client_from_haproxy_goes_on_to_a_backend_that_accepts_proxy() {
    // client -> HAProxy (send-proxy-v2) -> sluice TCP (reads it, sends v1) -> HAProxy
    // (accept-proxy) -> backend: the last hop still names the first client.
    let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
    let behind = haproxy_behind(backend.addr);
    let cfg = ProxyConfig {
        proxy_protocol_from: Some(vec!["127.0.0.1/32".parse().unwrap()]),
        send_proxy_protocol: Some(Version::V1),
        ..test_config(Mode::Tcp)
    };
    let lb = Sluice::start(cfg, &[behind.addr], StrategyKind::RoundRobin);
    let front = haproxy_in_front(lb.addr, "send-proxy-v2");
    let s = connect_from(ip(CLIENT), front.addr);
    assert_eq!(get_on(&s, "/chain").status, 200);
    assert_eq!(backend.requests()[0].header("x-client"), Some(CLIENT));
}

#[test]
fn in_tcp_mode_sluice_names_the_client_to_a_backend_that_accepts_proxy() {
    for version in [Version::V1, Version::V2] {
        let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
        let behind = haproxy_behind(backend.addr);
        let cfg = ProxyConfig {
            send_proxy_protocol: Some(version),
            ..test_config(Mode::Tcp)
        };
        let lb = Sluice::start(cfg, &[behind.addr], StrategyKind::RoundRobin);
        for _ in 0..2 {
            let s = connect_from(ip(CLIENT), lb.addr);
            assert_eq!(get_on(&s, "/tcp").status, 200, "{version:?}");
        }
        let seen = backend.requests();
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter().all(|r| r.header("x-client") == Some(CLIENT)),
            "{version:?}: {seen:?}"
        );
    }
}

#[test]
fn in_http_mode_each_clients_requests_carry_its_own_address() {
    // Two keep-alive clients in turn: with pooled backend connections the second client's
    // request could ride on a connection whose header named the first.
    let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
    let behind = haproxy_behind(backend.addr);
    let cfg = ProxyConfig {
        send_proxy_protocol: Some(Version::V2),
        pool_max_idle: 0,
        ..test_config(Mode::Http)
    };
    let lb = Sluice::start(cfg, &[behind.addr], StrategyKind::RoundRobin);
    let a = connect_from(ip(CLIENT), lb.addr);
    let b = connect_from(ip(OTHER_CLIENT), lb.addr);
    for _ in 0..3 {
        assert_eq!(get_on(&a, "/a").status, 200);
        assert_eq!(get_on(&b, "/b").status, 200);
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 6);
    for r in &seen {
        let want = if r.target == "/a" {
            CLIENT
        } else {
            OTHER_CLIENT
        };
        assert_eq!(r.header("x-client"), Some(want), "{}", r.target);
        assert_eq!(r.header("x-forwarded-for"), Some(want), "{}", r.target);
    }
}

#[test]
fn a_header_from_a_peer_not_listed_is_refused_and_counted() {
    let mut v2 = [0u8; 64];
    let n = proxy_protocol::write(
        Version::V2,
        "192.0.2.1:5".parse().unwrap(),
        "192.0.2.2:80".parse().unwrap(),
        &mut v2,
    );
    let spoofs: [&[u8]; 2] = [b"PROXY TCP4 192.0.2.1 192.0.2.2 5 80\r\n", &v2[..n]];
    for mode in [Mode::Http, Mode::Tcp] {
        let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
        // Only 127.0.0.1 may send headers; this client comes from 127.0.0.7.
        let lb = accepting(mode, "127.0.0.1/32", &[backend.addr]);
        for spoof in spoofs {
            let mut s = connect_from(ip(CLIENT), lb.addr);
            s.write_all(spoof).unwrap();
            // sluice may have closed on the header already: then this write meets a reset.
            let _ = s.write_all(&get("/spoof"));
            closed_without_answer(s);
        }
        // Without a header the same client is served, as itself.
        let s = connect_from(ip(CLIENT), lb.addr);
        assert_eq!(get_on(&s, "/plain").status, 200);
        headers_counted(&lb, "untrusted", 2.0);
        let seen = backend.requests();
        assert!(
            seen.iter().all(|r| r.target == "/plain"),
            "{mode:?}: {seen:?}"
        );
        if mode == Mode::Http {
            assert_eq!(seen[0].header("x-forwarded-for"), Some(CLIENT));
        }
    }
}

#[test]
fn a_listed_peer_without_a_header_is_refused_and_counted() {
    for mode in [Mode::Http, Mode::Tcp] {
        let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
        let lb = accepting(mode, "127.0.0.0/8", &[backend.addr]);
        let mut s = connect(lb.addr);
        s.write_all(&get("/no-header")).unwrap();
        closed_without_answer(s);
        headers_counted(&lb, "missing", 1.0);
        assert!(backend.requests().is_empty(), "{mode:?}");
    }
}

#[test]
fn garbage_and_truncated_headers_are_closed_and_counted() {
    let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
    let lb = accepting(Mode::Http, "127.0.0.0/8", &[backend.addr]);
    let mut bad_version = proxy_protocol::V2_SIGNATURE.to_vec();
    bad_version.extend_from_slice(&[0x31, 0x11, 0, 12]);
    let endless = [&b"PROXY "[..], &[b'x'; 200]].concat();
    let garbage: [&[u8]; 4] = [
        b"PROXY GARBAGE\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 5\r\n",
        &bad_version,
        &endless,
    ];
    for bytes in garbage {
        let mut s = connect(lb.addr);
        s.write_all(bytes).unwrap();
        closed_without_answer(s);
    }
    // Cut short: the peer closes its side halfway through a header.
    let mut s = connect(lb.addr);
    s.write_all(b"PROXY TCP4 192.0.2.1 192.0").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    closed_without_answer(s);
    headers_counted(&lb, "malformed", 5.0);
    assert!(backend.requests().is_empty());
}

#[test]
fn a_header_that_does_not_finish_is_closed_at_the_head_timeout() {
    let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
    let cfg = ProxyConfig {
        proxy_protocol_from: Some(vec!["127.0.0.0/8".parse().unwrap()]),
        head_timeout_ms: 200,
        ..test_config(Mode::Http)
    };
    let lb = Sluice::start(cfg, &[backend.addr], StrategyKind::RoundRobin);
    let mut s = connect(lb.addr);
    s.write_all(b"PROXY TCP4 192.0.2.1 ").unwrap();
    // Nothing more is sent: sluice closes when the deadline passes.
    closed_without_answer(s);
    let silent = connect(lb.addr);
    closed_without_answer(silent);
    headers_counted(&lb, "timeout", 2.0);
}

#[test]
fn a_header_in_pieces_and_a_local_header_are_read_whole() {
    let backend = HttpBackend::start(|_| Reply::ok(b"hi"));
    let lb = accepting(Mode::Http, "127.0.0.0/8", &[backend.addr]);
    let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n";
    let mut s = connect(lb.addr);
    for piece in [&line[..3], &line[3..20], &line[20..]] {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
    }
    assert_eq!(get_on(&s, "/pieces").status, 200);
    // A balancer's own check: LOCAL names no client, so the socket's peer stands.
    let mut s = connect(lb.addr);
    s.write_all(proxy_protocol::local(Version::V2)).unwrap();
    assert_eq!(get_on(&s, "/local").status, 200);
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-forwarded-for"), Some("2001:db8::7"));
    assert_eq!(seen[1].header("x-forwarded-for"), Some("127.0.0.1"));
}
