//! Starting and stopping the data plane: one SO_REUSEPORT listener and one worker thread per core,
//! and the handle the control side uses to publish tables and shut down.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Sender};
use log::warn;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::backend::{BackendId, BackendTable};
use crate::budget::IdBudget;
use crate::config::ProxyConfig;
use crate::control::ControlLink;
use crate::worker::{Worker, WorkerMsg, WorkerParts, WAKER};

/// Listen backlog asked for; the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 65_535;

/// A listening socket that other sockets (other workers, another sluice process) may bind too.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

struct WorkerLink {
    tx: Sender<WorkerMsg>,
    waker: Arc<Waker>,
    /// The table version the worker routes by, stored by the worker when it installs one.
    installed_version: Arc<AtomicU64>,
}

/// The running workers.
pub struct DataPlane {
    local_addr: SocketAddr,
    links: Vec<WorkerLink>,
    threads: Vec<JoinHandle<()>>,
}

impl DataPlane {
    /// Starts one worker per listener, routing by `table`. The listeners share one address with
    /// SO_REUSEPORT ([`crate::upgrade::Listeners::bind`], or inherited from a predecessor).
    pub fn start(
        cfg: ProxyConfig,
        listeners: Vec<std::net::TcpListener>,
        table: Arc<BackendTable>,
        control: ControlLink,
    ) -> io::Result<DataPlane> {
        let cfg = Arc::new(cfg);
        let local_addr = listeners
            .first()
            .ok_or_else(|| io::Error::other("no listener"))?
            .local_addr()?;
        for l in &listeners {
            l.set_nonblocking(true)?;
        }
        let budget = Arc::new(IdBudget::new(
            if cfg.id_budget { cfg.id_memory } else { 1 },
            cfg.id_window_s,
        ));
        let mut links = Vec::new();
        let mut threads = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
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
            })?;
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || worker.run())?;
            links.push(WorkerLink {
                tx,
                waker,
                installed_version,
            });
            threads.push(thread);
        }
        Ok(DataPlane {
            local_addr,
            links,
            threads,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends a new table version to every worker.
    pub fn publish(&self, table: &Arc<BackendTable>) {
        for link in &self.links {
            self.send(link, WorkerMsg::Table(table.clone()));
        }
    }

    /// The oldest table version any worker still routes by: a backend left out of this version
    /// is picked by no worker any more.
    pub fn installed_version(&self) -> u64 {
        self.links
            .iter()
            .map(|l| l.installed_version.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Orders every worker to close its connections to backend `id` (its drain time is over).
    pub fn sever(&self, id: BackendId) {
        for link in &self.links {
            self.send(link, WorkerMsg::Sever(id));
        }
    }

    fn send(&self, link: &WorkerLink, msg: WorkerMsg) {
        // A worker that is gone (it failed) has nothing left to update.
        if link.tx.send(msg).is_ok() {
            if let Err(e) = link.waker.wake() {
                warn!("waking a worker: {e}");
            }
        }
    }

    /// Stops accepting, lets requests in flight finish within `timeout`, and waits for the workers.
    pub fn shutdown(self, timeout: Duration) {
        for link in &self.links {
            self.send(link, WorkerMsg::Shutdown { timeout });
        }
        self.join();
    }

    /// Waits for the workers to exit.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
