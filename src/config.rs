//! Command-line flags and the validated settings the workers run with.
//!
//! Every flag documents its default in `sluice --help`. [`RunArgs`] is what clap parses;
//! [`ProxyConfig`] is the checked, unit-explicit form a worker reads (its `Default` is the same
//! defaults, which tests start from).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::backend::{parse_addr, BackendSpec};
use crate::http::head::{MAX_HEADERS, REWRITE_RESERVE_BYTES};
use crate::strategy::StrategyKind;

/// What the proxy speaks on its listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// HTTP/1.1 reverse proxy (L7).
    Http,
    /// TCP proxy (L4): bytes both ways.
    Tcp,
}

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_MAX_ATTEMPTS: u8 = 3;
pub const DEFAULT_CONNECT_TIMEOUT: &str = "3s";
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
pub const DEFAULT_HEAD_TIMEOUT: &str = "10s";
pub const DEFAULT_RESPONSE_TIMEOUT: &str = "60s";
pub const DEFAULT_POOL_IDLE_TIMEOUT: &str = "30s";
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_BUFFER_SIZE: usize = 32 * 1024;
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "30s";

/// Flags for running the proxy.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address to accept clients on (host:port).
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,

    /// Protocol: http (L7, HTTP/1.1) or tcp (L4).
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    pub mode: Mode,

    /// A backend, `host:port` or `host:port,weight=N` (weight 0-256, default 1). Repeat for more.
    #[arg(long = "backend", value_name = "ADDR[,weight=N]")]
    pub backends: Vec<BackendSpec>,

    /// Load-balancing strategy.
    #[arg(long, value_enum, default_value_t = StrategyKind::RoundRobin)]
    pub strategy: StrategyKind,

    /// Worker threads, each with its own event loop and listener [default: available cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Most backends one request or connection is tried on (1-8).
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS, value_name = "N")]
    pub max_attempts: u8,

    /// Give up connecting to a backend after this long (then try another).
    #[arg(long, default_value = DEFAULT_CONNECT_TIMEOUT, value_name = "DURATION")]
    pub connect_timeout: DurationArg,

    /// Close a client connection idle this long (keep-alive wait, or a quiet TCP tunnel).
    #[arg(long, default_value = DEFAULT_IDLE_TIMEOUT, value_name = "DURATION")]
    pub idle_timeout: DurationArg,

    /// Answer 408 when a request head takes longer than this from its first byte.
    #[arg(long, default_value = DEFAULT_HEAD_TIMEOUT, value_name = "DURATION")]
    pub head_timeout: DurationArg,

    /// Answer 504 when a backend sends nothing for this long while a request waits.
    #[arg(long, default_value = DEFAULT_RESPONSE_TIMEOUT, value_name = "DURATION")]
    pub response_timeout: DurationArg,

    /// Close a pooled idle backend connection after this long.
    #[arg(long, default_value = DEFAULT_POOL_IDLE_TIMEOUT, value_name = "DURATION")]
    pub pool_idle_timeout: DurationArg,

    /// Idle backend connections kept per backend and worker.
    #[arg(long, default_value_t = DEFAULT_POOL_MAX_IDLE, value_name = "N")]
    pub pool_max_idle: usize,

    /// Most concurrent client connections; beyond it sluice stops accepting until some close
    /// [default: half the open-file limit].
    #[arg(long, value_name = "N")]
    pub max_conns: Option<usize>,

    /// Largest request head accepted; larger ones get 431.
    #[arg(long, default_value_t = DEFAULT_MAX_HEADER_BYTES, value_name = "BYTES")]
    pub max_header_bytes: usize,

    /// Most header fields in a request; more get 431.
    #[arg(long, default_value_t = DEFAULT_MAX_HEADERS, value_name = "N")]
    pub max_headers: usize,

    /// Size of each I/O buffer; a connection holds up to two while bytes are in flight.
    #[arg(long, default_value_t = DEFAULT_BUFFER_SIZE, value_name = "BYTES")]
    pub buffer_size: usize,

    /// On SIGTERM or SIGINT, wait this long for requests in flight before exiting.
    #[arg(long, default_value = DEFAULT_SHUTDOWN_TIMEOUT, value_name = "DURATION")]
    pub shutdown_timeout: DurationArg,
}

/// Settings a worker reads, checked and in explicit units.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub mode: Mode,
    pub workers: usize,
    pub max_attempts: u8,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub head_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub pool_idle_timeout_ms: u64,
    pub pool_max_idle: usize,
    pub max_conns: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub buffer_size: usize,
    pub shutdown_timeout_ms: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis() as u64).unwrap_or(0);
        ProxyConfig {
            mode: Mode::Http,
            workers: default_workers(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout_ms: ms(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout_ms: ms(DEFAULT_IDLE_TIMEOUT),
            head_timeout_ms: ms(DEFAULT_HEAD_TIMEOUT),
            response_timeout_ms: ms(DEFAULT_RESPONSE_TIMEOUT),
            pool_idle_timeout_ms: ms(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            max_conns: default_max_conns(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            buffer_size: DEFAULT_BUFFER_SIZE,
            shutdown_timeout_ms: ms(DEFAULT_SHUTDOWN_TIMEOUT),
        }
    }
}

impl ProxyConfig {
    /// Checks settings that depend on each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 || self.workers > 1024 {
            return Err(format!(
                "--workers must be between 1 and 1024, not {}",
                self.workers
            ));
        }
        if !(1..=8).contains(&self.max_attempts) {
            return Err(format!(
                "--max-attempts must be between 1 and 8, not {}",
                self.max_attempts
            ));
        }
        if self.max_conns == 0 {
            return Err("--max-conns must be at least 1".into());
        }
        if !(1..=MAX_HEADERS).contains(&self.max_headers) {
            return Err(format!(
                "--max-headers must be between 1 and {MAX_HEADERS}, not {}",
                self.max_headers
            ));
        }
        if self.max_header_bytes < 256 {
            return Err(format!(
                "--max-header-bytes must be at least 256, not {}",
                self.max_header_bytes
            ));
        }
        let needed = self.max_header_bytes + REWRITE_RESERVE_BYTES;
        if self.buffer_size < needed {
            return Err(format!(
                "--buffer-size {} is too small for --max-header-bytes {}: it needs at least {needed} \
                 (the largest head plus {REWRITE_RESERVE_BYTES} bytes for rewriting)",
                self.buffer_size, self.max_header_bytes
            ));
        }
        if self.buffer_size > 16 << 20 {
            return Err(format!(
                "--buffer-size must be at most 16 MiB, not {}",
                self.buffer_size
            ));
        }
        for (name, ms) in [
            ("--connect-timeout", self.connect_timeout_ms),
            ("--idle-timeout", self.idle_timeout_ms),
            ("--head-timeout", self.head_timeout_ms),
            ("--response-timeout", self.response_timeout_ms),
            ("--pool-idle-timeout", self.pool_idle_timeout_ms),
        ] {
            if ms == 0 {
                return Err(format!("{name} must be longer than zero"));
            }
        }
        Ok(())
    }
}

/// Everything needed to start the proxy, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub proxy: ProxyConfig,
    pub backends: Vec<BackendSpec>,
    pub strategy: StrategyKind,
}

impl RunArgs {
    pub fn settings(&self) -> Result<Settings, String> {
        let listen = parse_addr(&self.listen).map_err(|e| format!("--listen: {e}"))?;
        let proxy = ProxyConfig {
            mode: self.mode,
            workers: self.workers.unwrap_or_else(default_workers),
            max_attempts: self.max_attempts,
            connect_timeout_ms: self.connect_timeout.ms(),
            idle_timeout_ms: self.idle_timeout.ms(),
            head_timeout_ms: self.head_timeout.ms(),
            response_timeout_ms: self.response_timeout.ms(),
            pool_idle_timeout_ms: self.pool_idle_timeout.ms(),
            pool_max_idle: self.pool_max_idle,
            max_conns: self.max_conns.unwrap_or_else(default_max_conns),
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            buffer_size: self.buffer_size,
            shutdown_timeout_ms: self.shutdown_timeout.ms(),
        };
        proxy.validate()?;
        Ok(Settings {
            listen,
            proxy,
            backends: self.backends.clone(),
            strategy: self.strategy,
        })
    }
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Half the open-file limit: each proxied connection may need a second descriptor for its backend.
pub fn default_max_conns() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let files = if ok { limit.rlim_cur as usize } else { 1024 };
    (files.saturating_sub(64) / 2).max(1)
}

/// A duration flag: `250ms`, `3s`, `2m`, `1h`, or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl DurationArg {
    pub fn ms(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl std::str::FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(DurationArg)
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?} (expected for example 250ms, 3s, 2m)"))?;
    let scale_ms = match unit {
        "ms" => 1.0,
        "" | "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s, m or h)")),
    };
    let ms = value * scale_ms;
    if !ms.is_finite() || ms > 1e12 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_are_valid_and_checks_catch_conflicts() {
        assert_eq!(ProxyConfig::default().validate(), Ok(()));
        let small = ProxyConfig {
            buffer_size: 4096,
            ..ProxyConfig::default()
        };
        assert!(small.validate().unwrap_err().contains("--buffer-size"));
        let attempts = ProxyConfig {
            max_attempts: 0,
            ..ProxyConfig::default()
        };
        assert!(attempts.validate().is_err());
    }
}
