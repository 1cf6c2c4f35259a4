//! The PROXY protocol, versions 1 and 2 (HAProxy's "The PROXY protocol", 2020 edition): a header
//! an L4 balancer in front of sluice puts before the client's bytes, naming the client's address,
//! and the same header sluice puts before the bytes it sends a backend. The codec only, no I/O:
//! [`parse`] reads a header from the front of a buffer, [`write`] writes one.
//!
//! Version 1 is one text line, `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, at most 107
//! bytes. Version 2 is binary: a 12-byte signature, version and command, family, a big-endian
//! length, the addresses, then type-length-value extensions (skipped). A header that says
//! `UNKNOWN` (v1) or `LOCAL` (v2, a health check from the balancer itself) carries no client: the
//! connection's own peer address stands.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included.
pub const V1_MAX_BYTES: usize = 107;
/// Version 2's fixed part: signature, version and command, family, length.
const V2_FIXED_BYTES: usize = 16;
/// The longest version 2 header sluice accepts: the fixed part and the longest address block
/// (two Unix paths) plus room for extensions. The protocol allows 64 KiB; balancers send a few
/// hundred bytes at most.
pub const V2_MAX_BYTES: usize = V2_FIXED_BYTES + 216 + 1024;

/// Which version [`write`] sends (`--send-proxy-protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A complete header at the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header takes; the client's own bytes follow.
    pub len: usize,
    /// The client and the address it connected to; `None` for `UNKNOWN`, `LOCAL`, and families
    /// other than TCP over IPv4 or IPv6.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// Why a header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The bytes are no PROXY protocol header at all.
    Missing,
    /// A header, but not a well-formed one.
    Malformed(&'static str),
    /// Longer than [`V1_MAX_BYTES`] or [`V2_MAX_BYTES`].
    TooLong,
}

/// Reads a header from the front of `buf`. `Ok(None)`: what is there so far is the start of a
/// header; read more (the caller bounds how long it waits).
pub fn parse(buf: &[u8]) -> Result<Option<Header>, Error> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 { Ok(None) } else { parse_v1(buf) };
    }
    Err(Error::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, Error> {
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.contains(&b'\n') {
            Err(Error::Malformed("v1 line does not end in CRLF"))
        } else if buf.len() >= V1_MAX_BYTES {
            Err(Error::TooLong)
        } else {
            Ok(None)
        };
    };
    match window.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(Error::Malformed("v1 line does not end in CRLF")),
    }
    let line =
        std::str::from_utf8(&window[6..cr]).map_err(|_| Error::Malformed("v1 line is not text"))?;
    let len = cr + 2;
    let mut parts = line.split(' ');
    let addresses = match parts.next() {
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || parts.next().ok_or(Error::Malformed("v1 line is short"));
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if parts.next().is_some() {
                return Err(Error::Malformed("v1 line has extra fields"));
            }
            let ip = |s: &str| -> Result<IpAddr, Error> {
                let ip = match family {
                    "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
                    _ => s.parse::<Ipv6Addr>().map(IpAddr::V6),
                };
                ip.map_err(|_| Error::Malformed("v1 address does not match its family"))
            };
            let port = |s: &str| -> Result<u16, Error> {
                // Decimal without a sign or leading zeros, as the specification writes them.
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) {
                    return Err(Error::Malformed("v1 port"));
                }
                s.parse().map_err(|_| Error::Malformed("v1 port"))
            };
            Some((
                SocketAddr::new(ip(src)?, port(sport)?),
                SocketAddr::new(ip(dst)?, port(dport)?),
            ))
        }
        _ => return Err(Error::Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some(Header { len, addresses }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, Error> {
    if buf.len() < V2_FIXED_BYTES {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Error::Malformed("v2 version is not 2"));
    }
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_FIXED_BYTES + body_len;
    if len > V2_MAX_BYTES {
        return Err(Error::TooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[V2_FIXED_BYTES..len];
    let addresses = match command {
        0 => None,
        1 => v2_addresses(buf[13], body)?,
        _ => return Err(Error::Malformed("v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Some(Header { len, addresses }))
}

/// The addresses of a v2 PROXY command: TCP or UDP over IPv4 or IPv6 give addresses; UNSPEC and
/// Unix sockets give none (the connection's own peer stands).
fn v2_addresses(family: u8, body: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, Error> {
    let short = Error::Malformed("v2 address block is shorter than its family needs");
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match family >> 4 {
        0x1 => {
            let b: &[u8; 12] = body
                .get(..12)
                .and_then(|s| s.try_into().ok())
                .ok_or(short)?;
            let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(Some((
                SocketAddr::new(src.into(), port(8)),
                SocketAddr::new(dst.into(), port(10)),
            )))
        }
        0x2 => {
            let b: &[u8; 36] = body
                .get(..36)
                .and_then(|s| s.try_into().ok())
                .ok_or(short)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Ok(Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )))
        }
        0x0 | 0x3 => Ok(None),
        _ => Err(Error::Malformed("v2 address family is unknown")),
    }
}

/// Writes a header naming `client` (the connection's source) and `local` (the address it reached)
/// into `out`; returns its length. `out` must hold [`V1_MAX_BYTES`] (v1) or 52 bytes (v2). An
/// IPv4 client of an IPv6 listener is written as the IPv4-mapped IPv6 address it arrived as.
pub fn write(version: Version, client: SocketAddr, local: SocketAddr, out: &mut [u8]) -> usize {
    let (client, local) = same_family(client, local);
    match version {
        Version::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            );
            out[..line.len()].copy_from_slice(line.as_bytes());
            line.len()
        }
        Version::V2 => {
            out[..12].copy_from_slice(&V2_SIGNATURE);
            out[12] = 0x21; // version 2, PROXY
            let body = match (client.ip(), local.ip()) {
                (IpAddr::V4(c), IpAddr::V4(l)) => {
                    out[13] = 0x11; // TCP over IPv4
                    out[16..20].copy_from_slice(&c.octets());
                    out[20..24].copy_from_slice(&l.octets());
                    12
                }
                (c, l) => {
                    out[13] = 0x21; // TCP over IPv6
                    out[16..32].copy_from_slice(&v6(c).octets());
                    out[32..48].copy_from_slice(&v6(l).octets());
                    36
                }
            };
            let ports = V2_FIXED_BYTES + body - 4;
            out[ports..ports + 2].copy_from_slice(&client.port().to_be_bytes());
            out[ports + 2..ports + 4].copy_from_slice(&local.port().to_be_bytes());
            out[14..16].copy_from_slice(&(body as u16).to_be_bytes());
            V2_FIXED_BYTES + body
        }
    }
}

/// The header of a connection that carries no client: v1's `PROXY UNKNOWN`, v2's `LOCAL`
/// command. A balancer's own health checks send it (HAProxy's `check-send-proxy`), so a backend
/// that requires a header still answers them.
pub fn local(version: Version) -> &'static [u8] {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n",
        // Signature, version 2 with the LOCAL command, family UNSPEC, no address block.
        Version::V2 => b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both addresses in one family, as the header has one family field.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let widen = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port());
    (widen(a), widen(b))
}

/// The invariants a fuzzer checks over arbitrary bytes (fuzz/fuzz_targets/proxy_protocol.rs):
/// no panic; a header never claims more bytes than there are; the addresses it gives, written
/// again in either version, parse back the same. Panics when one breaks.
#[cfg(any(test, fuzzing))]
#[allow(clippy::unwrap_used, clippy::panic)]
pub fn check(data: &[u8]) {
    let Ok(Some(h)) = parse(data) else {
        return;
    };
    assert!(h.len <= data.len() && h.len > 0);
    if let Some((client, local)) = h.addresses {
        for version in [Version::V1, Version::V2] {
            let mut out = [0u8; V1_MAX_BYTES];
            let n = write(version, client, local, &mut out);
            let again = parse(&out[..n]).unwrap().unwrap();
            assert_eq!(again.addresses, Some(same_family(client, local)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_client_and_the_rest_follows() {
        let buf = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let h = parse(buf).unwrap().unwrap();
        assert_eq!(&buf[h.len..h.len + 3], b"GET");
        assert_eq!(
            h.addresses,
            Some((addr("192.0.2.1:56324"), addr("198.51.100.1:443")))
        );
        let h = parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.addresses.unwrap().0, addr("[2001:db8::1]:1"));
        let h = parse(b"PROXY UNKNOWN whatever\r\n").unwrap().unwrap();
        assert_eq!(h.addresses, None);
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let mut v2 = [0u8; 64];
        let n = write(
            Version::V2,
            addr("[2001:db8::7]:9"),
            addr("[::1]:80"),
            &mut v2,
        );
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n";
        for full in [&v1[..], &v2[..n]] {
            for cut in 0..full.len() {
                assert_eq!(parse(&full[..cut]), Ok(None), "{cut} of {full:?}");
            }
            assert!(parse(full).unwrap().is_some());
        }
    }

    #[test]
    fn malformed_and_missing_headers_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2 3\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.1 1 65536\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2\rX",
            b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2\n",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(Error::Missing));
        let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 200]].concat();
        assert_eq!(parse(&long), Err(Error::TooLong));
    }

    #[test]
    fn v2_local_carries_no_client_and_extensions_are_skipped() {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[0x20, 0x00, 0, 3, 1, 0, 0]); // LOCAL, UNSPEC, a 3-byte TLV
        buf.extend_from_slice(b"rest");
        let h = parse(&buf).unwrap().unwrap();
        assert_eq!((h.len, h.addresses), (19, None));
        let mut bad = buf.clone();
        bad[12] = 0x11;
        assert!(matches!(parse(&bad), Err(Error::Malformed(_))));
        let mut long = buf;
        long[14..16].copy_from_slice(&(V2_MAX_BYTES as u16).to_be_bytes());
        assert_eq!(parse(&long), Err(Error::TooLong));
    }

    #[test]
    fn what_is_written_parses_back_in_both_versions() {
        let pairs = [
            ("192.0.2.1:56324", "198.51.100.1:443"),
            ("[2001:db8::1]:1", "[::1]:8080"),
        ];
        for version in [Version::V1, Version::V2] {
            for (client, local) in pairs {
                let mut out = [0u8; V1_MAX_BYTES];
                let n = write(version, addr(client), addr(local), &mut out);
                let h = parse(&out[..n]).unwrap().unwrap();
                assert_eq!(h.len, n);
                assert_eq!(h.addresses, Some((addr(client), addr(local))));
            }
        }
        // Mixed families are written as IPv6, the client as the IPv4-mapped address it was.
        let mut out = [0u8; V1_MAX_BYTES];
        let n = write(Version::V2, addr("192.0.2.1:5"), addr("[::1]:80"), &mut out);
        let (client, _) = parse(&out[..n]).unwrap().unwrap().addresses.unwrap();
        assert_eq!(client.ip(), "::ffff:192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn local_headers_parse_as_headers_without_a_client() {
        for version in [Version::V1, Version::V2] {
            let h = parse(local(version)).unwrap().unwrap();
            assert_eq!((h.len, h.addresses), (local(version).len(), None));
        }
    }

    #[test]
    fn the_fuzz_corpus_holds_the_invariants() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/proxy_protocol");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            check(&std::fs::read(entry.path()).unwrap());
            n += 1;
        }
        assert!(n >= 4);
    }
}
