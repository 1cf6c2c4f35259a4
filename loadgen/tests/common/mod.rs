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

/// An address that refuses connections for the rest of the test process: a socket bound to it
/// but not listening. Holding it keeps the port, so no test running in parallel is given it.
pub fn refused_addr() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    sock.bind(&any.into()).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(sock);
    addr
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
