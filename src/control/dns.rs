//! Backends given by DNS name, on the control thread: the resolver thread ([`crate::resolve`])
//! does every lookup and hands its answers over the control channel
//! ([`ControlMsg::Resolved`](crate::link::ControlMsg)), so no lookup ever blocks the control loop
//! or runs on a worker. The control thread tells it which names to follow whenever the
//! configured names change, applies each answer to the state (members join and drain), and
//! checks a name the admin API is asked to add before the change goes ahead.
//!
//! At start, before any thread serves, the names are looked up once on the starting thread, so
//! the first table already routes to them; a `--backend` name that does not resolve then stops
//! start-up (unless `--allow-unresolved`), while a name restored from the state file or the
//! cluster's store never does: it was accepted before, and a DNS outage at boot must not keep the
//! balancer down. In a cluster the name is the shared configuration and each instance resolves it
//! itself.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::api::change_error;
use super::state::ControlState;
use super::store::{Change, Record};
use super::Control;
use crate::admin::{AdminResponse, Reply};
use crate::backend::BackendAddr;
use crate::config::Settings;
use crate::link::{ControlLink, ControlMsg};
use crate::resolve::{resolve, Answer, Lookup, Resolver};

/// Name checks' tickets live in a space of their own, apart from the cluster's.
const CHECK_TICKET_BASE: u64 = 1 << 62;

/// The control thread's part of backends given by name.
pub(crate) struct Dns {
    resolver: Option<Resolver>,
    /// The names the resolver follows, as last sent.
    followed: Vec<BackendAddr>,
    /// Adds of a name waiting for its first lookup, by ticket.
    checks: HashMap<u64, PendingAdd>,
    next_ticket: u64,
    /// Cluster mode: the answers of checks whose change went to the store, applied when the
    /// change is installed (so the API's answer already shows the addresses).
    checked: HashMap<String, Vec<SocketAddr>>,
}

struct PendingAdd {
    change: Change,
    allow_unresolved: bool,
}

fn lookup_of(settings: &Settings) -> Lookup {
    match settings.control.resolve.dns_server {
        Some(server) => Lookup::Server(server),
        None => Lookup::System,
    }
}

impl Dns {
    /// Looks every configured name up once (checking the `--backend` names), then starts the
    /// resolver thread, which answers through `link`.
    pub(crate) fn start(
        settings: &Settings,
        state: &mut ControlState,
        link: ControlLink,
    ) -> Result<Dns, String> {
        let lookup = lookup_of(settings);
        let cfg = &settings.control.resolve;
        let mut answers = HashMap::new();
        for spec in settings.backends.iter().filter(|b| b.addr.is_name()) {
            let name = spec.addr.to_string();
            let answer = resolve(lookup, &name).map(|(addrs, _)| addrs);
            if let (Err(e), false) = (&answer, cfg.allow_unresolved) {
                return Err(format!(
                    "--backend {name}: {e} (pass --allow-unresolved to start anyway: it serves \
                     nothing until it resolves)"
                ));
            }
            answers.insert(name, answer);
        }
        let followed: Vec<BackendAddr> = state.names.iter().map(|n| n.addr.clone()).collect();
        let names: Vec<String> = followed.iter().map(BackendAddr::to_string).collect();
        for name in &names {
            let answer = answers
                .remove(name)
                .unwrap_or_else(|| resolve(lookup, name).map(|(addrs, _)| addrs));
            // Members present at start count as eligible since start: no slow start at boot.
            state.apply_answer(name, answer, 0, 0);
        }
        let deliver = move |answer: Answer| link.send(ControlMsg::Resolved(answer));
        let resolver = Resolver::spawn(lookup, cfg.interval_ms, deliver)
            .map_err(|e| format!("cannot start the resolver thread: {e}"))?;
        resolver.follow(names);
        Ok(Dns {
            resolver: Some(resolver),
            followed,
            checks: HashMap::new(),
            next_ticket: CHECK_TICKET_BASE,
            checked: HashMap::new(),
        })
    }

    /// Ends the resolver thread.
    pub(crate) fn stop(&mut self) {
        self.resolver = None;
    }
}

impl Control {
    /// Tells the resolver thread the names to follow, when they changed (checked every loop
    /// iteration without allocating).
    pub(crate) fn follow_names(&mut self) {
        let names = &self.state.names;
        let same = names.len() == self.dns.followed.len()
            && names
                .iter()
                .zip(&self.dns.followed)
                .all(|(n, f)| &n.addr == f);
        if same {
            return;
        }
        self.dns.followed = names.iter().map(|n| n.addr.clone()).collect();
        if let Some(r) = &self.dns.resolver {
            r.follow(
                self.dns
                    .followed
                    .iter()
                    .map(BackendAddr::to_string)
                    .collect(),
            );
        }
    }

    /// Cluster mode, after an install: a name this instance checked for the API starts from the
    /// check's answer rather than waiting for its first lookup. Answers of checks whose change
    /// is not in this install are dropped (the change failed, or another came first): that name
    /// is then looked up as soon as it is installed.
    pub(crate) fn apply_checked_answers(&mut self) {
        let deadline = self.now_ms + self.cfg.drain_timeout_ms;
        for (name, addrs) in std::mem::take(&mut self.dns.checked) {
            let pending = self.state.names.iter().any(|n| {
                n.addr.to_string() == name && n.lookup == super::state::LookupState::Pending
            });
            if pending
                && self
                    .state
                    .apply_answer(&name, Ok(addrs), self.now_ms, deadline)
            {
                self.mark_changed();
            }
        }
    }

    /// Adds a backend given by name once a first lookup of it is done: the answer comes with the
    /// ticket. A name that does not resolve is refused (422) unless `allow_unresolved`.
    pub(crate) fn add_name(&mut self, change: Change, allow_unresolved: bool) -> Reply {
        let Change::Add { addr, .. } = &change else {
            return Reply::Now(AdminResponse::error(500, "not an addition"));
        };
        if self.cluster.is_none() && self.state.find_name(addr).is_some() {
            return Reply::Now(AdminResponse::error(
                409,
                &format!("backend {addr} already exists"),
            ));
        }
        let Some(resolver) = &self.dns.resolver else {
            return Reply::Now(AdminResponse::error(503, "the resolver thread is gone"));
        };
        let ticket = self.dns.next_ticket;
        self.dns.next_ticket += 1;
        resolver.check(ticket, addr.to_string());
        self.dns.checks.insert(
            ticket,
            PendingAdd {
                change,
                allow_unresolved,
            },
        );
        Reply::Later(ticket)
    }

    /// An answer from the resolver thread: a check for the admin API, or a followed name's.
    pub(crate) fn on_answer(&mut self, answer: Answer) {
        let Some(ticket) = answer.ticket else {
            let deadline = self.now_ms + self.cfg.drain_timeout_ms;
            if self
                .state
                .apply_answer(&answer.name, answer.addrs, self.now_ms, deadline)
            {
                self.mark_changed();
            }
            return;
        };
        let Some(pending) = self.dns.checks.remove(&ticket) else {
            return;
        };
        if let (Err(e), false) = (&answer.addrs, pending.allow_unresolved) {
            let resp = AdminResponse::error(
                422,
                &format!(
                    "{e}; nothing was added (send \"allow_unresolved\": true to add it anyway: \
                     it serves nothing until it resolves)"
                ),
            );
            self.answer(ticket, resp);
            return;
        }
        if self.cluster.is_some() {
            // The instance that took the call checked the name; every instance, this one
            // included, resolves it itself once it installs the change.
            if let (Ok(addrs), Change::Add { addr, .. }) = (&answer.addrs, &pending.change) {
                self.dns.checked.insert(addr.to_string(), addrs.clone());
            }
            if let Reply::Now(resp) = self.cluster_submit(ticket, pending.change) {
                self.answer(ticket, resp);
            }
            return;
        }
        let change = pending.change;
        let resp = match self.apply_local(&change) {
            Err(e) => change_error(e),
            Ok((revision, record)) => {
                let deadline = self.now_ms + self.cfg.drain_timeout_ms;
                if let Record::Backend(b) = &record {
                    self.state.apply_answer(
                        &b.address.to_string(),
                        answer.addrs,
                        self.now_ms,
                        deadline,
                    );
                    self.follow_names();
                }
                self.committed_response(&change, revision, record)
            }
        };
        self.answer(ticket, resp);
    }
}
