//! TCP (L4) mode through real sockets: both directions, half-close, large transfers, retries.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use common::*;

#[test]
fn tcp_echo_in_both_directions() {
    let backend = echo_backend(b"");
    let lb = Sluice::tcp(&[backend.addr]);
    let mut s = lb.connect();
    for msg in [&b"hello"[..], b"second message", b"x"] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn tcp_half_close_is_passed_on_both_ways() {
    // The backend echoes until it reads EOF, then says goodbye and closes its side.
    let backend = echo_backend(b"bye");
    let lb = Sluice::tcp(&[backend.addr]);
    let mut s = lb.connect();
    s.write_all(b"last words").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"last wordsbye");
}

#[test]
fn tcp_multi_megabyte_transfer_arrives_intact() {
    let backend = echo_backend(b"");
    let lb = Sluice::tcp(&[backend.addr]);
    let s = lb.connect();
    let data = pattern(8 << 20, 7);
    let mut writer = s.try_clone().unwrap();
    let sent = data.clone();
    let t = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = s;
    let got = read_to_eof(&mut reader);
    t.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
}

#[test]
fn tcp_refused_backend_is_retried_on_another() {
    let backend = echo_backend(b"");
    let lb = Sluice::tcp(&[refused_addr(), backend.addr]);
    for _ in 0..6 {
        let mut s = lb.connect();
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
    assert_eq!(backend.accepts(), 6);
}

#[test]
fn tcp_all_backends_down_closes_the_client() {
    let lb = Sluice::tcp(&[refused_addr(), refused_addr()]);
    let mut s = lb.connect();
    let _ = s.write_all(b"anyone?");
    // Closed either way: EOF, or a reset because sluice never read what the client sent.
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "got bytes from nowhere"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}
