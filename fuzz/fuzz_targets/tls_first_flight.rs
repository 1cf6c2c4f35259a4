//! See sluice::tls::check for the invariants: the TLS listener fed arbitrary bytes as a client's
//! first flight never panics.
#![no_main]

use std::sync::{Arc, OnceLock};

static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();

fn config() -> &'static Arc<rustls::ServerConfig> {
    CONFIG.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["fuzz.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        sluice::tls::check::config_for(cert.der().to_vec(), key.serialize_der())
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::tls::check::first_flight(config(), data));
