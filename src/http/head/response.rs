//! Response heads: parse, decide framing from the request they answer, and write the head to
//! forward.

use super::fields::*;
use super::framing::*;
use super::*;

/// Parses the response head at the front of `src` and writes the head to send the client into `out`.
/// `Ok(None)`: the head is not complete yet.
///
/// Transfer-Encoding: a final `chunked` frames the body; any other final coding means the body
/// ends when the backend closes (RFC 9112 section 6.3). Codings that fail [`TransferCodings::add`]
/// (`identity, chunked`, unknown codings) are refused, and the worker answers 502, rather than
/// forwarded: a client that reads `identity` as "no coding" would wait for the close while sluice
/// keeps the connection for the next response, and two readings of where a body ends is how a
/// response queue gets poisoned. nginx, as a proxy, refuses them too.
pub(crate) fn forward_response(
    src: &[u8],
    ctx: &ResponseContext<'_>,
    out: &mut [u8],
) -> Result<Option<ResponseHead>, HeadError> {
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        src,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed("malformed response head")),
    };
    let line_end = resp
        .reason
        .filter(|r| !r.is_empty())
        .and_then(|r| end_in(src, r.as_bytes()));
    let line_start = src.starts_with(b"HTTP/").then_some(0);
    check_line_endings(&src[..head_len], line_start.zip(line_end), resp.headers)?;
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("malformed status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(HeadError::Malformed("bad status code"));
    }
    let headers = &*resp.headers;

    let mut conn = ConnectionOptions::default();
    let mut length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    let mut retry_after_s = None;
    let fields = classify_all(headers);
    for (h, &field) in headers.iter().zip(&fields) {
        match field {
            Field::Connection => conn.add(h.value)?,
            Field::ContentLength => {
                let n = parse_length(h.value)?;
                if length.is_some_and(|m| m != n) {
                    return Err(HeadError::Malformed("differing Content-Length values"));
                }
                length = Some(n);
            }
            Field::TransferEncoding => {
                if codings.present {
                    return Err(HeadError::Malformed("Transfer-Encoding repeated"));
                }
                codings.add(h.value)?;
            }
            Field::RetryAfter => {
                retry_after_s = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u32>().ok());
            }
            _ => {}
        }
    }
    if codings.present && length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let interim = (100..200).contains(&status);
    let switching = status == 101 && ctx.upgrade_requested;
    if status == 101 && !ctx.upgrade_requested {
        return Err(HeadError::Malformed("101 without an upgrade request"));
    }
    // RFC 9112 section 6.3: HEAD, 1xx, 204 and 304 responses end at their head.
    let framing = if ctx.method == Method::Head || interim || status == 204 || status == 304 {
        Framing::None
    } else {
        // RFC 9112 section 6.3: a response whose final coding is not chunked ends at close.
        match (codings.present.then_some(codings.final_chunked), length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::None,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let backend_keep_alive = !switching
        && framing != Framing::UntilClose
        && if minor == 1 {
            !conn.close
        } else {
            conn.keep_alive && !conn.close
        };
    // A chunked body cannot reach an HTTP/1.0 client with its end marked, except by closing.
    let client_keep_alive = !switching
        && ctx.client_keep_alive
        && framing != Framing::UntilClose
        && !(framing == Framing::Chunked && ctx.client_minor_version == 0);

    let mut o = Out { buf: out, len: 0 };
    o.put(if minor == 1 {
        b"HTTP/1.1 "
    } else {
        b"HTTP/1.0 "
    })?;
    let code = [
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    o.put(&code)?;
    o.put(b" ")?;
    o.put(resp.reason.unwrap_or("").as_bytes())?;
    o.put(b"\r\n")?;
    for (h, &field) in headers.iter().zip(&fields) {
        if !(field == Field::Upgrade && switching) && is_hop_by_hop(field, h.name, &conn) {
            continue;
        }
        o.field(h.name, h.value)?;
    }
    if switching {
        o.put(b"Connection: Upgrade\r\n")?;
    } else if interim {
        // Interim responses say nothing about the connection.
    } else if !client_keep_alive {
        o.put(b"Connection: close\r\n")?;
    } else if ctx.client_minor_version == 0 {
        o.put(b"Connection: keep-alive\r\n")?;
    }
    if let (Some(cookie), false) = (ctx.set_cookie, interim) {
        o.field("Set-Cookie", cookie)?;
    }
    o.put(b"\r\n")?;

    Ok(Some(ResponseHead {
        status,
        framing,
        backend_keep_alive,
        client_keep_alive,
        retry_after_s,
        head_len,
        out_len: o.len,
    }))
}
