//! Process assembly: binds (or inherits) the listening sockets, starts one worker per core and the
//! control thread, and wires them together. The only module that knows both threads; everything
//! they exchange afterwards is in [`crate::link`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::unbounded;
use mio::{Poll, Waker};

use crate::access_log::AccessLog;
use crate::backend::BackendTable;
use crate::config::{ProxyConfig, Settings};
use crate::control::tls::TlsControl;
use crate::control::{cluster, Control};
use crate::limits::{ClientTable, DEFAULT_CLIENT_BUCKETS};
use crate::link::{ControlLink, ControlMsg, WorkerLink, Workers};
use crate::listeners::Listeners;
use crate::retry::budget::IdBudget;
use crate::tls::client::BackendTls;
use crate::tls::{CertSet, TlsServer};
use crate::worker::{Worker, WorkerParts, WAKER};

/// A running sluice: workers plus control thread.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    link: ControlLink,
    thread: JoinHandle<()>,
    /// Duplicates of the listening sockets, for a live upgrade.
    pub handover: Listeners,
    access_log: Option<AccessLog>,
}

impl Running {
    /// Graceful stop: no new connections, requests in flight finish within the shutdown timeout.
    pub fn stop(self) {
        // Our copies of the listening sockets go first: once the workers drop theirs, new
        // connections are refused (or, after a live upgrade, taken by the successor) instead of
        // waiting in a backlog nobody accepts from.
        drop(self.handover);
        self.link.send(ControlMsg::Stop);
        let _ = self.thread.join();
        if let Some(log) = self.access_log {
            log.finish();
        }
    }

    /// Reopens the access log's file (SIGUSR1, after logrotate renamed it); false when there is
    /// no access log.
    pub fn reopen_access_log(&self) -> bool {
        self.access_log
            .as_ref()
            .map(AccessLog::control)
            .is_some_and(|c| {
                c.reopen();
                true
            })
    }

    /// Asks the control thread to read the TLS certificate files again (what SIGHUP does). It
    /// logs the outcome; a bad file leaves the certificates in use as they were.
    pub fn reload_tls(&self) {
        self.link.send(ControlMsg::ReloadTls);
    }
}

/// Binds the listeners, then starts the control thread and the workers. Errors are messages for
/// the user.
///
/// In a cluster, the configuration is read from the store first, so that nothing listens (and
/// clients are refused rather than queued) until there is something to route by.
pub fn start(settings: Settings) -> Result<Running, String> {
    let boot = cluster::bootstrap(&settings, &stop_signal_pending)?;
    let listeners = Listeners::bind(
        settings.listen,
        settings.reuse_port,
        settings.proxy.workers,
        settings.control.admin,
    )?;
    start_on(settings, listeners, boot)
}

/// Starts the control thread and the workers on listeners bound (or inherited) already.
pub fn start_with(settings: Settings, listeners: Listeners) -> Result<Running, String> {
    let boot = cluster::bootstrap(&settings, &stop_signal_pending)?;
    start_on(settings, listeners, boot)
}

/// Whether SIGTERM or SIGINT is waiting. The binary blocks them in every thread and waits for
/// them once start-up is done; while start-up still waits for the store, it looks here so that
/// a stop request is not ignored.
fn stop_signal_pending() -> bool {
    // SAFETY: sigpending and sigismember only read and write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigpending(&mut set) == 0
            && (libc::sigismember(&set, libc::SIGTERM) == 1
                || libc::sigismember(&set, libc::SIGINT) == 1)
    }
}

fn start_on(
    settings: Settings,
    listeners: Listeners,
    boot: Option<cluster::Boot>,
) -> Result<Running, String> {
    let handover = listeners
        .duplicate()
        .map_err(|e| format!("cannot keep the listeners for upgrades: {e}"))?;
    let Listeners { proxy, admin } = listeners;
    let proxy_cfg = settings.proxy.clone();
    let tls = listener_tls(&proxy_cfg)?;
    let backend_tls = match &proxy_cfg.backend_tls {
        Some(settings) => {
            Some(BackendTls::new(settings).map_err(|e| format!("--backend-tls: {e}"))?)
        }
        None => None,
    };
    let access_log = match &proxy_cfg.access_log {
        Some(cfg) => Some(AccessLog::start(cfg)?),
        None => None,
    };
    let clients = proxy_cfg
        .client_limits
        .map(|limits| Arc::new(ClientTable::new(limits, DEFAULT_CLIENT_BUCKETS)));
    let (mut control, link) = Control::new(settings, admin, boot)?;
    control.set_ops(access_log.as_ref().map(AccessLog::control), clients.clone());
    control.set_backend_tls(backend_tls.clone());
    let admin_addr = control.admin_addr();
    let table = control.first_table();
    let proxy_addr = proxy
        .first()
        .ok_or("no proxy listener")?
        .local_addr()
        .map_err(|e| format!("proxy listener: {e}"))?;
    let tls_config = tls.as_ref().map(|t| t.config.clone());
    if let (Some(t), Some(flags)) = (tls, &proxy_cfg.tls) {
        control.set_tls(TlsControl::new(
            t.server,
            t.certs,
            flags.certs.clone(),
            flags.strict_sni,
        ));
    }
    let ops = WorkerOps {
        access_log: access_log.as_ref(),
        clients: clients.as_ref(),
        backend_tls: backend_tls.as_ref(),
    };
    let workers = spawn_workers(proxy_cfg, proxy, &table, &link, tls_config, &ops)
        .map_err(|e| format!("cannot start the workers: {e}"))?;
    let thread = control.spawn(workers, proxy_addr)?;
    Ok(Running {
        proxy_addr,
        admin_addr,
        link,
        thread,
        handover,
        access_log,
    })
}

/// The listener's TLS, when `--tls` is given: its certificates, read and checked, and the
/// configuration the workers start with.
pub(crate) struct ListenerTls {
    /// The ticket keys and session cache every configuration shares; a reload builds its new
    /// configuration from it.
    pub(crate) server: TlsServer,
    pub(crate) certs: Arc<CertSet>,
    pub(crate) config: Arc<rustls::ServerConfig>,
}

/// Reads the `--tls` files; an error names the file and what is wrong with it.
fn listener_tls(cfg: &ProxyConfig) -> Result<Option<ListenerTls>, String> {
    let Some(tls) = &cfg.tls else {
        return Ok(None);
    };
    let fail = |e: crate::tls::TlsError| format!("--tls: {e}");
    let certs = Arc::new(CertSet::load(&tls.certs).map_err(fail)?);
    let server = TlsServer::new().map_err(fail)?;
    let config = server.config(certs.clone(), tls.strict_sni).map_err(fail)?;
    Ok(Some(ListenerTls {
        server,
        certs,
        config,
    }))
}

/// What the workers share of the access log and the per-client limits, when they are on.
struct WorkerOps<'a> {
    access_log: Option<&'a AccessLog>,
    clients: Option<&'a Arc<ClientTable>>,
    backend_tls: Option<&'a BackendTls>,
}

/// Starts one worker per listener, routing by `table`. The listeners share one address with
/// SO_REUSEPORT ([`Listeners::bind`], or inherited from a predecessor).
fn spawn_workers(
    cfg: ProxyConfig,
    listeners: Vec<std::net::TcpListener>,
    table: &Arc<BackendTable>,
    control: &ControlLink,
    tls: Option<Arc<rustls::ServerConfig>>,
    ops: &WorkerOps<'_>,
) -> io::Result<Workers> {
    let cfg = Arc::new(cfg);
    let budget = Arc::new(IdBudget::new(
        if cfg.request_id.is_on() {
            cfg.id_memory
        } else {
            1
        },
        cfg.id_window_s,
    ));
    let mut links = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = unbounded();
        let installed_version = Arc::new(AtomicU64::new(table.version));
        let worker = Worker::new(WorkerParts {
            index: i,
            cfg: cfg.clone(),
            poll,
            listener: mio::net::TcpListener::from_std(listener),
            rx,
            table: table.clone(),
            control: control.clone(),
            budget: budget.clone(),
            installed_version: installed_version.clone(),
            tls: tls.clone(),
            backend_tls: ops.backend_tls.cloned(),
            access_log: ops.access_log.map(AccessLog::writer),
            clients: ops.clients.cloned(),
        })?;
        let thread = std::thread::Builder::new()
            .name(format!("sluice-worker-{i}"))
            .spawn(move || worker.run())?;
        links.push(WorkerLink {
            tx,
            waker,
            installed_version,
            thread,
        });
    }
    Ok(Workers::new(links))
}
