//! Backends given by DNS name in the authoritative state. A name is configuration (it is what
//! the state file and the cluster store hold, with its weight and enabled flag); what workers
//! route to are its members, one [`BackendEntry`] per address of the last answer, each with the
//! name's weight and enabled flag. An answer is applied by [`ControlState::apply_answer`]: an
//! address new in it becomes a member (slow start counts from then), a member whose address left
//! it drains like a removed backend, and a failed lookup keeps the last answer (logged once, and
//! again when the name resolves again).

use std::net::SocketAddr;

use log::{info, warn};

use super::{BackendEntry, ChangeError, ControlState, SavedBackend};
use crate::backend::BackendAddr;

/// Where a name's lookups stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LookupState {
    /// Not looked up yet.
    Pending,
    /// The last lookup answered; its addresses are the members.
    Resolved,
    /// The last lookups failed, `failures` in a row (the members are those of the last answer
    /// that worked, if any).
    Failing { error: String, failures: u32 },
}

/// A backend given by name.
#[derive(Clone, Debug)]
pub(crate) struct NameEntry {
    /// Always a [`BackendAddr::Name`].
    pub addr: BackendAddr,
    pub weight: u32,
    pub enabled: bool,
    /// The configuration revision of its last change.
    pub revision: u64,
    /// The addresses of the last answer that worked, sorted.
    pub answer: Vec<SocketAddr>,
    pub lookup: LookupState,
}

impl NameEntry {
    pub(crate) fn new(saved: &SavedBackend, revision: u64) -> NameEntry {
        NameEntry {
            addr: saved.address.clone(),
            weight: saved.weight,
            enabled: saved.enabled,
            revision,
            answer: Vec::new(),
            lookup: LookupState::Pending,
        }
    }

    pub(crate) fn saved(&self) -> SavedBackend {
        SavedBackend {
            address: self.addr.clone(),
            weight: self.weight,
            enabled: self.enabled,
        }
    }
}

impl BackendEntry {
    /// Whether this is a live (not draining) member of the name `name`.
    fn live_member_of(&self, name: &BackendAddr) -> bool {
        self.name.as_ref() == Some(name) && self.removing_deadline_ms.is_none()
    }
}

impl ControlState {
    pub(crate) fn find_name(&self, addr: &BackendAddr) -> Option<usize> {
        self.names.iter().position(|n| &n.addr == addr)
    }

    fn name_index(&self, addr: &BackendAddr) -> Result<usize, ChangeError> {
        self.find_name(addr)
            .ok_or_else(|| ChangeError::NotFound(format!("no backend {addr}")))
    }

    /// The live members of the name at `i`.
    pub(crate) fn members(&self, i: usize) -> impl Iterator<Item = &BackendEntry> {
        let name = &self.names[i].addr;
        self.backends
            .iter()
            .filter(move |b| b.name.as_ref() == Some(name))
    }

    pub(super) fn add_name(&mut self, saved: SavedBackend) -> Result<(), ChangeError> {
        if self.find_name(&saved.address).is_some() {
            return Err(ChangeError::Duplicate(format!(
                "backend {} already exists",
                saved.address
            )));
        }
        let mut next = self.saved();
        next.backends.push(saved.clone());
        self.persist(&next)?;
        let revision = self.bump();
        self.names.push(NameEntry::new(&saved, revision));
        Ok(())
    }

    /// Removes a name: every member drains.
    pub(super) fn remove_name(
        &mut self,
        addr: &BackendAddr,
        drain_deadline_ms: u64,
    ) -> Result<(), ChangeError> {
        let i = self.name_index(addr)?;
        let mut next = self.saved();
        next.backends.retain(|b| &b.address != addr);
        self.persist(&next)?;
        self.bump();
        self.drop_name(i, drain_deadline_ms);
        Ok(())
    }

    /// Forgets the name at `i` and drains its members.
    pub(super) fn drop_name(&mut self, i: usize, drain_deadline_ms: u64) {
        let name = self.names.remove(i).addr;
        let from = self.version + 1;
        for b in self.backends.iter_mut().filter(|b| b.live_member_of(&name)) {
            b.removing_deadline_ms = Some(drain_deadline_ms);
            b.removing_from_version = from;
        }
    }

    /// Sets a name's weight or enabled flag (saved first); its members follow.
    pub(super) fn change_name(
        &mut self,
        addr: &BackendAddr,
        change: impl Fn(&mut SavedBackend),
        now_ms: u64,
        drain_deadline_ms: u64,
    ) -> Result<bool, ChangeError> {
        let i = self.name_index(addr)?;
        let mut want = self.names[i].saved();
        change(&mut want);
        if want == self.names[i].saved() {
            return Ok(false);
        }
        let mut next = self.saved();
        if let Some(b) = next.backends.iter_mut().find(|b| &b.address == addr) {
            *b = want.clone();
        }
        self.persist(&next)?;
        let revision = self.bump();
        let n = &mut self.names[i];
        n.weight = want.weight;
        n.enabled = want.enabled;
        n.revision = revision;
        self.sync_members(i, now_ms, drain_deadline_ms);
        Ok(true)
    }

    /// Installs a name as a store holds it (cluster mode); true when anything changed.
    pub(super) fn install_name(
        &mut self,
        want: &SavedBackend,
        revision: u64,
        now_ms: u64,
        drain_deadline_ms: u64,
    ) -> bool {
        let i = match self.find_name(&want.address) {
            Some(i) => i,
            None => {
                info!("backend {} added (weight {})", want.address, want.weight);
                self.names.push(NameEntry::new(want, revision));
                self.names.len() - 1
            }
        };
        let n = &mut self.names[i];
        n.revision = revision;
        let changed = n.weight != want.weight || n.enabled != want.enabled;
        n.weight = want.weight;
        n.enabled = want.enabled;
        self.sync_members(i, now_ms, drain_deadline_ms) || changed
    }

    /// Applies one lookup's outcome for `name` (`host:port`). True when the members changed.
    pub(crate) fn apply_answer(
        &mut self,
        name: &str,
        answer: Result<Vec<SocketAddr>, String>,
        now_ms: u64,
        drain_deadline_ms: u64,
    ) -> bool {
        let Some(i) = self.names.iter().position(|n| n.addr.to_string() == name) else {
            return false; // removed while it was being looked up
        };
        let n = &mut self.names[i];
        match answer {
            Err(error) => {
                let failures = match &n.lookup {
                    LookupState::Failing { failures, .. } => failures + 1,
                    _ => {
                        warn!(
                            "backend {name}: lookup failed, keeping the last answer ({} \
                             addresses) until it resolves again: {error}",
                            n.answer.len()
                        );
                        1
                    }
                };
                n.lookup = LookupState::Failing { error, failures };
                false
            }
            Ok(addrs) => {
                if matches!(n.lookup, LookupState::Failing { .. }) {
                    info!("backend {name} resolves again");
                }
                n.lookup = LookupState::Resolved;
                n.answer = addrs;
                self.sync_members(i, now_ms, drain_deadline_ms)
            }
        }
    }

    /// Makes the members of the name at `i` match its answer, weight and enabled flag: an
    /// address new in the answer becomes a member, one that left it drains. True when anything
    /// routing depends on changed.
    fn sync_members(&mut self, i: usize, now_ms: u64, drain_deadline_ms: u64) -> bool {
        let n = self.names[i].clone();
        let from = self.version + 1;
        let mut changed = false;
        for b in self
            .backends
            .iter_mut()
            .filter(|b| b.live_member_of(&n.addr))
        {
            let BackendAddr::Ip(ip) = &b.addr else {
                continue;
            };
            if !n.answer.contains(ip) {
                info!("backend {}: {ip} left the answer; draining", n.addr);
                b.removing_deadline_ms = Some(drain_deadline_ms);
                b.removing_from_version = from;
                changed = true;
                continue;
            }
            b.revision = n.revision;
            if b.weight != n.weight {
                b.weight = n.weight;
                changed = true;
            }
            if b.enabled != n.enabled {
                b.enabled = n.enabled;
                if n.enabled {
                    b.since_ms = now_ms;
                    b.drain_deadline_ms = None;
                } else {
                    b.drain_deadline_ms = Some(drain_deadline_ms);
                }
                changed = true;
            }
        }
        for ip in &n.answer {
            let known = self
                .backends
                .iter()
                .any(|b| b.live_member_of(&n.addr) && b.addr == BackendAddr::Ip(*ip));
            if known {
                continue;
            }
            info!("backend {}: {ip} joins (weight {})", n.addr, n.weight);
            let id = self.push(BackendAddr::Ip(*ip), n.weight, now_ms);
            if let Some(b) = self.backends.iter_mut().find(|b| b.id == id) {
                b.name = Some(n.addr.clone());
                b.enabled = n.enabled;
                b.revision = n.revision;
            }
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{StrategyKind, StrategyParams};

    fn name() -> BackendAddr {
        BackendAddr::parse_literal("app.test:80").unwrap()
    }

    fn ip(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 80))
    }

    fn state() -> ControlState {
        let mut s = ControlState::open(
            None,
            &[],
            StrategyKind::RoundRobin,
            StrategyParams::default(),
        )
        .unwrap();
        s.add(&name(), 3, 0).unwrap();
        s
    }

    fn live(s: &ControlState) -> Vec<(SocketAddr, u32, bool)> {
        s.backends
            .iter()
            .filter(|b| b.removing_deadline_ms.is_none())
            .filter_map(|b| match b.addr {
                BackendAddr::Ip(a) => Some((a, b.weight, b.enabled)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_address_of_an_answer_is_a_member_with_the_names_weight() {
        let mut s = state();
        assert!(
            s.next_version().backends.is_empty(),
            "no member before an answer"
        );
        assert!(s.apply_answer("app.test:80", Ok(vec![ip(2), ip(3)]), 5, 100));
        assert_eq!(live(&s), vec![(ip(2), 3, true), (ip(3), 3, true)]);
        assert_eq!(
            s.backends[0].since_ms, 5,
            "slow start counts from the answer"
        );
        assert_eq!(s.next_version().eligible.len(), 2);
        assert!(
            !s.apply_answer("app.test:80", Ok(vec![ip(2), ip(3)]), 6, 100),
            "the same answer changes nothing"
        );
        let saved = s.saved();
        assert_eq!(
            saved.backends.len(),
            1,
            "the name is saved, not its addresses"
        );
        assert_eq!(saved.backends[0].address, name());
    }

    #[test]
    fn an_address_that_leaves_the_answer_drains_and_a_failed_lookup_keeps_the_last() {
        let mut s = state();
        s.apply_answer("app.test:80", Ok(vec![ip(2)]), 0, 100);
        assert!(s.apply_answer("app.test:80", Ok(vec![ip(3)]), 1, 100));
        let old = s.backends.iter().find(|b| b.addr == ip(2).into()).unwrap();
        assert_eq!(old.removing_deadline_ms, Some(100));
        assert_eq!(live(&s), vec![(ip(3), 3, true)]);
        assert!(!s.apply_answer("app.test:80", Err("timed out".into()), 2, 100));
        assert_eq!(live(&s), vec![(ip(3), 3, true)], "the last answer stays");
        s.apply_answer("app.test:80", Err("timed out".into()), 3, 100);
        let failing = LookupState::Failing {
            error: "timed out".into(),
            failures: 2,
        };
        assert_eq!(s.names[0].lookup, failing);
        s.apply_answer("app.test:80", Ok(vec![ip(3)]), 3, 100);
        assert_eq!(s.names[0].lookup, LookupState::Resolved);
    }

    #[test]
    fn weight_enabled_and_removal_of_a_name_apply_to_every_member() {
        let mut s = state();
        s.apply_answer("app.test:80", Ok(vec![ip(2), ip(3)]), 0, 100);
        s.set_weight(&name(), 7).unwrap();
        s.set_enabled(&name(), false, 1, 50).unwrap();
        assert_eq!(live(&s), vec![(ip(2), 7, false), (ip(3), 7, false)]);
        assert_eq!(s.backends[0].drain_deadline_ms, Some(50));
        assert_eq!(s.saved().backends[0].weight, 7);
        s.apply_answer("app.test:80", Ok(vec![ip(2), ip(3), ip(4)]), 2, 100);
        assert_eq!(
            live(&s)[2],
            (ip(4), 7, false),
            "a new member follows the name"
        );
        let e = s.set_weight(&ip(2).into(), 1).unwrap_err();
        assert!(e.to_string().contains("app.test:80"), "{e}");
        s.remove(&name(), 90).unwrap();
        assert!(live(&s).is_empty(), "every member drains");
        assert!(s.saved().backends.is_empty());
        assert!(!s.apply_answer("app.test:80", Ok(vec![ip(5)]), 3, 100));
    }

    #[test]
    fn a_name_and_an_address_are_separate_backends() {
        let mut s = state();
        s.add(&ip(2).into(), 1, 0).unwrap();
        s.apply_answer("app.test:80", Ok(vec![ip(2)]), 0, 100);
        assert_eq!(s.next_version().backends.len(), 2);
        s.remove(&ip(2).into(), 10).unwrap();
        assert_eq!(live(&s), vec![(ip(2), 3, true)], "the name's member stays");
        assert!(matches!(
            s.add(&name(), 1, 0),
            Err(ChangeError::Duplicate(_))
        ));
    }
}
