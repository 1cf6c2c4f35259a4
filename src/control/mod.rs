//! The control thread: owns the authoritative state, serves the admin API, runs active health checks
//! and passive outlier ejection, merges metrics, and publishes a new backend table to the workers for
//! every change. It has its own mio loop, so nothing it does (an fsync of the state file, a slow
//! admin client) ever stalls a worker.
//!
//! Workers talk to it over one channel ([`ControlLink`]): a metrics snapshot each second, and a
//! message when a backend's consecutive failures reach `--eject-after`. It talks to workers only by
//! publishing tables and sending drain orders; it never waits for them, so the two sides cannot
//! deadlock.

pub(crate) mod adaptive;
pub(crate) mod api;
pub(crate) mod cluster;
pub(crate) mod dns;
pub(crate) mod health;
pub(crate) mod ops;
pub(crate) mod prometheus;
pub(crate) mod saved;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver};
use log::{info, warn};
use mio::{Events, Poll, Token, Waker};

use crate::admin::AdminServer;
use crate::backend::{BackendId, BackendTable};
use crate::clock;
use crate::config::{ControlConfig, Settings};
use crate::link::{ControlLink, ControlMsg, Workers};
use crate::metrics::MetricsHub;
use crate::strategy::StrategyKind;
use adaptive::{AdaptiveEngine, Sample};
use cluster::Cluster;
use health::{HealthChecker, ProbeResult, ProbeTarget};
use state::{ControlState, StateFile};

const ADMIN_LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const ADMIN_TOKEN_BASE: usize = 1 << 20;
const HEALTH_TOKEN_BASE: usize = 1 << 40;
/// The control loop wakes at least this often for its timers.
const TICK_MS: u64 = 100;

/// The control thread before it runs: state opened, admin listener registered.
impl Control {
    /// Opens the state (file or flags) and registers the admin listener. Returns the control
    /// thread to [`Control::spawn`] once the workers run, and the link the workers reach it by.
    /// `boot` is the configuration read from the cluster's store ([`cluster::bootstrap`]), or
    /// `None` when this instance runs alone.
    pub(crate) fn new(
        settings: Settings,
        admin_listener: Option<std::net::TcpListener>,
        boot: Option<cluster::Boot>,
    ) -> Result<(Control, ControlLink), String> {
        let now_ms = clock::now_ms();
        let poll = Poll::new().map_err(|e| format!("cannot create event loop: {e}"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| format!("cannot create waker: {e}"))?,
        );
        let (tx, rx) = unbounded();
        let link = ControlLink::new(tx, waker.clone());
        let ctl = settings.control.clone();
        let (cluster, mut state) = match (ctl.cluster.clone(), boot) {
            (Some(cfg), Some(boot)) => {
                let (c, s) = Cluster::new(cfg, boot, &settings, waker.clone())?;
                (Some(c), s)
            }
            (Some(_), None) => return Err("cluster mode needs the configuration read first".into()),
            (None, _) => {
                let state = ControlState::open(
                    ctl.state_file.clone().map(StateFile::new),
                    &settings.backends,
                    settings.strategy,
                    settings.params,
                )?;
                (None, state)
            }
        };
        // Backends given by name: looked up once here, before anything serves.
        let dns = dns::Dns::start(&settings, &mut state, link.clone())?;
        let admin = match admin_listener {
            Some(listener) => {
                let mut server = AdminServer::from_std(listener, ADMIN_TOKEN_BASE)
                    .map_err(|e| format!("admin listener: {e}"))?;
                server
                    .register(poll.registry(), ADMIN_LISTENER)
                    .map_err(|e| e.to_string())?;
                Some(server)
            }
            None => None,
        };
        let control = Control {
            poll,
            admin,
            health: HealthChecker::new(
                ctl.health.clone(),
                settings.proxy.send_proxy_protocol,
                HEALTH_TOKEN_BASE,
            ),
            state,
            cluster,
            dns,
            workers: None,
            rx,
            hub: MetricsHub::default(),
            adaptive: AdaptiveEngine::new(ctl.switch_interval_ms),
            cfg: ctl,
            settings,
            now_ms,
            next_second_ms: now_ms + 1_000,
            counters: ControlCounters::default(),
            tls: None,
            changed: false,
            stop: false,
            ops: ops::ControlOps::default(),
        };
        Ok((control, link))
    }

    /// The address the admin API listens on, if it is on.
    pub(crate) fn admin_addr(&mut self) -> Option<SocketAddr> {
        self.admin.as_mut().and_then(|a| a.local_addr().ok())
    }

    /// Puts the control thread in charge of the TLS certificates loaded at start-up (it reloads
    /// them and reports on them).
    pub(crate) fn set_tls(&mut self, tls: tls::TlsControl) {
        self.tls = Some(tls);
    }

    /// `--backend-tls`: health probes speak TLS as the workers do.
    pub(crate) fn set_backend_tls(&mut self, tls: Option<crate::tls::client::BackendTls>) {
        self.health.backend_tls = tls;
    }

    /// The first table version, for the workers to start with.
    pub(crate) fn first_table(&mut self) -> Arc<BackendTable> {
        self.state.next_version()
    }

    /// Runs the control loop on a thread of its own, in charge of `workers` (which serve on
    /// `proxy_addr`); in a cluster, registers this instance and starts following the store.
    pub(crate) fn spawn(
        mut self,
        workers: Workers,
        proxy_addr: SocketAddr,
    ) -> Result<JoinHandle<()>, String> {
        self.workers = Some(workers);
        let admin_addr = self.admin_addr();
        let revision = self.state.revision();
        if let Some(c) = self.cluster.as_mut() {
            c.start(proxy_addr, admin_addr, revision)?;
        }
        std::thread::Builder::new()
            .name("sluice-control".into())
            .spawn(move || self.run())
            .map_err(|e| format!("cannot start the control thread: {e}"))
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Events the control thread counts for metrics.
#[derive(Debug, Default)]
pub(crate) struct ControlCounters {
    pub health_flips: u64,
    pub ejections: u64,
    pub strategy_switches: u64,
}

pub(crate) struct Control {
    poll: Poll,
    admin: Option<AdminServer>,
    health: HealthChecker,
    pub state: ControlState,
    /// Cluster mode: the store's threads and this instance's copy of the cluster's keys.
    pub cluster: Option<Cluster>,
    /// Backends given by name: the resolver thread and the lookups the API waits for.
    pub dns: dns::Dns,
    workers: Option<Workers>,
    rx: Receiver<ControlMsg>,
    pub hub: MetricsHub,
    pub adaptive: AdaptiveEngine,
    pub cfg: ControlConfig,
    pub settings: Settings,
    pub now_ms: u64,
    next_second_ms: u64,
    pub counters: ControlCounters,
    /// The listener's certificates, when it speaks TLS.
    tls: Option<tls::TlsControl>,
    /// Set by every change that routing depends on; the loop publishes one new table version
    /// per iteration when it is set.
    changed: bool,
    stop: bool,
    /// The access log's control and the per-client table, when on.
    ops: ops::ControlOps,
}

impl Control {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut results = Vec::new();
        while !self.stop {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(TICK_MS)))
            {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!("control loop poll failed: {e}");
                break;
            }
            self.now_ms = clock::now_ms();
            for event in events.iter() {
                match event.token() {
                    ADMIN_LISTENER => {
                        if let Some(admin) = self.admin.as_mut() {
                            admin.accept(self.poll.registry(), self.now_ms);
                        }
                    }
                    WAKER => {
                        self.drain_messages();
                        self.store_events();
                    }
                    t if self.health.owns(t) => self.health.on_ready(t, &mut results),
                    t => self.admin_ready(t),
                }
            }
            self.housekeeping(&mut results);
            self.publish_if_changed();
            self.follow_names();
        }
        self.dns.stop();
        if let Some(c) = self.cluster.as_mut() {
            c.stop();
        }
        if let Some(workers) = self.workers.take() {
            workers.shutdown(Duration::from_millis(
                self.settings.proxy.shutdown_timeout_ms,
            ));
        }
    }

    fn admin_ready(&mut self, token: Token) {
        let Some(mut admin) = self.admin.take() else {
            return;
        };
        if admin.owns(token) {
            let now_ms = self.now_ms;
            admin.on_ready(token, now_ms, &mut |req| self.api(req));
        }
        self.admin = Some(admin);
    }

    fn drain_messages(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                ControlMsg::Metrics(snap) => self.hub.merge(&snap),
                ControlMsg::Failing(id) => self.eject(id),
                ControlMsg::ReloadTls => self.reload_tls_signal(),
                ControlMsg::Resolved(answer) => self.on_answer(answer),
                ControlMsg::Stop => {
                    info!(
                        "stopping: no new connections, waiting up to {} ms for requests in flight",
                        self.settings.proxy.shutdown_timeout_ms
                    );
                    self.stop = true;
                }
            }
        }
    }

    fn housekeeping(&mut self, results: &mut Vec<ProbeResult>) {
        let now = self.now_ms;
        let targets: Vec<ProbeTarget> = self
            .state
            .backends
            .iter()
            .filter(|b| b.removing_deadline_ms.is_none())
            .map(|b| ProbeTarget {
                backend: b.id,
                addr: b.addr.clone(),
                dns_name: crate::backend::Backend::host_of(b.name.as_ref()),
            })
            .collect();
        self.health
            .maybe_start_round(now, self.poll.registry(), &targets, results);
        self.health.expire(now, results);
        let mut changed = false;
        for r in results.drain(..) {
            changed |= self.apply_probe(r);
        }
        changed |= self.end_ejections();
        let installed = self.installed_version();
        let (sever_removed, removed) = self.state.reap_removed(now, installed);
        changed |= removed;
        let sever_disabled = self.state.expired_drains(now);
        self.changed |= changed;
        if let Some(workers) = &self.workers {
            for id in sever_removed.into_iter().chain(sever_disabled) {
                info!("drain timeout: closing connections still open to backend {id}");
                workers.sever(id);
            }
        }
        self.release_held();
        if now >= self.next_second_ms {
            self.next_second_ms = now + 1_000;
            self.hub.rotate(unix_ms());
            self.scan_clients();
            let live: Vec<BackendId> = self.state.backends.iter().map(|b| b.id).collect();
            self.hub.retain_backends(|id| live.contains(&id));
            if let Some(admin) = self.admin.as_mut() {
                admin.sweep_idle(now);
            }
            self.adapt();
        }
    }

    /// Runs the adaptive engine on the last second's measurements when `adaptive` is configured.
    fn adapt(&mut self) {
        if self.state.strategy != StrategyKind::Adaptive {
            return;
        }
        let samples: Vec<Sample> = self
            .state
            .backends
            .iter()
            .filter(|b| b.routable())
            .map(|b| {
                let agg = self.hub.backends.get(&b.id);
                let quantiles = agg.and_then(|a| a.latency_quantiles_us(&[0.5, 0.99]));
                Sample {
                    name: b.addr.to_string(),
                    p50_us: quantiles.as_ref().map(|q| q[0]),
                    p99_us: quantiles.as_ref().map(|q| q[1]),
                    error_rate: agg.map_or(0.0, |a| a.error_rate()),
                    in_flight: b.stats.in_flight(),
                }
            })
            .collect();
        self.adaptive.active = self.state.active_strategy;
        if let Some(switch) = self
            .adaptive
            .evaluate(self.now_ms, &samples, &self.state.params)
        {
            info!(
                "adaptive: switching from {} to {}: {}",
                self.state.active_strategy, switch.to, switch.reason
            );
            self.counters.strategy_switches += 1;
            self.state.set_active(switch.to);
            self.mark_changed();
        }
    }

    /// Applies one health probe result; true when routing changed.
    fn apply_probe(&mut self, r: ProbeResult) -> bool {
        let (rise, fall) = (self.cfg.health.rise, self.cfg.health.fall);
        let now = self.now_ms;
        let Some(b) = self.state.backends.iter_mut().find(|b| b.id == r.backend) else {
            return false;
        };
        let mut changed = false;
        if r.passed && b.is_ejected() {
            info!(
                "backend {} passed an active check: ejection ends early",
                b.addr
            );
            b.ejected_until_ms = 0;
            b.last_ejection_end_ms = now;
            b.since_ms = now;
            changed = true;
        }
        if b.health.observe(r.passed, rise, fall) {
            self.counters.health_flips += 1;
            if b.health.healthy {
                info!("backend {} is up ({rise} checks passed)", b.addr);
                b.since_ms = now;
            } else {
                warn!("backend {} is down ({fall} checks failed)", b.addr);
            }
            changed = true;
        }
        changed
    }

    /// Passive outlier ejection: `--eject-after` consecutive failures take a backend out for
    /// base × times ejected (capped), never more than `--max-ejection-percent` of backends at once
    /// (but always at least one may go), as Envoy's outlier detection does.
    fn eject(&mut self, id: BackendId) {
        let now = self.now_ms;
        let total = self.state.backends.len();
        let ejected = self
            .state
            .backends
            .iter()
            .filter(|b| b.is_ejected())
            .count();
        let cap = (total * self.cfg.max_ejection_percent as usize / 100).max(1);
        let (base, max) = (self.cfg.eject_base_ms, self.cfg.eject_max_ms);
        let Some(b) = self.state.backends.iter_mut().find(|b| b.id == id) else {
            return;
        };
        b.stats.reset_failures();
        if b.is_ejected() {
            return;
        }
        if ejected >= cap {
            warn!("backend {} keeps failing but {ejected} of {total} backends are already ejected (cap {cap})", b.addr);
            return;
        }
        if b.last_ejection_end_ms != 0 && now.saturating_sub(b.last_ejection_end_ms) > max {
            b.ejections = 0;
        }
        b.ejections += 1;
        let duration = (base * u64::from(b.ejections)).min(max);
        b.ejected_until_ms = now + duration;
        self.counters.ejections += 1;
        warn!(
            "backend {} ejected for {duration} ms after {} consecutive failures",
            b.addr, self.cfg.eject_after
        );
        self.mark_changed();
    }

    fn end_ejections(&mut self) -> bool {
        let now = self.now_ms;
        let mut changed = false;
        for b in &mut self.state.backends {
            if b.is_ejected() && now >= b.ejected_until_ms {
                info!("backend {} returns after ejection", b.addr);
                b.ejected_until_ms = 0;
                b.last_ejection_end_ms = now;
                b.since_ms = now;
                changed = true;
            }
        }
        changed
    }

    /// The oldest table version a worker still routes by (the last one published when there are
    /// no workers).
    pub(crate) fn installed_version(&self) -> u64 {
        self.workers
            .as_ref()
            .map_or(self.state.version(), |w| w.installed_version())
    }

    /// Routing changed: a new table version goes out at the end of this loop iteration.
    pub(crate) fn mark_changed(&mut self) {
        self.changed = true;
    }

    /// Sends the current state to every worker as a new table version, if anything changed.
    fn publish_if_changed(&mut self) {
        if !std::mem::take(&mut self.changed) {
            return;
        }
        let table = self.state.next_version();
        if let Some(workers) = &self.workers {
            workers.publish(&table);
        }
    }
}
