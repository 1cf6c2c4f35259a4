//! The authoritative configuration (backends, weights, enabled flags, strategy) and what the
//! control thread knows of each backend.
//!
//! Only the control thread touches [`ControlState`]. Alone, a mutation is first checked, then
//! written to the state file ([`crate::control::saved`]), and only then applied; so a change the
//! API confirmed survives a crash, and a change that could not be written is not in force
//! either. In a cluster, the store's configuration is installed whole with
//! [`ControlState::install`], which changes only what differs. A backend given by DNS name is
//! configured as its name and routed to as its members ([`names`]).

mod install;
mod names;

use std::sync::Arc;

use super::health::Hysteresis;
pub(crate) use super::saved::{SavedBackend, SavedState, StateFile, STATE_FORMAT};
use crate::backend::{
    Backend, BackendAddr, BackendId, BackendSpec, BackendStats, BackendTable, MAX_WEIGHT,
};
use crate::strategy::{StrategyKind, StrategyParams};
pub(crate) use names::{LookupState, NameEntry};

/// The configuration as a store holds it: what every instance of a cluster installs, at the
/// store revision it was read at.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Desired {
    /// The store revision of the last configuration change it includes.
    pub revision: u64,
    pub strategy: StrategyKind,
    /// The store revision of the strategy's record.
    pub strategy_revision: u64,
    pub params: StrategyParams,
    /// Each backend with the store revision of its record.
    pub backends: Vec<(SavedBackend, u64)>,
}

/// Why a mutation was refused; each maps to an HTTP status in the admin API.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChangeError {
    NotFound(String),
    Duplicate(String),
    Invalid(String),
    /// The state file could not be written; nothing changed.
    Storage(String),
    /// Another change came first (the revision the caller read is gone); nothing changed.
    Conflict(String),
    /// The configuration store cannot be reached or has no quorum; nothing changed.
    Unavailable,
    /// The store took the change but did not confirm it in time (it lost its quorum meanwhile):
    /// like any consensus store's timeout, this is not a no, and the change may still be applied
    /// when the store recovers.
    Unconfirmed,
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::NotFound(m)
            | ChangeError::Duplicate(m)
            | ChangeError::Invalid(m)
            | ChangeError::Conflict(m) => f.write_str(m),
            ChangeError::Unavailable | ChangeError::Unconfirmed => {
                f.write_str("configuration store unavailable")
            }
            ChangeError::Storage(m) => {
                write!(f, "could not save the state file, nothing changed: {m}")
            }
        }
    }
}

/// A backend and everything the control thread knows about it.
#[derive(Debug)]
pub(crate) struct BackendEntry {
    pub id: BackendId,
    pub addr: BackendAddr,
    pub weight: u32,
    pub enabled: bool,
    /// Active health checks' verdict and counters.
    pub health: Hysteresis,
    /// Passive outlier ejection: not routed to until this time (ms of [`crate::clock`]); 0 = not ejected.
    pub ejected_until_ms: u64,
    /// Times ejected recently; the ejection time grows with it.
    pub ejections: u32,
    /// When the last ejection ended; a long quiet spell resets `ejections`.
    pub last_ejection_end_ms: u64,
    /// Removed by the operator and draining: gone from the table once idle or at this deadline.
    pub removing_deadline_ms: Option<u64>,
    /// The first table version without it as a target: it is idle only once every worker has
    /// installed that version (before, a worker may still pick it).
    pub removing_from_version: u64,
    /// Disabled and draining: connections still open at this deadline are closed.
    pub drain_deadline_ms: Option<u64>,
    /// When it last became eligible, for slow start.
    pub since_ms: u64,
    /// The configuration revision of its last change (in a cluster, its record's etcd revision).
    pub revision: u64,
    pub stats: Arc<BackendStats>,
    /// A member of a backend given by name: that name (its address came from the name's answer).
    pub name: Option<BackendAddr>,
}

impl BackendEntry {
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until_ms != 0
    }

    pub(crate) fn routable(&self) -> bool {
        self.enabled
            && self.health.healthy
            && !self.is_ejected()
            && self.removing_deadline_ms.is_none()
    }

    fn saved(&self) -> SavedBackend {
        SavedBackend {
            address: self.addr.clone(),
            weight: self.weight,
            enabled: self.enabled,
        }
    }
}

fn first_revision() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}

/// What workers run for a configured strategy: `adaptive` starts as round robin.
fn resolve(strategy: StrategyKind) -> StrategyKind {
    match strategy {
        StrategyKind::Adaptive => StrategyKind::RoundRobin,
        other => other,
    }
}

/// The authoritative configuration and what the control thread knows of each backend.
pub(crate) struct ControlState {
    version: u64,
    /// The configuration revision in force: in a cluster, the etcd revision of the last change
    /// installed; alone, a count of the changes accepted since start.
    revision: u64,
    /// The revision of the strategy's last change.
    pub strategy_revision: u64,
    next_id: BackendId,
    pub backends: Vec<BackendEntry>,
    /// Backends given by DNS name; their members are in `backends`.
    pub names: Vec<NameEntry>,
    /// The strategy the operator chose (may be `adaptive`).
    pub strategy: StrategyKind,
    /// The strategy workers run now (differs from `strategy` only under `adaptive`).
    pub active_strategy: StrategyKind,
    pub params: StrategyParams,
    file: Option<StateFile>,
    /// Whether the first runtime change without a state file was warned about.
    warned_unsaved: std::cell::Cell<bool>,
}

impl ControlState {
    /// Builds the state from the state file when it exists, else from the flags (and saves it).
    pub(crate) fn open(
        file: Option<StateFile>,
        seed_backends: &[BackendSpec],
        seed_strategy: StrategyKind,
        params: StrategyParams,
    ) -> Result<ControlState, String> {
        let saved = match &file {
            Some(f) => f.load()?,
            None => None,
        };
        let fresh = saved.is_none();
        if let (Some(saved), Some(f)) = (&saved, &file) {
            super::saved::report_restored(saved, f, seed_backends, seed_strategy);
        }
        let saved = saved.unwrap_or_else(|| SavedState {
            format: STATE_FORMAT,
            strategy: seed_strategy,
            backends: seed_backends
                .iter()
                .map(|s| SavedBackend {
                    address: s.addr.clone(),
                    weight: s.weight,
                    enabled: true,
                })
                .collect(),
        });
        // Alone, revisions are counted from the start time in microseconds, so that they only
        // grow across restarts and a revision read before one never matches after it.
        let first_revision = first_revision();
        let mut state = ControlState {
            version: 0,
            revision: first_revision,
            strategy_revision: first_revision,
            next_id: 1,
            backends: Vec::new(),
            names: Vec::new(),
            strategy: saved.strategy,
            active_strategy: resolve(saved.strategy),
            params,
            file,
            warned_unsaved: std::cell::Cell::new(false),
        };
        for b in &saved.backends {
            if b.address.is_name() {
                state.names.push(NameEntry::new(b, first_revision));
                continue;
            }
            if state.find(&b.address).is_some() {
                return Err(format!("backend {} given twice", b.address));
            }
            // Backends present at start count as eligible since start: no slow start at boot.
            let id = state.push(b.address.clone(), b.weight, 0);
            if let Some(e) = state.backends.iter_mut().find(|e| e.id == id) {
                e.enabled = b.enabled;
            }
        }
        if fresh {
            if let Some(f) = &state.file {
                f.save(&state.saved())
                    .map_err(|e| format!("cannot write state file {}: {e}", f.path().display()))?;
            }
        }
        Ok(state)
    }

    fn push(&mut self, addr: BackendAddr, weight: u32, now_ms: u64) -> BackendId {
        let id = self.next_id;
        self.next_id += 1;
        self.backends.push(BackendEntry {
            id,
            addr,
            weight,
            enabled: true,
            health: Hysteresis::default(),
            ejected_until_ms: 0,
            ejections: 0,
            last_ejection_end_ms: 0,
            removing_deadline_ms: None,
            removing_from_version: 0,
            drain_deadline_ms: None,
            since_ms: now_ms,
            revision: self.revision,
            stats: Arc::new(BackendStats::default()),
            name: None,
        });
        id
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// A change was accepted without a store revision (no cluster): count it.
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Position of the backend configured at `addr` (not a name's member), not counting one
    /// being removed.
    pub(crate) fn find(&self, addr: &BackendAddr) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| &b.addr == addr && b.name.is_none() && b.removing_deadline_ms.is_none())
    }

    fn find_mut(&mut self, addr: &BackendAddr) -> Result<&mut BackendEntry, ChangeError> {
        if let Some(i) = self.find(addr) {
            return Ok(&mut self.backends[i]);
        }
        let member_of = self.backends.iter().find_map(|b| match &b.name {
            Some(name) if &b.addr == addr && b.removing_deadline_ms.is_none() => Some(name),
            _ => None,
        });
        Err(ChangeError::NotFound(match member_of {
            Some(name) => format!(
                "no backend {addr}: it is an address of {name}, change that backend instead"
            ),
            None => format!("no backend {addr}"),
        }))
    }

    /// The durable view: what an operator configured, without backends being removed.
    pub(crate) fn saved(&self) -> SavedState {
        SavedState {
            format: STATE_FORMAT,
            strategy: self.strategy,
            backends: self
                .backends
                .iter()
                .filter(|b| b.removing_deadline_ms.is_none() && b.name.is_none())
                .map(BackendEntry::saved)
                .chain(self.names.iter().map(NameEntry::saved))
                .collect(),
        }
    }

    /// Saves `next` (the state after a change) before the change is applied.
    fn persist(&self, next: &SavedState) -> Result<(), ChangeError> {
        match &self.file {
            Some(f) => f
                .save(next)
                .map_err(|e| ChangeError::Storage(format!("{}: {e}", f.path().display()))),
            None => {
                if !self.warned_unsaved.replace(true) {
                    log::warn!(
                        "this runtime change is not saved: without --state-file, changes made \
                         through the admin API are lost on restart and on a live upgrade"
                    );
                }
                Ok(())
            }
        }
    }

    pub(crate) fn add(
        &mut self,
        addr: &BackendAddr,
        weight: u32,
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if addr.is_name() {
            return self.add_name(SavedBackend {
                address: addr.clone(),
                weight,
                enabled: true,
            });
        }
        if self.find(addr).is_some() {
            return Err(ChangeError::Duplicate(format!(
                "backend {addr} already exists"
            )));
        }
        if weight > MAX_WEIGHT {
            return Err(ChangeError::Invalid(format!(
                "weight must be between 0 and {MAX_WEIGHT}"
            )));
        }
        let mut next = self.saved();
        next.backends.push(SavedBackend {
            address: addr.clone(),
            weight,
            enabled: true,
        });
        self.persist(&next)?;
        self.bump();
        self.push(addr.clone(), weight, now_ms);
        Ok(())
    }

    /// Starts removing a backend: it takes no new work and leaves the table once drained, or at
    /// `drain_deadline_ms` with its remaining connections closed.
    pub(crate) fn remove(
        &mut self,
        addr: &BackendAddr,
        drain_deadline_ms: u64,
    ) -> Result<(), ChangeError> {
        if addr.is_name() {
            return self.remove_name(addr, drain_deadline_ms);
        }
        let i = self
            .find(addr)
            .ok_or_else(|| ChangeError::NotFound(format!("no backend {addr}")))?;
        let mut next = self.saved();
        next.backends.retain(|b| &b.address != addr);
        self.persist(&next)?;
        self.backends[i].revision = self.bump();
        self.backends[i].removing_deadline_ms = Some(drain_deadline_ms);
        self.backends[i].removing_from_version = self.version + 1;
        Ok(())
    }

    pub(crate) fn set_enabled(
        &mut self,
        addr: &BackendAddr,
        enabled: bool,
        now_ms: u64,
        drain_deadline_ms: u64,
    ) -> Result<bool, ChangeError> {
        if addr.is_name() {
            let set = |b: &mut SavedBackend| b.enabled = enabled;
            return self.change_name(addr, set, now_ms, drain_deadline_ms);
        }
        let current = self.find_mut(addr)?.enabled;
        if current == enabled {
            return Ok(false);
        }
        let mut next = self.saved();
        if let Some(b) = next.backends.iter_mut().find(|b| &b.address == addr) {
            b.enabled = enabled;
        }
        self.persist(&next)?;
        let revision = self.bump();
        let e = self.find_mut(addr)?;
        e.revision = revision;
        e.enabled = enabled;
        if enabled {
            e.since_ms = now_ms;
            e.drain_deadline_ms = None;
        } else {
            e.drain_deadline_ms = Some(drain_deadline_ms);
        }
        Ok(true)
    }

    pub(crate) fn set_weight(
        &mut self,
        addr: &BackendAddr,
        weight: u32,
    ) -> Result<(), ChangeError> {
        if weight > MAX_WEIGHT {
            return Err(ChangeError::Invalid(format!(
                "weight must be between 0 and {MAX_WEIGHT}"
            )));
        }
        if addr.is_name() {
            // A weight changes no member's enabled flag, so no drain deadline is needed.
            let set = |b: &mut SavedBackend| b.weight = weight;
            return self.change_name(addr, set, 0, 0).map(|_| ());
        }
        self.find_mut(addr)?;
        let mut next = self.saved();
        if let Some(b) = next.backends.iter_mut().find(|b| &b.address == addr) {
            b.weight = weight;
        }
        self.persist(&next)?;
        let revision = self.bump();
        let e = self.find_mut(addr)?;
        e.weight = weight;
        e.revision = revision;
        Ok(())
    }

    pub(crate) fn set_strategy(&mut self, strategy: StrategyKind) -> Result<(), ChangeError> {
        let mut next = self.saved();
        next.strategy = strategy;
        self.persist(&next)?;
        self.strategy_revision = self.bump();
        self.strategy = strategy;
        self.set_active(resolve(strategy));
        Ok(())
    }

    /// Switches what the workers run, keeping backends' measurements. The threshold strategy's
    /// overload marks belong to it alone and are cleared.
    pub(crate) fn set_active(&mut self, strategy: StrategyKind) {
        if self.active_strategy == StrategyKind::Threshold && strategy != StrategyKind::Threshold {
            for b in &self.backends {
                b.stats
                    .overloaded
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.active_strategy = strategy;
    }

    /// Drops removed backends that are drained or past their deadline. `installed_version` is the
    /// oldest table version a worker still routes by: a backend is drained when every worker has
    /// stopped picking it and nothing is in flight. Returns the ids whose connections must be
    /// closed (deadline passed with work still in flight), and whether the backend list changed.
    pub(crate) fn reap_removed(
        &mut self,
        now_ms: u64,
        installed_version: u64,
    ) -> (Vec<BackendId>, bool) {
        let mut sever = Vec::new();
        let before = self.backends.len();
        self.backends.retain(|b| match b.removing_deadline_ms {
            None => true,
            Some(deadline) => {
                let busy = b.stats.in_flight() > 0 || installed_version < b.removing_from_version;
                if busy && now_ms >= deadline {
                    sever.push(b.id);
                }
                busy && now_ms < deadline
            }
        });
        (sever, self.backends.len() != before)
    }

    /// Disabled backends whose drain deadline passed with connections still open.
    pub(crate) fn expired_drains(&mut self, now_ms: u64) -> Vec<BackendId> {
        let mut sever = Vec::new();
        for b in &mut self.backends {
            if let Some(deadline) = b.drain_deadline_ms {
                if now_ms >= deadline {
                    b.drain_deadline_ms = None;
                    if b.stats.in_flight() > 0 {
                        sever.push(b.id);
                    }
                }
            }
        }
        sever
    }

    /// A new table version for the workers.
    pub(crate) fn next_version(&mut self) -> Arc<BackendTable> {
        self.version += 1;
        let backends = self
            .backends
            .iter()
            .map(|e| Backend {
                id: e.id,
                addr: e.addr.clone(),
                weight: e.weight,
                enabled: e.enabled && e.removing_deadline_ms.is_none(),
                healthy: e.health.healthy && !e.is_ejected(),
                since_ms: e.since_ms,
                stats: e.stats.clone(),
                dns_name: Backend::host_of(e.name.as_ref()),
            })
            .collect();
        let mut table = BackendTable::new(self.version, backends, self.active_strategy);
        table.revision = self.revision;
        table.params = self.params;
        table.latency_aware = self.strategy == StrategyKind::Adaptive
            || matches!(
                self.active_strategy,
                StrategyKind::LeastTime | StrategyKind::P2c
            );
        Arc::new(table)
    }

    /// The configuration in force, as a store would hold it.
    pub(crate) fn desired(&self) -> Desired {
        Desired {
            revision: self.revision,
            strategy: self.strategy,
            strategy_revision: self.strategy_revision,
            params: self.params,
            backends: self
                .backends
                .iter()
                .filter(|b| b.removing_deadline_ms.is_none() && b.name.is_none())
                .map(|b| (b.saved(), b.revision))
                .chain(self.names.iter().map(|n| (n.saved(), n.revision)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    fn addr(port: u16) -> BackendAddr {
        BackendAddr::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn seed() -> Vec<BackendSpec> {
        vec![
            BackendSpec {
                addr: addr(1),
                weight: 1,
            },
            BackendSpec {
                addr: addr(2),
                weight: 3,
            },
        ]
    }

    #[test]
    fn flags_seed_a_fresh_state_and_the_file_wins_afterwards() {
        let dir = temp_dir("seed");
        let file = StateFile::new(dir.join("state.json"));
        let mut s = ControlState::open(
            Some(file.clone()),
            &seed(),
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .unwrap();
        s.add(&addr(3), 2, 1).unwrap();
        s.set_strategy(StrategyKind::LeastConnections).unwrap();
        s.set_enabled(&addr(1), false, 1, 10).unwrap();
        drop(s);
        // Different flags on restart: the saved state is what counts.
        let s = ControlState::open(
            Some(file),
            &[],
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .unwrap();
        let saved = s.saved();
        assert_eq!(saved.strategy, StrategyKind::LeastConnections);
        let list: Vec<(BackendAddr, u32, bool)> = saved
            .backends
            .iter()
            .map(|b| (b.address.clone(), b.weight, b.enabled))
            .collect();
        assert_eq!(
            list,
            vec![(addr(1), 1, false), (addr(2), 3, true), (addr(3), 2, true)]
        );
    }

    #[test]
    fn corrupt_file_refuses_to_start_and_is_left_intact() {
        let dir = temp_dir("corrupt");
        let path = dir.join("state.json");
        fs::write(
            &path,
            b"{\"format\": 1, \"strategy\": \"round-robin\", \"backends\": [",
        )
        .unwrap();
        let err = ControlState::open(
            Some(StateFile::new(&path)),
            &seed(),
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            b"{\"format\": 1, \"strategy\": \"round-robin\", \"backends\": ["
        );
    }

    #[test]
    fn failed_write_leaves_the_old_state_in_force() {
        let dir = temp_dir("failwrite");
        let mut s = ControlState::open(
            Some(StateFile::new(dir.join("state.json"))),
            &seed(),
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            s.add(&addr(9), 1, 1),
            Err(ChangeError::Storage(_))
        ));
        assert!(matches!(
            s.set_weight(&addr(1), 7),
            Err(ChangeError::Storage(_))
        ));
        assert!(matches!(
            s.set_strategy(StrategyKind::LeastConnections),
            Err(ChangeError::Storage(_))
        ));
        assert!(matches!(
            s.remove(&addr(2), 5),
            Err(ChangeError::Storage(_))
        ));
        assert_eq!(s.saved().backends.len(), 2);
        assert_eq!(s.saved().backends[0].weight, 1);
        assert_eq!(s.strategy, StrategyKind::RoundRobin);
        assert_eq!(s.next_version().eligible.len(), 2);
    }

    #[test]
    fn duplicates_unknowns_and_bad_weights_are_refused() {
        let mut s = ControlState::open(
            None,
            &seed(),
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .unwrap();
        assert!(matches!(
            s.add(&addr(1), 1, 1),
            Err(ChangeError::Duplicate(_))
        ));
        assert!(matches!(
            s.set_weight(&addr(9), 1),
            Err(ChangeError::NotFound(_))
        ));
        assert!(matches!(
            s.set_weight(&addr(1), MAX_WEIGHT + 1),
            Err(ChangeError::Invalid(_))
        ));
        assert!(matches!(
            s.remove(&addr(9), 1),
            Err(ChangeError::NotFound(_))
        ));
    }

    #[test]
    fn install_changes_only_what_differs_and_keeps_local_knowledge() {
        let mut s = ControlState::open(
            None,
            &seed(),
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .unwrap();
        s.backends[1].health.healthy = false;
        let mut want = s.desired();
        want.revision = 40;
        want.backends[0].0.enabled = false;
        want.backends[1].0.weight = 9;
        want.backends.push((
            SavedBackend {
                address: addr(3),
                weight: 2,
                enabled: true,
            },
            40,
        ));
        want.strategy = StrategyKind::LeastConnections;
        assert!(s.install(&want, 7, 100));
        assert_eq!(s.revision(), 40);
        assert_eq!(s.backends[0].drain_deadline_ms, Some(100));
        assert!(!s.backends[1].health.healthy, "health is local and stays");
        assert_eq!(s.backends[1].weight, 9);
        assert_eq!(s.backends[2].since_ms, 7);
        assert_eq!(s.active_strategy, StrategyKind::LeastConnections);
        assert_eq!(s.next_version().revision, 40);
        assert!(
            !s.install(&want, 8, 100),
            "the same configuration again changes nothing"
        );

        want.revision = 41;
        want.backends.remove(0);
        assert!(s.install(&want, 9, 200));
        assert_eq!(s.backends[0].removing_deadline_ms, Some(200));
        assert_eq!(s.desired().backends.len(), 2);
        assert_eq!(s.desired().revision, 41);
    }

    #[test]
    fn removed_backend_leaves_the_table_once_drained_or_at_its_deadline() {
        let mut s = ControlState::open(
            None,
            &seed(),
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .unwrap();
        s.remove(&addr(1), 100).unwrap();
        let t = s.next_version();
        assert_eq!(t.backends.len(), 2, "still in the table while draining");
        assert_eq!(t.eligible, vec![1], "but takes no new work");
        let stats = s.backends[0].stats.clone();
        stats
            .in_flight
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let v = t.version;
        assert_eq!(s.reap_removed(50, v), (vec![], false));
        assert_eq!(
            s.reap_removed(100, v),
            (vec![1], true),
            "deadline: sever and drop"
        );
        assert_eq!(s.next_version().backends.len(), 1);
        // Adding it again is allowed once it is gone, and also while the old one drains.
        s.add(&addr(1), 1, 1).unwrap();
        s.remove(&addr(1), 10).unwrap();
        assert_eq!(
            s.reap_removed(5, s.version()),
            (vec![], false),
            "a worker may still pick it until the next table is installed"
        );
        let v = s.next_version().version;
        assert_eq!(
            s.reap_removed(5, v),
            (vec![], true),
            "idle: dropped at once"
        );
    }
}
