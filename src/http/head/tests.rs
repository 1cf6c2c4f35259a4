use super::fields::*;
use super::request::*;
use super::*;
use std::net::Ipv4Addr;

fn opts() -> RequestOptions<'static> {
    RequestOptions {
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
        proto: "http",
        max_headers: 64,
        key_field: Some("x-user"),
        id_field: Some("idempotency-key"),
        allow_upgrade: &[],
    }
}

fn req(src: &str) -> Result<Option<(RequestHead, String)>, HeadError> {
    let mut out = vec![0u8; 4096];
    Ok(
        forward_request(src.as_bytes(), &opts(), &mut out)?.map(|h| {
            let text = String::from_utf8(out[..h.out_len].to_vec()).unwrap();
            (h, text)
        }),
    )
}

fn req_ok(src: &str) -> (RequestHead, String) {
    req(src).unwrap().unwrap()
}

fn resp(src: &str, ctx: ResponseContext) -> Result<Option<(ResponseHead, String)>, HeadError> {
    let mut out = vec![0u8; 4096];
    Ok(forward_response(src.as_bytes(), &ctx, &mut out)?.map(|h| {
        let text = String::from_utf8(out[..h.out_len].to_vec()).unwrap();
        (h, text)
    }))
}

fn ctx11() -> ResponseContext<'static> {
    ResponseContext {
        method: Method::Get,
        client_minor_version: 1,
        client_keep_alive: true,
        upgrade_requested: false,
        set_cookie: None,
    }
}

#[test]
fn forwards_request_line_and_fields_and_adds_forwarded_fields() {
    let (h, out) = req_ok("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\nrest");
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.framing, Framing::None);
    assert!(h.keep_alive);
    assert_eq!(
        h.head_len,
        "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n".len()
    );
    assert_eq!(
        out,
        "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\
         X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
    assert_eq!(&out[h.target.clone()], "/a/b?x=1&y=2");
}

#[test]
fn partial_head_asks_for_more() {
    assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    assert_eq!(req("GE"), Ok(None));
}

#[test]
fn drops_hop_by_hop_fields_and_those_connection_names() {
    let (h, out) = req_ok(
        "POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
         X-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 3\r\n\r\n",
    );
    assert_eq!(h.framing, Framing::Length(3));
    assert!(
        !h.upgrade,
        "Upgrade without Connection: upgrade is no upgrade"
    );
    for gone in [
        "Connection",
        "Keep-Alive",
        "TE:",
        "Proxy-Connection",
        "Upgrade",
        "X-Secret",
    ] {
        assert!(!out.contains(gone), "{gone} forwarded in {out:?}");
    }
    assert!(out.contains("X-Kept: 2\r\n"));
    assert!(out.contains("Trailer: X-T\r\n"), "Trailer is end to end");
    assert!(out.contains("Content-Length: 3\r\n"));
}

#[test]
fn connection_cannot_strip_framing_fields() {
    let (h, out) = req_ok(
        "POST / HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(h.framing, Framing::Length(2));
    assert!(out.contains("Content-Length: 2\r\n"));
}

#[test]
fn appends_client_to_existing_forwarded_for() {
    let (_, out) = req_ok(
        "GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nHost: h\r\nX-Forwarded-For: 5.6.7.8\r\n\
         X-Forwarded-Proto: https\r\n\r\n",
    );
    assert!(
        out.contains("X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.7\r\n"),
        "{out}"
    );
    assert_eq!(out.matches("X-Forwarded-For").count(), 1);
    assert!(out.contains("X-Forwarded-Proto: http\r\n") && !out.contains("https"));
}

#[test]
fn ipv6_client_is_written_in_text_form() {
    let mut o = opts();
    o.client_ip = "2001:db8::1".parse().unwrap();
    let mut out = vec![0u8; 512];
    let h = forward_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &o, &mut out)
        .unwrap()
        .unwrap();
    let text = std::str::from_utf8(&out[..h.out_len]).unwrap();
    assert!(text.contains("X-Forwarded-For: 2001:db8::1\r\n"), "{text}");
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(
        !req_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .0
            .keep_alive
    );
    assert!(!req_ok("GET / HTTP/1.0\r\n\r\n").0.keep_alive);
    let (h, out) = req_ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(h.keep_alive);
    assert!(
        out.ends_with("Connection: keep-alive\r\n\r\n"),
        "asks the backend to keep it: {out}"
    );
}

#[test]
fn chunked_and_lengths_are_framed_strictly() {
    let (h, _) = req_ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    let bad = [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    for b in bad {
        assert_eq!(req(b).map(|_| ()).unwrap_err().status(), 400, "{b:?}");
    }
}

fn te_request(codings: &str) -> Result<Framing, u16> {
    let src = format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {codings}\r\n\r\n");
    req(&src)
        .map(|h| h.map_or(Framing::None, |(h, _)| h.framing))
        .map_err(HeadError::status)
}

#[test]
fn request_transfer_codings_other_than_a_final_chunked_are_refused() {
    for ok in [
        "chunked",
        "Chunked",
        "gzip, chunked",
        "gzip,chunked",
        "x-gzip ,\tdeflate , compress, x-compress, chunked",
    ] {
        assert_eq!(te_request(ok), Ok(Framing::Chunked), "{ok:?}");
    }
    let refused = [
        // Not a transfer coding (RFC 7230 removed identity), or one sluice does not know.
        ("identity, chunked", 501),
        ("identity", 501),
        ("chunked, identity", 501),
        ("br, chunked", 501),
        ("gzip;level=1, chunked", 501),
        // The final coding is not chunked: no reliable length (RFC 9112 section 6.3).
        ("gzip", 400),
        ("chunked, gzip", 400),
        ("chunked,", 400),
        // Chunked twice, empty elements, and bytes that are no token.
        ("chunked, chunked", 400),
        ("gzip,, chunked", 400),
        ("gzip chunked", 400),
        ("\"chunked\"", 400),
        ("", 400),
    ];
    for (codings, status) in refused {
        assert_eq!(te_request(codings), Err(status), "{codings:?}");
    }
    let (h, out) = req_ok(
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(h.framing, Framing::Chunked, "two fields are one list");
    assert!(out.contains("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"));
    let e = req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n")
        .unwrap_err();
    assert_eq!(e.reason(), "identity is not a transfer coding");
}

#[test]
fn malformed_heads_are_refused() {
    let bad = [
        "GET / HTTP/1.1\nHost: h\n\n",
        "GET / HTTP/1.1\r\nHost: h\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: 1\r\nHost: h\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "\u{1}GET / HTTP/1.1\r\n\r\n",
    ];
    for b in bad {
        let e = req(b).map(|_| ()).unwrap_err();
        assert_eq!(e.status(), 400, "{b:?}: {e:?}");
    }
}

#[test]
fn too_many_headers_is_431() {
    let mut src = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..70 {
        src.push_str(&format!("X-{i}: v\r\n"));
    }
    src.push_str("\r\n");
    assert_eq!(req(&src).unwrap_err(), HeadError::TooManyHeaders);
}

#[test]
fn max_headers_allows_up_to_the_cap() {
    let head = |fields: usize| {
        let mut src = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 1..fields {
            src.push_str(&format!("X-{i}: v\r\n"));
        }
        src + "\r\n"
    };
    let opts = RequestOptions {
        max_headers: MAX_HEADERS,
        ..opts()
    };
    let mut out = vec![0u8; 16384];
    let h = forward_request(head(MAX_HEADERS).as_bytes(), &opts, &mut out).unwrap();
    assert!(h.is_some(), "{MAX_HEADERS} fields pass");
    assert_eq!(
        forward_request(head(MAX_HEADERS + 1).as_bytes(), &opts, &mut out),
        Err(HeadError::TooManyHeaders)
    );
}

#[test]
fn response_trailer_field_is_forwarded() {
    let (h, out) = resp(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n",
        ctx11(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.framing, Framing::Chunked);
    assert!(out.contains("Trailer: X-Checksum\r\n"), "{out:?}");
}

#[test]
fn connect_is_not_implemented() {
    assert_eq!(
        req("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap_err()
            .status(),
        501
    );
}

#[test]
fn h2c_is_dropped_and_the_request_goes_on_as_plain_http() {
    let (h, out) = req_ok(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    assert!(!h.upgrade);
    assert!(
        !out.to_ascii_lowercase().contains("upgrade") && !out.contains("HTTP2-Settings"),
        "{out}"
    );
    assert!(
        h.keep_alive,
        "the client's connection stays an HTTP/1.1 one"
    );
}

#[test]
fn only_allowed_protocols_stay_in_upgrade() {
    let (h, out) = req_ok(
        "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c, WebSocket/13\r\n\
         Upgrade: foo\r\n\r\n",
    );
    assert!(h.upgrade);
    assert!(
        out.contains("Upgrade: WebSocket/13\r\nConnection: Upgrade\r\n"),
        "{out}"
    );
    let allow = ["foo".to_string()];
    let opts = RequestOptions {
        allow_upgrade: &allow,
        ..opts()
    };
    let mut buf = vec![0u8; 4096];
    let src = "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: FOO, h2c\r\n\r\n";
    let h = forward_request(src.as_bytes(), &opts, &mut buf)
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&buf[..h.out_len]);
    assert!(h.upgrade);
    assert!(
        out.contains("Upgrade: FOO\r\nConnection: Upgrade\r\n"),
        "{out}"
    );
}

#[test]
fn upgrade_request_keeps_upgrade_fields() {
    let (h, out) =
        req_ok("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
    assert!(h.upgrade);
    assert!(
        out.contains("Upgrade: websocket\r\n") && out.contains("Connection: Upgrade\r\n"),
        "{out}"
    );
}

#[test]
fn records_cookie_and_the_configured_id_field() {
    let (h, out) =
        req_ok("POST / HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\nIdempotency-Key: abc\r\n\r\n");
    assert_eq!(&out[h.cookie.unwrap()], "a=1; b=2");
    assert_eq!(&out[h.id_field.unwrap()], "abc");
}

#[test]
fn output_too_small_is_too_large() {
    let mut out = [0u8; 20];
    let e = forward_request(
        b"GET /long/path HTTP/1.1\r\nHost: h\r\n\r\n",
        &opts(),
        &mut out,
    )
    .unwrap_err();
    assert_eq!(e, HeadError::TooLarge);
}

#[test]
fn response_framing_follows_rfc_9112() {
    let cases = [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            ctx11(),
            Framing::Length(5),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ctx11(),
            Framing::Chunked,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", ctx11(), Framing::UntilClose),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            ctx11(),
            Framing::UntilClose,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            ctx11(),
            Framing::UntilClose,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            ctx11(),
            Framing::Chunked,
        ),
        ("HTTP/1.1 204 No Content\r\n\r\n", ctx11(), Framing::None),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            ctx11(),
            Framing::None,
        ),
        ("HTTP/1.1 100 Continue\r\n\r\n", ctx11(), Framing::None),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            ResponseContext {
                method: Method::Head,
                ..ctx11()
            },
            Framing::None,
        ),
    ];
    for (src, ctx, framing) in cases {
        assert_eq!(
            resp(src, ctx).unwrap().unwrap().0.framing,
            framing,
            "{src:?}"
        );
    }
}

#[test]
fn response_connection_handling() {
    let (h, out) = resp(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
        ctx11(),
    )
    .unwrap()
    .unwrap();
    assert!(h.backend_keep_alive && h.client_keep_alive);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");

    let (h, out) = resp(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ctx11(),
    )
    .unwrap()
    .unwrap();
    assert!(
        !h.backend_keep_alive && h.client_keep_alive,
        "the backend closing does not close the client"
    );
    assert!(!out.contains("Connection"));

    let (h, out) = resp("HTTP/1.1 200 OK\r\n\r\n", ctx11()).unwrap().unwrap();
    assert!(!h.client_keep_alive && !h.backend_keep_alive);
    assert!(out.contains("Connection: close\r\n"));

    let ctx10 = ResponseContext {
        client_minor_version: 0,
        ..ctx11()
    };
    let (h, out) = resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", ctx10)
        .unwrap()
        .unwrap();
    assert!(h.client_keep_alive);
    assert!(out.contains("Connection: keep-alive\r\n"));
    let (h, _) = resp(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ctx10,
    )
    .unwrap()
    .unwrap();
    assert!(
        !h.client_keep_alive,
        "chunked to an HTTP/1.0 client ends by closing"
    );

    let (h, _) = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", ctx11())
        .unwrap()
        .unwrap();
    assert!(!h.backend_keep_alive);
}

#[test]
fn switching_protocols_keeps_upgrade() {
    let ctx = ResponseContext {
        upgrade_requested: true,
        ..ctx11()
    };
    let (h, out) = resp(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ctx,
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.status, 101);
    assert!(!h.is_interim());
    assert!(out.contains("Upgrade: websocket\r\n") && out.contains("Connection: Upgrade\r\n"));
    assert!(resp("HTTP/1.1 101 Switching Protocols\r\n\r\n", ctx11()).is_err());
}

#[test]
fn garbage_responses_are_refused() {
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 1\n\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip,,chunked\r\n\r\n",
    ] {
        assert!(resp(bad, ctx11()).is_err(), "{bad:?}");
    }
    let (h, _) = resp(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
        ctx11(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        h.framing,
        Framing::Length(2),
        "identical repeated lengths are one length"
    );
}

#[test]
fn records_host_and_the_configured_key_field() {
    let (h, out) = req_ok("GET / HTTP/1.1\r\nHost: shop\r\nX-User: ada\r\n\r\n");
    assert_eq!(&out[h.host.unwrap()], "shop");
    assert_eq!(&out[h.key_field.unwrap()], "ada");
}

#[test]
fn cookie_values_are_found_by_name() {
    let v = b"a=1; sluice_backend=00ff; b=";
    assert_eq!(&v[cookie_value(v, "sluice_backend").unwrap()], b"00ff");
    assert_eq!(&v[cookie_value(v, "a").unwrap()], b"1");
    assert_eq!(&v[cookie_value(v, "b").unwrap()], b"");
    assert_eq!(cookie_value(v, "sluice"), None);
    assert_eq!(cookie_value(b"", "a"), None);
}

#[test]
fn set_cookie_goes_on_final_responses_only() {
    let ctx = ResponseContext {
        set_cookie: Some(b"k=v; Path=/"),
        ..ctx11()
    };
    let (_, out) = resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ctx)
        .unwrap()
        .unwrap();
    assert!(out.ends_with("Set-Cookie: k=v; Path=/\r\n\r\n"), "{out}");
    let (_, out) = resp("HTTP/1.1 100 Continue\r\n\r\n", ctx).unwrap().unwrap();
    assert!(!out.contains("Set-Cookie"));
}

#[test]
fn empty_lines_before_the_request_line_must_be_crlf() {
    assert!(req("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap()
        .is_some());
    assert_eq!(
        req("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap_err()
            .status(),
        400
    );
    assert_eq!(
        req("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap_err()
            .status(),
        400
    );
}

#[test]
fn field_names_compare_without_case() {
    assert!(eq_lower(b"Content-Length", b"content-length"));
    assert!(eq_lower(b"CONTENT-LENGTH", b"content-length"));
    assert!(!eq_lower(b"Content-Lengths", b"content-length"));
    assert!(!eq_lower(b"Content_Length", b"content-length"));
    assert!(eq_lower(b"tE", b"te"));
}

#[test]
fn ipv4_addresses_format_like_std() {
    for ip in [
        "0.0.0.0",
        "1.2.3.4",
        "10.100.200.255",
        "255.255.255.255",
        "127.0.0.1",
    ] {
        let mut buf = [0u8; 64];
        let mut out = Out {
            buf: &mut buf,
            len: 0,
        };
        write_ip(&mut out, ip.parse().unwrap()).unwrap();
        let len = out.len;
        assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip);
    }
}
