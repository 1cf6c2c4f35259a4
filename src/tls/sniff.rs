//! Telling a TLS client from a plain HTTP one by its first bytes, before any TLS state exists:
//! a TLS listener answers a plain HTTP request with `400` instead of an alert it cannot read.

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
}
