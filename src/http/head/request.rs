//! Request heads: parse, decide framing, and write the head to forward, with X-Forwarded-For and
//! X-Forwarded-Proto added.

use super::fields::*;
use super::framing::*;
use super::*;

/// Decimal text of every byte value: `(digits, len)`, built at compile time.
pub(super) const OCTET_TEXT: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let (h, t, o) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        table[i] = if i >= 100 {
            ([b'0' + h, b'0' + t, b'0' + o], 3)
        } else if i >= 10 {
            ([b'0' + t, b'0' + o, 0], 2)
        } else {
            ([b'0' + o, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// Writes a client address in its usual text form.
pub(super) fn write_ip(out: &mut Out<'_>, ip: IpAddr) -> Result<(), HeadError> {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                let (digits, len) = OCTET_TEXT[usize::from(octet)];
                text[n..n + 3].copy_from_slice(&digits);
                n += usize::from(len);
            }
            out.put(&text[..n])
        }
        IpAddr::V6(v6) => {
            let mut text = [0u8; 48];
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            write!(cursor, "{v6}").map_err(|_| HeadError::TooLarge)?;
            let n = cursor.position() as usize;
            out.put(&text[..n])
        }
    }
}

/// Settings for forwarding requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestOptions<'a> {
    pub client_ip: IpAddr,
    /// Value of X-Forwarded-Proto.
    pub proto: &'static str,
    /// Most header fields accepted (at most [`MAX_HEADERS`]).
    pub max_headers: usize,
    /// A field whose value's position to report in [`RequestHead::key_field`].
    pub key_field: Option<&'a str>,
    /// A field whose value's position to report in [`RequestHead::id_field`] (`--request-id
    /// header:NAME`).
    pub id_field: Option<&'a str>,
    /// Upgrade protocols passed on besides `websocket` (`--allow-upgrade`), lower case.
    pub allow_upgrade: &'a [String],
}

/// The upgrade protocol every proxy passes on: WebSocket (RFC 6455).
pub(super) const WEBSOCKET: &str = "websocket";

/// Whether one `Upgrade` list element (`protocol[/version]`, RFC 9110 section 7.8) may pass.
/// `h2c` never may (a `--allow-upgrade h2c` is refused at start): after it, the connection would
/// carry HTTP/2 streams that sluice tunnels blind, all to one backend, past X-Forwarded-For, the
/// header limits and every per-request rule; an HTTP/1.1 proxy drops it, as nginx and Envoy do.
fn upgrade_allowed(element: &[u8], allow: &[String]) -> bool {
    let protocol = element.split(|&b| b == b'/').next().unwrap_or(element);
    protocol.eq_ignore_ascii_case(WEBSOCKET.as_bytes())
        || allow
            .iter()
            .any(|a| protocol.eq_ignore_ascii_case(a.as_bytes()))
}

/// The allowed elements of every `Upgrade` field of a request, in order.
fn allowed_upgrades<'h>(
    headers: &'h [httparse::Header<'h>],
    fields: &'h [Field],
    allow: &'h [String],
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .zip(fields)
        .filter(|(_, &f)| f == Field::Upgrade)
        .flat_map(|(h, _)| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(move |e| !e.is_empty() && upgrade_allowed(e, allow))
}

/// Parses the request head at the front of `src` and writes the head to forward into `out`.
/// `Ok(None)`: the head is not complete yet.
///
/// Transfer-Encoding: every coding must pass [`TransferCodings::add`] (else 400, or 501 for
/// `identity` and codings sluice does not know, like nginx), and the final one must be `chunked`:
/// RFC 9112 section 6.3 says a request whose final coding is anything else has no reliable length
/// and MUST get 400 and a closed connection. `gzip, chunked` is forwarded as it is.
///
/// Upgrade: only `websocket` and the protocols of [`RequestOptions::allow_upgrade`] pass; other
/// elements are dropped from the `Upgrade` field, and a request left with none is forwarded as
/// plain HTTP/1.1 (no `Upgrade`, no `Connection: Upgrade`), so the backend cannot switch protocols.
pub(crate) fn forward_request(
    src: &[u8],
    opts: &RequestOptions<'_>,
    out: &mut [u8],
) -> Result<Option<RequestHead>, HeadError> {
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let max = opts.max_headers.clamp(1, MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(src, &mut storage[..max]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("unsupported HTTP version"))
        }
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    let (Some(method_str), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("malformed request line"));
    };
    // The request line runs from the method to the target and " HTTP/1.x" (one space each).
    let line_start = end_in(src, method_str.as_bytes()).map(|end| end - method_str.len());
    let line_end = end_in(src, target.as_bytes()).map(|end| end + " HTTP/1.1".len());
    check_line_endings(&src[..head_len], line_start.zip(line_end), req.headers)?;
    let method = Method::parse(method_str);
    if method == Method::Connect {
        return Err(HeadError::NotImplemented("CONNECT is not supported"));
    }
    let headers = &*req.headers;

    let mut conn = ConnectionOptions::default();
    let mut length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    let mut hosts = 0;
    let mut has_upgrade_field = false;
    let fields = classify_all(headers);
    for (h, &field) in headers.iter().zip(&fields) {
        match field {
            Field::Connection => conn.add(h.value)?,
            Field::ContentLength => {
                if length.is_some() {
                    return Err(HeadError::Malformed("more than one Content-Length"));
                }
                length = Some(parse_length(h.value)?);
            }
            Field::TransferEncoding => codings.add(h.value)?,
            Field::Host => hosts += 1,
            Field::Upgrade => has_upgrade_field = true,
            _ => {}
        }
    }
    // RFC 9112 section 6.3: a request whose final coding is not chunked has no knowable length.
    if codings.present && !codings.final_chunked {
        return Err(HeadError::Malformed(
            "chunked is not the final transfer coding",
        ));
    }
    let chunked = codings.present;
    if chunked && length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if chunked && minor == 0 {
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if hosts > 1 || (hosts == 0 && minor == 1) {
        return Err(HeadError::Malformed("a request needs exactly one Host"));
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if minor == 1 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    let upgrade = conn.upgrade
        && has_upgrade_field
        && minor == 1
        && allowed_upgrades(headers, &fields, opts.allow_upgrade)
            .next()
            .is_some();

    let mut o = Out { buf: out, len: 0 };
    o.put(method_str.as_bytes())?;
    o.put(b" ")?;
    let target_start = o.len;
    o.put(target.as_bytes())?;
    let target_range = target_start..o.len;
    o.put(if minor == 1 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    })?;

    let mut cookie = None;
    let mut id_field = None;
    let mut host = None;
    let mut key_field = None;
    let mut forwarded_for = false;
    for (h, &field) in headers.iter().zip(&fields) {
        forwarded_for |= field == Field::XForwardedFor;
        let drop = match field {
            // Written once, filtered, after the other fields.
            Field::XForwardedFor | Field::XForwardedProto | Field::Upgrade => true,
            _ => is_hop_by_hop(field, h.name, &conn),
        };
        if drop {
            continue;
        }
        let value_start = o.len + h.name.len() + 2;
        o.field(h.name, h.value)?;
        let value = value_start..value_start + h.value.len();
        match field {
            Field::Cookie if cookie.is_none() => cookie = Some(value.clone()),
            Field::Host => host = Some(value.clone()),
            _ => {}
        }
        if id_field.is_none()
            && opts
                .id_field
                .is_some_and(|k| k.eq_ignore_ascii_case(h.name))
        {
            id_field = Some(value.clone());
        }
        if key_field.is_none()
            && opts
                .key_field
                .is_some_and(|k| k.eq_ignore_ascii_case(h.name))
        {
            key_field = Some(value);
        }
    }
    // One X-Forwarded-For: the client's list, then the client itself.
    o.put(b"X-Forwarded-For: ")?;
    if forwarded_for {
        for (h, _) in headers
            .iter()
            .zip(&fields)
            .filter(|(_, &f)| f == Field::XForwardedFor)
        {
            o.put(h.value)?;
            o.put(b", ")?;
        }
    }
    write_ip(&mut o, opts.client_ip)?;
    o.put(b"\r\n")?;
    o.field("X-Forwarded-Proto", opts.proto.as_bytes())?;
    if upgrade {
        o.put(b"Upgrade: ")?;
        for (i, element) in allowed_upgrades(headers, &fields, opts.allow_upgrade).enumerate() {
            if i > 0 {
                o.put(b", ")?;
            }
            o.put(element)?;
        }
        o.put(b"\r\nConnection: Upgrade\r\n")?;
    } else if minor == 0 {
        // Backend connections are pooled; ask an HTTP/1.0 backend to keep this one.
        o.put(b"Connection: keep-alive\r\n")?;
    }
    o.put(b"\r\n")?;

    Ok(Some(RequestHead {
        method,
        minor_version: minor,
        framing,
        keep_alive,
        upgrade,
        head_len,
        out_len: o.len,
        target: target_range,
        cookie,
        id_field,
        host,
        key_field,
    }))
}
