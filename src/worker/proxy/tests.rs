use super::*;
use crate::http::head::{forward_request, RequestOptions};
use crate::worker::http::start_request;

const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";

const BOTH_KEPT: AfterResponse = AfterResponse {
    reuse_backend: true,
    keep_client: true,
};

/// An exchange for the request `raw`, filled as the session fills it, read whole and sent.
fn exchange_for(raw: &str) -> Exchange {
    let opts = RequestOptions {
        client_ip: "127.0.0.1".parse().unwrap(),
        proto: "http",
        max_headers: 64,
        key_field: None,
        id_field: None,
        allow_upgrade: &[],
    };
    let mut out = [0u8; 2048];
    let h = forward_request(raw.as_bytes(), &opts, &mut out)
        .unwrap()
        .unwrap();
    let mut ex = Exchange::new();
    start_request(&mut ex, &h, 0..0, 1);
    ex.req_sent = ex.req_len;
    ex
}

/// The head of the response `raw` as the codec rewrites it for `ex`'s client.
fn response(ex: &Exchange, raw: &str, shutting_down: bool) -> ResponseHead {
    let mut out = [0u8; 2048];
    let ctx = response_context(ex, shutting_down, None);
    head::forward_response(raw.as_bytes(), &ctx, &mut out)
        .unwrap()
        .unwrap()
}

fn after(request: &str, resp: &str) -> AfterResponse {
    let ex = exchange_for(request);
    after_response(&response(&ex, resp, false), &ex, false)
}

#[test]
fn a_keep_alive_exchange_keeps_both_connections() {
    assert_eq!(after(GET, OK), BOTH_KEPT);
}

#[test]
fn a_client_that_sends_connection_close_is_closed_and_the_backend_kept() {
    let close = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_eq!(
        after(close, OK),
        AfterResponse {
            reuse_backend: true,
            keep_client: false
        }
    );
}

#[test]
fn a_backend_that_says_connection_close_is_not_reused_and_the_client_stays() {
    let close = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n";
    assert_eq!(
        after(GET, close),
        AfterResponse {
            reuse_backend: false,
            keep_client: true
        }
    );
}

#[test]
fn an_http_1_0_peer_is_kept_only_when_it_asks_for_keep_alive() {
    let old_client = "GET / HTTP/1.0\r\n\r\n";
    assert!(!after(old_client, OK).keep_client);
    let old_client_keep = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    assert!(after(old_client_keep, OK).keep_client);
    let old_backend = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n";
    assert!(!after(GET, old_backend).reuse_backend);
    let old_backend_keep = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n";
    assert!(after(GET, old_backend_keep).reuse_backend);
}

#[test]
fn an_http_1_0_client_is_closed_after_a_chunked_response_it_cannot_delimit() {
    let old_client_keep = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        after(old_client_keep, chunked),
        AfterResponse {
            reuse_backend: true,
            keep_client: false
        }
    );
    assert_eq!(after(GET, chunked), BOTH_KEPT);
}

#[test]
fn a_response_framed_by_the_backends_close_closes_both_connections() {
    let until_close = "HTTP/1.1 200 OK\r\n\r\n";
    assert_eq!(
        after(GET, until_close),
        AfterResponse {
            reuse_backend: false,
            keep_client: false
        }
    );
}

#[test]
fn a_backend_that_sent_past_its_response_is_not_reused() {
    let mut ex = exchange_for(GET);
    ex.backend_overran = true;
    let h = response(&ex, OK, false);
    assert!(!after_response(&h, &ex, false).reuse_backend);
}

#[test]
fn a_request_not_wholly_read_or_a_client_that_stopped_sending_ends_both_or_the_client() {
    let post = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
    let ex = exchange_for(post);
    let h = response(&ex, OK, false);
    assert_eq!(
        after_response(&h, &ex, false),
        AfterResponse {
            reuse_backend: false,
            keep_client: false
        },
        "the body is still arriving: answered early"
    );
    let mut ex = exchange_for(GET);
    ex.client_eof = true;
    let h = response(&ex, OK, false);
    assert!(!after_response(&h, &ex, false).keep_client);
}

#[test]
fn shutting_down_closes_the_client_after_its_response() {
    let ex = exchange_for(GET);
    let h = response(&ex, OK, true);
    assert!(!h.client_keep_alive, "the response says Connection: close");
    assert_eq!(
        after_response(&h, &ex, true),
        AfterResponse {
            reuse_backend: true,
            keep_client: false
        }
    );
}

#[test]
fn a_dropped_answer_keeps_its_connection_only_when_its_whole_body_arrived() {
    assert!(answer_fully_here(Framing::None, 0));
    assert!(
        !answer_fully_here(Framing::None, 3),
        "bytes past the answer"
    );
    assert!(answer_fully_here(Framing::Length(5), 5));
    assert!(!answer_fully_here(Framing::Length(5), 4));
    assert!(!answer_fully_here(Framing::Chunked, 100));
    assert!(!answer_fully_here(Framing::UntilClose, 100));
}

#[test]
fn an_exchange_waits_on_its_client_for_a_body_that_stopped_or_an_answer_left_unread() {
    let mut upload = exchange_for("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n");
    assert!(
        upload.waits_on_client(),
        "all it sent went on; the body did not come"
    );
    upload.req_sent -= 1;
    assert!(
        !upload.waits_on_client(),
        "the backend does not take the request"
    );
    let mut get = exchange_for(GET);
    assert!(
        !get.waits_on_client(),
        "the whole request went: the backend is awaited"
    );
    get.resp_len = 100;
    assert!(
        get.waits_on_client(),
        "answer bytes the client does not take"
    );
}
