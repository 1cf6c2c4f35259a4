//! Reading a TLS listener's first bytes before rustls does: telling a TLS client from a plain
//! HTTP one, before any TLS state exists (a TLS listener answers a plain HTTP request with `400`
//! instead of an alert it cannot read), and the name a client asks for (SNI), which rustls's
//! unbuffered server session does not hand out, for the access log.

/// The first byte of a TLS handshake record (RFC 8446 section 5.1, `ContentType.handshake`).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the first bytes of a connection to a TLS listener are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBytes {
    Tls,
    /// An HTTP request line begins: a method token (upper-case letters) and a space, or a prefix
    /// of one.
    PlainHttp,
    Other,
}

/// Tells a TLS client from a plain HTTP one by the first bytes it sent (at least one).
pub fn classify_first_bytes(bytes: &[u8]) -> FirstBytes {
    match bytes.first() {
        Some(&TLS_HANDSHAKE_RECORD) => FirstBytes::Tls,
        Some(b) if b.is_ascii_uppercase() => {
            let method = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
            match bytes.get(method) {
                None | Some(b' ') => FirstBytes::PlainHttp,
                Some(_) => FirstBytes::Other,
            }
        }
        _ => FirstBytes::Other,
    }
}

/// What a client's first record says about the server name it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hello<'a> {
    /// The first record has not arrived whole yet.
    Incomplete,
    /// A ClientHello, with the `server_name` extension's host name if it has one (`None` too when
    /// the hello is malformed or runs past its first record, which rustls then judges).
    Sni(Option<&'a str>),
    /// The first record is not a handshake record.
    NotAHello,
}

/// The SNI host name in the ClientHello that `bytes` (a client's first bytes) begin with: the
/// record layout of RFC 8446 section 5.1, the ClientHello of section 4.1.2 and the
/// `server_name` extension (type 0) of RFC 6066 section 3, whose `host_name` entry has type 0.
pub fn client_hello_sni(bytes: &[u8]) -> Hello<'_> {
    let mut record = Cursor(bytes);
    let (Some(kind), Some(_version), Some(len)) = (record.u8(), record.u16(), record.u16()) else {
        return Hello::Incomplete;
    };
    if kind != usize::from(TLS_HANDSHAKE_RECORD) {
        return Hello::NotAHello;
    }
    match record.take(len) {
        None => Hello::Incomplete,
        Some(fragment) => Hello::Sni(sni_in_hello(fragment)),
    }
}

fn sni_in_hello(fragment: &[u8]) -> Option<&str> {
    const CLIENT_HELLO: usize = 1;
    const SERVER_NAME: usize = 0;
    const HOST_NAME: usize = 0;
    let mut message = Cursor(fragment);
    if message.u8()? != CLIENT_HELLO {
        return None;
    }
    let len = message.u24()?;
    let mut hello = Cursor(message.take(len)?);
    hello.take(2 + 32)?; // legacy_version, random
    hello.vec8()?; // legacy_session_id
    hello.vec16()?; // cipher_suites
    hello.vec8()?; // legacy_compression_methods
    let mut extensions = Cursor(hello.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Cursor(extensions.vec16()?);
        if kind != SERVER_NAME {
            continue;
        }
        let mut names = Cursor(data.vec16()?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec16()?;
            if name_type == HOST_NAME {
                return std::str::from_utf8(name).ok();
            }
        }
        return None;
    }
    None
}

/// Big-endian fields read off the front of a byte string; `None` when it runs out.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_tls_from_plain_http_from_garbage() {
        assert_eq!(classify_first_bytes(b"\x16\x03\x01"), FirstBytes::Tls);
        assert_eq!(classify_first_bytes(b"GET / HT"), FirstBytes::PlainHttp);
        assert_eq!(classify_first_bytes(b"OPTIONS "), FirstBytes::PlainHttp);
        assert_eq!(
            classify_first_bytes(b"PO"),
            FirstBytes::PlainHttp,
            "a prefix"
        );
        assert_eq!(classify_first_bytes(b"get / HT"), FirstBytes::Other);
        assert_eq!(classify_first_bytes(b"GET\r\n"), FirstBytes::Other);
        assert_eq!(classify_first_bytes(b"\x00\x01"), FirstBytes::Other);
        assert_eq!(
            classify_first_bytes(b"\x15\x03\x03"),
            FirstBytes::Other,
            "an alert"
        );
    }

    /// A real ClientHello, as rustls's client writes it.
    fn hello_for(name: &str) -> Vec<u8> {
        let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        hello
    }

    #[test]
    fn the_sni_name_is_read_from_a_whole_client_hello() {
        let hello = hello_for("b.example");
        assert_eq!(client_hello_sni(&hello), Hello::Sni(Some("b.example")));
        for cut in [0, 3, 5, hello.len() - 1] {
            assert_eq!(
                client_hello_sni(&hello[..cut]),
                Hello::Incomplete,
                "cut at {cut}"
            );
        }
        let mut more = hello.clone();
        more.extend_from_slice(b"\x17\x03\x03");
        assert_eq!(client_hello_sni(&more), Hello::Sni(Some("b.example")));
    }

    #[test]
    fn a_hello_without_sni_or_not_a_hello_says_so() {
        // rustls sends no SNI for an IP address.
        let hello = hello_for("192.0.2.7");
        assert_eq!(client_hello_sni(&hello), Hello::Sni(None));
        assert_eq!(
            client_hello_sni(b"\x15\x03\x03\x00\x02\x02\x28"),
            Hello::NotAHello
        );
        let mut broken = hello.clone();
        broken[5] = 2; // a ServerHello's type
        assert_eq!(client_hello_sni(&broken), Hello::Sni(None));
        let mut short = hello.clone();
        // The handshake message claims more than its record holds.
        short[8] = short[8].wrapping_add(1);
        assert_eq!(client_hello_sni(&short), Hello::Sni(None));
    }
}
