//! The open-loop HTTP/1.1 load generator (`loadgen http`).
//!
//! With a rate, each thread follows a fixed [`Schedule`](crate::schedule::Schedule) and hands
//! each due request to a free keep-alive connection; latency runs from the *scheduled* time, so
//! a stalled server shows up in the tail and never slows the send rate (no coordinated
//! omission). With `rate_rps = 0` every connection sends its next request as soon as the last
//! answer arrives (closed loop, for maximum throughput) and latency runs from the send.
//!
//! Only requests scheduled (or, closed loop, sent) inside the measured window
//! `[start + warmup, start + warmup + duration)` count in the [`Report`].

mod report;
mod worker;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::{ErrorKind, Outcome, Report, TlsHandshakes};

use crate::tls::{TlsClient, TlsOptions};

/// Defaults of [`HttpConfig`].
/// Open loop by default, at this rate.
pub const DEFAULT_RATE_RPS: f64 = 1_000.0;
pub const DEFAULT_CONNECTIONS: usize = 16;
pub const DEFAULT_THREADS: usize = 1;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_METHOD: &str = "GET";
/// Open loop: requests may go out this much before they are due, so one wake-up sends every
/// request due within the window (see [`HttpConfig::send_ahead`]).
pub const DEFAULT_SEND_AHEAD: Duration = Duration::from_micros(100);

/// What each request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    None,
    Fixed(Vec<u8>),
    /// A fresh random 24-character alphanumeric id, as the challenge's clients send.
    Id24,
}

/// A run of the generator.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub target: SocketAddr,
    /// `Host` header value.
    pub host: String,
    pub path: String,
    /// Default [`DEFAULT_METHOD`].
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Requests per second across all connections; 0 = closed loop. Default
    /// [`DEFAULT_RATE_RPS`].
    pub rate_rps: f64,
    /// Default [`DEFAULT_CONNECTIONS`].
    pub connections: usize,
    /// Default [`DEFAULT_THREADS`] (capped at `connections`).
    pub threads: usize,
    /// Measured time after the warmup. Default [`DEFAULT_DURATION`].
    pub duration: Duration,
    /// Unmeasured time before it. Default 0.
    pub warmup: Duration,
    /// Per request, from when it is handed to a connection. Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// A new connection per request.
    pub close: bool,
    /// Open loop: how early a request may be sent. Each wake-up then sends everything due
    /// within this window, which saves wake-ups (the generator's main CPU cost) at high rates;
    /// latency runs from the earlier of the scheduled time and the send, so an early send is
    /// never credited. Zero sends each request exactly at its time. Default
    /// [`DEFAULT_SEND_AHEAD`].
    pub send_ahead: Duration,
    /// Source addresses to bind, round-robin; empty = let the kernel choose.
    pub source_ips: Vec<IpAddr>,
    /// Seeds the ids of [`Body::Id24`]; `None` = from entropy.
    pub seed: Option<u64>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Keep each request's [`Outcome`] in [`Report::outcomes`] (the challenge client needs them).
    pub record_outcomes: bool,
    /// Speak TLS (an `https://` URL).
    pub tls: Option<TlsClient>,
}

/// A URL the generator can't use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl HttpConfig {
    /// Defaults for `url` (`http://host:port/path`, or `https://` verified against the
    /// system's roots, full handshakes; the host is resolved now).
    pub fn new(url: &str) -> Result<Self, UrlError> {
        Self::with_tls(url, &TlsOptions::default())
    }

    /// Defaults for `url`, with `tls` for an `https://` one (ignored for `http://`).
    pub fn with_tls(url: &str, tls: &TlsOptions) -> Result<Self, UrlError> {
        let url = parse_url(url)?;
        let mut cfg = Self::for_addr(url.target);
        if url.https {
            let client = TlsClient::new(tls, &url.hostname)
                .map_err(|e| UrlError(format!("TLS for {}: {e}", url.authority)))?;
            cfg.tls = Some(client);
        }
        cfg.host = url.authority;
        cfg.path = url.path;
        Ok(cfg)
    }

    /// Defaults for `GET /` on `target`.
    pub fn for_addr(target: SocketAddr) -> Self {
        HttpConfig {
            target,
            host: target.to_string(),
            path: "/".to_string(),
            method: DEFAULT_METHOD.to_string(),
            headers: Vec::new(),
            body: Body::None,
            rate_rps: DEFAULT_RATE_RPS,
            connections: DEFAULT_CONNECTIONS,
            threads: DEFAULT_THREADS,
            duration: DEFAULT_DURATION,
            warmup: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
            close: false,
            send_ahead: DEFAULT_SEND_AHEAD,
            source_ips: Vec::new(),
            seed: None,
            progress: false,
            record_outcomes: false,
            tls: None,
        }
    }
}

/// A URL the generator can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub target: SocketAddr,
    /// `host[:port]` as written: the `Host` header.
    pub authority: String,
    /// The host without port (brackets kept for IPv6): the TLS server name.
    pub hostname: String,
    pub path: String,
    pub https: bool,
}

/// Splits `http[s]://host[:port][/path]` into an address, a `Host` header, a server name and a
/// path.
pub fn parse_url(url: &str) -> Result<Url, UrlError> {
    let bad = |why: &str| UrlError(format!("invalid URL {url:?}: {why}"));
    let (rest, https) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else {
        return Err(bad("only http:// and https:// URLs are supported"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']');
    let (with_port, hostname) = if has_port {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        (authority.to_string(), host.to_string())
    } else {
        let port = if https { 443 } else { 80 };
        (format!("{authority}:{port}"), authority.to_string())
    };
    let target = with_port
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve the host: {e}")))?
        .next()
        .ok_or_else(|| bad("the host has no address"))?;
    Ok(Url {
        target,
        authority: authority.to_string(),
        hostname,
        path: path.to_string(),
        https,
    })
}

/// Counters the progress printer reads while workers run.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub responses: AtomicU64,
    pub errors: AtomicU64,
}

/// Runs the generator and returns the merged report of all threads.
pub fn run(cfg: &HttpConfig) -> io::Result<Report> {
    if cfg.connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "connections must be at least 1",
        ));
    }
    if !cfg.rate_rps.is_finite() || cfg.rate_rps < 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "rate must be 0 (closed loop) or positive",
        ));
    }
    // Many connections need many descriptors; the hard limit is the real ceiling.
    if let Err(e) = crate::net::raise_fd_limit() {
        log::debug!("http: raising the open-file limit: {e}");
    }
    let threads = cfg.threads.clamp(1, cfg.connections);
    let progress = Arc::new(Progress::default());
    // A common start a little ahead, so every thread's schedule begins together.
    let start = Instant::now() + Duration::from_millis(5);
    let mut handles = Vec::with_capacity(threads);
    for k in 0..threads {
        let part = worker::Share {
            index: k,
            threads,
            connections: cfg.connections / threads + usize::from(k < cfg.connections % threads),
            start,
        };
        let cfg = cfg.clone();
        let progress = Arc::clone(&progress);
        let handle = std::thread::Builder::new()
            .name(format!("http-{k}"))
            .spawn(move || worker::run(&cfg, part, &progress))?;
        handles.push(handle);
    }
    if cfg.progress {
        print_progress(&handles, &progress);
    }
    let mut report = Report::empty(cfg, threads);
    for handle in handles {
        let part = handle
            .join()
            .map_err(|_| io::Error::other("a generator thread panicked"))??;
        report.merge(part);
    }
    report.finish(cfg);
    Ok(report)
}

/// Prints one line per second to stderr until every worker has finished. The sleeps only pace
/// the printing; nothing waits on them.
fn print_progress(
    handles: &[std::thread::JoinHandle<io::Result<report::Part>>],
    progress: &Progress,
) {
    const POLL: Duration = Duration::from_millis(50);
    let started = Instant::now();
    let mut last = (0u64, 0u64);
    for tick in 1u64.. {
        let next = started + Duration::from_secs(tick);
        while Instant::now() < next {
            if handles.iter().all(|h| h.is_finished()) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let now = (
            progress.responses.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
        );
        eprintln!(
            "[{tick:>4}s] {:>8} responses/s {:>6} errors/s   total {} responses, {} errors",
            now.0 - last.0,
            now.1 - last.1,
            now.0,
            now.1
        );
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_path() {
        let url = parse_url("http://127.0.0.1:8080/work?x=1").unwrap();
        assert_eq!(url.target, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            (url.authority.as_str(), url.path.as_str(), url.https),
            ("127.0.0.1:8080", "/work?x=1", false)
        );
        let url = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((url.target.port(), url.path.as_str()), (80, "/"));
        assert!(parse_url("ftp://127.0.0.1/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn https_urls_default_to_port_443_and_name_their_host() {
        let url = parse_url("https://localhost/x").unwrap();
        assert_eq!((url.target.port(), url.https), (443, true));
        assert_eq!(url.hostname, "localhost");
        let url = parse_url("https://[::1]:8443/").unwrap();
        assert_eq!((url.target.port(), url.hostname.as_str()), (8443, "[::1]"));
    }
}
