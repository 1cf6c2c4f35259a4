//! Shared helpers for loadgen's integration tests: logger set-up and small blocking calls.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Once;

use loadgen::client;
use loadgen::h1::Response;

static LOGGER: Once = Once::new();

/// Starts env_logger once per test binary (`RUST_LOG=debug cargo test` to see it).
pub fn init_logger() {
    LOGGER.call_once(|| {
        let _ = env_logger::builder().is_test(true).try_init();
    });
}

#[track_caller]
pub fn get(addr: SocketAddr, path: &str) -> Response {
    match client::request(addr, "GET", path, None) {
        Ok(r) => r,
        Err(e) => panic!("GET {path} on {addr}: {e}"),
    }
}

#[track_caller]
pub fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Response {
    match client::request(addr, "POST", path, Some(body)) {
        Ok(r) => r,
        Err(e) => panic!("POST {path} on {addr}: {e}"),
    }
}

pub fn body_text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// One uniform server that answers at once: the plainest target for the generator's tests.
pub fn instant_sim() -> loadgen::sim::SimHandle {
    use loadgen::sim::{Profile, Sim, SimConfig};
    Sim::start(
        SimConfig::new(Profile::Uniform)
            .with_servers(1)
            .with_service_time_ms(0),
    )
    .unwrap()
}
