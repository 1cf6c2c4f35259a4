//! What a worker routes by: the current backend table and the strategy built from it, the pool of
//! connections per backend, and the budgets that bound how often a request is sent (the shared
//! per-id attempt budget, this worker's early-retry budget).
//!
//! A table version arrives from the control thread as a whole ([`Core::install_table`]); the
//! worker rebuilds its strategy from it, reads once what the strategy wants reported
//! ([`crate::strategy::Feedback`]), moves each backend's pool slot to the backend's new position,
//! and closes what the new version no longer routes to. Positions in a table are [`TableIndex`]es;
//! a connection remembers its backend's position only as a hint, checked by backend id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::debug;

use crate::backend::{Backend, BackendId, BackendTable};
use crate::config::ProxyConfig;
use crate::retry::budget::IdBudget;
use crate::retry::EarlyRetryBudget;
use crate::strategy::{self, Feedback, Strategy};
use crate::worker::conn::BackendState;
pub(super) use crate::worker::keys::TableIndex;
use crate::worker::pool::Pool;
use crate::worker::Core;

pub(super) struct Routing {
    pub(super) table: Arc<BackendTable>,
    pub(super) strategy: Box<dyn Strategy>,
    /// What to report about attempts and add to responses, for this table's strategy.
    pub(super) feedback: Feedback,
    pub(super) pool: Pool,
    /// Candidate list for retries (eligible backends not tried yet).
    pub(super) scratch: Vec<usize>,
    /// The attempt budget per request id, shared by all workers.
    pub(super) budget: Arc<IdBudget>,
    /// Early retries after `--per-try-timeout` this worker may still make.
    pub(super) early_retries: EarlyRetryBudget,
    /// Seeds this worker's strategies, so workers do not move in lockstep.
    seed: u64,
    /// The version of `table`, for the control thread (see
    /// [`crate::link::Workers::installed_version`]).
    installed_version: Arc<AtomicU64>,
}

impl Routing {
    pub(super) fn new(
        table: Arc<BackendTable>,
        cfg: &ProxyConfig,
        budget: Arc<IdBudget>,
        seed: u64,
        installed_version: Arc<AtomicU64>,
        now_ms: u64,
    ) -> Routing {
        let strategy = strategy::build(table.strategy, &table.params, &table.backends, seed);
        Routing {
            feedback: feedback(strategy.as_ref(), &table),
            pool: Pool::new(table.backends.len(), cfg),
            table,
            strategy,
            scratch: Vec::new(),
            budget,
            early_retries: EarlyRetryBudget::new(cfg.per_try_budget_percent, now_ms),
            seed,
            installed_version,
        }
    }

    pub(super) fn backend(&self, i: TableIndex) -> &Backend {
        &self.table.backends[i.0]
    }

    /// Position of backend `id` in the current table.
    pub(super) fn position(&self, id: BackendId) -> Option<TableIndex> {
        self.table.position(id).map(TableIndex)
    }
}

/// What settling reports for `table`'s strategy: what the strategy asks for, plus latencies when
/// the control thread wants them (`adaptive` reads them to choose a strategy).
pub(super) fn feedback(strategy: &dyn Strategy, table: &BackendTable) -> Feedback {
    let mut feedback = strategy.feedback();
    feedback.latency |= table.latency_aware;
    feedback
}

impl Core {
    /// Switches to a new table version: each backend's slot (idle connections, connection count,
    /// queue) follows it by id. Idle connections to backends that left or may no longer take
    /// traffic are closed, and requests queued for them are routed again.
    pub(super) fn install_table(&mut self, table: Arc<BackendTable>) {
        // Counts so far go out under the old layout; the new ones follow the new table's order.
        self.flush_metrics(&table);
        let routing = &mut self.routing;
        let to_close = routing
            .pool
            .remap(&routing.table, &table, &mut self.conns.wake);
        // Every connection learns its backend's new position.
        for b in self.conns.backends_mut() {
            if let Some(j) = table.position_hinted(b.backend_id, b.table_index.0) {
                b.table_index = TableIndex(j);
            }
        }
        routing.strategy =
            strategy::build(table.strategy, &table.params, &table.backends, routing.seed);
        routing.feedback = feedback(routing.strategy.as_ref(), &table);
        debug!("worker installed backend table version {}", table.version);
        let version = table.version;
        routing.table = table;
        // Closed under the new table, whose slots now count them.
        for bk in to_close {
            self.close_backend(bk);
        }
        // Release: the in-flight counts of picks made under the old table are visible to the
        // control thread before the version that says this worker stopped making them.
        self.routing
            .installed_version
            .store(version, Ordering::Release);
    }

    /// Closes every client bound to backend `id`, and idle connections to it.
    pub(super) fn sever(&mut self, id: BackendId) {
        let bound: Vec<_> = self
            .conns
            .backends()
            .filter(|(_, b)| b.backend_id == id)
            .map(|(bk, _)| bk)
            .collect();
        for bk in bound {
            let Some(b) = self.conns.backend(bk) else {
                continue;
            };
            match b.state() {
                BackendState::Idle => self.close_backend(bk),
                BackendState::Busy | BackendState::Connecting => self.close_client(b.client),
            }
        }
    }
}
