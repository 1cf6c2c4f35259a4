//! The store's two threads, so that no etcd call ever blocks the control loop:
//!
//! - **ops** commits the changes the control thread sends (one transaction each, compared against
//!   the revision of the record it read, re-read and re-applied when another change came first),
//!   keeps this instance's membership lease alive, and rewrites its member record when the
//!   installed revision moves. Whether those calls succeed is what [`StoreEvent::Up`] reports.
//! - **watch** follows every key of the cluster from the last revision it delivered, reopening
//!   the watch after a failure (resuming at that revision + 1) and reading everything again when
//!   etcd has compacted past it.
//!
//! Both hand their results to the control thread over a channel and wake its loop, like the
//! workers do. Before either starts, [`bootstrap`] reads the configuration once (seeding it from
//! the flags when the store has none), so an instance never serves from an empty table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use mio::Waker;

use super::etcd::{Compare, Etcd, EtcdError, Op, Range, WatchMessage};
use super::FORMAT;
use super::{
    Change, Layout, MemberRecord, Record, StoreEvent, StoreRequest, StrategyRecord, Write,
};
use crate::config::ClusterConfig;
use crate::control::state::{ChangeError, Desired};

/// A change whose record keeps being changed by others under it is re-read and re-applied at most
/// this many times, then refused with 409.
const MAX_CHANGE_TRIES: u32 = 10;
/// Pause between attempts to reach the store at start.
const BOOT_RETRY: Duration = Duration::from_secs(1);
/// Longest pause between attempts to reopen the watch.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(1);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How the store threads reach the control thread.
#[derive(Clone)]
pub(crate) struct Notify {
    pub tx: Sender<StoreEvent>,
    pub waker: Arc<Waker>,
}

impl Notify {
    fn send(&self, event: StoreEvent) {
        if self.tx.send(event).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// The running store threads, as the control thread holds them.
pub(crate) struct StoreThreads {
    tx: Sender<StoreRequest>,
    ops: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl StoreThreads {
    pub(crate) fn send(&self, req: StoreRequest) {
        let _ = self.tx.send(req);
    }

    /// Leaves the cluster: the ops thread revokes the lease (the member record goes at once) and
    /// ends; the watch thread ends at its next message or within its idle timeout.
    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.tx.send(StoreRequest::Stop);
        if let Some(t) = self.ops.take() {
            let _ = t.join();
        }
    }
}

/// The configuration read at start.
pub(crate) enum Boot {
    /// From the store, at this revision.
    Store(Range),
    /// The store could not be reached; the last configuration this instance saved.
    Fallback(crate::control::state::SavedState),
}

/// The seed transaction: the flags' configuration, written only if the store has none.
fn seed_txn(etcd: &mut Etcd, layout: &Layout, seed: &Desired, by: &str) -> Result<bool, EtcdError> {
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let mut ops = vec![
        Op::Put {
            key: layout.format(),
            value: json(serde_json::json!({ "format": FORMAT })),
            lease: 0,
        },
        Op::Put {
            key: layout.strategy(),
            value: serde_json::to_vec(&StrategyRecord::new(seed.strategy, seed.params))
                .unwrap_or_default(),
            lease: 0,
        },
        last_change(layout, by, "seed the configuration"),
    ];
    for (b, _) in &seed.backends {
        ops.push(Op::Put {
            key: layout.backend(&b.address),
            value: serde_json::to_vec(b).unwrap_or_default(),
            lease: 0,
        });
    }
    let compare = [
        Compare::Empty {
            prefix: layout.pools(),
        },
        Compare::ModRevision {
            key: layout.format(),
            revision: 0,
        },
    ];
    Ok(etcd.txn(&compare, &ops, &[])?.succeeded)
}

fn last_change(layout: &Layout, by: &str, what: &str) -> Op {
    Op::Put {
        key: layout.last_change(),
        value: serde_json::json!({ "by": by, "change": what, "unix_ms": unix_ms() })
            .to_string()
            .into_bytes(),
        lease: 0,
    }
}

/// Reads the cluster's keys, seeding the configuration from `seed` first when there is none.
/// While the store cannot be reached it says so and retries every second, or returns the
/// fallback copy when there is one; `stop_requested` ends the wait.
pub(crate) fn bootstrap(
    cfg: &ClusterConfig,
    seed: &Desired,
    stop_requested: &dyn Fn() -> bool,
) -> Result<Boot, String> {
    let layout = Layout::new(&cfg.name);
    let mut etcd = Etcd::new(cfg.endpoints.clone());
    let mut attempts = 0u64;
    loop {
        match read_or_seed(&mut etcd, &layout, seed, &cfg.instance_id) {
            Ok(range) => {
                if attempts > 0 {
                    info!("configuration store reachable: starting");
                }
                return Ok(Boot::Store(range));
            }
            Err(e) => {
                if attempts == 0 {
                    if let Some(path) = &cfg.fallback_state {
                        let file = crate::control::state::StateFile::new(path);
                        if let Some(saved) = file.load()? {
                            warn!(
                                "configuration store unreachable ({e}); serving the last known \
                                 configuration from {} until it is back",
                                path.display()
                            );
                            return Ok(Boot::Fallback(saved));
                        }
                    }
                    warn!(
                        "configuration store unreachable ({e}); serving nothing until it answers, \
                         retrying every {} s",
                        BOOT_RETRY.as_secs()
                    );
                } else if attempts % 30 == 0 {
                    warn!("configuration store still unreachable: {e}");
                }
                attempts += 1;
            }
        }
        let until = Instant::now() + BOOT_RETRY;
        while Instant::now() < until {
            if stop_requested() {
                return Err("stopped while waiting for the configuration store".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_or_seed(
    etcd: &mut Etcd,
    layout: &Layout,
    seed: &Desired,
    by: &str,
) -> Result<Range, EtcdError> {
    let range = etcd.range(layout.root())?;
    if range.kvs.iter().any(|kv| kv.key == layout.format()) {
        return Ok(range);
    }
    if seed_txn(etcd, layout, seed, by)? {
        info!(
            "cluster configuration seeded from the flags ({} backends, {})",
            seed.backends.len(),
            seed.strategy
        );
    }
    etcd.range(layout.root())
}

/// Starts the ops and watch threads. The watch starts after `from` (0: read everything first).
pub(crate) fn start(
    cfg: &ClusterConfig,
    member: MemberRecord,
    from: u64,
    notify: Notify,
) -> Result<StoreThreads, String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Ops {
        etcd: Etcd::new(cfg.endpoints.clone()),
        layout: Layout::new(&cfg.name),
        ttl_s: cfg.ttl_s,
        member,
        lease: 0,
        up: from != 0,
        notify: notify.clone(),
    };
    let ops = std::thread::Builder::new()
        .name("sluice-store".into())
        .spawn(move || ops.run(rx))
        .map_err(|e| format!("cannot start the store thread: {e}"))?;
    let watch = Watch {
        etcd: Etcd::new(cfg.endpoints.clone()),
        root: Layout::new(&cfg.name).root().to_string(),
        next: from,
        notify,
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name("sluice-watch".into())
        .spawn(move || watch.run())
        .map_err(|e| format!("cannot start the watch thread: {e}"))?;
    Ok(StoreThreads {
        tx,
        ops: Some(ops),
        stop,
    })
}

struct Ops {
    etcd: Etcd,
    layout: Layout,
    ttl_s: u64,
    member: MemberRecord,
    lease: u64,
    up: bool,
    notify: Notify,
}

impl Ops {
    fn run(mut self, rx: Receiver<StoreRequest>) {
        let period = Duration::from_millis(self.ttl_s * 1000 / 3);
        let mut next_renewal = Instant::now();
        let mut record_stale = true;
        loop {
            let wait = next_renewal.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(StoreRequest::Change { ticket, change }) => {
                    let result = self.commit(&change);
                    let reached = !matches!(
                        result,
                        Err(ChangeError::Unavailable | ChangeError::Unconfirmed)
                    );
                    self.set_up(reached);
                    self.notify.send(StoreEvent::Committed { ticket, result });
                }
                Ok(StoreRequest::Seed(desired)) => {
                    match seed_txn(&mut self.etcd, &self.layout, &desired, &self.member.id) {
                        Ok(true) => warn!(
                            "the store had no configuration: wrote this instance's (revision {})",
                            desired.revision
                        ),
                        Ok(false) => {}
                        Err(e) => warn!("could not write the configuration to the store: {e}"),
                    }
                }
                Ok(StoreRequest::Installed(revision)) => {
                    record_stale |= self.member.revision != revision;
                    self.member.revision = revision;
                }
                Ok(StoreRequest::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.leave();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_renewal {
                next_renewal = Instant::now() + period;
                match self.renew() {
                    Ok(new_lease) => {
                        record_stale |= new_lease;
                        self.set_up(true);
                    }
                    Err(e) => {
                        debug!("lease renewal: {e}");
                        self.set_up(false);
                    }
                }
            }
            if record_stale && self.lease != 0 && self.up {
                record_stale = self.put_member().is_err();
            }
        }
    }

    fn set_up(&mut self, up: bool) {
        if self.up != up {
            self.up = up;
            self.notify.send(StoreEvent::Up(up));
        }
    }

    /// Keeps the lease alive, granting a new one when there is none or it expired (a long
    /// outage); true when the lease is new and the record must be written again.
    fn renew(&mut self) -> Result<bool, EtcdError> {
        if self.lease != 0 && self.etcd.lease_keepalive(self.lease)? {
            return Ok(false);
        }
        self.lease = self.etcd.lease_grant(self.ttl_s)?;
        Ok(true)
    }

    fn put_member(&mut self) -> Result<(), EtcdError> {
        let value = serde_json::to_vec(&self.member).unwrap_or_default();
        let put = Op::Put {
            key: self.layout.instance(&self.member.id),
            value,
            lease: self.lease,
        };
        self.etcd.txn(&[], &[put], &[]).map(|_| ())
    }

    fn leave(&mut self) {
        if self.lease != 0 {
            if let Err(e) = self.etcd.lease_revoke(self.lease) {
                debug!("leaving the cluster: {e}");
            }
        }
    }

    /// Reads the change's key, then commits the change with one transaction that writes it only
    /// if the key is still at the revision read. When another change came first, the failure
    /// branch returns the key as it is now and the change is applied to that (changes set one
    /// field, so re-applying keeps both); a precondition the caller gave (`expect`) is checked
    /// against each read.
    ///
    /// The read is linearizable, so it fails without a quorum: then nothing was sent, and the
    /// answer is a plain "unavailable". Only a transaction that was sent and not confirmed is
    /// [`ChangeError::Unconfirmed`].
    fn commit(&mut self, change: &Change) -> Result<(u64, Record), ChangeError> {
        let key = change.key(&self.layout);
        let unavailable = |e: EtcdError| {
            warn!("change {:?} not sent: {e}", change.describe());
            ChangeError::Unavailable
        };
        let mut current = self
            .etcd
            .get(&key)
            .map_err(unavailable)?
            .map(|kv| (kv.value, kv.mod_revision));
        for _ in 0..MAX_CHANGE_TRIES {
            let (write, record) =
                change.apply(current.as_ref().map(|(v, r)| (v.as_slice(), *r)))?;
            let read_at = current.as_ref().map_or(0, |c| c.1);
            let mut ops = match write {
                Write::Put(value) => vec![Op::Put {
                    key: key.clone(),
                    value,
                    lease: 0,
                }],
                Write::Delete => vec![Op::Delete { key: key.clone() }],
                Write::Nothing => return Ok((read_at, record)),
            };
            ops.push(last_change(
                &self.layout,
                &self.member.id,
                &change.describe(),
            ));
            let compare = [Compare::ModRevision {
                key: key.clone(),
                revision: read_at,
            }];
            let read = [Op::Get {
                key: key.clone(),
                prefix: false,
            }];
            let r = self.etcd.txn(&compare, &ops, &read).map_err(|e| {
                warn!("change {:?} not confirmed: {e}", change.describe());
                ChangeError::Unconfirmed
            })?;
            if r.succeeded {
                return Ok((r.revision, record));
            }
            current = r.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision));
        }
        Err(ChangeError::Conflict(format!(
            "{} kept being changed by others meanwhile; try again",
            key.rsplit('/').next().unwrap_or("the record")
        )))
    }
}

struct Watch {
    etcd: Etcd,
    root: String,
    /// The first revision not delivered yet; 0: read everything first.
    next: u64,
    notify: Notify,
    stop: Arc<AtomicBool>,
}

impl Watch {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn run(mut self) {
        let mut pause = Duration::from_millis(50);
        while !self.stopped() {
            match self.follow() {
                Ok(()) => pause = Duration::from_millis(50),
                Err(e) => {
                    debug!("watch: {e}");
                    self.etcd.rotate();
                    let until = Instant::now() + pause;
                    while Instant::now() < until && !self.stopped() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    pause = (pause * 2).min(WATCH_RETRY_MAX);
                }
            }
        }
    }

    /// Reads everything when needed, then delivers the watch until it ends; `Ok` when it ended
    /// in a way that calls for reopening at once (compaction, cancel, idle timeout).
    fn follow(&mut self) -> Result<(), EtcdError> {
        if self.next == 0 {
            let range = self.etcd.range(&self.root)?;
            self.next = range.revision + 1;
            self.notify.send(StoreEvent::Snapshot(range));
        }
        let mut stream = self.etcd.watch(&self.root, self.next)?;
        loop {
            if self.stopped() {
                return Ok(());
            }
            match stream.read()? {
                WatchMessage::Events(events) => {
                    // One message may hold several revisions; each is installed on its own so
                    // that every instance goes through the same sequence of configurations.
                    let mut rest = events.as_slice();
                    while let Some(first) = rest.first() {
                        let n = rest
                            .iter()
                            .take_while(|e| e.revision == first.revision)
                            .count();
                        self.next = first.revision + 1;
                        self.notify.send(StoreEvent::Changes(rest[..n].to_vec()));
                        rest = &rest[n..];
                    }
                }
                WatchMessage::Compacted(at) => {
                    info!(
                        "watch fell behind a compaction at revision {at}: reading the \
                         configuration again"
                    );
                    self.next = 0;
                    return Ok(());
                }
                WatchMessage::Canceled(reason) => {
                    return Err(EtcdError::Unavailable(format!("watch canceled: {reason}")))
                }
            }
        }
    }
}
