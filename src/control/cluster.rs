//! Cluster mode on the control thread: the configuration lives in etcd, and this instance is one
//! of several that follow it.
//!
//! One path for every change: an admin call becomes a [`StoreRequest::Change`] for the store
//! thread, which commits it as a transaction compared against the revision this instance read.
//! The answer waits until the store committed it *and* this instance installed it from its watch,
//! so a client reads its own writes from the instance it called; the instance that took the call
//! installs the change from the watch like every other, in the same order, one table per
//! revision. Health, ejection, learned rates, metrics and the attempt budget stay local.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver};
use log::{info, warn};
use mio::Waker;

use super::api::change_error;
use super::state::{ChangeError, ControlState, Desired, SavedBackend, StateFile};
pub(crate) use super::store::threads::Boot;
use super::store::threads::{self, Notify, StoreThreads};
use super::store::{
    Change, Layout, MemberRecord, Mirror, Record, StoreEvent, StoreRequest, StrategyRecord,
};
use super::Control;
use crate::admin::schema::{ClusterView, MemberView};
use crate::admin::{AdminResponse, Reply};
use crate::backend::BackendAddr;
use crate::config::{ClusterConfig, Settings};

/// An answer whose change committed but this instance has not installed yet is sent anyway after
/// this long (its watch is behind, or cut off); the change is in force in the store either way.
const HOLD_MS: u64 = 5_000;

/// The control thread's part of cluster mode.
pub(crate) struct Cluster {
    pub cfg: ClusterConfig,
    pub mirror: Mirror,
    threads: Option<StoreThreads>,
    rx: Receiver<StoreEvent>,
    notify: Notify,
    /// Whether the store answers; changes get 503 while it does not.
    pub store_up: bool,
    /// Where the watch starts: the revision after the one read at start (0: read again first).
    watch_from: u64,
    next_ticket: u64,
    /// Changes with the store, by ticket.
    pending: HashMap<u64, Change>,
    /// Committed changes whose answer waits until this instance installed their revision.
    held: Vec<Held>,
    /// The flags' strategy, for a store that has none.
    flags_strategy: StrategyRecord,
    fallback: Option<StateFile>,
    started_unix_ms: u64,
}

struct Held {
    ticket: u64,
    change: Change,
    revision: u64,
    record: Record,
    deadline_ms: u64,
}

/// The flags' configuration, as a seed for an empty store.
fn seed_of(settings: &Settings) -> Desired {
    Desired {
        revision: 0,
        strategy: settings.strategy,
        strategy_revision: 0,
        params: settings.params,
        backends: settings
            .backends
            .iter()
            .map(|b| {
                let saved = SavedBackend {
                    address: b.addr.clone(),
                    weight: b.weight,
                    enabled: true,
                };
                (saved, 0)
            })
            .collect(),
    }
}

/// Reads the cluster's configuration before anything is bound; `None` when not in a cluster.
pub(crate) fn bootstrap(
    settings: &Settings,
    stop_requested: &dyn Fn() -> bool,
) -> Result<Option<Boot>, String> {
    match &settings.control.cluster {
        None => Ok(None),
        Some(cfg) => threads::bootstrap(cfg, &seed_of(settings), stop_requested).map(Some),
    }
}

impl Cluster {
    /// The control state to start from, built from what [`bootstrap`] read.
    pub(crate) fn new(
        cfg: ClusterConfig,
        boot: Boot,
        settings: &Settings,
        waker: Arc<Waker>,
    ) -> Result<(Cluster, ControlState), String> {
        let (tx, rx) = unbounded();
        let flags_strategy = StrategyRecord::new(settings.strategy, settings.params);
        let mut mirror = Mirror::new(Layout::new(&cfg.name));
        let mut state = ControlState::open(None, &[], settings.strategy, settings.params)?;
        let (desired, watch_from, store_up) = match boot {
            Boot::Store(range) => {
                mirror.load(&range);
                (mirror.desired(flags_strategy), range.revision + 1, true)
            }
            Boot::Fallback(saved) => {
                let desired = Desired {
                    revision: 0,
                    strategy: saved.strategy,
                    strategy_revision: 0,
                    params: settings.params,
                    backends: saved.backends.into_iter().map(|b| (b, 0)).collect(),
                };
                (desired, 0, false)
            }
        };
        // Backends present at start are eligible since start (no slow start at boot).
        state.install(&desired, 0, 0);
        let flags: Vec<(BackendAddr, u32)> = settings
            .backends
            .iter()
            .map(|b| (b.addr.clone(), b.weight))
            .collect();
        let stored: Vec<(BackendAddr, u32)> = desired
            .backends
            .iter()
            .map(|(b, _)| (b.address.clone(), b.weight))
            .collect();
        if !flags.is_empty() && {
            let mut f = flags.clone();
            f.sort();
            f != stored
        } {
            warn!(
                "the --backend flags differ from the cluster's configuration (revision {}); \
                 following the cluster's: {} backends",
                desired.revision,
                stored.len()
            );
        }
        let fallback = cfg.fallback_state.clone().map(StateFile::new);
        let cluster = Cluster {
            cfg,
            mirror,
            threads: None,
            rx,
            notify: Notify { tx, waker },
            store_up,
            watch_from,
            next_ticket: 1,
            pending: HashMap::new(),
            held: Vec::new(),
            flags_strategy,
            fallback,
            started_unix_ms: super::unix_ms(),
        };
        Ok((cluster, state))
    }

    /// Registers this instance and starts following the store.
    pub(crate) fn start(
        &mut self,
        proxy: SocketAddr,
        admin: Option<SocketAddr>,
        revision: u64,
    ) -> Result<(), String> {
        let member = MemberRecord {
            id: self.cfg.instance_id.clone(),
            proxy: proxy.to_string(),
            admin: admin.map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_ms: self.started_unix_ms,
            revision,
        };
        info!(
            "cluster {:?}: instance {} following {} from revision {revision}",
            self.cfg.name,
            self.cfg.instance_id,
            self.cfg.endpoints.join(",")
        );
        self.threads = Some(threads::start(
            &self.cfg,
            member,
            self.watch_from,
            self.notify.clone(),
        )?);
        Ok(())
    }

    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.threads.take() {
            t.stop();
        }
    }

    fn send(&self, req: StoreRequest) {
        if let Some(t) = &self.threads {
            t.send(req);
        }
    }
}

impl Control {
    /// Hands a change to the store; the answer comes with its ticket.
    pub(crate) fn cluster_change(&mut self, change: Change) -> Reply {
        let Some(cluster) = self.cluster.as_mut() else {
            return Reply::Now(AdminResponse::error(500, "not in a cluster"));
        };
        let ticket = cluster.next_ticket;
        cluster.next_ticket += 1;
        self.cluster_submit(ticket, change)
    }

    /// Hands a change to the store under a ticket taken already (by [`Control::cluster_change`],
    /// or by the name check that came first).
    pub(crate) fn cluster_submit(&mut self, ticket: u64, change: Change) -> Reply {
        let Some(cluster) = self.cluster.as_mut() else {
            return Reply::Now(AdminResponse::error(500, "not in a cluster"));
        };
        if !cluster.store_up {
            return Reply::Now(change_error(ChangeError::Unavailable));
        }
        cluster.pending.insert(ticket, change.clone());
        cluster.send(StoreRequest::Change { ticket, change });
        Reply::Later(ticket)
    }

    /// Handles everything the store threads sent.
    pub(crate) fn store_events(&mut self) {
        while let Some(event) = self.cluster.as_ref().and_then(|c| c.rx.try_recv().ok()) {
            match event {
                StoreEvent::Committed { ticket, result } => self.committed(ticket, result),
                StoreEvent::Changes(events) => {
                    let Some(c) = self.cluster.as_mut() else {
                        continue;
                    };
                    if c.mirror.apply(&events).config {
                        self.install_or_restore();
                    }
                }
                StoreEvent::Snapshot(range) => {
                    let Some(c) = self.cluster.as_mut() else {
                        continue;
                    };
                    c.mirror.load(&range);
                    self.install_or_restore();
                }
                StoreEvent::Up(up) => self.store_up(up),
            }
        }
    }

    fn store_up(&mut self, up: bool) {
        let revision = self.state.revision();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if c.store_up == up {
            return;
        }
        c.store_up = up;
        if up {
            info!("configuration store reachable again; following it from revision {revision}");
        } else {
            warn!(
                "configuration store unreachable: routing by the last configuration (revision \
                 {revision}) and health-checking as before; changes answer 503 until it is back"
            );
        }
    }

    fn committed(&mut self, ticket: u64, result: Result<(u64, Record), ChangeError>) {
        let installed = self.state.revision();
        let deadline_ms = self.now_ms + HOLD_MS;
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(change) = c.pending.remove(&ticket) else {
            return;
        };
        match result {
            Err(e) => self.answer(ticket, change_error(e)),
            Ok((revision, record)) => {
                info!("{} committed at revision {revision}", change.describe());
                c.held.push(Held {
                    ticket,
                    change,
                    revision,
                    record,
                    deadline_ms,
                });
                if revision <= installed {
                    self.release_held();
                }
            }
        }
    }

    /// Installs the store's configuration; when the store has none any more (its keys were
    /// deleted, or it lost its data), keeps routing by this instance's and writes that back
    /// rather than emptying every instance's table.
    fn install_or_restore(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        if c.mirror.seeded {
            self.install_from_store();
            return;
        }
        warn!(
            "the configuration store has no configuration for cluster {:?}; keeping this \
             instance's (revision {}) and writing it back",
            c.cfg.name,
            self.state.revision()
        );
        c.send(StoreRequest::Seed(self.state.desired()));
    }

    /// Installs the configuration the store holds now as one new table version.
    fn install_from_store(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let desired = c.mirror.desired(c.flags_strategy);
        if desired.revision < self.state.revision() {
            return;
        }
        let deadline = self.now_ms + self.cfg.drain_timeout_ms;
        if self.state.install(&desired, self.now_ms, deadline) {
            self.mark_changed();
        }
        self.apply_checked_answers();
        self.publish_if_changed();
        if let Some(c) = self.cluster.as_ref() {
            c.send(StoreRequest::Installed(desired.revision));
            if let Some(file) = &c.fallback {
                if let Err(e) = file.save(&self.state.saved()) {
                    warn!(
                        "cannot keep the configuration in {}: {e}",
                        file.path().display()
                    );
                }
            }
        }
        self.release_held();
    }

    /// Answers the held changes that are installed here, or waited too long.
    pub(crate) fn release_held(&mut self) {
        let installed = self.state.revision();
        let now = self.now_ms;
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let (ready, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut c.held)
            .into_iter()
            .partition(|h| h.revision <= installed || now >= h.deadline_ms);
        c.held = waiting;
        for h in ready {
            let resp = self.committed_response(&h.change, h.revision, h.record);
            self.answer(h.ticket, resp);
        }
    }

    /// Sends the answer a request waited for under `ticket`.
    pub(crate) fn answer(&mut self, ticket: u64, resp: AdminResponse) {
        let Some(mut admin) = self.admin.take() else {
            return;
        };
        admin.complete(ticket, resp, &mut |req| self.api(req));
        self.admin = Some(admin);
    }

    /// `GET /api/cluster`; `None` when not in a cluster.
    pub(crate) fn cluster_view(&self) -> Option<ClusterView> {
        let c = self.cluster.as_ref()?;
        let revision = self.state.revision();
        let members = c
            .mirror
            .members
            .values()
            .map(|m| MemberView {
                id: m.id.clone(),
                proxy: m.proxy.clone(),
                admin: m.admin.clone(),
                version: m.version.clone(),
                started_unix_ms: m.started_unix_ms,
                // This instance's own figure is live; the others' are what they registered.
                revision: if m.id == c.cfg.instance_id {
                    revision
                } else {
                    m.revision
                },
            })
            .collect();
        Some(ClusterView {
            name: c.cfg.name.clone(),
            instance: c.cfg.instance_id.clone(),
            store_up: c.store_up,
            revision,
            members,
        })
    }
}
