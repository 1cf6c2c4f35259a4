//! Per-client limits: a client over its connection cap is refused at accept while another is
//! served; a client over its rate gets 429 with Retry-After (TCP mode: its connection refused);
//! clients named by PROXY headers are limited by the address the header names; and the table
//! keeps its size whatever the number of addresses. Clients connect from loopback addresses of
//! their own (127.0.0.x) so that sluice tells them apart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use common::edge::connect_from;
use common::*;
use sluice::config::{Cidr, Mode, ProxyConfig};
use sluice::limits::{ClientLimits, RateLimit};
use sluice::proxy_protocol::{self, Version};
use sluice::strategy::StrategyKind;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn limited(mode: Mode, max_conns: Option<u32>, rate: Option<&str>) -> ProxyConfig {
    let mut cfg = test_config(mode);
    cfg.client_limits = Some(ClientLimits {
        max_conns,
        rate: rate.map(|r| RateLimit::parse(r).unwrap()),
        hash_seed: Some(0x5eed),
    });
    cfg
}

/// One request on a kept-alive connection.
fn request(s: &TcpStream) -> Resp {
    let mut w = s.try_clone().unwrap();
    w.write_all(&get("/")).unwrap();
    read_response(&mut BufReader::new(s.try_clone().unwrap()), false).unwrap()
}

/// The connection was closed without an answer.
fn closed_without_answer(mut s: TcpStream) -> bool {
    let _ = s.write_all(&get("/"));
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

fn refusals(lb: &Sluice, limit: &str) -> Option<f64> {
    value(
        &scrape(lb),
        &format!("sluice_client_limit_refusals_total{{limit=\"{limit}\"}}"),
    )
}

#[test]
fn a_client_over_its_connection_cap_is_refused_while_another_is_served() {
    let backend = HttpBackend::start(|_| Reply::ok(b"ok"));
    let lb = Sluice::start(
        limited(Mode::Http, Some(2), None),
        &[backend.addr],
        StrategyKind::RoundRobin,
    );
    let greedy = ip("127.0.0.21");
    let held: Vec<TcpStream> = (0..2).map(|_| connect_from(greedy, lb.addr)).collect();
    for s in &held {
        // Answered, so accepted and counted before the next connection comes.
        assert_eq!(request(s).status, 200);
    }
    assert!(closed_without_answer(connect_from(greedy, lb.addr)));
    let other = connect_from(ip("127.0.0.22"), lb.addr);
    assert_eq!(request(&other).status, 200);
    assert_eq!(refusals(&lb, "connections"), Some(1.0));
    // Its own connections still work, and a close makes room for another.
    assert_eq!(request(&held[0]).status, 200);
    drop(held);
    assert!(wait_until(IO_TIMEOUT, || {
        let s = connect_from(greedy, lb.addr);
        let mut w = s.try_clone().unwrap();
        let _ = w.write_all(&get("/"));
        read_response(&mut BufReader::new(s), false).is_ok_and(|r| r.status == 200)
    }));
}

#[test]
fn a_client_over_its_rate_gets_429_with_retry_after_and_the_counters_show_it() {
    let backend = HttpBackend::start(|_| Reply::ok(b"ok"));
    // Three at once, then one a minute: the fourth request is over, whatever the machine's pace.
    let lb = Sluice::start(
        limited(Mode::Http, None, Some("1/m,burst=3")),
        &[backend.addr],
        StrategyKind::RoundRobin,
    );
    let fast = connect_from(ip("127.0.0.31"), lb.addr);
    for _ in 0..3 {
        assert_eq!(request(&fast).status, 200);
    }
    let refused = request(&fast);
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(request(&fast).status, 429, "the connection stays usable");
    let polite = connect_from(ip("127.0.0.32"), lb.addr);
    assert_eq!(request(&polite).status, 200);
    assert_eq!(
        backend.requests().len(),
        4,
        "refused requests never reach a backend"
    );
    assert_eq!(refusals(&lb, "rate"), Some(2.0));
    let mut clients = serde_json::Value::Null;
    assert!(
        wait_until(IO_TIMEOUT, || {
            clients = lb.api("GET", "/api/clients", None).1;
            clients["top_by_refusals"][0]["client"] == "127.0.0.31"
        }),
        "{clients}"
    );
    assert_eq!(clients["refused_rate"], 2);
    assert_eq!(clients["burst"], 3);
}

#[test]
fn tcp_mode_refuses_connections_over_the_rate() {
    let echo = echo_backend(b"");
    let lb = Sluice::start(
        limited(Mode::Tcp, None, Some("1/m,burst=2")),
        &[echo.addr],
        StrategyKind::RoundRobin,
    );
    let client = ip("127.0.0.41");
    for _ in 0..2 {
        let mut s = connect_from(client, lb.addr);
        s.write_all(b"hi").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut s), b"hi");
    }
    assert!(closed_without_answer(connect_from(client, lb.addr)));
    assert_eq!(refusals(&lb, "rate"), Some(1.0));
}

/// A connection from the balancer (127.0.0.1) whose PROXY header names `client`.
fn via_proxy_header(lb: &Sluice, client: SocketAddr) -> TcpStream {
    let s = connect(lb.addr);
    let mut header = [0u8; 108];
    let n = proxy_protocol::write(Version::V2, client, lb.addr, &mut header);
    (&s).write_all(&header[..n]).unwrap();
    s
}

#[test]
fn clients_named_by_proxy_headers_are_limited_apart_and_the_table_keeps_its_size() {
    let backend = HttpBackend::start(|_| Reply::ok(b"ok"));
    let cfg = ProxyConfig {
        proxy_protocol_from: Some(vec!["127.0.0.1/32".parse::<Cidr>().unwrap()]),
        ..limited(Mode::Http, Some(4), Some("1/m,burst=8"))
    };
    let lb = Sluice::start(cfg, &[backend.addr], StrategyKind::RoundRobin);
    let table_bytes = || value(&scrape(&lb), "sluice_client_table_bytes").unwrap();
    let before = table_bytes();
    assert!(before >= (65_536 * 32) as f64, "the fixed table: {before}");
    // Every connection comes from the balancer, each header names another client: each has an
    // allowance of its own (a burst of 8; clients that share a bucket share it, and 3,000
    // addresses put at most a few in one of 65,536), and the balancer itself is never limited.
    let n = 3_000u32;
    for i in 0..n {
        let client = SocketAddr::new(IpAddr::V4((0x0a00_0000 + i).into()), 40_000);
        let s = via_proxy_header(&lb, client);
        assert_eq!(request(&s).status, 200, "client {client}");
    }
    let seven: SocketAddr = "10.0.0.7:40000".parse().unwrap();
    let statuses: Vec<u16> = (0..8)
        .map(|_| request(&via_proxy_header(&lb, seven)).status)
        .collect();
    assert_eq!(
        statuses.last(),
        Some(&429),
        "10.0.0.7 used its burst: {statuses:?}"
    );
    for _ in 0..8 {
        let _ = request(&via_proxy_header(
            &lb,
            "[2001:db8:1:2::1]:40000".parse().unwrap(),
        ));
    }
    let same_64 = via_proxy_header(&lb, "[2001:db8:1:2::99]:40000".parse().unwrap());
    assert_eq!(request(&same_64).status, 429, "one allowance per /64");
    let other_64 = via_proxy_header(&lb, "[2001:db8:1:3::1]:40000".parse().unwrap());
    assert_eq!(request(&other_64).status, 200);
    assert_eq!(table_bytes(), before, "the table did not grow");
}
