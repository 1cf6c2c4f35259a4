//! The invariants a fuzzer checks on the TLS listener's side (fuzz/fuzz_targets/tls_first_flight.rs),
//! and the unit tests that replay its saved inputs (fuzz/corpus, fuzz/regressions) on every test
//! run: arbitrary bytes as a client's first flight, fed as the worker feeds them (sniffed first,
//! then through [`ServerTls`] in pieces, over a socket that blocks), never panic; they never complete
//! a handshake (that takes the server's random); and whatever the server answers is TLS records.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls::session::ServerTls;
use crate::tls::sniff::{classify_first_bytes, FirstBytes};
use crate::tls::stream::Handshake;

/// A server configuration for a certificate and its PKCS#8 key (DER both).
pub fn config_for(cert_der: Vec<u8>, key_pkcs8_der: Vec<u8>) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der));
    let cfg = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(cert_der)], key)
        });
    match cfg {
        Ok(mut cfg) => {
            cfg.alpn_protocols = vec![crate::tls::server::ALPN_HTTP11.to_vec()];
            Arc::new(cfg)
        }
        Err(e) => panic!("a fuzzing configuration: {e}"),
    }
}

/// A socket that hands out `input` a few bytes at a time (then blocks) and keeps what is written.
struct Trickle<'a> {
    input: &'a [u8],
    step: usize,
    output: Vec<u8>,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.step.min(out.len()).min(self.input.len());
        out[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Trickle<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds `data` to a new server session as a client's first flight; panics when an invariant
/// breaks. The first byte also sets how many bytes each socket read gives.
#[allow(clippy::panic)]
pub fn first_flight(cfg: &Arc<ServerConfig>, data: &[u8]) {
    if data.is_empty() || classify_first_bytes(data) != FirstBytes::Tls {
        return;
    }
    let Ok(mut conn) = ServerTls::new(cfg.clone(), true) else {
        panic!("a server session could not be made");
    };
    let step = usize::from(data.get(1).copied().unwrap_or(1)).max(1);
    let mut sock = Trickle {
        input: data,
        step,
        output: Vec::new(),
    };
    for _ in 0..=data.len() {
        match conn.handshake(&mut sock) {
            Ok(Handshake::Done) => panic!("random bytes completed a handshake"),
            Ok(Handshake::Blocked) if sock.input.is_empty() => break,
            Ok(Handshake::Blocked) => {}
            Ok(Handshake::Eof) | Err(_) => break,
        }
    }
    let mut plain = [0u8; 64];
    assert!(
        conn.read(&mut sock, &mut plain).is_err(),
        "plaintext before a handshake"
    );
    if let Some(&first) = sock.output.first() {
        assert!(matches!(first, 0x15 | 0x16), "not a TLS record: {first:#x}");
    }
}

#[cfg(test)]
mod corpus_replay {
    use std::path::Path;

    use super::*;

    fn test_config() -> Arc<ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["fuzz.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        config_for(cert.der().to_vec(), key.serialize_der())
    }

    #[test]
    fn tls_first_flight_corpus_holds_the_invariants() {
        let cfg = test_config();
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz")
                .join(dir)
                .join("tls_first_flight");
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                first_flight(&cfg, &data);
                // And every prefix: a flight cut short anywhere.
                for cut in (0..data.len()).step_by(7) {
                    first_flight(&cfg, &data[..cut]);
                }
                n += 1;
            }
        }
        assert!(n >= 3, "the seed corpus is there");
    }

    #[test]
    fn a_real_client_hello_gets_a_server_hello_and_no_completed_handshake() {
        let cfg = test_config();
        let client_cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("fuzz.test").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        first_flight(&cfg, &hello);
    }
}
