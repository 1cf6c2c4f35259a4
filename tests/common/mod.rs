//! Shared test harness: the logger, sluice in-process on port 0, scripted backends on port 0, and a
//! small blocking HTTP client whose messages are read with loadgen's HTTP/1 readers. Every socket has a read timeout so a bug fails a test instead of
//! hanging it; no test sleeps to synchronise.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::Duration;

pub mod edge;
pub mod etcd;
pub mod proc;
pub mod tls_files;

use loadgen::h1::{RequestReader, Response, ResponseReader};
use sluice::backend::BackendSpec;
use sluice::config::{Mode, ProxyConfig, Settings};
use sluice::run::Running;
use sluice::strategy::StrategyKind;

/// Generous bound on any single blocking read in a test; hitting it means a hang, i.e. a bug.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub fn init_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = env_logger::builder().is_test(true).try_init();
    });
}

/// A running sluice (control thread, admin API and workers, all on port 0), stopped on drop.
pub struct Sluice {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    running: Option<Running>,
}

impl Sluice {
    pub fn start(cfg: ProxyConfig, backends: &[SocketAddr], strategy: StrategyKind) -> Sluice {
        let specs = backends
            .iter()
            .map(|&addr| BackendSpec {
                addr: addr.into(),
                weight: 1,
            })
            .collect();
        Sluice::with_settings(Settings::local(cfg, specs, strategy))
    }

    pub fn with_settings(mut settings: Settings) -> Sluice {
        init_logger();
        settings.proxy.validate().expect("valid test config");
        settings.proxy.shutdown_timeout_ms = settings.proxy.shutdown_timeout_ms.min(5_000);
        let running = sluice::run::start(settings).expect("start sluice");
        Sluice {
            addr: running.proxy_addr,
            admin: running.admin_addr.expect("admin API on"),
            running: Some(running),
        }
    }

    pub fn http(backends: &[SocketAddr]) -> Sluice {
        Sluice::start(test_config(Mode::Http), backends, StrategyKind::RoundRobin)
    }

    pub fn tcp(backends: &[SocketAddr]) -> Sluice {
        Sluice::start(test_config(Mode::Tcp), backends, StrategyKind::RoundRobin)
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Calls the admin API; returns the status and the JSON body (Null when empty or not JSON).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        api_call(self.admin, method, path, body, None)
    }

    /// Stops gracefully and waits.
    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// A backend's entry in `GET /api/backends` of the admin API at `admin`, by the address text the
/// API shows.
pub fn listed_backend(admin: SocketAddr, address: &str) -> Option<serde_json::Value> {
    let (status, list) = api_call(admin, "GET", "/api/backends", None, None);
    assert_eq!(status, 200);
    list.as_array()?
        .iter()
        .find(|b| b["address"] == address)
        .cloned()
}

/// One admin API call with an optional bearer token.
pub fn api_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut s = connect(admin);
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}{ct}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let resp = read_response(&mut BufReader::new(s), method == "HEAD").expect("admin response");
    let json = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (resp.status, json)
}

/// Settings for sluice in front of `backends` (weight 1 each), everything on loopback port 0.
pub fn settings_for(cfg: ProxyConfig, backends: &[SocketAddr], strategy: StrategyKind) -> Settings {
    let specs = backends
        .iter()
        .map(|&addr| BackendSpec {
            addr: addr.into(),
            weight: 1,
        })
        .collect();
    Settings::local(cfg, specs, strategy)
}

/// Defaults with two workers, so tests exercise more than one event loop.
pub fn test_config(mode: Mode) -> ProxyConfig {
    ProxyConfig {
        mode,
        workers: 2,
        ..ProxyConfig::default()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A socket bound to a port of its own but not listening: connections to it are refused until
/// `listen` is called on it. Holding the socket keeps the port, so no other test (they run in
/// parallel) can be given it.
pub fn bound_not_listening() -> (socket2::Socket, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    sock.bind(&any.into()).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    (sock, addr)
}

/// An address that refuses connections for the rest of the test process.
pub fn refused_addr() -> SocketAddr {
    let (sock, addr) = bound_not_listening();
    std::mem::forget(sock);
    addr
}

/// A backend on port 0 that runs `handle` on each accepted connection in its own thread.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
}

impl RawBackend {
    pub fn start<F>(handle: F) -> RawBackend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let handle = Arc::new(handle);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
                let h = handle.clone();
                thread::spawn(move || h(stream));
            }
        });
        RawBackend { addr, accepts }
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

/// Echoes bytes until EOF, then writes `trailer` and closes.
pub fn echo_backend(trailer: &'static [u8]) -> RawBackend {
    RawBackend::start(move |mut s| {
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.write_all(trailer);
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// A request as a test backend received it.
#[derive(Clone, Debug, Default)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body exactly as it came (chunked framing included).
    pub raw_body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a test backend sends back: raw bytes, then close or not.
pub struct Reply {
    pub bytes: Vec<u8>,
    pub close: bool,
}

impl Reply {
    pub fn ok(body: &[u8]) -> Reply {
        Reply::status(200, body)
    }

    pub fn status(status: u16, body: &[u8]) -> Reply {
        let mut bytes = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Reply {
            bytes,
            close: false,
        }
    }

    pub fn raw(bytes: impl Into<Vec<u8>>, close: bool) -> Reply {
        Reply {
            bytes: bytes.into(),
            close,
        }
    }
}

/// An HTTP/1.1 backend: parses each request (Content-Length or chunked body) and answers with
/// `handler`; records every request it saw.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Req>>>,
}

impl HttpBackend {
    pub fn start<F>(handler: F) -> HttpBackend
    where
        F: Fn(&Req) -> Reply + Send + Sync + 'static,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let raw = RawBackend::start(move |s| serve_http(s, &handler, &log));
        HttpBackend {
            addr: raw.addr,
            accepts: raw.accepts,
            seen,
        }
    }

    /// Answers 200 with a body naming the method and target.
    pub fn echo_target() -> HttpBackend {
        HttpBackend::start(|r| Reply::ok(format!("{} {}", r.method, r.target).as_bytes()))
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_http(stream: TcpStream, handler: &dyn Fn(&Req) -> Reply, log: &Mutex<Vec<Req>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Ok(Some(req)) = read_request(&mut reader) else {
            return;
        };
        log.lock().unwrap().push(req.clone());
        let reply = handler(&req);
        if writer.write_all(&reply.bytes).is_err() || reply.close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads one request with loadgen's HTTP/1 reader; `Ok(None)` when the peer closed first.
pub fn read_request(r: &mut impl BufRead) -> io::Result<Option<Req>> {
    let request = loadgen::client::read_request(r, &mut RequestReader::whole())?;
    Ok(request.map(|m| Req {
        method: m.method_name,
        target: m.path,
        version: m.version,
        headers: m.headers,
        body: m.body,
        raw_body: m.raw_body,
    }))
}

/// A response as the test client read it: loadgen's, with every field and the body.
pub type Resp = Response;

/// Reads one response with loadgen's HTTP/1 reader; `head_request` means it has no body whatever
/// it says. An interim (1xx) response is returned on its own.
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<Resp> {
    loadgen::client::read_response(r, &mut ResponseReader::whole(), head_request)
}

/// Sends `raw` on a new connection and reads one response.
#[track_caller]
pub fn roundtrip(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    read_response(&mut r, raw.starts_with(b"HEAD ")).expect("response")
}

/// A GET with a Host field.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// Reads until EOF, failing on timeout.
#[track_caller]
pub fn read_to_eof(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to EOF");
    out
}

/// A deterministic byte pattern of `n` bytes.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(seed))
                .to_le_bytes()[1]
        })
        .collect()
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held. For conditions that
/// depend on another thread (a health check, a drain), checked every few milliseconds.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A backend entry from `GET /api/backends` by address.
pub fn backend_view(lb: &Sluice, addr: SocketAddr) -> Option<serde_json::Value> {
    let (status, list) = lb.api("GET", "/api/backends", None);
    assert_eq!(status, 200);
    list.as_array()?
        .iter()
        .find(|b| b["address"] == addr.to_string())
        .cloned()
}

/// Waits until every worker routes by the latest table and nothing is in flight to `addr`. From
/// then on, a backend that table takes out of rotation gets no new request.
pub fn wait_settled(lb: &Sluice, addr: SocketAddr) -> bool {
    wait_until(IO_TIMEOUT, || {
        let (_, s) = lb.api("GET", "/api/status", None);
        let in_flight = s["backends"].as_array().and_then(|all| {
            all.iter()
                .find(|b| b["address"] == addr.to_string())
                .map(|b| b["in_flight"].clone())
        });
        s["installed_version"] == s["version"] && in_flight == Some(0.into())
    })
}

/// The value of the first sample line starting with `series` (name and labels).
pub fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET /metrics`: the Prometheus exposition.
pub fn scrape(lb: &Sluice) -> String {
    scrape_at(lb.admin)
}

/// `GET /metrics` from the admin API at `admin`.
pub fn scrape_at(admin: SocketAddr) -> String {
    let mut s = connect(admin);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    resp.text()
}

/// Fails unless `promtool check metrics` (installed by scripts/test.sh) accepts the exposition.
#[track_caller]
pub fn promtool_check(exposition: &str) {
    use std::process::{Command, Stdio};
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: scripts/test.sh installs it (Debian package prometheus)");
    promtool
        .stdin
        .as_ref()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a traffic thread saw: responses by body, and failures.
pub type TrafficResult = (std::collections::HashMap<String, usize>, Vec<String>);

/// A client that sends requests over a few keep-alive connections from its own thread until told to
/// stop, counting responses by body and failures.
pub struct Traffic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<TrafficResult>>,
}

impl Traffic {
    pub fn start(addr: SocketAddr, connections: usize) -> Traffic {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..connections)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut seen = std::collections::HashMap::new();
                    let mut failures = Vec::new();
                    let s = connect(addr);
                    let mut w = s.try_clone().unwrap();
                    let mut r = BufReader::new(s);
                    while !stop.load(Ordering::SeqCst) {
                        w.write_all(&get("/traffic")).unwrap();
                        match read_response(&mut r, false) {
                            Ok(resp) if resp.status == 200 => {
                                *seen.entry(resp.text()).or_insert(0) += 1
                            }
                            Ok(resp) => failures.push(format!("{} {}", resp.status, resp.text())),
                            Err(e) => {
                                failures.push(e.to_string());
                                break;
                            }
                        }
                    }
                    (seen, failures)
                })
            })
            .collect();
        Traffic { stop, threads }
    }

    /// Stops and returns responses by body and the failures.
    pub fn finish(self) -> TrafficResult {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = std::collections::HashMap::new();
        let mut failures = Vec::new();
        for t in self.threads {
            let (seen, f) = t.join().unwrap();
            for (k, v) in seen {
                *all.entry(k).or_insert(0) += v;
            }
            failures.extend(f);
        }
        (all, failures)
    }
}

/// The proxy address a started `sluice` binary prints on its first stdout line (`proxy=ADDR`).
pub fn proxy_addr_of(child: &mut std::process::Child) -> SocketAddr {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("proxy="))
        .unwrap_or_else(|| panic!("no proxy address in {line:?}"))
        .parse()
        .unwrap()
}

/// sluice with `bandit` in front of a backend that refuses everything with 429 and `Retry-After:
/// 3600`, and one that answers 200, retrying on 429; after ten requests (each answered 200 by the
/// good one), what `bandit` learned of both is settled: the refusing one backs off with a limit
/// of 1, the good one has no limit. The backoff is an hour so that it outlasts however long a busy
/// machine takes to look (a headless browser on a loaded machine once took over 30 s).
pub fn bandit_after_a_refusal() -> (Sluice, HttpBackend, HttpBackend) {
    let refusing = HttpBackend::start(|_| {
        Reply::raw(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n",
            false,
        )
    });
    let good = HttpBackend::start(|_| Reply::ok(b"ok"));
    let mut s = settings_for(
        test_config(Mode::Http),
        &[refusing.addr, good.addr],
        StrategyKind::Bandit,
    );
    s.proxy.retry = sluice::retry::RetryPolicy::parse("connect,5xx,429", "any").unwrap();
    let lb = Sluice::with_settings(s);
    for _ in 0..10 {
        assert_eq!(roundtrip(lb.addr, &get("/")).status, 200);
    }
    (lb, refusing, good)
}
