//! The generator and the holder over TLS, against a small rustls HTTPS server in this test with
//! a test CA and certificates made here (rcgen): trust by `--cacert` and `--insecure`, a
//! verification failure, SNI, and resumed against full handshakes as the server saw them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::init_logger;
use loadgen::hold::{self, HoldConfig};
use loadgen::http::{self, ErrorKind, HttpConfig};
use loadgen::tls::TlsOptions;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{HandshakeKind, ServerConfig, ServerConnection, StreamOwned};

/// A CA, a certificate it signed for `localhost` and 127.0.0.1, and the CA's PEM in a file.
struct TestPki {
    dir: PathBuf,
    ca_pem: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl TestPki {
    fn new(tag: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("loadgen test CA {tag}"));
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(params, ca_key);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("loadgen-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        TestPki {
            dir,
            ca_pem,
            chain: vec![leaf.der().clone()],
            key: key.serialize_der(),
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the server saw of each connection's handshake.
#[derive(Debug, Default)]
struct Seen {
    full: u64,
    resumed: u64,
    /// The SNI of each handshake (`None`: the client sent none).
    names: Vec<Option<String>>,
    requests: u64,
}

/// An HTTPS server: one thread per connection, answering every request with `200 ok`, keeping
/// the connection unless the request says `Connection: close`.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    fn start(pki: &TestPki) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), key)
            .unwrap();
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(sock) = sock else { continue };
                    let (config, seen) = (Arc::clone(&config), Arc::clone(&seen));
                    std::thread::spawn(move || serve(config, sock, &seen));
                }
            })
        };
        Server {
            addr,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/", self.addr.port())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve(config: Arc<ServerConfig>, sock: TcpStream, seen: &Mutex<Seen>) {
    let conn = ServerConnection::new(config).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return;
        }
    }
    {
        let mut s = seen.lock().unwrap();
        match tls.conn.handshake_kind() {
            Some(HandshakeKind::Resumed) => s.resumed += 1,
            _ => s.full += 1,
        }
        s.names.push(tls.conn.server_name().map(str::to_string));
    }
    let mut reader = BufReader::new(tls);
    loop {
        let mut close = false;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            close |= line.to_ascii_lowercase().starts_with("connection: close");
            if line == "\r\n" {
                break;
            }
        }
        seen.lock().unwrap().requests += 1;
        let tls = reader.get_mut();
        let connection = if close { "close" } else { "keep-alive" };
        let answer =
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: {connection}\r\n\r\nok");
        if tls
            .write_all(answer.as_bytes())
            .and_then(|_| tls.flush())
            .is_err()
            || close
        {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}

fn config(url: &str, opts: &TlsOptions, requests: u32) -> HttpConfig {
    let mut cfg = HttpConfig::with_tls(url, opts).unwrap();
    cfg.rate_rps = 500.0;
    cfg.duration = Duration::from_millis(u64::from(requests) * 2);
    cfg.connections = 2;
    cfg
}

fn trusting(pki: &TestPki) -> TlsOptions {
    TlsOptions {
        cacert: Some(pki.ca_pem.clone()),
        ..TlsOptions::default()
    }
}

#[test]
fn keep_alive_requests_over_tls_are_verified_by_the_given_ca() {
    init_logger();
    let pki = TestPki::new("keepalive");
    let server = Server::start(&pki);
    let report = http::run(&config(&server.url("localhost"), &trusting(&pki), 200)).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.requests, report.status_count(200)), (200, 200));
    // Keep-alive: 200 requests over at most the two connections, each one full handshake. The
    // report counts the handshakes of connections that carried a measured request; whether the
    // second one carried any depends on scheduling, so one is as right as two.
    let h = report.tls_handshakes.unwrap();
    assert!((1..=2).contains(&h.full) && h.resumed == 0, "{h:?}");
    let seen = server.seen.lock().unwrap();
    assert!(
        (h.full..=2).contains(&seen.full),
        "{h:?} against {}",
        seen.full
    );
    assert_eq!((seen.resumed, seen.requests), (0, 200));
    assert!(seen.names.iter().all(|n| n.as_deref() == Some("localhost")));
    assert!(report.to_json().contains(&format!(
        "\"tls_handshakes\":{{\"full\":{},\"resumed\":0}}",
        h.full
    )));
}

#[test]
fn a_connection_per_request_resumes_sessions_when_asked() {
    init_logger();
    let pki = TestPki::new("resume");
    let server = Server::start(&pki);
    let mut opts = trusting(&pki);
    opts.resume = true;
    let mut cfg = config(&server.url("localhost"), &opts, 100);
    cfg.close = true;
    cfg.connections = 1;
    let report = http::run(&cfg).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.requests, 100);
    let h = report.tls_handshakes.unwrap();
    // The first connection has no ticket yet; every later one offers the last one's.
    assert_eq!((h.full, h.resumed), (1, 99));
    let seen = server.seen.lock().unwrap();
    assert_eq!((seen.full, seen.resumed), (1, 99));
}

#[test]
fn without_resumption_every_new_connection_is_a_full_handshake() {
    init_logger();
    let pki = TestPki::new("full");
    let server = Server::start(&pki);
    let mut cfg = config(&server.url("localhost"), &trusting(&pki), 50);
    cfg.close = true;
    let report = http::run(&cfg).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let h = report.tls_handshakes.unwrap();
    assert_eq!((h.full, h.resumed), (50, 0));
    let seen = server.seen.lock().unwrap();
    assert_eq!((seen.full, seen.resumed, seen.requests), (50, 0, 50));
}

#[test]
fn a_certificate_from_another_ca_fails_every_request_as_tls() {
    init_logger();
    let pki = TestPki::new("served");
    let other = TestPki::new("other");
    let server = Server::start(&pki);
    let mut cfg = config(&server.url("localhost"), &trusting(&other), 20);
    cfg.close = true;
    let report = http::run(&cfg).unwrap();
    assert_eq!(report.requests, 0);
    assert_eq!(
        report.error_count(ErrorKind::Tls),
        20,
        "{:?}",
        report.errors
    );
    assert_eq!(server.seen.lock().unwrap().requests, 0);
}

#[test]
fn insecure_accepts_any_certificate_and_sni_can_be_set() {
    init_logger();
    let pki = TestPki::new("insecure");
    let server = Server::start(&pki);
    let opts = TlsOptions {
        insecure: true,
        sni: Some("www.example.test".to_string()),
        ..TlsOptions::default()
    };
    let report = http::run(&config(&server.url("127.0.0.1"), &opts, 20)).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.requests, 20);
    // An IP address in the URL sends no SNI, and is verified against the IP address SAN.
    let report = http::run(&config(&server.url("127.0.0.1"), &trusting(&pki), 20)).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let seen = server.seen.lock().unwrap();
    let names: Vec<Option<&str>> = seen.names.iter().map(Option::as_deref).collect();
    assert_eq!(
        names,
        [
            Some("www.example.test"),
            Some("www.example.test"),
            None,
            None
        ]
    );
}

#[test]
fn the_holder_counts_a_tls_connection_once_its_handshake_is_done() {
    init_logger();
    let pki = TestPki::new("hold");
    let server = Server::start(&pki);
    let http = HttpConfig::with_tls(&server.url("localhost"), &trusting(&pki)).unwrap();
    let mut cfg = HoldConfig::new(http.target);
    cfg.host = http.host;
    cfg.tls = http.tls;
    cfg.connections = 20;
    cfg.ping_interval = Duration::from_millis(200);
    cfg.duration = Duration::from_millis(1_000);
    let summary = hold::run(&cfg, |_| {}).unwrap();
    assert_eq!(
        (summary.max_established, summary.established_at_end),
        (20, 20)
    );
    assert_eq!((summary.failed, summary.ping_errors), (0, 0));
    assert!(summary.pings > 0);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.full, 20);
    assert_eq!(seen.requests, summary.pings);
}
