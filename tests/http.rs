//! HTTP/1.1 mode through real sockets: methods and targets, forwarded fields, bodies both ways,
//! keep-alive and pooling, pipelining, HTTP/1.0, bodiless responses, upgrades.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::thread;

use common::*;

#[test]
fn methods_paths_and_queries_are_forwarded_unchanged() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    for (method, target) in [
        ("GET", "/"),
        ("GET", "/a/b/c?x=1&y=%20two"),
        ("POST", "/submit?id=7"),
        ("PUT", "/items/42"),
        ("DELETE", "/items/42?force=true"),
        ("OPTIONS", "*"),
    ] {
        let body = if method == "GET" || method == "OPTIONS" {
            ""
        } else {
            "payload"
        };
        let raw = format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let resp = roundtrip(lb.addr, raw.as_bytes());
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), format!("{method} {target}"));
    }
    let seen = backend.requests();
    assert_eq!(seen[2].body, b"payload");
}

#[test]
fn forwarded_fields_are_added_and_hop_by_hop_fields_removed() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    let resp = roundtrip(
        lb.addr,
        b"GET /h HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.1\r\nConnection: keep-alive, X-Private\r\n\
          X-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Custom: kept\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let req = &backend.requests()[0];
    assert_eq!(req.header("x-forwarded-for"), Some("192.0.2.1, 127.0.0.1"));
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(req.header("x-custom"), Some("kept"));
    assert_eq!(req.header("host"), Some("t"));
    for gone in ["connection", "x-private", "keep-alive", "te"] {
        assert_eq!(req.header(gone), None, "{gone} was forwarded");
    }
}

#[test]
fn response_hop_by_hop_fields_are_removed() {
    let backend = HttpBackend::start(|_| {
        Reply::raw("HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\nX-End: 2\r\nContent-Length: 2\r\n\r\nok", false)
    });
    let lb = Sluice::http(&[backend.addr]);
    let resp = roundtrip(lb.addr, &get("/"));
    assert_eq!(resp.header("x-end"), Some("2"));
    assert_eq!(resp.header("x-hop"), None);
    assert_eq!(resp.header("keep-alive"), None);
    assert_eq!(resp.body, b"ok");
}

#[test]
fn chunked_request_body_is_streamed_to_the_backend() {
    let backend = HttpBackend::start(|r| Reply::ok(format!("{}", r.body.len()).as_bytes()));
    let lb = Sluice::http(&[backend.addr]);
    let mut s = lb.connect();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    s.write_all(b"5\r\nhello\r\n").unwrap();
    s.write_all(b"6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(resp.text(), "11");
    let req = &backend.requests()[0];
    assert_eq!(req.body, b"hello world");
    assert_eq!(
        req.raw_body, b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        "forwarded byte for byte"
    );
}

#[test]
fn chunked_response_is_forwarded_and_the_connection_reused() {
    let backend = HttpBackend::start(|_| {
        Reply::raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", false)
    });
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..3 {
        w.write_all(&get("/c")).unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert_eq!(resp.body, b"abcdefg");
    }
}

#[test]
fn the_trailer_field_reaches_the_client_with_the_trailers() {
    let backend = HttpBackend::start(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
             3\r\nabc\r\n0\r\nX-Checksum: 900150983cd24fb0\r\n\r\n",
            false,
        )
    });
    let lb = Sluice::http(&[backend.addr]);
    let mut s = lb.connect();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\
          Trailer: X-Sent-At\r\n\r\n2\r\nhi\r\n0\r\nX-Sent-At: 1\r\n\r\n",
    )
    .unwrap();
    let got = String::from_utf8(read_to_eof(&mut s)).unwrap();
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nTrailer: X-Checksum\r\n"), "{head:?}");
    assert_eq!(
        body,
        "3\r\nabc\r\n0\r\nX-Checksum: 900150983cd24fb0\r\n\r\n"
    );
    let req = &backend.requests()[0];
    assert_eq!(req.header("trailer"), Some("X-Sent-At"));
    assert_eq!(req.raw_body, b"2\r\nhi\r\n0\r\nX-Sent-At: 1\r\n\r\n");
}

#[test]
fn codings_under_a_final_chunked_are_forwarded() {
    let backend = HttpBackend::start(|r| Reply::ok(&r.body));
    let lb = Sluice::http(&[backend.addr]);
    let resp = roundtrip(
        lb.addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"\x1f\x8b\x08");
    let req = &backend.requests()[0];
    assert_eq!(req.header("transfer-encoding"), Some("gzip, chunked"));
}

#[test]
fn multi_megabyte_bodies_stream_both_ways() {
    // The backend answers with the request body reversed, so both directions carry megabytes.
    let backend = HttpBackend::start(|r| {
        let mut body = r.body.clone();
        body.reverse();
        Reply::ok(&body)
    });
    let lb = Sluice::http(&[backend.addr]);
    let data = pattern(6 << 20, 3);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let t = thread::spawn(move || {
        w.write_all(
            format!(
                "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                sent.len()
            )
            .as_bytes(),
        )
        .unwrap();
        w.write_all(&sent).unwrap();
    });
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    t.join().unwrap();
    let mut expected = data;
    expected.reverse();
    assert_eq!(resp.body.len(), expected.len());
    assert!(resp.body == expected, "body differs");
}

#[test]
fn keep_alive_reuses_client_and_backend_connections() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..50 {
        w.write_all(&get(&format!("/n/{i}"))).unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.text(), format!("GET /n/{i}"));
    }
    // One client connection, handled by one worker: its pooled backend connection carried all 50.
    assert_eq!(backend.accepts(), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(&get(&format!("/p{i}")));
    }
    batch.extend_from_slice(b"POST /p5 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    batch.extend_from_slice(&get("/p6"));
    w.write_all(&batch).unwrap();
    let mut r = BufReader::new(s);
    for (i, method) in ["GET", "GET", "GET", "GET", "GET", "POST", "GET"]
        .iter()
        .enumerate()
    {
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.text(), format!("{method} /p{i}"));
    }
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked_for() {
    let backend = HttpBackend::echo_target();
    let lb = Sluice::http(&[backend.addr]);

    let mut s = lb.connect();
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
    let all = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(all.ends_with("GET /old"), "{all}");
    assert!(all.contains("Connection: close"), "{all}");
    assert_eq!(backend.requests()[0].version, 0, "version forwarded as is");

    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        w.write_all(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        assert_eq!(resp.text(), "GET /ka");
    }
}

#[test]
fn head_204_and_304_responses_carry_no_body() {
    let backend = HttpBackend::start(|r| match r.target.as_str() {
        "/204" => Reply::raw("HTTP/1.1 204 No Content\r\n\r\n", false),
        "/304" => Reply::raw("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", false),
        // A HEAD answer announces the length of the body it does not send.
        _ => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false),
    });
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let resp = read_response(&mut r, true).unwrap();
    assert_eq!(resp.header("content-length"), Some("1000"));
    w.write_all(&get("/204")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 204);
    w.write_all(&get("/304")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 304);
    // All three on one connection: had a body been expected, this request would be misread.
    w.write_all(&get("/204")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 204);
}

#[test]
fn response_without_length_ends_at_close_and_closes_the_client() {
    let backend = HttpBackend::start(|_| Reply::raw("HTTP/1.1 200 OK\r\n\r\nuntil the end", true));
    let lb = Sluice::http(&[backend.addr]);
    let mut s = lb.connect();
    s.write_all(&get("/")).unwrap();
    let all = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(all.contains("Connection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nuntil the end"), "{all}");
}

#[test]
fn expect_100_continue_is_relayed() {
    let backend = RawBackend::start(|s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        // Read the head, say 100 Continue, then read the body and answer.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            r.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        let mut body = [0u8; 4];
        r.read_exact(&mut body).unwrap();
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
            .unwrap();
        w.write_all(&body).unwrap();
    });
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let interim = read_response(&mut r, false).unwrap();
    assert_eq!(interim.status, 100);
    w.write_all(b"data").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"data");
}

/// A lenient backend (as hypercorn is) switches to HTTP/2 on any `Upgrade: h2c`, with or without
/// HTTP2-Settings. Through sluice it never sees the token, so it answers in HTTP/1.1 and the next
/// request on the connection is an HTTP/1.1 request again.
#[test]
fn an_h2c_upgrade_is_forwarded_as_plain_http_and_the_backend_never_switches() {
    let backend = HttpBackend::start(|r| {
        let wants_h2c = r
            .header("upgrade")
            .is_some_and(|u| u.to_ascii_lowercase().contains("h2c"));
        if wants_h2c {
            Reply::raw(
                &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                    [..],
                false,
            )
        } else {
            Reply::ok(format!("http/1.1 {}", r.target).as_bytes())
        }
    });
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for target in ["/first", "/second"] {
        w.write_all(
            format!(
                "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                 Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), format!("http/1.1 {target}"));
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    for req in &seen {
        assert_eq!(req.header("upgrade"), None, "{:?}", req.headers);
        assert_eq!(req.header("http2-settings"), None);
        assert!(!req
            .header("connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade")));
    }
}

#[test]
fn upgrade_turns_the_connection_into_a_tunnel() {
    let backend = RawBackend::start(|s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let req = read_request(&mut r).unwrap().unwrap();
        assert_eq!(req.header("upgrade"), Some("websocket"));
        assert_eq!(req.header("connection"), Some("Upgrade"));
        w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nwelcome").unwrap();
        // Then echo, in upper case, until EOF.
        let mut buf = [0u8; 1024];
        loop {
            let n = r.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n].to_ascii_uppercase()).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let lb = Sluice::http(&[backend.addr]);
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("Upgrade: websocket\r\n"));
    let mut welcome = [0u8; 7];
    r.read_exact(&mut welcome).unwrap();
    assert_eq!(&welcome, b"welcome");
    w.write_all(b"frame one").unwrap();
    let mut echo = [0u8; 9];
    r.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"FRAME ONE");
    w.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut r), b"");
}

#[test]
fn requests_are_spread_round_robin() {
    let a = HttpBackend::start(|_| Reply::ok(b"a"));
    let b = HttpBackend::start(|_| Reply::ok(b"b"));
    let lb = Sluice::start(
        sluice::config::ProxyConfig {
            workers: 1,
            ..test_config(sluice::config::Mode::Http)
        },
        &[a.addr, b.addr],
        sluice::strategy::StrategyKind::RoundRobin,
    );
    let s = lb.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut seq = String::new();
    for _ in 0..6 {
        w.write_all(&get("/")).unwrap();
        seq.push_str(&read_response(&mut r, false).unwrap().text());
    }
    assert!(seq == "ababab" || seq == "bababa", "{seq}");
}
