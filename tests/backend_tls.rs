//! TLS to the backends (`--backend-tls`), against a real TLS server: Python's `ssl` module
//! (OpenSSL) serving HTTP/1.1 (`tests/backend_tls/server.py`), with a test CA and leaves made by
//! the test. Shown: a request re-encrypted to a backend the CA vouches for (HTTP and TCP mode, by
//! address, by `--backend-sni` and by the DNS name the backend was given by); a backend whose
//! certificate comes from another CA gets 502 and one log line naming it and the reason; pooled
//! TLS connections are reused without a new handshake (the backend counts its handshakes); health
//! checks over TLS mark a backend down when its certificate stops verifying and up again; and bad
//! flags stop start-up with exit status 2.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::edge::TempDir;
use common::proc::SluiceProc;
use common::tls_files::{replace_file, Leaf, TestCa};
use common::*;

/// The Python TLS backend, stopped by its PID when dropped.
struct PyBackend {
    child: Child,
    addr: SocketAddr,
}

impl PyBackend {
    fn start(cert: &Path, key: &Path) -> PyBackend {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backend_tls/server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(cert)
            .arg(key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port from the TLS backend: {line:?}"));
        PyBackend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, its PEM file, and a directory for the backend's certificate.
struct Setup {
    dir: TempDir,
    ca: TestCa,
    ca_file: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = TempDir::new(tag);
        let ca = TestCa::new("sluice backend test CA");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Setup { dir, ca, ca_file }
    }

    /// A backend leaf for `names` from this CA, written as `backend.crt` / `backend.key`.
    fn backend_files(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        self.ca
            .leaf_for_days(names, 2, 30)
            .write(&self.dir.0, "backend")
    }

    fn ca_flag(&self) -> String {
        self.ca_file.display().to_string()
    }

    /// `first`, then sluice's flags for re-encrypting to `backend` with this CA.
    fn tls_to(&self, backend: &str, first: &[&str]) -> Vec<String> {
        let mut list = args(first);
        list.extend(args(&["--backend", backend, "--backend-tls"]));
        list.extend(["--backend-ca".to_string(), self.ca_flag()]);
        list
    }
}

/// One worker and no health checks: every request meets the same pool, and nothing but the test
/// talks to the backend.
const ONE_WORKER: &[&str] = &["--workers", "1", "--health-interval", "0"];

/// A leaf for `names` from a CA sluice does not trust.
fn foreign_leaf(names: &[&str]) -> Leaf {
    TestCa::new("some other CA").leaf_for_days(names, 9, 30)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

fn body(resp: &Resp) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

#[test]
fn http_requests_are_re_encrypted_to_a_backend_the_ca_vouches_for() {
    let s = Setup::new("btls-ok");
    let (cert, key) = s.backend_files(&["127.0.0.1"]);
    let backend = PyBackend::start(&cert, &key);
    let lb = SluiceProc::start(&s.tls_to(&backend.addr.to_string(), &[]));
    for _ in 0..3 {
        let resp = roundtrip(lb.proxy, &get("/"));
        assert_eq!(resp.status, 200, "{}", lb.log_text());
        assert_eq!(body(&resp), "hello from tls");
    }
}

#[test]
fn tcp_mode_re_encrypts_to_the_backend() {
    let s = Setup::new("btls-tcp");
    let (cert, key) = s.backend_files(&["127.0.0.1"]);
    let backend = PyBackend::start(&cert, &key);
    let lb = SluiceProc::start(&s.tls_to(&backend.addr.to_string(), &["--mode", "tcp"]));
    let resp = roundtrip(lb.proxy, &get("/"));
    assert_eq!(resp.status, 200, "{}", lb.log_text());
    assert_eq!(body(&resp), "hello from tls");
}

#[test]
fn a_backend_certificate_from_another_ca_gets_502_and_one_log_line() {
    let s = Setup::new("btls-foreign");
    let (cert, key) = foreign_leaf(&["127.0.0.1"]).write(&s.dir.0, "backend");
    let backend = PyBackend::start(&cert, &key);
    let lb = SluiceProc::start_bare(&s.tls_to(&backend.addr.to_string(), ONE_WORKER));
    for _ in 0..4 {
        let resp = roundtrip(lb.proxy, &get("/"));
        assert_eq!(resp.status, 502);
        assert!(
            body(&resp).contains("TLS handshake with the backend failed"),
            "{resp:?}"
        );
    }
    let named = format!("backend {}: TLS handshake failed", backend.addr);
    assert!(lb.logged(&[&named, "UnknownIssuer"]), "{}", lb.log_text());
    let lines = lb.log_text().lines().filter(|l| l.contains(&named)).count();
    assert_eq!(
        lines,
        1,
        "one warning for four failed requests: {}",
        lb.log_text()
    );
}

#[test]
fn backend_sni_names_what_every_backend_is_verified_against() {
    let s = Setup::new("btls-sni");
    let (cert, key) = s.backend_files(&["backend.test"]);
    let backend = PyBackend::start(&cert, &key);
    let by_address = SluiceProc::start(&s.tls_to(&backend.addr.to_string(), &[]));
    assert_eq!(
        roundtrip(by_address.proxy, &get("/")).status,
        502,
        "the certificate does not carry the address"
    );
    let sni = ["--backend-sni", "backend.test"];
    let by_name = SluiceProc::start(&s.tls_to(&backend.addr.to_string(), &sni));
    let resp = roundtrip(by_name.proxy, &get("/"));
    assert_eq!(resp.status, 200, "{}", by_name.log_text());
}

#[test]
fn a_backend_given_by_dns_name_is_verified_against_that_name() {
    let s = Setup::new("btls-dns");
    let (cert, key) = s.backend_files(&["localhost"]);
    let backend = PyBackend::start(&cert, &key);
    let lb = SluiceProc::start(&s.tls_to(&format!("localhost:{}", backend.addr.port()), &[]));
    // localhost may also resolve to ::1, where nothing listens: that member's connect fails
    // and the request is retried on 127.0.0.1.
    let resp = roundtrip(lb.proxy, &get("/"));
    assert_eq!(resp.status, 200, "{}", lb.log_text());
    assert_eq!(body(&resp), "hello from tls");
}

/// `handshakes=N failed=M` from the backend, asked through sluice.
fn backend_counts(proxy: SocketAddr) -> (u64, u64) {
    let resp = roundtrip(proxy, &get("/count"));
    assert_eq!(resp.status, 200);
    let text = body(&resp);
    let field = |name: &str| -> u64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text:?}"))
    };
    (field("handshakes="), field("failed="))
}

#[test]
fn pooled_tls_connections_to_a_backend_are_reused_without_a_new_handshake() {
    let s = Setup::new("btls-pool");
    let (cert, key) = s.backend_files(&["127.0.0.1"]);
    let backend = PyBackend::start(&cert, &key);
    let lb = SluiceProc::start_bare(&s.tls_to(&backend.addr.to_string(), ONE_WORKER));
    // Ten clients one after another, each on its own connection to sluice.
    for _ in 0..10 {
        let resp = roundtrip(lb.proxy, &get("/"));
        assert_eq!(resp.status, 200, "{}", lb.log_text());
    }
    let (handshakes, failed) = backend_counts(lb.proxy);
    assert_eq!(
        (handshakes, failed),
        (1, 0),
        "eleven requests over one pooled TLS connection"
    );
}

/// Whether the admin API reports backend `addr` healthy.
fn healthy(lb: &SluiceProc, addr: SocketAddr) -> Option<bool> {
    listed_backend(lb.admin, &addr.to_string())?["healthy"].as_bool()
}

#[test]
fn health_checks_over_tls_mark_a_backend_down_when_its_certificate_fails_and_up_again() {
    let s = Setup::new("btls-health");
    let good = s.ca.leaf_for_days(&["127.0.0.1"], 2, 30);
    let (cert, key) = good.write(&s.dir.0, "backend");
    let backend = PyBackend::start(&cert, &key);
    let lb = SluiceProc::start_bare(&s.tls_to(
        &backend.addr.to_string(),
        &[
            "--workers",
            "1",
            "--health-interval",
            "100ms",
            "--health-path",
            "/health",
            "--rise",
            "1",
            "--fall",
            "1",
        ],
    ));
    assert_eq!(healthy(&lb, backend.addr), Some(true));
    let (passed_before, _) = backend_counts(lb.proxy);
    assert!(
        wait_until(IO_TIMEOUT, || backend_counts(lb.proxy).0
            > passed_before + 1),
        "probes complete TLS handshakes"
    );
    // The backend now presents a certificate from a CA sluice does not trust.
    let bad = foreign_leaf(&["127.0.0.1"]);
    swap_files(&cert, &key, &bad);
    assert!(
        wait_until(IO_TIMEOUT, || healthy(&lb, backend.addr) == Some(false)),
        "down once its certificate fails: {}",
        lb.log_text()
    );
    swap_files(&cert, &key, &good);
    assert!(
        wait_until(IO_TIMEOUT, || healthy(&lb, backend.addr) == Some(true)),
        "up again with a certificate that verifies: {}",
        lb.log_text()
    );
    let resp = roundtrip(lb.proxy, &get("/"));
    assert_eq!(resp.status, 200);
}

/// Replaces the backend's key and certificate (the key first: the server reads both per
/// connection, and a mismatched pair only fails that one handshake).
fn swap_files(cert: &Path, key: &Path, leaf: &Leaf) {
    replace_file(key, leaf.key_pem.as_bytes());
    replace_file(cert, leaf.cert_pem.as_bytes());
}

fn sluice_fails(list: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--backend",
            "127.0.0.1:1",
        ])
        .args(list)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_backend_tls_flags_stop_start_up_with_a_clear_message() {
    let dir = TempDir::new("btls-flags");
    let missing = dir.join("no-such-ca.pem");
    let err = sluice_fails(&[
        "--backend-tls",
        "--backend-ca",
        &missing.display().to_string(),
    ]);
    assert!(err.contains("no-such-ca.pem"), "{err}");
    let empty = dir.join("empty-ca.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = sluice_fails(&[
        "--backend-tls",
        "--backend-ca",
        &empty.display().to_string(),
    ]);
    assert!(err.contains("empty-ca.pem"), "{err}");
    let err = sluice_fails(&["--backend-ca", &empty.display().to_string()]);
    assert!(err.contains("--backend-ca needs --backend-tls"), "{err}");
    let err = sluice_fails(&["--backend-tls", "--backend-sni", "bad name!"]);
    assert!(err.contains("--backend-sni"), "{err}");
}
