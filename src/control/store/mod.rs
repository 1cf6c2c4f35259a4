//! The cluster's configuration store: etcd, reached over its JSON gateway by threads of their own
//! ([`threads`]), never by the control loop itself.
//!
//! Key layout under `/sluice/<cluster>/` (room for more pools later without a migration):
//!
//! | key | value |
//! |---|---|
//! | `format` | `{"format": 1}`, written when the configuration is first seeded |
//! | `last_change` | who changed what, rewritten by every change: its revision is the configuration's |
//! | `pools/default/strategy` | `{"strategy": "round-robin", "slow_start_ms": 0, ...}` |
//! | `pools/default/backends/<address>` | `{"address": "10.0.0.5:80", "weight": 1, "enabled": true}` (a unix backend's key ends in its path: `backends/unix:/run/app.sock`) |
//! | `instances/<id>` | a member's record, under a lease that it keeps alive |
//!
//! What flows: the control thread sends [`StoreRequest`]s (a change an operator asked for, the
//! revision it has installed); the threads answer with [`StoreEvent`]s (the outcome of a change,
//! and every change any instance made, from the watch). [`Mirror`] is the control thread's copy of
//! the keys, from which it builds the [`Desired`] configuration it installs.

pub(crate) mod etcd;
pub(crate) mod threads;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::{ChangeError, Desired, SavedBackend};
use crate::backend::{BackendAddr, MAX_WEIGHT};
use crate::strategy::{StrategyKind, StrategyParams};
use etcd::{Range, WatchEvent};

/// Version of the key layout.
pub(crate) const FORMAT: u32 = 1;
/// The only pool so far.
pub(crate) const POOL: &str = "default";

/// Where each key of one cluster lives.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    root: String,
}

impl Layout {
    pub(crate) fn new(cluster: &str) -> Layout {
        Layout {
            root: format!("/sluice/{cluster}/"),
        }
    }

    /// Every key of the cluster starts with this.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn format(&self) -> String {
        format!("{}format", self.root)
    }

    pub(crate) fn last_change(&self) -> String {
        format!("{}last_change", self.root)
    }

    pub(crate) fn pools(&self) -> String {
        format!("{}pools/", self.root)
    }

    pub(crate) fn strategy(&self) -> String {
        format!("{}pools/{POOL}/strategy", self.root)
    }

    pub(crate) fn backends(&self) -> String {
        format!("{}pools/{POOL}/backends/", self.root)
    }

    pub(crate) fn backend(&self, addr: &BackendAddr) -> String {
        format!("{}{addr}", self.backends())
    }

    pub(crate) fn instances(&self) -> String {
        format!("{}instances/", self.root)
    }

    pub(crate) fn instance(&self, id: &str) -> String {
        format!("{}{id}", self.instances())
    }
}

/// The strategy's record: the strategy and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StrategyRecord {
    pub strategy: StrategyKind,
    #[serde(default)]
    pub slow_start_ms: u64,
    #[serde(default = "default_threshold_high")]
    pub threshold_high: u64,
    #[serde(default = "default_threshold_low")]
    pub threshold_low: u64,
    #[serde(default = "default_min_enabled")]
    pub min_enabled: usize,
}

fn default_threshold_high() -> u64 {
    crate::strategy::DEFAULT_THRESHOLD_HIGH
}
fn default_threshold_low() -> u64 {
    crate::strategy::DEFAULT_THRESHOLD_LOW
}
fn default_min_enabled() -> usize {
    crate::strategy::DEFAULT_MIN_ENABLED
}

impl StrategyRecord {
    pub(crate) fn new(strategy: StrategyKind, p: StrategyParams) -> StrategyRecord {
        StrategyRecord {
            strategy,
            slow_start_ms: p.slow_start_ms,
            threshold_high: p.threshold_high,
            threshold_low: p.threshold_low,
            min_enabled: p.min_enabled,
        }
    }

    pub(crate) fn params(&self) -> StrategyParams {
        StrategyParams {
            slow_start_ms: self.slow_start_ms,
            threshold_high: self.threshold_high,
            threshold_low: self.threshold_low,
            min_enabled: self.min_enabled,
        }
    }
}

/// A member's record under `instances/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberRecord {
    pub id: String,
    pub proxy: String,
    pub admin: Option<String>,
    pub version: String,
    pub started_unix_ms: u64,
    /// The configuration revision it has installed.
    pub revision: u64,
}

/// A configuration change an operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Add {
        addr: BackendAddr,
        weight: u32,
    },
    Remove {
        addr: BackendAddr,
    },
    /// `expect`: refuse unless the backend's record is still at this revision.
    SetWeight {
        addr: BackendAddr,
        weight: u32,
        expect: Option<u64>,
    },
    SetEnabled {
        addr: BackendAddr,
        enabled: bool,
    },
    SetStrategy {
        strategy: StrategyKind,
        expect: Option<u64>,
    },
}

/// What a change writes to its key, given the key's current value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Write {
    Put(Vec<u8>),
    Delete,
    /// The key already says what the change asks for.
    Nothing,
}

/// What a committed change left in its key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Record {
    Backend(SavedBackend),
    Strategy(StrategyRecord),
    Removed(BackendAddr),
}

impl Change {
    /// The one key this change writes.
    pub(crate) fn key(&self, layout: &Layout) -> String {
        match self {
            Change::Add { addr, .. }
            | Change::Remove { addr }
            | Change::SetWeight { addr, .. }
            | Change::SetEnabled { addr, .. } => layout.backend(addr),
            Change::SetStrategy { .. } => layout.strategy(),
        }
    }

    /// For the log and the `last_change` key.
    pub(crate) fn describe(&self) -> String {
        match self {
            Change::Add { addr, weight } => format!("add backend {addr} (weight {weight})"),
            Change::Remove { addr } => format!("remove backend {addr}"),
            Change::SetWeight { addr, weight, .. } => format!("set weight of {addr} to {weight}"),
            Change::SetEnabled { addr, enabled } => {
                format!(
                    "{} backend {addr}",
                    if *enabled { "enable" } else { "disable" }
                )
            }
            Change::SetStrategy { strategy, .. } => format!("set strategy to {strategy}"),
        }
    }

    /// What to write given the key's current value and revision (`None`: no such key), and the
    /// record that results. The same rule whether the value came from this instance's copy or
    /// from a fresh read after another change came first.
    pub(crate) fn apply(
        &self,
        current: Option<(&[u8], u64)>,
    ) -> Result<(Write, Record), ChangeError> {
        let not_found = |addr: &BackendAddr| ChangeError::NotFound(format!("no backend {addr}"));
        let stale = |what: String, expect: u64, now: u64| {
            ChangeError::Conflict(format!(
                "{what} changed at revision {now} after revision {expect} that you read; \
                 read it again and retry"
            ))
        };
        let backend = |bytes: &[u8]| -> Result<SavedBackend, ChangeError> {
            serde_json::from_slice(bytes)
                .map_err(|e| ChangeError::Invalid(format!("stored backend record unreadable: {e}")))
        };
        let encode = |r: &Record| -> Result<Vec<u8>, ChangeError> {
            let bytes = match r {
                Record::Backend(b) => serde_json::to_vec(b),
                Record::Strategy(s) => serde_json::to_vec(s),
                Record::Removed(_) => Ok(Vec::new()),
            };
            bytes.map_err(|e| ChangeError::Invalid(format!("cannot encode record: {e}")))
        };
        let weight_ok = |w: u32| {
            if w > MAX_WEIGHT {
                Err(ChangeError::Invalid(format!(
                    "weight must be between 0 and {MAX_WEIGHT}"
                )))
            } else {
                Ok(())
            }
        };
        match self {
            Change::Add { addr, weight } => {
                weight_ok(*weight)?;
                if current.is_some() {
                    return Err(ChangeError::Duplicate(format!(
                        "backend {addr} already exists"
                    )));
                }
                let r = Record::Backend(SavedBackend {
                    address: addr.clone(),
                    weight: *weight,
                    enabled: true,
                });
                Ok((Write::Put(encode(&r)?), r))
            }
            Change::Remove { addr } => match current {
                None => Err(not_found(addr)),
                Some(_) => Ok((Write::Delete, Record::Removed(addr.clone()))),
            },
            Change::SetWeight {
                addr,
                weight,
                expect,
            } => {
                weight_ok(*weight)?;
                let (bytes, revision) = current.ok_or_else(|| not_found(addr))?;
                if let Some(e) = expect.filter(|&e| e != revision) {
                    return Err(stale(format!("backend {addr}"), e, revision));
                }
                let mut b = backend(bytes)?;
                if b.weight == *weight {
                    return Ok((Write::Nothing, Record::Backend(b)));
                }
                b.weight = *weight;
                let r = Record::Backend(b);
                Ok((Write::Put(encode(&r)?), r))
            }
            Change::SetEnabled { addr, enabled } => {
                let (bytes, _) = current.ok_or_else(|| not_found(addr))?;
                let mut b = backend(bytes)?;
                if b.enabled == *enabled {
                    return Ok((Write::Nothing, Record::Backend(b)));
                }
                b.enabled = *enabled;
                let r = Record::Backend(b);
                Ok((Write::Put(encode(&r)?), r))
            }
            Change::SetStrategy { strategy, expect } => {
                let mut s = match current {
                    Some((bytes, revision)) => {
                        if let Some(e) = expect.filter(|&e| e != revision) {
                            return Err(stale("the strategy".into(), e, revision));
                        }
                        serde_json::from_slice(bytes).map_err(|e| {
                            ChangeError::Invalid(format!("stored strategy record unreadable: {e}"))
                        })?
                    }
                    None => StrategyRecord::new(*strategy, StrategyParams::default()),
                };
                if current.is_some() && s.strategy == *strategy {
                    return Ok((Write::Nothing, Record::Strategy(s)));
                }
                s.strategy = *strategy;
                let r = Record::Strategy(s);
                Ok((Write::Put(encode(&r)?), r))
            }
        }
    }
}

/// What the control thread asks of the store threads.
#[derive(Debug)]
pub(crate) enum StoreRequest {
    /// Commit a change.
    Change { ticket: u64, change: Change },
    /// Write this configuration if the store has none (it was wiped, or never seeded).
    Seed(Desired),
    /// This instance has installed the configuration at this revision (for its member record).
    Installed(u64),
    /// Leave the cluster (revoke the lease) and end the thread.
    Stop,
}

/// What the store threads tell the control thread.
#[derive(Debug)]
pub(crate) enum StoreEvent {
    /// The outcome of [`StoreRequest::Change`]: the revision it committed at (or the key's
    /// revision when there was nothing to write) and the record it left.
    Committed {
        ticket: u64,
        result: Result<(u64, Record), ChangeError>,
    },
    /// Changes from the watch, all of one revision.
    Changes(Vec<WatchEvent>),
    /// Everything under the cluster's prefix, read anew (at start, or after the watch fell
    /// behind a compaction).
    Snapshot(Range),
    /// Whether the store answers (a lease renewal or a change went through).
    Up(bool),
}

/// What applying watch events touched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Touched {
    pub config: bool,
    pub members: bool,
}

/// The control thread's copy of the cluster's keys, decoded.
#[derive(Debug)]
pub(crate) struct Mirror {
    layout: Layout,
    pub seeded: bool,
    pub strategy: Option<(StrategyRecord, u64)>,
    pub backends: BTreeMap<BackendAddr, (SavedBackend, u64)>,
    pub members: BTreeMap<String, MemberRecord>,
    /// The revision of the last configuration change seen.
    pub revision: u64,
}

impl Mirror {
    pub(crate) fn new(layout: Layout) -> Mirror {
        Mirror {
            layout,
            seeded: false,
            strategy: None,
            backends: BTreeMap::new(),
            members: BTreeMap::new(),
            revision: 0,
        }
    }

    /// Replaces everything with a fresh read.
    pub(crate) fn load(&mut self, range: &Range) {
        let root = self.layout.root().to_string();
        *self = Mirror::new(self.layout.clone());
        let mut config_revision = 0;
        for kv in &range.kvs {
            let touched = self.put(&kv.key, Some(&kv.value), kv.mod_revision);
            if touched.config || kv.key == format!("{root}last_change") {
                config_revision = config_revision.max(kv.mod_revision);
            }
        }
        self.revision = config_revision;
    }

    /// Applies changes from the watch.
    pub(crate) fn apply(&mut self, events: &[WatchEvent]) -> Touched {
        let mut touched = Touched::default();
        for e in events {
            let t = self.put(&e.key, e.value.as_deref(), e.revision);
            touched.config |= t.config;
            touched.members |= t.members;
            if t.config {
                self.revision = self.revision.max(e.revision);
            }
        }
        touched
    }

    /// One key set (`Some`) or deleted (`None`). A value that cannot be read (written by hand,
    /// or by a newer sluice) is logged and left out.
    fn put(&mut self, key: &str, value: Option<&[u8]>, revision: u64) -> Touched {
        let config = Touched {
            config: true,
            members: false,
        };
        let Some(rest) = key.strip_prefix(self.layout.root()) else {
            return Touched::default();
        };
        let bad = |what: &str, e: serde_json::Error| {
            log::warn!("cluster: ignoring {what} at {key}: {e}");
        };
        if rest == "format" {
            self.seeded = value.is_some();
            return config;
        }
        if rest == "last_change" {
            return config;
        }
        if key == self.layout.strategy() {
            self.strategy = None;
            if let Some(v) = value {
                match serde_json::from_slice(v) {
                    Ok(s) => self.strategy = Some((s, revision)),
                    Err(e) => bad("a strategy record", e),
                }
            }
            return config;
        }
        if let Some(addr) = key.strip_prefix(&self.layout.backends()) {
            let Ok(addr) = BackendAddr::parse_literal(addr) else {
                log::warn!("cluster: ignoring {key}: not a backend address");
                return Touched::default();
            };
            self.backends.remove(&addr);
            if let Some(v) = value {
                match serde_json::from_slice::<SavedBackend>(v) {
                    Ok(b) if b.address == addr && b.weight <= MAX_WEIGHT => {
                        self.backends.insert(addr, (b, revision));
                    }
                    Ok(_) => log::warn!("cluster: ignoring {key}: address or weight out of place"),
                    Err(e) => bad("a backend record", e),
                }
            }
            return config;
        }
        if let Some(id) = key.strip_prefix(&self.layout.instances()) {
            self.members.remove(id);
            if let Some(v) = value {
                match serde_json::from_slice(v) {
                    Ok(m) => {
                        self.members.insert(id.to_string(), m);
                    }
                    Err(e) => bad("a member record", e),
                }
            }
            return Touched {
                config: false,
                members: true,
            };
        }
        Touched::default()
    }

    /// The configuration to install; `fallback` supplies the strategy while the store has none.
    pub(crate) fn desired(&self, fallback: StrategyRecord) -> Desired {
        let (s, strategy_revision) = self.strategy.unwrap_or((fallback, 0));
        Desired {
            revision: self.revision,
            strategy: s.strategy,
            strategy_revision,
            params: s.params(),
            backends: self.backends.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::etcd::KeyValue;
    use super::*;

    fn addr(port: u16) -> BackendAddr {
        BackendAddr::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn put(key: String, value: &str, revision: u64) -> WatchEvent {
        WatchEvent {
            key,
            value: Some(value.as_bytes().to_vec()),
            revision,
        }
    }

    #[test]
    fn the_mirror_follows_puts_and_deletes_and_tells_config_from_members() {
        let l = Layout::new("t");
        let mut m = Mirror::new(l.clone());
        let t = m.apply(&[
            put(
                l.backend(&addr(1)),
                r#"{"address":"127.0.0.1:1","weight":2,"enabled":true}"#,
                5,
            ),
            put(l.strategy(), r#"{"strategy":"least-connections"}"#, 5),
        ]);
        assert_eq!(
            t,
            Touched {
                config: true,
                members: false
            }
        );
        assert_eq!(m.revision, 5);
        let t = m.apply(&[put(
            l.instance("a"),
            r#"{"id":"a","proxy":"p","admin":null,"version":"v","started_unix_ms":1,"revision":5}"#,
            6,
        )]);
        assert_eq!(
            t,
            Touched {
                config: false,
                members: true
            }
        );
        assert_eq!(m.revision, 5, "member records are not configuration");
        m.apply(&[WatchEvent {
            key: l.backend(&addr(1)),
            value: None,
            revision: 7,
        }]);
        let d = m.desired(StrategyRecord::new(
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        ));
        assert_eq!(d.revision, 7);
        assert!(d.backends.is_empty());
        assert_eq!(d.strategy, StrategyKind::LeastConnections);
        assert_eq!(
            d.params.threshold_high,
            crate::strategy::DEFAULT_THRESHOLD_HIGH
        );
    }

    #[test]
    fn unreadable_records_are_left_out() {
        let l = Layout::new("t");
        let mut m = Mirror::new(l.clone());
        m.apply(&[
            put(l.backend(&addr(1)), "{not json", 3),
            put(
                l.backend(&addr(2)),
                r#"{"address":"127.0.0.1:9","weight":1,"enabled":true}"#,
                3,
            ),
            put(format!("{}nonsense", l.backends()), "{}", 3),
        ]);
        assert!(m.backends.is_empty());
    }

    #[test]
    fn a_fresh_read_takes_the_newest_configuration_revision() {
        let l = Layout::new("t");
        let mut m = Mirror::new(l.clone());
        let kv = |key: String, value: &str, mod_revision| KeyValue {
            key,
            value: value.as_bytes().to_vec(),
            mod_revision,
        };
        m.load(&Range {
            revision: 30,
            kvs: vec![
                kv(l.format(), r#"{"format":1}"#, 2),
                kv(l.last_change(), "{}", 12),
                kv(l.backend(&addr(1)), r#"{"address":"127.0.0.1:1","weight":1,"enabled":false}"#, 9),
                kv(
                    l.instance("x"),
                    r#"{"id":"x","proxy":"p","admin":null,"version":"v","started_unix_ms":1,"revision":12}"#,
                    29,
                ),
            ],
        });
        assert!(m.seeded);
        assert_eq!(m.revision, 12, "a delete leaves only last_change behind");
        assert_eq!(m.members.len(), 1);
        assert!(!m.backends[&addr(1)].0.enabled);
    }

    #[test]
    fn changes_apply_to_the_current_record() {
        let rec = br#"{"address":"127.0.0.1:1","weight":1,"enabled":true}"#;
        let set = |weight, expect| Change::SetWeight {
            addr: addr(1),
            weight,
            expect,
        };
        assert!(matches!(
            set(5, None).apply(Some((rec, 4))),
            Ok((
                Write::Put(_),
                Record::Backend(SavedBackend { weight: 5, .. })
            ))
        ));
        assert!(matches!(
            set(5, Some(3)).apply(Some((rec, 4))),
            Err(ChangeError::Conflict(_))
        ));
        assert!(matches!(
            set(5, Some(4)).apply(Some((rec, 4))),
            Ok((Write::Put(_), _))
        ));
        assert!(matches!(
            set(1, None).apply(Some((rec, 4))),
            Ok((Write::Nothing, _))
        ));
        assert!(matches!(
            set(5, None).apply(None),
            Err(ChangeError::NotFound(_))
        ));
        assert!(matches!(
            set(999, None).apply(Some((rec, 4))),
            Err(ChangeError::Invalid(_))
        ));
        let add = Change::Add {
            addr: addr(1),
            weight: 1,
        };
        assert!(matches!(
            add.apply(Some((rec, 4))),
            Err(ChangeError::Duplicate(_))
        ));
        assert!(matches!(add.apply(None), Ok((Write::Put(_), _))));
        let remove = Change::Remove { addr: addr(1) };
        assert!(matches!(
            remove.apply(Some((rec, 4))),
            Ok((Write::Delete, Record::Removed(_)))
        ));
        let disable = Change::SetEnabled {
            addr: addr(1),
            enabled: false,
        };
        assert!(matches!(
            disable.apply(Some((rec, 4))),
            Ok((
                Write::Put(_),
                Record::Backend(SavedBackend {
                    enabled: false,
                    weight: 1,
                    ..
                })
            ))
        ));
    }
}
