//! One access-log line from one [`Entry`]: JSON (one object a line, fields omitted when they do not
//! apply) or the combined format of Apache and nginx. Formatting writes into the worker's own
//! buffer and allocates nothing once that buffer has grown.
//!
//! Times are UTC. The calendar date comes from the Unix day with Howard Hinnant's
//! `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>), so no time crate is
//! needed for it.

use std::io::Write;
use std::net::IpAddr;

use super::LogFormat;

/// What is logged about one HTTP request or one TCP connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Entry<'a> {
    /// Wall-clock time the request finished, in ms since the Unix epoch.
    pub unix_ms: u64,
    /// The client: the socket's peer, or the one a PROXY header named.
    pub client_ip: Option<IpAddr>,
    pub client_port: u16,
    /// HTTP: the request line up to the target (`GET /a?b`); `None` for a TCP connection.
    pub request: Option<&'a [u8]>,
    /// HTTP minor version (HTTP/1.x).
    pub minor_version: u8,
    /// HTTP status sent to the client; 0 for a TCP connection.
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_us: u64,
    /// Time from sending the last attempt to its backend to the end of its answer.
    pub backend_us: Option<u64>,
    /// The backend of the last attempt.
    pub backend: Option<&'a str>,
    pub attempts: u8,
    /// The request's id for the attempt budget (its hash, as 16 hex digits).
    pub request_id: Option<u64>,
    /// TLS version and SNI server name, for connections sluice terminates TLS on: omitted when
    /// absent (a plain connection).
    pub tls_version: Option<&'a str>,
    pub sni: Option<&'a str>,
}

/// Appends `e` as one line in `format`. `clock` keeps the last second's date text, so that most
/// lines format only their milliseconds.
pub(crate) fn write_line(
    out: &mut Vec<u8>,
    format: LogFormat,
    e: &Entry<'_>,
    clock: &mut DateCache,
) {
    match format {
        LogFormat::Json => json(out, e, clock),
        LogFormat::Combined => combined(out, e, clock),
    }
    out.push(b'\n');
}

/// The date text of one second, in both formats, made again only when the second changes.
#[derive(Default)]
pub(crate) struct DateCache {
    unix_s: Option<u64>,
    /// `2026-11-30T02:10:00`
    rfc3339: Vec<u8>,
    /// `30/Nov/2026:02:10:00 +0000`
    clf: Vec<u8>,
}

impl DateCache {
    fn second(&mut self, unix_s: u64) {
        if self.unix_s == Some(unix_s) {
            return;
        }
        self.unix_s = Some(unix_s);
        self.rfc3339.clear();
        self.clf.clear();
        rfc3339_seconds(&mut self.rfc3339, unix_s);
        clf_time(&mut self.clf, unix_s);
    }
}

/// Appends `n` in decimal, without the formatting machinery (this runs several times a line).
fn num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        Some(IpAddr::V4(v4)) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                num(out, u64::from(octet));
            }
        }
        Some(v6) => {
            let _ = write!(out, "{v6}");
        }
        None => out.push(b'-'),
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: u64) {
    out.extend_from_slice(name);
    num(out, value);
}

fn json(out: &mut Vec<u8>, e: &Entry<'_>, clock: &mut DateCache) {
    clock.second(e.unix_ms / 1000);
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(&clock.rfc3339);
    let ms = e.unix_ms % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
    out.extend_from_slice(b"\",\"client\":\"");
    ip(out, e.client_ip);
    field(out, b"\",\"client_port\":", u64::from(e.client_port));
    if let Some(req) = e.request {
        let (method, target) = split_request(req);
        out.extend_from_slice(b",\"method\":\"");
        json_escape(out, method);
        out.extend_from_slice(b"\",\"path\":\"");
        json_escape(out, target);
        out.extend_from_slice(b"\",\"protocol\":\"HTTP/1.");
        num(out, u64::from(e.minor_version));
        field(out, b"\",\"status\":", u64::from(e.status));
    }
    field(out, b",\"bytes_in\":", e.bytes_in);
    field(out, b",\"bytes_out\":", e.bytes_out);
    field(out, b",\"duration_us\":", e.duration_us);
    if let Some(us) = e.backend_us {
        field(out, b",\"backend_us\":", us);
    }
    if let Some(b) = e.backend {
        out.extend_from_slice(b",\"backend\":\"");
        json_escape(out, b.as_bytes());
        out.push(b'"');
    }
    field(out, b",\"attempts\":", u64::from(e.attempts));
    if let Some(id) = e.request_id {
        let _ = write!(out, ",\"request_id\":\"{id:016x}\"");
    }
    for (name, value) in [("tls_version", e.tls_version), ("sni", e.sni)] {
        if let Some(v) = value {
            let _ = write!(out, ",\"{name}\":\"");
            json_escape(out, v.as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
}

/// `ip - - [day/Mon/year:hh:mm:ss +0000] "GET /a HTTP/1.1" status bytes "-" "-"`: sluice does not
/// keep the Referer and User-Agent fields, so they are `-`, as nginx writes an absent one. A TCP
/// connection's request is `-` and its status 0.
fn combined(out: &mut Vec<u8>, e: &Entry<'_>, clock: &mut DateCache) {
    clock.second(e.unix_ms / 1000);
    ip(out, e.client_ip);
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(&clock.clf);
    out.extend_from_slice(b"] \"");
    match e.request {
        Some(req) => {
            let (method, target) = split_request(req);
            clf_escape(out, method);
            out.push(b' ');
            clf_escape(out, target);
            out.extend_from_slice(b" HTTP/1.");
            num(out, u64::from(e.minor_version));
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\" ");
    num(out, u64::from(e.status));
    out.push(b' ');
    num(out, e.bytes_out);
    out.extend_from_slice(b" \"-\" \"-\"");
}

fn split_request(req: &[u8]) -> (&[u8], &[u8]) {
    match req.iter().position(|&b| b == b' ') {
        Some(i) => (&req[..i], &req[i + 1..]),
        None => (req, b""),
    }
}

/// JSON string contents: quote, backslash and control bytes escaped; bytes above 0x7E as `\u00XX`
/// so that the line is valid UTF-8 whatever the client sent.
fn json_escape(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes
        .iter()
        .all(|&b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
    }
}

/// Combined-format escaping as nginx does it: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn clf_escape(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes
        .iter()
        .all(|&b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => {
                let _ = write!(out, "\\x{b:02X}");
            }
            _ => out.push(b),
        }
    }
}

/// Date and time of day: `(year, month, day, hour, minute, second, millisecond)`.
fn parts(unix_ms: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let secs = unix_ms / 1000;
    let (y, m, d) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    (y, m, d, t / 3600, t / 60 % 60, t % 60, unix_ms % 1000)
}

/// `2026-11-30T02:10:00` (the milliseconds and `Z` follow per line)
fn rfc3339_seconds(out: &mut Vec<u8>, unix_s: u64) {
    let (y, mo, d, h, mi, s, _) = parts(unix_s * 1000);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
}

/// `30/Nov/2026:02:10:00 +0000`
fn clf_time(out: &mut Vec<u8>, unix_s: u64) {
    let unix_ms = unix_s * 1000;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = parts(unix_ms);
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    let _ = write!(out, "{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            unix_ms: 1_764_468_600_123, // 2025-11-30T02:10:00.123Z
            client_ip: Some("192.0.2.7".parse().unwrap()),
            client_port: 5000,
            request: Some(b"GET /a?b=\"c\""),
            minor_version: 1,
            status: 200,
            bytes_in: 40,
            bytes_out: 120,
            duration_us: 1500,
            backend_us: Some(1200),
            backend: Some("127.0.0.1:9000"),
            attempts: 1,
            request_id: None,
            tls_version: None,
            sni: None,
        }
    }

    #[test]
    fn dates_follow_the_calendar() {
        assert_eq!(crate::clock::civil_from_days(0), (1970, 1, 1));
        assert_eq!(crate::clock::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(crate::clock::civil_from_days(20_422), (2025, 11, 30));
        let mut out = Vec::new();
        rfc3339_seconds(&mut out, 1_764_468_600);
        assert_eq!(out, b"2025-11-30T02:10:00");
        let mut n = Vec::new();
        for v in [0, 7, 10, 65_535, u64::MAX] {
            num(&mut n, v);
            n.push(b' ');
        }
        assert_eq!(n, b"0 7 10 65535 18446744073709551615 ");
    }

    #[test]
    fn json_lines_escape_the_target_and_omit_absent_fields() {
        let mut out = Vec::new();
        write_line(
            &mut out,
            LogFormat::Json,
            &entry(),
            &mut DateCache::default(),
        );
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with("}\n"), "{line}");
        assert!(line.contains(r#""path":"/a?b=\"c\"""#), "{line}");
        assert!(
            line.contains(r#""time":"2025-11-30T02:10:00.123Z""#),
            "{line}"
        );
        assert!(
            !line.contains("tls_version") && !line.contains("request_id"),
            "{line}"
        );
        let mut e = entry();
        e.request = Some(b"GET /\xff\x01");
        e.tls_version = Some("TLSv1.3");
        e.sni = Some("example.com");
        e.request_id = Some(0xab);
        let mut out = Vec::new();
        write_line(&mut out, LogFormat::Json, &e, &mut DateCache::default());
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains(r#""path":"/\u00ff\u0001""#), "{line}");
        assert!(
            line.contains(r#""tls_version":"TLSv1.3","sni":"example.com""#),
            "{line}"
        );
        assert!(
            line.contains(r#""request_id":"00000000000000ab""#),
            "{line}"
        );
    }

    #[test]
    fn combined_lines_have_the_apache_shape() {
        let mut out = Vec::new();
        write_line(
            &mut out,
            LogFormat::Combined,
            &entry(),
            &mut DateCache::default(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "192.0.2.7 - - [30/Nov/2025:02:10:00 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 120 \"-\" \"-\"\n"
        );
    }
}
