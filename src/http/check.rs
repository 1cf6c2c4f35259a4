//! Invariants of the HTTP parsers over arbitrary input, asserted by the fuzz targets (fuzz/) and by
//! the `corpus_replay` tests below, which replay every saved input (the seed corpus, and each crash the
//! fuzzers ever found, under fuzz/regressions) on every test run.
//!
//! Each function panics when an invariant breaks; that is its purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::chunked::ChunkedDecoder;
use super::head::{
    forward_request, forward_response, HeadError, Method, RequestOptions, ResponseContext,
    MAX_HEADERS,
};

/// An accepted head has only CRLF line endings: no CR without LF, no LF without CR.
fn no_bare_line_endings(head: &[u8]) {
    let mut prev = 0u8;
    for (i, &b) in head.iter().enumerate() {
        assert!(
            !(b == b'\n' && prev != b'\r'),
            "bare LF at {i} in an accepted head"
        );
        assert!(
            !(prev == b'\r' && b != b'\n'),
            "bare CR at {i} in an accepted head"
        );
        prev = b;
    }
    assert_ne!(prev, b'\r', "a head cannot end in CR");
}

/// Never a panic; what sluice forwards is a head sluice accepts, with the same framing and method.
pub fn request_head(data: &[u8]) {
    let opts = RequestOptions {
        client_ip: "192.0.2.7".parse().unwrap(),
        proto: "http",
        max_headers: 100,
        key_field: Some("x-key"),
        id_field: Some("x-id"),
        allow_upgrade: &[],
    };
    let mut out = vec![0u8; data.len() + 1024];
    let Ok(Some(h)) = forward_request(data, &opts, &mut out) else {
        return;
    };
    assert!(h.head_len <= data.len());
    no_bare_line_endings(&data[..h.head_len]);
    assert!(h.out_len <= out.len());
    assert!(h.target.end <= h.out_len);
    for r in [&h.cookie, &h.id_field, &h.host, &h.key_field]
        .into_iter()
        .flatten()
    {
        assert!(r.start <= r.end && r.end <= h.out_len);
    }
    let mut again = vec![0u8; h.out_len + 1024];
    // The rewrite may add X-Forwarded-For, X-Forwarded-Proto and Connection.
    let next_hop = RequestOptions {
        max_headers: opts.max_headers + 3,
        ..opts
    };
    let second = forward_request(&out[..h.out_len], &next_hop, &mut again);
    let Ok(Some(h2)) = second else {
        panic!("sluice forwarded a head it would refuse: {second:?}")
    };
    assert_eq!(h2.framing, h.framing);
    assert_eq!(h2.method, h.method);
    assert_eq!(h2.head_len, h.out_len);
}

/// Never a panic; the head sent to the client parses again with the same status and framing. The
/// first byte of `data` chooses the request context.
pub fn response_head(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let ctx = ResponseContext {
        method: if selector & 1 == 0 {
            Method::Get
        } else {
            Method::Head
        },
        client_minor_version: (selector >> 1) & 1,
        client_keep_alive: selector & 4 != 0,
        upgrade_requested: selector & 8 != 0,
        set_cookie: (selector & 16 != 0).then_some(&b"sluice_backend=00ff; Path=/"[..]),
    };
    let mut out = vec![0u8; data.len() + 1024];
    let Ok(Some(h)) = forward_response(data, &ctx, &mut out) else {
        return;
    };
    assert!(h.head_len <= data.len());
    no_bare_line_endings(&data[..h.head_len]);
    assert!(h.out_len <= out.len());
    let mut again = vec![0u8; h.out_len + 1024];
    let ctx2 = ResponseContext {
        set_cookie: None,
        ..ctx
    };
    let second = forward_response(&out[..h.out_len], &ctx2, &mut again);
    // A response at the field limit comes out with sluice's Connection (and Set-Cookie) added.
    let fields = data[..h.head_len]
        .windows(2)
        .filter(|w| w == b"\r\n")
        .count()
        .saturating_sub(2);
    if second == Err(HeadError::TooManyHeaders) && fields + 2 > MAX_HEADERS {
        return;
    }
    let Ok(Some(h2)) = second else {
        panic!("sluice sent a head it would refuse: {second:?}")
    };
    assert_eq!(h2.status, h.status);
    if h.client_keep_alive {
        assert_eq!(
            h2.framing, h.framing,
            "the client would find the body's end elsewhere"
        );
    }
}

fn scan(parts: &[&[u8]]) -> Result<(usize, bool), ()> {
    let mut d = ChunkedDecoder::new();
    let mut total = 0;
    for part in parts {
        let n = d.advance(part).map_err(|_| ())?;
        assert!(n <= part.len());
        total += n;
        if n < part.len() {
            assert!(d.is_done(), "stopped early without being done");
            break;
        }
    }
    Ok((total, d.is_done()))
}

/// Never a panic; the same verdict whatever reads the body arrives in; a size line ending in
/// whitespace is never accepted (RFC 9112 section 7.1.1 allows BWS only before `;` and `=`). The
/// first byte of `data` chooses a split point.
pub fn chunked(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = scan(&[body]);
    // No CR can come before the end of the first size line (extensions have no CR), so the first
    // CR ends it; reading past it means the line was accepted.
    if let (Some(cr), Ok((read, _))) = (body.iter().position(|&b| b == b'\r'), whole) {
        let ends_in_ws = cr > 0 && matches!(body[cr - 1], b' ' | b'\t');
        assert!(
            !(ends_in_ws && read > cr),
            "a size line ending in whitespace was accepted"
        );
    }
    let at = usize::from(cut).min(body.len());
    assert_eq!(whole, scan(&[&body[..at], &body[at..]]));
    let bytewise: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, scan(&bytewise));
}

/// Every saved fuzz input (fuzz/corpus: the seeds; fuzz/regressions: every crash a fuzzer found,
/// kept as a regression test) through the invariants above.
#[cfg(test)]
mod corpus_replay {
    use std::path::Path;

    fn replay(target: &str, check: fn(&[u8])) -> usize {
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz")
                .join(dir)
                .join(target);
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(data) = std::fs::read(entry.path()) {
                    check(&data);
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn request_head_corpus_holds_the_invariants() {
        assert!(replay("request_head", super::request_head) >= 4);
    }

    #[test]
    fn response_head_corpus_holds_the_invariants() {
        assert!(replay("response_head", super::response_head) >= 4);
    }

    #[test]
    fn chunked_corpus_holds_the_invariants() {
        assert!(replay("chunked", super::chunked) >= 2);
    }
}
