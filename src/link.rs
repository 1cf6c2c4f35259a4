//! What crosses threads: the messages between the control thread and the workers, and the handles
//! each side holds to reach the other. Nothing else is shared between them but the immutable
//! backend table (an `Arc`) and the per-backend atomics in it.
//!
//! A message is a crossbeam `send` followed by a mio `Waker::wake()`, so the receiving loop sees a
//! readable event and drains its channel between connection events. No side ever waits for the
//! other, so the two cannot deadlock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use log::warn;
use mio::Waker;

use crate::backend::{BackendId, BackendTable};
use crate::metrics::WorkerSnapshot;

/// Messages to the control thread.
pub(crate) enum ControlMsg {
    Metrics(Box<WorkerSnapshot>),
    /// A backend's consecutive failures reached `--eject-after`.
    Failing(BackendId),
    Stop,
}

/// How workers (and the main thread) reach the control thread.
#[derive(Clone)]
pub(crate) struct ControlLink {
    tx: Sender<ControlMsg>,
    waker: Arc<Waker>,
}

impl ControlLink {
    pub(crate) fn new(tx: Sender<ControlMsg>, waker: Arc<Waker>) -> ControlLink {
        ControlLink { tx, waker }
    }

    pub(crate) fn send(&self, msg: ControlMsg) {
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Messages from the control thread to a worker.
pub(crate) enum WorkerMsg {
    /// Route by this table from now on.
    Table(Arc<BackendTable>),
    /// Stop accepting, finish what is in flight within `timeout`, then exit.
    Shutdown { timeout: Duration },
    /// Close every connection to this backend (its drain time is over).
    Sever(BackendId),
    /// New TLS handshakes use this configuration (the listener's certificates were reloaded);
    /// sessions already started keep theirs.
    // Sent by the certificate reload (`Workers::publish_tls`).
    #[allow(dead_code)]
    Tls(Arc<rustls::ServerConfig>),
}

/// How the control thread reaches one worker.
pub(crate) struct WorkerLink {
    pub tx: Sender<WorkerMsg>,
    pub waker: Arc<Waker>,
    /// The table version the worker routes by, stored by the worker when it installs one.
    pub installed_version: Arc<AtomicU64>,
    pub thread: JoinHandle<()>,
}

/// The running workers, as the control thread sees them.
pub(crate) struct Workers {
    links: Vec<WorkerLink>,
}

impl Workers {
    pub(crate) fn new(links: Vec<WorkerLink>) -> Workers {
        Workers { links }
    }

    /// Sends a new table version to every worker.
    pub(crate) fn publish(&self, table: &Arc<BackendTable>) {
        for link in &self.links {
            send(link, WorkerMsg::Table(table.clone()));
        }
    }

    /// The oldest table version any worker still routes by: a backend left out of this version
    /// is picked by no worker any more.
    pub(crate) fn installed_version(&self) -> u64 {
        self.links
            .iter()
            .map(|l| l.installed_version.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Hands every worker a new TLS configuration for its listener's new handshakes.
    // Called by the certificate reload on the control thread.
    #[allow(dead_code)]
    pub(crate) fn publish_tls(&self, cfg: &Arc<rustls::ServerConfig>) {
        for link in &self.links {
            send(link, WorkerMsg::Tls(cfg.clone()));
        }
    }

    /// Orders every worker to close its connections to backend `id` (its drain time is over).
    pub(crate) fn sever(&self, id: BackendId) {
        for link in &self.links {
            send(link, WorkerMsg::Sever(id));
        }
    }

    /// Stops accepting, lets requests in flight finish within `timeout`, and waits for the workers.
    pub(crate) fn shutdown(self, timeout: Duration) {
        for link in &self.links {
            send(link, WorkerMsg::Shutdown { timeout });
        }
        for link in self.links {
            let _ = link.thread.join();
        }
    }
}

fn send(link: &WorkerLink, msg: WorkerMsg) {
    // A worker that is gone (it failed) has nothing left to update.
    if link.tx.send(msg).is_ok() {
        if let Err(e) = link.waker.wake() {
            warn!("waking a worker: {e}");
        }
    }
}
