//! TLS on the listener (`--tls`), checked with real clients: curl (TLS 1.2 and 1.3, SNI to each
//! of two certificates), `openssl s_client` (no SNI, ALPN, resumption, strict SNI) and Python's
//! `ssl`; HTTP and TCP mode; and what is not a TLS client: plain HTTP gets 400, garbage and a
//! stalled handshake are closed. The certificates (a test CA and two leaves) are made by the test
//! with rcgen in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::edge::TempDir;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sluice::config::{Mode, ProxyConfig, TlsSettings};
use sluice::strategy::StrategyKind;
use sluice::tls::CertPaths;

/// A test CA and two certificates it signed: `a` (a.test, *.wild.test) and `b` (b.test).
struct Certs {
    dir: TempDir,
    ca: PathBuf,
    a: CertPaths,
    b: CertPaths,
}

impl Certs {
    fn new() -> Certs {
        let dir = TempDir::new("tls");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |stem: &str, names: &[&str]| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            let cert = params.signed_by(&key, &issuer).unwrap();
            let paths = CertPaths {
                cert: dir.join(&format!("{stem}.crt")),
                key: dir.join(&format!("{stem}.key")),
            };
            std::fs::write(&paths.cert, cert.pem()).unwrap();
            std::fs::write(&paths.key, key.serialize_pem()).unwrap();
            paths
        };
        let a = leaf("a", &["a.test", "*.wild.test"]);
        let b = leaf("b", &["b.test"]);
        Certs { dir, ca, a, b }
    }

    fn settings(&self, strict_sni: bool, handshake_timeout_ms: u64) -> TlsSettings {
        TlsSettings {
            certs: vec![self.a.clone(), self.b.clone()],
            strict_sni,
            handshake_timeout_ms,
        }
    }
}

fn tls_lb(mode: Mode, backend: SocketAddr, tls: TlsSettings) -> Sluice {
    let cfg = ProxyConfig {
        tls: Some(tls),
        ..test_config(mode)
    };
    Sluice::start(cfg, &[backend], StrategyKind::RoundRobin)
}

/// curl to `https://NAME:PORT/path`, NAME resolved to sluice, verified against the test CA.
fn curl(lb: &Sluice, certs: &Certs, name: &str, extra: &[&str]) -> Output {
    let port = lb.addr.port();
    Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&certs.ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(["-w", "\\n%{http_code} %{ssl_verify_result}"])
        .args(extra)
        .arg(format!("https://{name}:{port}/hello"))
        .output()
        .expect("curl runs")
}

/// `openssl s_client` to sluice with `args`, sending `stdin`; stdout and stderr together.
fn s_client(lb: &Sluice, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(lb.addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const GET_CLOSE: &str = "GET /s HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `/metrics` shows `want` for `series`.
#[track_caller]
fn wait_for_metric(lb: &Sluice, series: &str, want: f64) {
    let mut last = None;
    let reached = wait_until(IO_TIMEOUT, || {
        last = value(&scrape(lb), series);
        last == Some(want)
    });
    assert!(reached, "{series} is {last:?}, not {want}");
}

#[test]
fn curl_speaks_tls_1_2_and_1_3_and_the_backend_sees_https() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 10_000));
    for version in [&["--tlsv1.2", "--tls-max", "1.2"][..], &["--tlsv1.3"][..]] {
        let out = curl(&lb, &certs, "a.test", version);
        let t = text(&out);
        assert!(out.status.success(), "{version:?}: {t}");
        assert!(t.contains("GET /hello\n200 0"), "{version:?}: {t}");
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    for req in seen {
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    }
    wait_for_metric(&lb, "sluice_tls_handshakes_total{kind=\"full\"}", 2.0);
}

#[test]
fn sni_picks_each_certificate_and_no_sni_gets_the_first() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 10_000));
    // curl checks the name against the certificate it got: success means the right one.
    for name in ["a.test", "b.test", "x.wild.test"] {
        let out = curl(&lb, &certs, name, &[]);
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
    let b = s_client(&lb, &["-servername", "b.test"], "");
    assert!(b.contains("subject=CN = b.test"), "{b}");
    let none = s_client(&lb, &["-noservername"], "");
    assert!(none.contains("subject=CN = a.test"), "{none}");
    let unknown = s_client(&lb, &["-servername", "other.test"], "");
    assert!(unknown.contains("subject=CN = a.test"), "{unknown}");
}

#[test]
fn alpn_is_http_1_1() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 10_000));
    let out = s_client(&lb, &["-alpn", "http/1.1", "-servername", "a.test"], "");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    let h2 = s_client(&lb, &["-alpn", "h2", "-servername", "a.test"], "");
    assert!(!h2.contains("ALPN protocol: h2"), "{h2}");
}

#[test]
fn sessions_resume_with_tls_1_2_and_1_3() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 10_000));
    for version in ["-tls1_2", "-tls1_3"] {
        let sess = certs.dir.join(&format!("sess{version}"));
        let sess = sess.to_str().unwrap();
        let common = [version, "-servername", "a.test", "-ign_eof"];
        let first = s_client(
            &lb,
            &[&common[..], &["-sess_out", sess]].concat(),
            GET_CLOSE,
        );
        assert!(first.contains("New, "), "{version}: {first}");
        assert!(first.contains("GET /s"), "{version}: {first}");
        // Two workers: the second connection may land on either, and resumes on both.
        for _ in 0..3 {
            let again = s_client(&lb, &[&common[..], &["-sess_in", sess]].concat(), GET_CLOSE);
            assert!(again.contains("Reused, "), "{version}: {again}");
            assert!(again.contains("GET /s"), "{version}: {again}");
        }
    }
    wait_for_metric(&lb, "sluice_tls_handshakes_total{kind=\"resumed\"}", 6.0);
}

#[test]
fn python_ssl_gets_an_answer() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 10_000));
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="b.test") as s:
        s.sendall(b"GET /py HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        print(s.version(), s.selected_alpn_protocol())
        print(data.decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&certs.ca)
        .arg(lb.addr.port().to_string())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.starts_with("TLSv1.3"), "{t}");
    assert!(t.contains("HTTP/1.1 200") && t.contains("GET /py"), "{t}");
}

#[test]
fn tcp_mode_terminates_tls_and_sends_plaintext_on() {
    let certs = Certs::new();
    let backend = echo_backend(b"");
    let lb = tls_lb(Mode::Tcp, backend.addr, certs.settings(false, 10_000));
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="a.test") as s:
        for word in [b"ping", b"pong" * 10000]:
            s.sendall(word)
            got = b""
            while len(got) < len(word):
                got += s.recv(65536)
            assert got == word, got[:100]
        print("echoed")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&certs.ca)
        .arg(lb.addr.port().to_string())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success() && t.contains("echoed"), "{t}");
}

#[test]
fn strict_sni_refuses_an_unknown_name_with_an_alert() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(true, 10_000));
    let unknown = s_client(&lb, &["-servername", "other.test"], "");
    assert!(unknown.contains("alert"), "{unknown}");
    assert!(!unknown.contains("subject=CN"), "{unknown}");
    let known = s_client(&lb, &["-servername", "b.test"], "");
    assert!(known.contains("subject=CN = b.test"), "{known}");
    wait_for_failure(&lb, "unknown_sni");
}

/// Waits for one handshake failure counted under `reason`.
fn wait_for_failure(lb: &Sluice, reason: &str) {
    let series = format!("sluice_tls_handshake_failures_total{{reason=\"{reason}\"}}");
    wait_for_metric(lb, &series, 1.0);
}

#[test]
fn plain_http_on_the_tls_port_gets_400_and_garbage_is_closed() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 10_000));
    let mut s = lb.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with("plain HTTP request sent to a TLS port\n"),
        "{answer}"
    );

    let mut g = lb.connect();
    g.write_all(b"\x00\x01\x02 not TLS at all\r\n").unwrap();
    let mut rest = Vec::new();
    let closed = g.read_to_end(&mut rest);
    assert!(closed.is_ok() || rest.is_empty(), "{closed:?}");
    assert!(rest.is_empty(), "{rest:?}");

    // A handshake record that is not a ClientHello: rustls's alert (content type 21), then close.
    let mut bad = lb.connect();
    bad.write_all(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")
        .unwrap();
    let mut alert = Vec::new();
    let _ = bad.read_to_end(&mut alert);
    assert_eq!(alert.first(), Some(&0x15), "{alert:?}");
    assert_eq!(backend.accepts(), 0);
    wait_for_failure(&lb, "plain_http");
    wait_for_failure(&lb, "not_tls");
    wait_for_failure(&lb, "protocol");
}

#[test]
fn a_stalled_handshake_is_closed_after_the_handshake_timeout() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 300));
    // The start of a record, and nothing more; and a client that sends nothing at all.
    let mut partial = lb.connect();
    partial.write_all(b"\x16\x03\x01").unwrap();
    let silent = lb.connect();
    for mut s in [partial, silent] {
        let mut rest = Vec::new();
        // Blocks until sluice closes (the socket's read timeout bounds a hang).
        let read = s.read_to_end(&mut rest);
        assert!(
            read.is_ok(),
            "closed by sluice, not by the read timeout: {read:?}"
        );
        assert!(rest.is_empty());
    }
    wait_for_metric(
        &lb,
        "sluice_tls_handshake_failures_total{reason=\"timeout\"}",
        2.0,
    );
}

#[test]
fn start_up_with_a_bad_certificate_names_the_file() {
    let certs = Certs::new();
    let missing = certs.dir.join("missing.crt");
    let cases: [(PathBuf, &Path, &str); 3] = [
        (missing.clone(), &certs.a.key, "missing.crt"),
        (certs.a.cert.clone(), &certs.b.key, "b.key"),
        (certs.a.key.clone(), &certs.a.key, "a.key"),
    ];
    for (cert, key, named) in cases {
        let flag = format!("{},{}", cert.display(), key.display());
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--listen", "127.0.0.1:0", "--admin", "off", "--tls", &flag])
            .args(["--backend", "127.0.0.1:9"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(named), "{err}");
    }
}

/// Runs a Python script with the test CA's path and sluice's port as arguments; its stdout.
fn python(certs: &Certs, lb: &Sluice, script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&certs.ca)
        .arg(lb.addr.port().to_string())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t
}

/// Python helpers: a verified TLS connection to sluice, and reading one response by its
/// Content-Length.
const PY_PRELUDE: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
def connect(name="a.test", first=b""):
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=20)
    raw.sendall(first)
    return ctx.wrap_socket(raw, server_hostname=name)
def response(f):
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, f.read(length)
"#;

#[test]
fn keep_alive_pipelining_uploads_and_a_large_response_before_the_close_work_over_tls() {
    let certs = Certs::new();
    let big = vec![b'x'; 4 << 20];
    let backend = HttpBackend::start(move |r| {
        if r.target == "/big" {
            Reply::ok(&big)
        } else {
            Reply::ok(r.target.as_bytes())
        }
    });
    let lb = tls_lb(Mode::Http, backend.addr, certs.settings(false, 10_000));
    let script = format!(
        "{PY_PRELUDE}{}",
        r#"
s = connect()
f = s.makefile("rb")
# Keep-alive, then two pipelined requests, then a large body with Connection: close.
for path in [b"/one", b"/two"]:
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    status, body = response(f)
    assert status.startswith(b"HTTP/1.1 200") and body == path, (status, body)
s.sendall(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
assert response(f)[1] == b"/p1"
assert response(f)[1] == b"/p2"
s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3000000\r\n\r\n" + b"u" * 3000000)
assert response(f)[1] == b"/up"
s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
status, body = response(f)
assert len(body) == 4 << 20 and body == b"x" * (4 << 20), len(body)
assert f.read() == b""
print("ok")
"#
    );
    let out = python(&certs, &lb, &script);
    assert!(out.contains("ok"), "{out}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[4].body.len(), 3_000_000);
    wait_for_metric(&lb, "sluice_tls_handshakes_total{kind=\"full\"}", 1.0);
}

#[test]
fn a_proxy_protocol_header_comes_before_the_handshake() {
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let cfg = ProxyConfig {
        tls: Some(certs.settings(false, 10_000)),
        proxy_protocol_from: Some(vec!["127.0.0.0/8".parse().unwrap()]),
        ..test_config(Mode::Http)
    };
    let lb = Sluice::start(cfg, &[backend.addr], StrategyKind::RoundRobin);
    let script = format!(
        "{PY_PRELUDE}{}",
        r#"
s = connect("b.test", b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\r\n")
s.sendall(b"GET /pp HTTP/1.1\r\nHost: b\r\n\r\n")
status, body = response(s.makefile("rb"))
assert status.startswith(b"HTTP/1.1 200") and body == b"GET /pp", (status, body)
print("ok")
"#
    );
    assert!(python(&certs, &lb, &script).contains("ok"));
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-forwarded-for"), Some("203.0.113.7"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
}

#[test]
fn the_access_log_names_the_tls_version_and_the_sni_of_each_request() {
    use sluice::access_log::{AccessLogConfig, LogFormat, LogTarget};
    let certs = Certs::new();
    let backend = HttpBackend::echo_target();
    let log = certs.dir.join("access.log");
    let cfg = ProxyConfig {
        tls: Some(certs.settings(false, 10_000)),
        access_log: Some(AccessLogConfig {
            target: LogTarget::File(log.clone()),
            format: LogFormat::Json,
        }),
        ..test_config(Mode::Http)
    };
    let lb = Sluice::start(cfg, &[backend.addr], StrategyKind::RoundRobin);
    for (name, version) in [
        ("a.test", &["--tlsv1.2", "--tls-max", "1.2"][..]),
        ("b.test", &["--tlsv1.3"][..]),
    ] {
        let out = curl(&lb, &certs, name, version);
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
    let mut lines = Vec::new();
    assert!(wait_until(IO_TIMEOUT, || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        lines.len() == 2
    }));
    let facts: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["tls_version"].as_str(),
                l["sni"].as_str(),
                l["status"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        facts,
        [
            (Some("TLSv1.2"), Some("a.test"), Some(200)),
            (Some("TLSv1.3"), Some("b.test"), Some(200)),
        ]
    );
}
