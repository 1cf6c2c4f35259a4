//! The validated settings the threads run with, in explicit units: [`ProxyConfig`] for the
//! workers, [`ControlConfig`] (with [`HealthConfig`]) for the control thread, [`Settings`] for the
//! whole process. Each `Default` or constructor uses the same named defaults as the flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::duration::{ms_of, parse_duration};
use super::*;
use crate::backend::BackendSpec;
use crate::retry::budget;
use crate::retry::RetryPolicy;
use crate::strategy::{StrategyKind, StrategyParams};

/// The workers' coarsest timer tick; [`ProxyConfig::timer_tick_ms`] makes it finer for short
/// timeouts.
pub const DEFAULT_TICK_MS: u64 = 10;
/// How often `adaptive` may switch strategy at most.
pub const DEFAULT_SWITCH_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;

/// What an active health probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Tcp,
    /// `GET path`, 2xx passes.
    Http {
        path: String,
    },
}

/// Active health checks (`--health-*`, `--rise`, `--fall`).
#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub kind: ProbeKind,
    /// 0 turns active checks off.
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

/// Settings of the control side.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Admin API address; `None` turns the API off.
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub state_file: Option<PathBuf>,
    pub health: HealthConfig,
    /// Consecutive failures that eject a backend; 0 turns passive ejection off.
    pub eject_after: u32,
    pub eject_base_ms: u64,
    pub eject_max_ms: u64,
    pub max_ejection_percent: u32,
    /// How long disabled or removed backends may keep connections open.
    pub drain_timeout_ms: u64,
    /// `adaptive`: at most one strategy switch per this long.
    pub switch_interval_ms: u64,
    /// Run as a member of a cluster whose configuration lives in etcd; `None` keeps it local.
    pub cluster: Option<ClusterConfig>,
    /// Where and how often backends given by name are looked up.
    pub resolve: ResolveConfig,
}

/// The lease TTL of an instance's membership record (`--cluster-ttl`).
pub const DEFAULT_CLUSTER_TTL_S: u64 = 5;
/// etcd refuses leases shorter than its election timeout allows (about 2 s by default).
pub const MIN_CLUSTER_TTL_S: u64 = 2;
pub const DEFAULT_CLUSTER_NAME: &str = "default";

/// Cluster mode (`--cluster-*`): where the shared configuration lives and who this instance is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs, `http://host:port`, tried in turn.
    pub endpoints: Vec<String>,
    /// The configuration lives under `/sluice/<name>/`.
    pub name: String,
    /// This instance's key under `/sluice/<name>/instances/`.
    pub instance_id: String,
    /// Membership lease TTL, in seconds.
    pub ttl_s: u64,
    /// The last configuration this instance installed is kept here and used at start when the
    /// store cannot be reached.
    pub fallback_state: Option<PathBuf>,
}

impl ClusterConfig {
    /// Parses `--cluster-store` (a comma list of `http://host:port`) and checks the rest.
    pub fn new(
        store: &str,
        name: &str,
        instance_id: &str,
        ttl_s: u64,
        fallback_state: Option<PathBuf>,
    ) -> Result<ClusterConfig, String> {
        let mut endpoints = Vec::new();
        for part in store.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some(rest) = part.strip_prefix("http://") else {
                return Err(format!(
                    "--cluster-store: {part:?} is not http://HOST:PORT (https is not supported)"
                ));
            };
            let hostport = rest.trim_end_matches('/');
            if hostport.is_empty() || hostport.contains('/') || !hostport.contains(':') {
                return Err(format!("--cluster-store: {part:?} is not http://HOST:PORT"));
            }
            endpoints.push(format!("http://{hostport}"));
        }
        if endpoints.is_empty() {
            return Err("--cluster-store needs at least one http://HOST:PORT".into());
        }
        for (flag, value) in [("--cluster-name", name), ("--cluster-id", instance_id)] {
            if !valid_key_segment(value) {
                return Err(format!(
                    "{flag} must be 1-64 letters, digits, '.', '_' or '-', not {value:?}"
                ));
            }
        }
        if ttl_s < MIN_CLUSTER_TTL_S {
            return Err(format!(
                "--cluster-ttl must be at least {MIN_CLUSTER_TTL_S}s, not {ttl_s}s"
            ));
        }
        Ok(ClusterConfig {
            endpoints,
            name: name.to_string(),
            instance_id: instance_id.to_string(),
            ttl_s,
            fallback_state,
        })
    }
}

/// A name that can be one segment of an etcd key.
fn valid_key_segment(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The default instance id: host name and process id, unique among instances running now.
pub fn default_instance_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host: String = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end])
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .take(48)
            .collect()
    } else {
        String::new()
    };
    let host = if host.is_empty() {
        "sluice".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// Settings a worker reads, checked and in explicit units.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub mode: Mode,
    pub workers: usize,
    pub max_attempts: u8,
    pub connect_timeout_ms: u64,
    /// Keep-alive client connections between HTTP requests.
    pub idle_timeout_ms: u64,
    /// TCP-mode and upgraded connections with no byte either way (0 = never).
    pub tunnel_idle_timeout_ms: u64,
    pub head_timeout_ms: u64,
    pub response_timeout_ms: u64,
    /// Retry elsewhere when no answer byte came this long after the attempt started (0 = off).
    pub per_try_timeout_ms: u64,
    /// Early retries per 100 requests (see [`crate::retry::EarlyRetryBudget`]).
    pub per_try_budget_percent: u32,
    pub pool_idle_timeout_ms: u64,
    /// Idle connections kept per backend and worker, on top of the bounds the pool always has:
    /// `pool_idle_timeout_ms`, this worker's share of `backend_max_conns` and of `max_conns`.
    pub pool_max_idle: usize,
    pub max_conns: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Largest response head; a larger one gets 502 and is not counted against its backend.
    pub max_response_header_bytes: usize,
    pub buffer_size: usize,
    pub shutdown_timeout_ms: u64,
    /// Consecutive failures after which a worker asks the control thread to eject a backend.
    pub eject_after: u32,
    /// Whether that holds under a strategy that learns from every answer (`bandit`), which
    /// leaves an unreachable backend alone for a moment by itself: only when asked for
    /// (`--eject-after` given).
    pub eject_under_learning: bool,
    /// What `maglev` hashes in HTTP mode.
    pub hash_key: RequestAttr,
    /// Which failed attempts are retried.
    pub retry: RetryPolicy,
    /// Requests (head and body) up to this size are kept for a retry; larger ones stream.
    pub retry_buffer: usize,
    /// Where request ids come from; none keeps no attempt budget per id.
    pub request_id: RequestIds,
    pub id_memory: usize,
    pub id_window_s: u32,
    /// Longest a request waits for a backend's rate budget before it is sent anyway.
    pub max_pacing_wait_ms: u64,
    /// Longest a request waits for rate budgets in all, from its arrival; 0 = no such bound.
    pub max_pacing_total_ms: u64,
    /// Connections per backend across workers (each worker takes an equal share); 0 = no limit.
    pub backend_max_conns: usize,
    /// Requests that may wait for a connection per backend and worker; more get 503.
    pub backend_queue: usize,
    pub queue_timeout_ms: u64,
    /// Longest request line; longer ones get 414.
    pub max_request_line: usize,
    /// Largest request body; larger ones get 413 (0 = no limit).
    pub max_body_bytes: u64,
    /// Upgrade protocols passed on besides WebSocket (`--allow-upgrade`), lower case.
    pub allow_upgrade: Vec<String>,
    /// `--accept-proxy-protocol`: the peers whose connections start with a PROXY protocol
    /// header (`--proxy-protocol-from`); `None` reads no header.
    pub proxy_protocol_from: Option<Vec<Cidr>>,
    /// `--send-proxy-protocol`: backend connections start with a header naming the client.
    pub send_proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// `--tls`: the listener speaks TLS with these certificates; `None` is plain TCP.
    pub tls: Option<super::TlsSettings>,
    /// `--backend-tls`: TLS to every backend; `None` is plain.
    pub backend_tls: Option<crate::tls::client::BackendTlsSettings>,
    /// `--access-log`, `--access-log-format`; `None` logs nothing.
    pub access_log: Option<crate::access_log::AccessLogConfig>,
    /// `--max-conns-per-client`, `--rate-limit-per-client`; `None` keeps no per-client state.
    pub client_limits: Option<crate::limits::ClientLimits>,
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
            tunnel_idle_timeout_ms: ms(DEFAULT_TUNNEL_IDLE_TIMEOUT),
            head_timeout_ms: ms(DEFAULT_HEAD_TIMEOUT),
            response_timeout_ms: ms(DEFAULT_RESPONSE_TIMEOUT),
            per_try_timeout_ms: 0,
            per_try_budget_percent: DEFAULT_PER_TRY_BUDGET,
            pool_idle_timeout_ms: ms(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            max_conns: default_max_conns(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_response_header_bytes: DEFAULT_MAX_RESPONSE_HEADER_BYTES,
            buffer_size: DEFAULT_BUFFER_SIZE,
            shutdown_timeout_ms: ms(DEFAULT_SHUTDOWN_TIMEOUT),
            eject_after: DEFAULT_EJECT_AFTER,
            eject_under_learning: false,
            hash_key: RequestAttr::ClientIp,
            retry: RetryPolicy::default(),
            retry_buffer: DEFAULT_RETRY_BUFFER,
            request_id: RequestIds::default(),
            id_memory: budget::DEFAULT_ENTRIES,
            id_window_s: budget::DEFAULT_WINDOW_S,
            max_pacing_wait_ms: ms(DEFAULT_MAX_PACING_WAIT),
            max_pacing_total_ms: ms(DEFAULT_MAX_PACING_TOTAL),
            backend_max_conns: 0,
            backend_queue: DEFAULT_BACKEND_QUEUE,
            queue_timeout_ms: ms(DEFAULT_QUEUE_TIMEOUT),
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_body_bytes: 0,
            allow_upgrade: Vec::new(),
            proxy_protocol_from: None,
            send_proxy_protocol: None,
            tls: None,
            backend_tls: None,
            access_log: None,
            client_limits: None,
        }
    }
}

impl ProxyConfig {
    /// The workers' timer tick: deadlines fire up to one tick late, so the tick is a tenth of the
    /// shortest per-request timeout (at most [`DEFAULT_TICK_MS`], at least 1 ms). A 30 ms response
    /// timeout then fires within 33 ms, not 40 ms, which matters when a request may take 7 of them.
    pub fn timer_tick_ms(&self) -> u64 {
        [
            self.connect_timeout_ms,
            self.head_timeout_ms,
            self.response_timeout_ms,
            self.per_try_timeout_ms,
            self.queue_timeout_ms,
        ]
        .into_iter()
        .filter(|&ms| ms != 0)
        .min()
        .map_or(DEFAULT_TICK_MS, |ms| (ms / 10).clamp(1, DEFAULT_TICK_MS))
    }

    /// Checks settings that depend on each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 || self.workers > 1024 {
            return Err(format!(
                "--workers must be between 1 and 1024, not {}",
                self.workers
            ));
        }
        if !(1..=7).contains(&self.max_attempts) {
            return Err(format!(
                "--max-attempts must be between 1 and 7, not {}",
                self.max_attempts
            ));
        }
        if !(MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&self.buffer_size) {
            return Err(format!(
                "--buffer-size must be between {MIN_BUFFER_SIZE} and {MAX_BUFFER_SIZE} (16 MiB), not {}",
                self.buffer_size
            ));
        }
        if self.retry_buffer > self.buffer_size.saturating_sub(REWRITE_RESERVE_BYTES) {
            return Err(format!(
                "--retry-buffer {} does not fit in --buffer-size {} (at most {})",
                self.retry_buffer,
                self.buffer_size,
                self.buffer_size.saturating_sub(REWRITE_RESERVE_BYTES)
            ));
        }
        if self.id_memory == 0 || self.id_memory > 1 << 30 {
            return Err(format!(
                "--id-memory must be between 1 and {}, not {}",
                1u64 << 30,
                self.id_memory
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
        // A request head larger than a buffer gets a grown buffer (the HTTP session reads it into
        // one), so --max-header-bytes and --buffer-size are checked apart.
        if !(256..=MAX_BUFFER_SIZE).contains(&self.max_header_bytes) {
            return Err(format!(
                "--max-header-bytes must be between 256 and {MAX_BUFFER_SIZE} (16 MiB), not {}",
                self.max_header_bytes
            ));
        }
        // Read like request heads: into a buffer grown for it when it outgrows a pooled one.
        if !(256..=MAX_BUFFER_SIZE).contains(&self.max_response_header_bytes) {
            return Err(format!(
                "--max-response-header-bytes must be between 256 and {MAX_BUFFER_SIZE} (16 MiB), not {}",
                self.max_response_header_bytes
            ));
        }
        for token in &self.allow_upgrade {
            check_upgrade_token(token)?;
        }
        if self.send_proxy_protocol.is_some() && self.mode == Mode::Http && self.pool_max_idle != 0
        {
            return Err(
                "--send-proxy-protocol in HTTP mode needs backend pooling off (pool_max_idle 0): \
                 a pooled connection would carry one client's header for others' requests"
                    .into(),
            );
        }
        if self.per_try_timeout_ms >= self.response_timeout_ms {
            return Err(format!(
                "--per-try-timeout ({} ms) must be shorter than --response-timeout ({} ms)",
                self.per_try_timeout_ms, self.response_timeout_ms
            ));
        }
        if self.per_try_budget_percent > 100 {
            return Err(format!(
                "--per-try-budget must be a percentage from 0 to 100, not {}",
                self.per_try_budget_percent
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

/// An `--allow-upgrade` protocol: a token (RFC 9110 section 5.6.2), and never `h2c`.
fn check_upgrade_token(token: &str) -> Result<(), String> {
    if token.eq_ignore_ascii_case("h2c") {
        return Err(
            "--allow-upgrade h2c is refused: sluice would tunnel the HTTP/2 connection blind, \
             past X-Forwarded-For, the header limits and every per-request rule"
                .into(),
        );
    }
    if token.is_empty() || !token.bytes().all(crate::http::chunked::is_tchar) {
        return Err(format!(
            "--allow-upgrade {token:?} is not a protocol name (letters, digits, -._~!#$%&'*+^`|)"
        ));
    }
    Ok(())
}

/// Everything needed to start the proxy, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub reuse_port: ReusePort,
    pub proxy: ProxyConfig,
    pub backends: Vec<BackendSpec>,
    pub strategy: StrategyKind,
    pub params: StrategyParams,
    pub control: ControlConfig,
}

impl Settings {
    /// Settings for running in-process (tests, embedding): everything on loopback port 0, default
    /// flags otherwise, active health checks off.
    pub fn local(
        proxy: ProxyConfig,
        backends: Vec<BackendSpec>,
        strategy: StrategyKind,
    ) -> Settings {
        let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        Settings {
            listen: loopback,
            reuse_port: ReusePort::Exclusive,
            proxy,
            backends,
            strategy,
            params: StrategyParams::default(),
            control: ControlConfig {
                admin: Some(loopback),
                admin_token: None,
                state_file: None,
                health: HealthConfig {
                    kind: ProbeKind::Tcp,
                    interval_ms: 0,
                    timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
                    rise: DEFAULT_RISE,
                    fall: DEFAULT_FALL,
                },
                eject_after: DEFAULT_EJECT_AFTER,
                eject_base_ms: ms_of(DEFAULT_EJECT_TIME),
                eject_max_ms: ms_of(DEFAULT_MAX_EJECT_TIME),
                max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
                drain_timeout_ms: ms_of(DEFAULT_DRAIN_TIMEOUT),
                switch_interval_ms: DEFAULT_SWITCH_INTERVAL_MS,
                cluster: None,
                resolve: ResolveConfig::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_checks_catch_conflicts() {
        assert_eq!(ProxyConfig::default().validate(), Ok(()));
        let small = ProxyConfig {
            buffer_size: 512,
            ..ProxyConfig::default()
        };
        assert!(small.validate().unwrap_err().contains("--buffer-size"));
        let retry = ProxyConfig {
            buffer_size: 4096,
            ..ProxyConfig::default()
        };
        assert!(retry.validate().unwrap_err().contains("--retry-buffer"));
        let big_heads = ProxyConfig {
            max_header_bytes: 64 * 1024,
            max_headers: MAX_HEADERS,
            ..ProxyConfig::default()
        };
        assert_eq!(
            big_heads.validate(),
            Ok(()),
            "heads are not bounded by --buffer-size"
        );
        let too_many = ProxyConfig {
            max_headers: MAX_HEADERS + 1,
            ..ProxyConfig::default()
        };
        assert!(too_many.validate().unwrap_err().contains("--max-headers"));
        let h2c = ProxyConfig {
            allow_upgrade: vec!["h2c".into()],
            ..ProxyConfig::default()
        };
        assert!(h2c.validate().unwrap_err().contains("h2c is refused"));
        let odd = ProxyConfig {
            allow_upgrade: vec!["a b".into()],
            ..ProxyConfig::default()
        };
        assert!(odd.validate().unwrap_err().contains("not a protocol name"));
        let attempts = ProxyConfig {
            max_attempts: 0,
            ..ProxyConfig::default()
        };
        assert!(attempts.validate().is_err());
        let never = ProxyConfig {
            tunnel_idle_timeout_ms: 0,
            ..ProxyConfig::default()
        };
        assert_eq!(never.validate(), Ok(()), "a tunnel may stay open for ever");
        let small_heads = ProxyConfig {
            max_response_header_bytes: 255,
            ..ProxyConfig::default()
        };
        let refused = small_heads.validate().unwrap_err();
        assert!(refused.contains("--max-response-header-bytes"), "{refused}");
    }

    #[test]
    fn cluster_flags_are_checked() {
        let ok = ClusterConfig::new(
            "http://127.0.0.1:2379, http://10.0.0.2:2379/",
            "prod",
            "a-1",
            5,
            None,
        )
        .unwrap();
        assert_eq!(
            ok.endpoints,
            vec!["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert!(ClusterConfig::new("https://h:1", "a", "b", 5, None).is_err());
        assert!(ClusterConfig::new("", "a", "b", 5, None).is_err());
        assert!(ClusterConfig::new("http://h:1/x", "a", "b", 5, None).is_err());
        assert!(ClusterConfig::new("http://h:1", "a/b", "b", 5, None).is_err());
        assert!(ClusterConfig::new("http://h:1", "a", "", 5, None).is_err());
        assert!(ClusterConfig::new("http://h:1", "a", "b", 1, None).is_err());
        assert!(valid_key_segment(&default_instance_id()));
    }

    #[test]
    fn the_timer_tick_follows_the_shortest_timeout() {
        assert_eq!(ProxyConfig::default().timer_tick_ms(), DEFAULT_TICK_MS);
        let fast = ProxyConfig {
            response_timeout_ms: 30,
            ..ProxyConfig::default()
        };
        assert_eq!(fast.timer_tick_ms(), 3);
        let tiny = ProxyConfig {
            connect_timeout_ms: 5,
            ..ProxyConfig::default()
        };
        assert_eq!(tiny.timer_tick_ms(), 1);
    }
}
