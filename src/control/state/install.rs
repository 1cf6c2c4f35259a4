//! Installing a configuration read from the cluster's store: only what differs changes, so
//! backends that stayed keep their connections, health and measurements.

use super::{resolve, ControlState, Desired};
use crate::backend::BackendAddr;

impl ControlState {
    /// Makes `desired` the configuration in force, changing only what differs: a new backend
    /// starts (slow start counts from `now_ms`), a missing one drains until `drain_deadline_ms`
    /// and leaves, a disabled one drains; health, ejections and measurements of the others stay.
    /// Returns whether anything routing depends on changed.
    pub(crate) fn install(
        &mut self,
        desired: &Desired,
        now_ms: u64,
        drain_deadline_ms: u64,
    ) -> bool {
        let mut changed = false;
        let at = desired.revision;
        for (want, revision) in &desired.backends {
            if want.address.is_name() {
                changed |= self.install_name(want, *revision, now_ms, drain_deadline_ms);
                continue;
            }
            let i = match self.find(&want.address) {
                Some(i) => i,
                None => {
                    log::info!(
                        "backend {} added (weight {}) at revision {at}",
                        want.address,
                        want.weight
                    );
                    self.push(want.address.clone(), want.weight, now_ms);
                    changed = true;
                    self.backends.len() - 1
                }
            };
            let e = &mut self.backends[i];
            e.revision = *revision;
            if e.weight != want.weight {
                log::info!(
                    "backend {} weight {} -> {} at revision {at}",
                    e.addr,
                    e.weight,
                    want.weight
                );
                e.weight = want.weight;
                changed = true;
            }
            if e.enabled != want.enabled {
                e.enabled = want.enabled;
                if want.enabled {
                    log::info!("backend {} enabled at revision {at}", e.addr);
                    e.since_ms = now_ms;
                    e.drain_deadline_ms = None;
                } else {
                    log::info!("backend {} disabled at revision {at}; draining", e.addr);
                    e.drain_deadline_ms = Some(drain_deadline_ms);
                }
                changed = true;
            }
        }
        let wanted = |addr: &BackendAddr| desired.backends.iter().any(|(b, _)| &b.address == addr);
        while let Some(i) = self.names.iter().position(|n| !wanted(&n.addr)) {
            log::info!(
                "backend {} removed at revision {at}; draining",
                self.names[i].addr
            );
            self.drop_name(i, drain_deadline_ms);
            changed = true;
        }
        let removing_from = self.version + 1;
        for e in &mut self.backends {
            // A name's members come and go with the name and its answers.
            if !wanted(&e.addr) && e.name.is_none() && e.removing_deadline_ms.is_none() {
                log::info!("backend {} removed at revision {at}; draining", e.addr);
                e.removing_deadline_ms = Some(drain_deadline_ms);
                e.removing_from_version = removing_from;
                changed = true;
            }
        }
        if self.strategy != desired.strategy {
            log::info!("strategy set to {} at revision {at}", desired.strategy);
            self.strategy = desired.strategy;
            self.set_active(resolve(desired.strategy));
            changed = true;
        }
        if self.params != desired.params {
            self.params = desired.params;
            changed = true;
        }
        self.strategy_revision = desired.strategy_revision;
        changed |= self.revision != at;
        self.revision = at;
        changed
    }
}
