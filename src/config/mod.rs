//! Command-line flags and the validated settings the workers run with.
//!
//! Every flag documents its default in `sluice --help`. [`RunArgs`] is what clap parses;
//! [`ProxyConfig`] is the checked, unit-explicit form a worker reads (its `Default` is the same
//! defaults, which tests start from).

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

use crate::backend::{parse_addr, BackendSpec};
use crate::http::head::{MAX_HEADERS, REWRITE_RESERVE_BYTES};
use crate::retry::budget;
use crate::retry::RetryPolicy;
use crate::strategy::{self, StrategyKind, StrategyParams};

mod cidr;
mod dns;
mod duration;
mod edge;
mod hash_key;
mod ops;
mod request_id;
mod settings;
mod tls;

pub(crate) use cidr::any_contains;
pub use cidr::Cidr;
pub use dns::{DnsArgs, ResolveConfig};
pub use duration::{parse_duration, DurationArg};
pub use edge::EdgeArgs;
pub use hash_key::RequestAttr;
pub use ops::OpsArgs;
pub use request_id::RequestIds;
pub use settings::*;
pub use tls::{TlsArgs, TlsSettings, DEFAULT_TLS_HANDSHAKE_TIMEOUT};

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
/// HAProxy's `timeout tunnel` for a database session or a pub/sub subscriber that may stay silent
/// for long; TCP keepalive finds dead peers sooner.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: &str = "1h";
pub const DEFAULT_HEAD_TIMEOUT: &str = "10s";
pub const DEFAULT_RESPONSE_TIMEOUT: &str = "60s";
/// Early retries after `--per-try-timeout`, per 100 requests. Envoy's and linkerd's retry budgets
/// default to 20; an early retry adds work while its backend is still busy with the first
/// attempt, so half that.
pub const DEFAULT_PER_TRY_BUDGET: u32 = 10;
pub const DEFAULT_POOL_IDLE_TIMEOUT: &str = "30s";
/// No count of its own: the idle pool is bounded by `--pool-idle-timeout`, `--backend-max-conns`
/// and `--max-conns` (see [`ProxyConfig::pool_max_idle`]).
pub const DEFAULT_POOL_MAX_IDLE: usize = usize::MAX;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Envoy's default is 60 KiB; room for a backend that echoes a request head of the largest
/// default size (`--max-header-bytes`) with plenty of its own fields.
pub const DEFAULT_MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_BUFFER_SIZE: usize = 32 * 1024;
/// Smallest `--buffer-size`: room for a status line and a few fields before a head outgrows it.
pub const MIN_BUFFER_SIZE: usize = 1024;
/// Largest `--buffer-size`, `--max-header-bytes` and `--max-response-header-bytes`.
pub const MAX_BUFFER_SIZE: usize = 16 << 20;
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "30s";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
pub const DEFAULT_HEALTH_INTERVAL: &str = "2s";
pub const DEFAULT_HEALTH_TIMEOUT: &str = "1s";
pub const DEFAULT_EJECT_AFTER: u32 = 5;
pub const DEFAULT_EJECT_TIME: &str = "10s";
pub const DEFAULT_MAX_EJECT_TIME: &str = "300s";
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30s";
pub const DEFAULT_RETRY_ON: &str = "connect,gateway";
pub const DEFAULT_RETRY_BUFFER: usize = 16 * 1024;
pub const DEFAULT_MAX_PACING_WAIT: &str = "1s";
pub const DEFAULT_MAX_PACING_TOTAL: &str = "9s";
pub const DEFAULT_BACKEND_QUEUE: usize = 256;
pub const DEFAULT_QUEUE_TIMEOUT: &str = "5s";
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;

/// Flags for running the proxy.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address to accept clients on: host:port, :port or port (every IPv4 address); [::]:port is
    /// dual-stack (IPv6 and IPv4 clients).
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,

    /// exclusive: refuse to start when another process listens on --listen already. shared: join
    /// it, and the kernel spreads new connections over every process (several sluice processes on
    /// one port, as scripts/million.sh runs them).
    #[arg(long, value_enum, default_value_t = ReusePort::Exclusive, value_name = "POLICY")]
    pub reuse_port: ReusePort,

    /// Protocol: http (L7, HTTP/1.1) or tcp (L4).
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    pub mode: Mode,

    /// A backend, `ip:port` (IPv6 as `[::1]:port`), `name:port` (every address the name resolves
    /// to, looked up again every --resolve-interval) or `unix:/path/to.sock`, optionally with
    /// `,weight=N` (weight 0-256, default 1). Repeat for more.
    #[arg(long = "backend", value_name = "ADDR[,weight=N]")]
    pub backends: Vec<BackendSpec>,

    /// Load-balancing strategy.
    #[arg(long, value_enum, default_value_t = StrategyKind::RoundRobin)]
    pub strategy: StrategyKind,

    /// What `maglev` hashes in HTTP mode: client-ip, path, path-query, host, header:NAME or
    /// cookie:NAME (TCP mode always hashes the client address).
    #[arg(long, default_value = "client-ip", value_name = "ATTR")]
    pub hash_key: RequestAttr,

    /// Worker threads, each with its own event loop and listener [default: available cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Most backends one request or connection is tried on (1-7); also the attempt budget per
    /// request id.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS, value_name = "N")]
    pub max_attempts: u8,

    /// Failed attempts to retry on another backend: a comma list of connect (always on), timeout,
    /// broken (reset or garbage), gateway (502/503/504), 5xx (any), 429.
    #[arg(long, default_value = DEFAULT_RETRY_ON, value_name = "LIST")]
    pub retry_on: String,

    /// Retry only idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS, TRACE), or any method.
    /// Failed connects are retried for every method.
    #[arg(long, default_value = "idempotent", value_name = "idempotent|any")]
    pub retry_methods: String,

    /// Requests up to this many bytes (head and body) are kept for a retry; larger ones stream and
    /// are not retried.
    #[arg(long, default_value_t = DEFAULT_RETRY_BUFFER, value_name = "BYTES")]
    pub retry_buffer: usize,

    /// Where a request's id comes from (off by default): body-alnum24 (a body of exactly 24 ASCII
    /// letters and digits) and/or header:NAME (that field's value, first when both are given);
    /// repeat the flag or give a comma list for both. An id, scoped by method, host and path, gets at most --max-attempts
    /// delivery attempts in total; a repeat of an accepted id gets 200 "this request id was already
    /// accepted" without reaching a backend, one with no attempts left 503.
    #[arg(long, value_name = "body-alnum24|header:NAME")]
    pub request_id: Vec<String>,

    /// Ids remembered at most (8 bytes each).
    #[arg(long, default_value_t = budget::DEFAULT_ENTRIES, value_name = "N")]
    pub id_memory: usize,

    /// An id is forgotten this long after its last attempt.
    #[arg(long, default_value = "600s", value_name = "DURATION")]
    pub id_window: DurationArg,

    /// bandit strategy: longest a request waits for room under a backend's learned rate limit;
    /// it then waits as long again for room at any backend, and is answered 503 ("every backend
    /// is at its rate limit") if none comes, rather than sent where a 429 is sure.
    #[arg(long, default_value = DEFAULT_MAX_PACING_WAIT, value_name = "DURATION")]
    pub max_pacing_wait: DurationArg,

    /// bandit strategy: longest a request waits for room in all, counted from its arrival and
    /// across its attempts, whatever its attempts' own --max-pacing-wait; then it takes the
    /// likeliest backend with room, or is answered 503. Keep it below your clients' timeout, so
    /// that the answer reaches them; 0 = no bound beyond --max-pacing-wait.
    #[arg(long, default_value = DEFAULT_MAX_PACING_TOTAL, value_name = "DURATION")]
    pub max_pacing_total: DurationArg,

    /// Give up connecting to a backend after this long (then try another).
    #[arg(long, default_value = DEFAULT_CONNECT_TIMEOUT, value_name = "DURATION")]
    pub connect_timeout: DurationArg,

    /// Close a keep-alive client connection idle this long between HTTP requests (tunnels have
    /// --tunnel-idle-timeout).
    #[arg(long, default_value = DEFAULT_IDLE_TIMEOUT, value_name = "DURATION")]
    pub idle_timeout: DurationArg,

    /// Close a TCP-mode connection, or an upgraded (WebSocket) one, after this long with no byte
    /// either way; 0 = never. TCP keepalive on both sides still finds peers that are gone.
    #[arg(long, default_value = DEFAULT_TUNNEL_IDLE_TIMEOUT, value_name = "DURATION")]
    pub tunnel_idle_timeout: DurationArg,

    /// Answer 408 when a request head takes longer than this from its first byte.
    #[arg(long, default_value = DEFAULT_HEAD_TIMEOUT, value_name = "DURATION")]
    pub head_timeout: DurationArg,

    /// Answer 504 when a backend sends nothing for this long while a request waits.
    #[arg(long, default_value = DEFAULT_RESPONSE_TIMEOUT, value_name = "DURATION")]
    pub response_timeout: DurationArg,

    /// Send an idempotent request (any with --retry-methods any) to another backend when its
    /// backend has not started answering after this long, while --per-try-budget allows; else
    /// keep waiting, up to --response-timeout. 0 = off.
    #[arg(long, default_value = "0", value_name = "DURATION")]
    pub per_try_timeout: DurationArg,

    /// Early retries after --per-try-timeout, as a percentage of requests (each worker also
    /// allows 10 per second whatever its traffic).
    #[arg(long, default_value_t = DEFAULT_PER_TRY_BUDGET, value_name = "PERCENT")]
    pub per_try_budget: u32,

    /// Close a pooled idle backend connection after this long (the most recently used are
    /// reused first, so connections a drop in load left over are the ones that age out).
    #[arg(long, default_value = DEFAULT_POOL_IDLE_TIMEOUT, value_name = "DURATION")]
    pub pool_idle_timeout: DurationArg,

    /// Most idle backend connections kept per backend and worker; 0 keeps none [default: no count
    /// of its own: --pool-idle-timeout, --backend-max-conns and --max-conns bound the pool].
    #[arg(long, value_name = "N")]
    pub pool_max_idle: Option<usize>,

    /// Most concurrent client connections; beyond it sluice stops accepting until some close
    /// [default: half the open-file limit].
    #[arg(long, value_name = "N")]
    pub max_conns: Option<usize>,

    /// Longest request line (method, target, version) accepted; longer ones get 414.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_LINE, value_name = "BYTES")]
    pub max_request_line: usize,

    /// Largest request body accepted; larger ones get 413. 0 = no limit.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub max_body_bytes: u64,

    /// Also pass this protocol upgrade on (repeatable). WebSocket always passes; any other token
    /// is dropped from Upgrade and the request forwarded as plain HTTP/1.1. h2c cannot be allowed.
    #[arg(long = "allow-upgrade", value_name = "TOKEN")]
    pub allow_upgrade: Vec<String>,

    /// Most connections to each backend, across workers (each worker takes an equal share);
    /// requests beyond it wait in a queue. 0 = no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub backend_max_conns: usize,

    /// Requests that may wait for a connection to one backend (per worker); more get 503.
    #[arg(long, default_value_t = DEFAULT_BACKEND_QUEUE, value_name = "N")]
    pub backend_queue: usize,

    /// A request waiting in a backend's queue longer than this gets 503.
    #[arg(long, default_value = DEFAULT_QUEUE_TIMEOUT, value_name = "DURATION")]
    pub queue_timeout: DurationArg,

    /// Largest request head accepted (256 B to 16 MiB); larger ones get 431. Independent of
    /// --buffer-size: a head that outgrows a buffer is read into one grown for it, up to this size,
    /// and freed after its request.
    #[arg(long, default_value_t = DEFAULT_MAX_HEADER_BYTES, value_name = "BYTES")]
    pub max_header_bytes: usize,

    /// Most header fields in a request (1-256); more get 431.
    #[arg(long, default_value_t = DEFAULT_MAX_HEADERS, value_name = "N")]
    pub max_headers: usize,

    /// Largest response head accepted from a backend (256 B to 16 MiB); a larger one gets 502 and
    /// is counted apart, not as the backend failing. Independent of --buffer-size, as for requests.
    #[arg(long, default_value_t = DEFAULT_MAX_RESPONSE_HEADER_BYTES, value_name = "BYTES")]
    pub max_response_header_bytes: usize,

    /// Size of each I/O buffer (1 KiB to 16 MiB); a connection holds up to two while bytes are in
    /// flight. --retry-buffer must fit in one, less 512 bytes; heads are limited by
    /// --max-header-bytes and --max-response-header-bytes alone.
    #[arg(long, default_value_t = DEFAULT_BUFFER_SIZE, value_name = "BYTES")]
    pub buffer_size: usize,

    /// On SIGTERM or SIGINT, wait this long for requests in flight before exiting.
    #[arg(long, default_value = DEFAULT_SHUTDOWN_TIMEOUT, value_name = "DURATION")]
    pub shutdown_timeout: DurationArg,

    /// Write the process id here (and, after a live upgrade with SIGUSR2, the new process's id).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<std::path::PathBuf>,

    /// Admin API and dashboard address (host:port), or `off`. Loopback by default.
    #[arg(long, default_value = DEFAULT_ADMIN, value_name = "ADDR|off")]
    pub admin: String,

    /// Token that mutating admin routes require as `Authorization: Bearer <token>`.
    #[arg(
        long,
        env = "SLUICE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Save every accepted change here and restore it on start (flags only seed a fresh file).
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<std::path::PathBuf>,

    /// HTTP health checks: `GET PATH` on each backend, 2xx is healthy [default: TCP connect checks].
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,

    /// Time between active health checks of each backend; 0 turns them off.
    #[arg(long, default_value = DEFAULT_HEALTH_INTERVAL, value_name = "DURATION")]
    pub health_interval: DurationArg,

    /// A health check not answered within this long fails.
    #[arg(long, default_value = DEFAULT_HEALTH_TIMEOUT, value_name = "DURATION")]
    pub health_timeout: DurationArg,

    /// Consecutive passed checks that bring a backend back up.
    #[arg(long, default_value_t = DEFAULT_RISE, value_name = "N")]
    pub rise: u32,

    /// Consecutive failed checks that mark a backend down.
    #[arg(long, default_value_t = DEFAULT_FALL, value_name = "N")]
    pub fall: u32,

    /// Eject a backend after this many consecutive failed attempts (connect errors, resets,
    /// timeouts); 0 turns passive ejection off. Default 5, but off under `--strategy bandit`,
    /// which leaves a backend that does not answer alone for 0.5-2 s by itself and tries it
    /// again sooner than an ejection would: give this flag to eject under bandit as well.
    #[arg(long, value_name = "N")]
    pub eject_after: Option<u32>,

    /// Base ejection time, multiplied by the number of recent ejections.
    #[arg(long, default_value = DEFAULT_EJECT_TIME, value_name = "DURATION")]
    pub eject_time: DurationArg,

    /// Longest ejection.
    #[arg(long, default_value = DEFAULT_MAX_EJECT_TIME, value_name = "DURATION")]
    pub max_eject_time: DurationArg,

    /// Most backends ejected at once, as a percentage (at least one may always be ejected).
    #[arg(long, default_value_t = DEFAULT_MAX_EJECTION_PERCENT, value_name = "PERCENT")]
    pub max_ejection_percent: u32,

    /// Disabled or removed backends keep their open connections at most this long.
    #[arg(long, default_value = DEFAULT_DRAIN_TIMEOUT, value_name = "DURATION")]
    pub drain_timeout: DurationArg,

    /// Ramp a returning or new backend's weight up over this long (HAProxy's slowstart); 0 = off.
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    pub slow_start: DurationArg,

    /// threshold strategy: skip a backend with more requests in flight than this...
    #[arg(long, default_value_t = strategy::DEFAULT_THRESHOLD_HIGH, value_name = "N")]
    pub threshold_high: u64,

    /// ...until it has fewer than this.
    #[arg(long, default_value_t = strategy::DEFAULT_THRESHOLD_LOW, value_name = "N")]
    pub threshold_low: u64,

    /// adaptive strategy: at most one switch per this long.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub switch_interval: DurationArg,

    /// threshold strategy: never leave fewer than this many backends to choose from.
    #[arg(long, default_value_t = strategy::DEFAULT_MIN_ENABLED, value_name = "N")]
    pub min_enabled: usize,

    /// Run as one instance of a cluster: the configuration (backends, weights, enabled flags,
    /// strategy) lives in etcd at these client URLs (comma-separated, tried in turn), and every
    /// instance follows it. Without it the configuration is local.
    #[arg(long, value_name = "http://HOST:PORT[,...]")]
    pub cluster_store: Option<String>,

    /// The cluster's name: its configuration lives under /sluice/NAME/ in etcd.
    #[arg(long, default_value = DEFAULT_CLUSTER_NAME, value_name = "NAME")]
    pub cluster_name: String,

    /// This instance's name among the cluster's members [default: host name and process id].
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,

    /// A member that stops renewing its registration (killed, cut off) leaves the member list
    /// after this long.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub cluster_ttl: DurationArg,

    /// Keep the last configuration installed from the cluster here; when the store cannot be
    /// reached at start, serve from this copy instead of waiting for it.
    #[arg(long, value_name = "PATH")]
    pub cluster_fallback_state: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub dns: DnsArgs,

    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Whether another process may listen on the proxy address too (`--reuse-port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReusePort {
    /// Refuse to start when the address is taken.
    Exclusive,
    /// Share the address with the processes listening there already.
    Shared,
}

/// A listen address: `host:port`, or `:port` and a bare `port` for every IPv4 address, as nginx
/// and HAProxy accept them.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let port_only = text.strip_prefix(':').unwrap_or(text);
    match port_only.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([0, 0, 0, 0], port))),
        Err(_) => parse_addr(text),
    }
}

impl RunArgs {
    /// `--eject-after`, or its default when not given.
    fn eject_after_or_default(&self) -> u32 {
        self.eject_after.unwrap_or(DEFAULT_EJECT_AFTER)
    }

    pub fn settings(&self) -> Result<Settings, String> {
        let listen = parse_listen(&self.listen).map_err(|e| format!("--listen: {e}"))?;
        let mut proxy = ProxyConfig {
            mode: self.mode,
            workers: self.workers.unwrap_or_else(default_workers),
            max_attempts: self.max_attempts,
            connect_timeout_ms: self.connect_timeout.ms(),
            idle_timeout_ms: self.idle_timeout.ms(),
            tunnel_idle_timeout_ms: self.tunnel_idle_timeout.ms(),
            head_timeout_ms: self.head_timeout.ms(),
            response_timeout_ms: self.response_timeout.ms(),
            per_try_timeout_ms: self.per_try_timeout.ms(),
            per_try_budget_percent: self.per_try_budget,
            pool_idle_timeout_ms: self.pool_idle_timeout.ms(),
            pool_max_idle: self.pool_max_idle.unwrap_or(DEFAULT_POOL_MAX_IDLE),
            max_conns: self.max_conns.unwrap_or_else(default_max_conns),
            max_header_bytes: self.max_header_bytes,
            max_response_header_bytes: self.max_response_header_bytes,
            max_headers: self.max_headers,
            buffer_size: self.buffer_size,
            shutdown_timeout_ms: self.shutdown_timeout.ms(),
            eject_after: self.eject_after_or_default(),
            eject_under_learning: self.eject_after.is_some(),
            hash_key: self.hash_key.clone(),
            retry: RetryPolicy::parse(&self.retry_on, &self.retry_methods)?,
            retry_buffer: self.retry_buffer,
            request_id: RequestIds::parse_all(&self.request_id)?,
            id_memory: self.id_memory,
            id_window_s: (self.id_window.ms() / 1000).max(1) as u32,
            max_pacing_wait_ms: self.max_pacing_wait.ms(),
            max_pacing_total_ms: self.max_pacing_total.ms(),
            backend_max_conns: self.backend_max_conns,
            backend_queue: self.backend_queue,
            queue_timeout_ms: self.queue_timeout.ms(),
            max_request_line: self.max_request_line,
            max_body_bytes: self.max_body_bytes,
            allow_upgrade: self
                .allow_upgrade
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            proxy_protocol_from: None,
            send_proxy_protocol: None,
            tls: None,
            backend_tls: None,
            access_log: None,
            client_limits: None,
        };
        self.edge.apply(&mut proxy)?;
        self.tls.apply(&mut proxy)?;
        self.ops.apply(&mut proxy)?;
        proxy.validate()?;
        let admin = match self.admin.as_str() {
            "off" | "none" => None,
            text => Some(parse_addr(text).map_err(|e| format!("--admin: {e}"))?),
        };
        let kind = match (&self.health_path, self.mode) {
            (Some(path), Mode::Http) => {
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(format!(
                        "--health-path must be a path starting with '/', not {path:?}"
                    ));
                }
                ProbeKind::Http { path: path.clone() }
            }
            (Some(_), Mode::Tcp) => {
                return Err(
                    "--health-path needs --mode http (TCP mode checks by connecting)".into(),
                )
            }
            (None, _) => ProbeKind::Tcp,
        };
        if self.rise == 0 || self.fall == 0 {
            return Err("--rise and --fall must be at least 1".into());
        }
        if self.max_ejection_percent > 100 {
            return Err(format!(
                "--max-ejection-percent must be at most 100, not {}",
                self.max_ejection_percent
            ));
        }
        if self.health_interval.ms() > 0 && self.health_timeout.ms() == 0 {
            return Err("--health-timeout must be longer than zero".into());
        }
        if self.threshold_low > self.threshold_high {
            return Err(format!(
                "--threshold-low ({}) must not exceed --threshold-high ({})",
                self.threshold_low, self.threshold_high
            ));
        }
        let params = StrategyParams {
            slow_start_ms: self.slow_start.ms(),
            threshold_high: self.threshold_high,
            threshold_low: self.threshold_low,
            min_enabled: self.min_enabled,
        };
        let cluster = match &self.cluster_store {
            Some(store) => {
                if self.state_file.is_some() {
                    return Err(
                        "--state-file and --cluster-store exclude each other: in a cluster \
                                the configuration lives in the store (--cluster-fallback-state \
                                keeps a local copy)"
                            .into(),
                    );
                }
                let id = self.cluster_id.clone().unwrap_or_else(default_instance_id);
                Some(ClusterConfig::new(
                    store,
                    &self.cluster_name,
                    &id,
                    self.cluster_ttl.ms().div_ceil(1000),
                    self.cluster_fallback_state.clone(),
                )?)
            }
            None => {
                if self.cluster_fallback_state.is_some() {
                    return Err("--cluster-fallback-state needs --cluster-store".into());
                }
                None
            }
        };
        let control = ControlConfig {
            admin,
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            state_file: self.state_file.clone(),
            health: HealthConfig {
                kind,
                interval_ms: self.health_interval.ms(),
                timeout_ms: self.health_timeout.ms(),
                rise: self.rise,
                fall: self.fall,
            },
            eject_after: self.eject_after_or_default(),
            eject_base_ms: self.eject_time.ms(),
            eject_max_ms: self.max_eject_time.ms().max(self.eject_time.ms()),
            max_ejection_percent: self.max_ejection_percent,
            drain_timeout_ms: self.drain_timeout.ms(),
            switch_interval_ms: self.switch_interval.ms(),
            cluster,
            resolve: self.dns.config(),
        };
        Ok(Settings {
            listen,
            reuse_port: self.reuse_port,
            proxy,
            backends: self.backends.clone(),
            strategy: self.strategy,
            params,
            control,
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
