//! The downstream simulator: the stand-in for the flaky-servers challenge's server binary (the
//! challenge provides one; this repository does not have it) and the backend of sluice's tests
//! and benchmarks.
//!
//! [`Sim::start`] binds one HTTP/1.1 keep-alive server per address plus a control listener,
//! draws each server's parameters from the seed, and runs the servers on `threads` event loops
//! (server `i` on loop `i % threads`, the control listener on loop 0). Each server's state sits
//! behind its own mutex, so any loop, the control API and the [`SimHandle`] can read or patch it;
//! the ledger has one mutex shared by all servers (ids may hit any of them).
//!
//! ```no_run
//! use loadgen::sim::{Profile, ServerPatch, Sim, SimConfig};
//! let sim = Sim::start(SimConfig::new(Profile::Uniform).with_servers(4))?;
//! let backends = sim.server_addrs();
//! sim.patch(0, ServerPatch { down: Some(true), ..Default::default() })?;
//! println!("{:?}", sim.score());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod behaviour;
mod control;
mod event_loop;
pub mod ledger;
pub mod limit;
pub mod oracle;
mod profile;
pub mod shape;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Poll, Waker};
use serde::{Deserialize, Serialize};

pub use behaviour::{ServerReport, ServerState, RETRY_AFTER_S};
pub use control::{LookupRequest, LookupResponse};
pub use ledger::{Entry, Totals, FREE_ATTEMPTS};
pub use limit::DynamicLimit;
pub use profile::{
    Profile, RateLimit, ServerParams, ServerPatch, DEFAULT_SERVICE_TIME_MS,
    DEFAULT_WORKERS_PER_SERVER, FIXED_LIMIT_MAX_RPS, FIXED_LIMIT_MIN_RPS, SLOW_FACTOR_MAX,
    SLOW_FACTOR_MIN, SLOW_SHARE, SUCCESS_MAX, SUCCESS_MIN,
};

use behaviour::ReportContext;
use event_loop::{Listener, LoopParts, Origin, WAKER};
use ledger::Ledger;

use crate::id::Id;
use crate::rng::Rng;

pub const DEFAULT_SEED: u64 = 1;
/// Servers per configuration of the challenge.
pub const DEFAULT_SERVERS: usize = 10;
pub const DEFAULT_THREADS: usize = 1;
/// Ids per second assumed by the oracle until the ledger has measured a rate (the challenge's
/// clients send 10).
pub const DEFAULT_OFFERED_IDS_PER_S: f64 = 10.0;

/// The challenge's three configurations, started by `loadgen sim --challenge`:
/// (profile, first server port, control port); each has ten servers `[port, port + 10)`.
pub const CHALLENGE: [(Profile, u16, u16); 3] = [
    (Profile::Flaky1, 4000, 4100),
    (Profile::Flaky2, 5000, 5100),
    (Profile::Flaky3, 6000, 6100),
];

/// Where `scripts/challenge.sh` puts flaky4 (not part of `--challenge`: the challenge has three
/// configurations): servers on `[7000, 7010)`, control 7100.
pub const FLAKY4_PORTS: (u16, u16) = (7000, 7100);

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub profile: Profile,
    /// Seeds every server's parameters and answers. Default [`DEFAULT_SEED`].
    pub seed: u64,
    /// One server per address; port 0 picks a free port. Default: [`DEFAULT_SERVERS`] ×
    /// `127.0.0.1:0`.
    pub servers: Vec<SocketAddr>,
    /// Control API address; port 0 picks a free port. Default `127.0.0.1:0`.
    pub control: SocketAddr,
    /// Default [`DEFAULT_SERVICE_TIME_MS`].
    pub service_time_ms: u64,
    /// Workers per heavytail server. Default [`DEFAULT_WORKERS_PER_SERVER`].
    pub workers_per_server: u32,
    /// Event-loop threads. Default [`DEFAULT_THREADS`].
    pub threads: usize,
}

impl SimConfig {
    pub fn new(profile: Profile) -> Self {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        SimConfig {
            profile,
            seed: DEFAULT_SEED,
            servers: vec![local; DEFAULT_SERVERS],
            control: local,
            service_time_ms: DEFAULT_SERVICE_TIME_MS,
            workers_per_server: DEFAULT_WORKERS_PER_SERVER,
            threads: DEFAULT_THREADS,
        }
    }

    /// `count` servers on `127.0.0.1`, free ports.
    pub fn with_servers(mut self, count: usize) -> Self {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        self.servers = vec![local; count];
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn with_service_time_ms(mut self, service_time_ms: u64) -> Self {
        self.service_time_ms = service_time_ms;
        self
    }
}

/// Ledger totals with the oracle bound, as `GET /score` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub profile: String,
    pub ids: u64,
    pub accepted: u64,
    pub attempts: u64,
    pub penalty_attempts: u64,
    /// `accepted − penalty_attempts`.
    pub score: i64,
    /// `oracle_accepted_share × ids`: the score a perfect balancer would expect.
    pub oracle_bound: f64,
    /// See [`oracle`] for how it is computed.
    pub oracle_accepted_share: f64,
    /// The id rate the oracle assumed.
    pub offered_ids_per_s: f64,
}

/// Errors of the control operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    UnknownServer(String),
    InvalidPatch(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::UnknownServer(s) => write!(f, "no server with index or port {s}"),
            SimError::InvalidPatch(why) => write!(f, "invalid patch: {why}"),
        }
    }
}

impl std::error::Error for SimError {}

/// Locks a mutex, ignoring poisoning (state stays usable if a thread panicked mid-update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct ServerSlot {
    pub addr: SocketAddr,
    pub state: Mutex<ServerState>,
    pub queue_depth: AtomicU64,
    pub active: AtomicU64,
}

/// State shared by the event loops, the control API and the handle.
pub(crate) struct Shared {
    pub profile: Profile,
    pub started: Instant,
    pub servers: Vec<ServerSlot>,
    pub ledger: Mutex<Ledger>,
}

impl Shared {
    pub(crate) fn t_s(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.started).as_secs_f64()
    }

    /// Index for `selector`: an index below the server count, else a port.
    pub(crate) fn find(&self, selector: &str) -> Option<usize> {
        let n: usize = selector.parse().ok()?;
        if n < self.servers.len() {
            return Some(n);
        }
        self.servers
            .iter()
            .position(|s| usize::from(s.addr.port()) == n)
    }

    pub(crate) fn report(&self, index: usize, now: Instant) -> Option<ServerReport> {
        let slot = self.servers.get(index)?;
        let at = ReportContext {
            index,
            addr: slot.addr,
            profile: self.profile,
            now,
            t_s: self.t_s(now),
            queue_depth: slot.queue_depth.load(Ordering::Relaxed),
            active: slot.active.load(Ordering::Relaxed),
        };
        Some(lock(&slot.state).report(at))
    }

    pub(crate) fn reports(&self, now: Instant) -> Vec<ServerReport> {
        (0..self.servers.len())
            .filter_map(|i| self.report(i, now))
            .collect()
    }

    pub(crate) fn patch(
        &self,
        index: usize,
        patch: &ServerPatch,
        now: Instant,
    ) -> Result<ServerReport, SimError> {
        patch.validate().map_err(SimError::InvalidPatch)?;
        let slot = self
            .servers
            .get(index)
            .ok_or_else(|| SimError::UnknownServer(index.to_string()))?;
        lock(&slot.state).apply_patch(patch, now);
        log::info!("sim: server {index} ({}) patched: {patch:?}", slot.addr);
        self.report(index, now)
            .ok_or_else(|| SimError::UnknownServer(index.to_string()))
    }

    pub(crate) fn reset(&self) {
        lock(&self.ledger).clear();
        for slot in &self.servers {
            lock(&slot.state).reset_counts();
        }
    }

    pub(crate) fn lookup(&self, ids: &[Id]) -> Vec<Option<Entry>> {
        let ledger = lock(&self.ledger);
        ids.iter().map(|id| ledger.get(id)).collect()
    }

    /// The ledger's totals and the oracle bound, at `offered_ids_per_s` when the client says
    /// what it sent (ids a balancer answers itself never reach the ledger, which then measures
    /// a lower rate and a higher oracle share), else at the ledger's measured rate.
    pub(crate) fn score(&self, now: Instant, offered_ids_per_s: Option<f64>) -> Score {
        let (totals, span, measured) = {
            let ledger = lock(&self.ledger);
            (ledger.totals(), ledger.id_span(), ledger.ids_per_s())
        };
        let offered = offered_ids_per_s
            .or(measured)
            .unwrap_or(DEFAULT_OFFERED_IDS_PER_S);
        let (from_s, to_s) = match span {
            Some((first, last)) => (self.t_s(first), self.t_s(last)),
            None => (self.t_s(now), self.t_s(now)),
        };
        let snapshot: Vec<(ServerParams, bool)> = self
            .servers
            .iter()
            .map(|slot| {
                let state = lock(&slot.state);
                (state.params.clone(), state.down)
            })
            .collect();
        let share = oracle::accepted_share_over(from_s, to_s, offered, |t| {
            snapshot
                .iter()
                .map(|(params, down)| oracle::OracleServer::at(params, *down, t))
                .collect()
        });
        Score {
            profile: self.profile.name().to_string(),
            ids: totals.ids,
            accepted: totals.accepted,
            attempts: totals.attempts,
            penalty_attempts: totals.penalty_attempts,
            score: totals.score,
            oracle_bound: share * totals.ids as f64,
            oracle_accepted_share: share,
            offered_ids_per_s: offered,
        }
    }
}

/// Starts simulators.
pub struct Sim;

impl Sim {
    /// Binds every listener (so port-0 addresses are known on return), then starts the loops.
    pub fn start(cfg: SimConfig) -> io::Result<SimHandle> {
        if cfg.servers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the simulator needs at least one server",
            ));
        }
        let threads = cfg.threads.clamp(1, cfg.servers.len());
        let mut polls = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new()?;
            wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
            polls.push((poll, Vec::new()));
        }
        let mut master = Rng::with_seed(cfg.seed);
        let mut servers = Vec::with_capacity(cfg.servers.len());
        for (i, &addr) in cfg.servers.iter().enumerate() {
            let socket = crate::net::listen(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
            let addr = socket.local_addr()?;
            let mut rng = master.fork(i as u64);
            let params = ServerParams::draw(
                cfg.profile,
                &mut rng,
                cfg.service_time_ms,
                cfg.workers_per_server,
            );
            servers.push(ServerSlot {
                addr,
                state: Mutex::new(ServerState::new(params, rng)),
                queue_depth: AtomicU64::new(0),
                active: AtomicU64::new(0),
            });
            polls[i % threads].1.push(Listener {
                socket,
                origin: Origin::Server(i),
            });
        }
        let control = crate::net::listen(cfg.control)
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {}: {e}", cfg.control)))?;
        let control_addr = control.local_addr()?;
        polls[0].1.push(Listener {
            socket: control,
            origin: Origin::Control,
        });
        let server_addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let shared = Arc::new(Shared {
            profile: cfg.profile,
            started: Instant::now(),
            servers,
            ledger: Mutex::new(Ledger::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(threads);
        for (k, (poll, listeners)) in polls.into_iter().enumerate() {
            let parts = LoopParts {
                poll,
                listeners,
                shared: Arc::clone(&shared),
                stop: Arc::clone(&stop),
            };
            let handle = std::thread::Builder::new()
                .name(format!("sim-{}-{k}", cfg.profile))
                .spawn(move || {
                    if let Err(e) = event_loop::run(parts) {
                        log::error!("sim: event loop failed: {e}");
                    }
                })?;
            handles.push(handle);
        }
        log::info!(
            "sim: {} with {} servers ({} ..) control {control_addr}",
            cfg.profile,
            server_addrs.len(),
            server_addrs[0]
        );
        Ok(SimHandle {
            shared,
            stop,
            wakers,
            threads: handles,
            server_addrs,
            control_addr,
        })
    }
}

/// A running simulator. Dropping it stops the threads.
pub struct SimHandle {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    server_addrs: Vec<SocketAddr>,
    control_addr: SocketAddr,
}

impl SimHandle {
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.server_addrs.clone()
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    pub fn profile(&self) -> Profile {
        self.shared.profile
    }

    pub fn score(&self) -> Score {
        self.shared.score(Instant::now(), None)
    }

    pub fn servers(&self) -> Vec<ServerReport> {
        self.shared.reports(Instant::now())
    }

    pub fn server(&self, index: usize) -> Option<ServerReport> {
        self.shared.report(index, Instant::now())
    }

    /// Changes server `index` at runtime; returns its new report.
    pub fn patch(&self, index: usize, patch: ServerPatch) -> Result<ServerReport, SimError> {
        self.shared.patch(index, &patch, Instant::now())
    }

    /// Clears the ledger and every server's counters.
    pub fn reset(&self) {
        self.shared.reset();
    }

    pub fn ledger_entry(&self, id: &Id) -> Option<Entry> {
        self.shared.lookup(std::slice::from_ref(id)).pop().flatten()
    }

    /// True while every event loop is running.
    pub fn is_running(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    /// Stops the event loops and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::warn!("sim: wake: {e}");
            }
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("sim: an event loop panicked");
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the challenge's three configurations ([`CHALLENGE`]) on `ip`, seeds `seed`, `seed + 1`,
/// `seed + 2`.
pub fn start_challenge(ip: IpAddr, seed: u64, service_time_ms: u64) -> io::Result<Vec<SimHandle>> {
    CHALLENGE
        .iter()
        .enumerate()
        .map(|(k, &(profile, first_port, control_port))| {
            let mut cfg = SimConfig::new(profile)
                .with_seed(seed.wrapping_add(k as u64))
                .with_service_time_ms(service_time_ms);
            cfg.servers = (0..DEFAULT_SERVERS as u16)
                .map(|i| SocketAddr::new(ip, first_port + i))
                .collect();
            cfg.control = SocketAddr::new(ip, control_port);
            Sim::start(cfg)
        })
        .collect()
}
