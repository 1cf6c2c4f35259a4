//! Quiet tunnels: a TCP-mode connection and an upgraded (WebSocket) one outlive `--idle-timeout`,
//! which is for HTTP keep-alive, and are closed after `--tunnel-idle-timeout` of silence.
//!
//! The quiet period is a bounded sleep on purpose: silence for longer than `--idle-timeout` is the
//! thing under test, not a way to wait for something else.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;
use sluice::config::{Mode, ProxyConfig};
use sluice::strategy::StrategyKind;

const IDLE_MS: u64 = 300;
const TUNNEL_IDLE_MS: u64 = 3_000;
/// Longer than `IDLE_MS`, well within `TUNNEL_IDLE_MS`.
const QUIET: Duration = Duration::from_millis(3 * IDLE_MS);

fn config(mode: Mode, tunnel_idle_timeout_ms: u64) -> ProxyConfig {
    ProxyConfig {
        idle_timeout_ms: IDLE_MS,
        tunnel_idle_timeout_ms,
        ..test_config(mode)
    }
}

/// Sends `msg` and reads its echo (upper-cased by the WebSocket backend when `upper`).
#[track_caller]
fn ping(w: &mut TcpStream, r: &mut impl Read, msg: &[u8], upper: bool) {
    w.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    r.read_exact(&mut got).unwrap();
    let want = if upper {
        msg.to_ascii_uppercase()
    } else {
        msg.to_vec()
    };
    assert_eq!(got, want);
}

/// Waits for sluice to close the connection (the read timeout is far longer than the tunnel's).
#[track_caller]
fn assert_closed_by_sluice(r: &mut impl Read) {
    assert_eq!(read_to_eof(r), b"", "closed, with nothing more to read");
}

#[test]
fn a_quiet_tcp_tunnel_outlives_the_idle_timeout_and_closes_after_the_tunnel_idle_timeout() {
    let echo = echo_backend(b"");
    let lb = Sluice::start(
        config(Mode::Tcp, TUNNEL_IDLE_MS),
        &[echo.addr],
        StrategyKind::RoundRobin,
    );
    let mut w = lb.connect();
    let mut r = w.try_clone().unwrap();
    ping(&mut w, &mut r, b"before", false);
    thread::sleep(QUIET);
    ping(&mut w, &mut r, b"after a quiet spell", false);
    assert_closed_by_sluice(&mut r);
}

#[test]
fn a_tunnel_idle_timeout_of_zero_keeps_a_quiet_tunnel_open() {
    let echo = echo_backend(b"bye");
    let lb = Sluice::start(config(Mode::Tcp, 0), &[echo.addr], StrategyKind::RoundRobin);
    let mut w = lb.connect();
    let mut r = w.try_clone().unwrap();
    ping(&mut w, &mut r, b"before", false);
    thread::sleep(QUIET);
    ping(&mut w, &mut r, b"after a quiet spell", false);
    // Only the ends close it.
    w.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut r), b"bye");
}

/// Answers an upgrade with 101, then echoes in upper case until EOF.
fn websocket_backend() -> RawBackend {
    RawBackend::start(|s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let Ok(Some(req)) = read_request(&mut r) else {
            return;
        };
        assert_eq!(req.header("upgrade"), Some("websocket"));
        w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if w.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

#[test]
fn a_quiet_websocket_outlives_the_idle_timeout_and_closes_after_the_tunnel_idle_timeout() {
    let backend = websocket_backend();
    let lb = Sluice::start(
        config(Mode::Http, TUNNEL_IDLE_MS),
        &[backend.addr],
        StrategyKind::RoundRobin,
    );
    let mut w = lb.connect();
    let mut r = BufReader::new(w.try_clone().unwrap());
    w.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 101);
    ping(&mut w, &mut r, b"frame one", true);
    thread::sleep(QUIET);
    ping(&mut w, &mut r, b"frame two", true);
    assert_closed_by_sluice(&mut r);
}
