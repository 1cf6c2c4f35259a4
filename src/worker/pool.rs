//! A worker's connections per backend: the idle pool that lets a keep-alive request skip the
//! connect, the count that enforces this worker's share of `--backend-max-conns`, and the queue of
//! clients waiting for that count to drop.
//!
//! Each backend has one [`Slot`], indexed like the current table's backends ([`TableIndex`]); a
//! new table moves each slot to its backend's new position ([`Pool::remap`]). A backend connection
//! goes back to the pool when its exchange ends cleanly, the backend still takes traffic and the
//! pool has room ([`Pool::may_pool`]); an idle pooled connection that becomes readable has been
//! closed by its backend and is dropped ([`idle_conn_is_dead`]). When a connection is pooled or
//! closed, the first queued client for that backend is woken to try again.
//!
//! The pool is bounded by time and by what the backend and the worker may hold, not by a small
//! count: closing a connection that a thousand keep-alive clients will need again a moment later
//! only trades it for a connect and a socket in TIME_WAIT. A connection is opened only when none
//! to its backend is idle, so the pool never holds more than the most requests that were in
//! flight at once to that backend, at most this worker's share of `--backend-max-conns` when it
//! is set. Idle connections are reused most recently used first, so the ones a drop in load left
//! over are the ones that stay unused, and `--pool-idle-timeout` closes each after that long idle
//! (JBoss's connection pool works this way: most recently used first, idle ones purged after a
//! timeout; HAProxy's `pool-purge-delay` purges idle server connections periodically to the same
//! end, with no count limit by default). And a connection is pooled only while the worker's
//! backend connections do not outnumber the clients it may hold (its share of `--max-conns`,
//! which defaults to half the open-file limit for that reason), so descriptors and memory stay
//! bounded across many backends. `--pool-max-idle` adds a count of its own when wanted.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::backend::{BackendStats, BackendTable};
use crate::config::ProxyConfig;
use crate::worker::conn::{BackendState, Ready};
use crate::worker::keys::{BackendConnKey, ClientKey, TableIndex};
use crate::worker::Core;

/// A worker's view of one backend.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// Idle pooled connections, most recently used last.
    idle: Vec<BackendConnKey>,
    /// Connections this worker has open to the backend, idle ones included.
    conns: usize,
    /// Clients waiting for a connection while the backend is at `--backend-max-conns`; every
    /// change is mirrored in the backend's shared `queued` count.
    queue: VecDeque<ClientKey>,
}

impl Slot {
    fn enqueue(&mut self, k: ClientKey, stats: &BackendStats) {
        self.queue.push_back(k);
        stats.queued.fetch_add(1, Ordering::Relaxed);
    }

    fn dequeue(&mut self, stats: &BackendStats) -> Option<ClientKey> {
        let k = self.queue.pop_front()?;
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        Some(k)
    }

    /// Takes client `k` out of the queue if it waits there.
    fn leave(&mut self, k: ClientKey, stats: &BackendStats) {
        if let Some(i) = self.queue.iter().position(|&x| x == k) {
            self.queue.remove(i);
            stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Empties the queue into `out` (its clients are routed again).
    fn drain_queue(&mut self, stats: &BackendStats, out: &mut Vec<ClientKey>) {
        stats
            .queued
            .fetch_sub(self.queue.len() as u64, Ordering::Relaxed);
        out.extend(self.queue.drain(..));
    }
}

/// This worker's share of `--backend-max-conns` (`usize::MAX` when there is no limit): each worker
/// takes an equal share, rounded up.
pub(super) fn conn_limit(backend_max_conns: usize, workers: usize) -> usize {
    if backend_max_conns == 0 {
        usize::MAX
    } else {
        backend_max_conns.div_ceil(workers.max(1))
    }
}

/// What the pool's decision reads about a backend connection whose exchange ended.
#[derive(Clone, Copy, Debug)]
pub(super) struct Returned {
    /// The exchange left the connection clean.
    pub(super) reusable: bool,
    pub(super) state: BackendState,
    pub(super) shutting_down: bool,
    /// Its backend still takes traffic.
    pub(super) backend_eligible: bool,
    /// Idle connections to its backend in the pool now.
    pub(super) idle: usize,
    /// Connections this worker has open to all backends, this one included.
    pub(super) worker_conns: usize,
}

/// An idle pooled connection has nothing to say: data or a hang-up on it means the backend is done
/// with it.
pub(super) fn idle_conn_is_dead(ready: &Ready) -> bool {
    ready.readable || ready.hup
}

/// Per backend, indexed like the current table's backends.
pub(super) struct Pool {
    slots: Vec<Slot>,
    /// This worker's share of `--backend-max-conns` ([`conn_limit`]).
    limit: usize,
    /// Most idle connections to one backend: `--pool-max-idle`, within `limit`.
    max_idle: usize,
    /// Most connections to all backends this worker pools beside: its share of `--max-conns`.
    max_worker_conns: usize,
}

impl Pool {
    pub(super) fn new(backends: usize, cfg: &ProxyConfig) -> Pool {
        let workers = cfg.workers.max(1);
        let limit = conn_limit(cfg.backend_max_conns, workers);
        Pool {
            slots: (0..backends).map(|_| Slot::default()).collect(),
            limit,
            max_idle: cfg.pool_max_idle.min(limit),
            max_worker_conns: cfg.max_conns.div_ceil(workers).max(1),
        }
    }

    /// Whether a backend connection whose exchange ended goes back to the pool: the exchange left
    /// it clean, it carried a request to the end (busy, not still connecting), the worker is not
    /// shutting down, the backend still takes traffic, its backend's idle connections are fewer
    /// than `--pool-max-idle` (if set) and its share of `--backend-max-conns`, and the worker's
    /// backend connections do not outnumber the clients it may hold.
    pub(super) fn may_pool(&self, r: Returned) -> bool {
        r.reusable
            && r.state == BackendState::Busy
            && !r.shutting_down
            && r.backend_eligible
            && r.idle < self.max_idle
            && r.worker_conns <= self.max_worker_conns
    }

    /// Every connection this worker may open to backend `i` is open and none is idle.
    pub(super) fn at_limit(&self, i: TableIndex) -> bool {
        let slot = &self.slots[i.0];
        slot.idle.is_empty() && slot.conns >= self.limit
    }

    pub(super) fn queue_len(&self, i: TableIndex) -> usize {
        self.slots[i.0].queue.len()
    }

    pub(super) fn enqueue(&mut self, i: TableIndex, k: ClientKey, stats: &BackendStats) {
        self.slots[i.0].enqueue(k, stats);
    }

    /// The most recently used idle connection to backend `i`.
    pub(super) fn take_idle(&mut self, i: TableIndex) -> Option<BackendConnKey> {
        self.slots[i.0].idle.pop()
    }

    /// Every idle connection to backend `i`.
    pub(super) fn take_all_idle(&mut self, i: TableIndex) -> Vec<BackendConnKey> {
        std::mem::take(&mut self.slots[i.0].idle)
    }

    /// Every idle connection to any backend.
    pub(super) fn drain_idle(&mut self) -> Vec<BackendConnKey> {
        self.slots
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.idle))
            .collect()
    }

    pub(super) fn idle_len(&self, i: TableIndex) -> usize {
        self.slots[i.0].idle.len()
    }

    pub(super) fn park(&mut self, i: TableIndex, bk: BackendConnKey) {
        self.slots[i.0].idle.push(bk);
    }

    /// A connection to backend `i` was opened.
    pub(super) fn opened(&mut self, i: TableIndex) {
        self.slots[i.0].conns += 1;
    }

    /// Connection `bk` to backend `i` was closed (it sat in the pool if `was_idle`).
    pub(super) fn closed(&mut self, i: TableIndex, bk: BackendConnKey, was_idle: bool) {
        if let Some(slot) = self.slots.get_mut(i.0) {
            if was_idle {
                slot.idle.retain(|&x| x != bk);
            }
            slot.conns = slot.conns.saturating_sub(1);
        }
    }

    /// Lets the first client queued for backend `i` try again, if the backend has room now.
    pub(super) fn wake_one(
        &mut self,
        i: TableIndex,
        table: &BackendTable,
        wake: &mut Vec<ClientKey>,
    ) {
        let limit = self.limit;
        if let (Some(slot), Some(b)) = (self.slots.get_mut(i.0), table.backends.get(i.0)) {
            if slot.conns < limit || !slot.idle.is_empty() {
                if let Some(k) = slot.dequeue(&b.stats) {
                    wake.push(k);
                }
            }
        }
    }

    /// Takes client `k` out of every backend's queue.
    pub(super) fn leave_queues(&mut self, k: ClientKey, table: &BackendTable) {
        for (slot, b) in self.slots.iter_mut().zip(table.backends.iter()) {
            slot.leave(k, &b.stats);
        }
    }

    /// Follows a new table version: each backend's slot moves to the backend's new position, by
    /// id. Idle connections to backends that left or may no longer take traffic are returned (to
    /// be closed), and clients queued for them go to `wake` (to be routed again).
    pub(super) fn remap(
        &mut self,
        old: &BackendTable,
        new: &BackendTable,
        wake: &mut Vec<ClientKey>,
    ) -> Vec<BackendConnKey> {
        let mut slots: Vec<Slot> = (0..new.backends.len()).map(|_| Slot::default()).collect();
        let mut to_close = Vec::new();
        for (i, mut slot) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            let position = old.backends.get(i).and_then(|b| new.position(b.id));
            let stats = &old.backends[i].stats;
            match position {
                Some(j) => {
                    if !new.backends[j].is_eligible() {
                        to_close.append(&mut slot.idle);
                        slot.drain_queue(stats, wake);
                    }
                    slots[j] = slot;
                }
                None => {
                    to_close.append(&mut slot.idle);
                    slot.drain_queue(stats, wake);
                }
            }
        }
        self.slots = slots;
        to_close
    }
}

impl Core {
    /// Detaches client `k`'s backend connection: back to the idle pool when `reusable` and
    /// [`may_pool`] agrees, closed otherwise. Either way it stops counting as in flight.
    pub(super) fn unbind_backend(&mut self, k: ClientKey, reusable: bool) {
        let Some(bk) = self.conns.exchange_mut(k).and_then(|ex| ex.backend.take()) else {
            return;
        };
        let Core {
            conns,
            routing,
            io,
            cfg,
            life,
            now,
            ..
        } = self;
        let worker_conns = conns.backend_count();
        let b = &mut conns[bk];
        let state = b.state();
        let table = &routing.table;
        let position = table
            .position_hinted(b.backend_id, b.table_index.0)
            .map(TableIndex);
        let pooled = position.filter(|&i| {
            routing.pool.may_pool(Returned {
                reusable,
                state,
                shutting_down: life.shutting_down,
                backend_eligible: table.backends[i.0].is_eligible(),
                idle: routing.pool.idle_len(i),
                worker_conns,
            })
        });
        b.release();
        let Some(i) = pooled else {
            self.close_backend(bk);
            return;
        };
        b.park();
        b.table_index = i;
        b.deadline.set(
            now.ms + cfg.pool_idle_timeout_ms,
            bk.token(),
            &mut io.timers,
        );
        routing.pool.park(i, bk);
        routing.pool.wake_one(i, table, &mut conns.wake);
    }

    /// Closes a backend connection, taking it out of its pool if it is idle.
    pub(super) fn close_backend(&mut self, bk: BackendConnKey) {
        let Some(b) = self.conns.remove_backend(bk) else {
            return;
        };
        let was_idle = b.state() == BackendState::Idle;
        let position = self
            .routing
            .table
            .position_hinted(b.backend_id, b.table_index.0);
        drop(b);
        let Some(i) = position.map(TableIndex) else {
            return;
        };
        self.routing.pool.closed(i, bk, was_idle);
        self.routing
            .pool
            .wake_one(i, &self.routing.table, &mut self.conns.wake);
    }

    /// Takes client `k` out of any backend queue.
    pub(super) fn leave_queue(&mut self, k: ClientKey) {
        let queued = self
            .conns
            .exchange_mut(k)
            .is_some_and(|ex| std::mem::take(&mut ex.queued));
        if queued {
            self.routing.pool.leave_queues(k, &self.routing.table);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::strategy::StrategyKind;

    fn table(ids: &[u64]) -> BackendTable {
        let addr = "127.0.0.1:1".parse().unwrap();
        let backends = ids.iter().map(|&id| Backend::new(id, addr, 1)).collect();
        BackendTable::new(1, backends, StrategyKind::RoundRobin)
    }

    #[test]
    fn each_worker_takes_an_equal_share_of_the_backend_connection_limit_rounded_up() {
        assert_eq!(conn_limit(0, 4), usize::MAX, "0 = no limit");
        assert_eq!(conn_limit(10, 4), 3);
        assert_eq!(conn_limit(8, 4), 2);
        assert_eq!(conn_limit(1, 4), 1);
    }

    /// A clean return of a busy connection with `idle` connections to its backend pooled already.
    fn returned(idle: usize, worker_conns: usize) -> Returned {
        Returned {
            reusable: true,
            state: BackendState::Busy,
            shutting_down: false,
            backend_eligible: true,
            idle,
            worker_conns,
        }
    }

    /// Defaults, with `workers` workers and room for 20,000 clients.
    fn config(workers: usize) -> ProxyConfig {
        ProxyConfig {
            workers,
            max_conns: 20_000,
            ..ProxyConfig::default()
        }
    }

    #[test]
    fn a_connection_is_pooled_only_after_a_clean_exchange_to_a_backend_that_takes_traffic() {
        let pool = Pool::new(1, &config(1));
        assert!(pool.may_pool(returned(3, 10)));
        let not = |change: fn(&mut Returned)| {
            let mut r = returned(3, 10);
            change(&mut r);
            !pool.may_pool(r)
        };
        assert!(
            not(|r| r.state = BackendState::Connecting),
            "never connected"
        );
        assert!(not(|r| r.shutting_down = true), "shutting down");
        assert!(
            not(|r| r.backend_eligible = false),
            "backend drained or down"
        );
        assert!(not(|r| r.reusable = false), "not reusable");
    }

    #[test]
    fn by_default_a_thousand_keep_alive_clients_find_their_connections_pooled() {
        // 1,000 clients on 2 workers, every connection back at once: none is closed on return.
        let pool = Pool::new(1, &config(2));
        assert!((0..1_000).all(|idle| pool.may_pool(returned(idle, 1_000))));
    }

    #[test]
    fn the_backend_connection_limit_bounds_the_idle_pool() {
        let pool = Pool::new(
            1,
            &ProxyConfig {
                backend_max_conns: 100,
                ..config(2)
            },
        );
        assert!(pool.may_pool(returned(49, 50)));
        assert!(
            !pool.may_pool(returned(50, 51)),
            "50 is this worker's share"
        );
    }

    #[test]
    fn a_worker_pools_no_more_backend_connections_than_it_may_hold_clients() {
        // 20,000 clients on 2 workers: each holds 10,000, and as many backend connections beside.
        let pool = Pool::new(1, &config(2));
        assert!(pool.may_pool(returned(9_999, 10_000)));
        assert!(
            !pool.may_pool(returned(5_000, 10_001)),
            "other backends' idle connections count too"
        );
    }

    #[test]
    fn pool_max_idle_adds_a_count_and_zero_keeps_none() {
        let capped = |n| {
            Pool::new(
                1,
                &ProxyConfig {
                    pool_max_idle: n,
                    ..config(1)
                },
            )
        };
        assert!(capped(4).may_pool(returned(3, 10)));
        assert!(!capped(4).may_pool(returned(4, 10)));
        assert!(!capped(0).may_pool(returned(0, 1)));
    }

    #[test]
    fn an_idle_pooled_connection_that_turns_readable_or_hangs_up_is_dead() {
        let mut ready = Ready::default();
        assert!(!idle_conn_is_dead(&ready));
        ready.writable = true;
        assert!(!idle_conn_is_dead(&ready));
        ready.readable = true;
        assert!(idle_conn_is_dead(&ready));
        let hup = Ready {
            hup: true,
            ..Ready::default()
        };
        assert!(idle_conn_is_dead(&hup));
    }

    #[test]
    fn the_shared_queued_count_follows_the_queue() {
        let t = table(&[1]);
        let stats = &t.backends[0].stats;
        let mut pool = Pool::new(1, &ProxyConfig::default());
        pool.enqueue(TableIndex(0), ClientKey(1), stats);
        pool.enqueue(TableIndex(0), ClientKey(2), stats);
        pool.enqueue(TableIndex(0), ClientKey(3), stats);
        assert_eq!(stats.queued(), 3);
        pool.leave_queues(ClientKey(2), &t);
        assert_eq!((stats.queued(), pool.queue_len(TableIndex(0))), (2, 2));
        let mut wake = Vec::new();
        pool.wake_one(TableIndex(0), &t, &mut wake);
        assert_eq!(wake, vec![ClientKey(1)], "first come, first woken");
        assert_eq!(stats.queued(), 1);
    }

    #[test]
    fn a_queued_client_is_woken_only_when_its_backend_has_room() {
        let t = table(&[1]);
        let cfg = ProxyConfig {
            backend_max_conns: 1,
            workers: 1,
            ..ProxyConfig::default()
        };
        let mut pool = Pool::new(1, &cfg);
        let i = TableIndex(0);
        pool.opened(i);
        assert!(pool.at_limit(i));
        pool.enqueue(i, ClientKey(5), &t.backends[0].stats);
        let mut wake = Vec::new();
        pool.wake_one(i, &t, &mut wake);
        assert!(wake.is_empty());
        pool.closed(i, BackendConnKey(0), false);
        assert!(!pool.at_limit(i));
        pool.wake_one(i, &t, &mut wake);
        assert_eq!(wake, vec![ClientKey(5)]);
    }

    #[test]
    fn a_new_table_keeps_each_backends_pool_by_id_and_closes_the_pools_of_backends_that_left() {
        let old = table(&[1, 2, 3]);
        let mut new = table(&[3, 1]);
        new.backends[0].enabled = false;
        let mut pool = Pool::new(3, &ProxyConfig::default());
        for (i, bk) in [(0, 10), (1, 20), (2, 30)] {
            pool.opened(TableIndex(i));
            pool.park(TableIndex(i), BackendConnKey(bk));
        }
        pool.enqueue(TableIndex(2), ClientKey(7), &old.backends[2].stats);
        let mut wake = Vec::new();
        let mut closed = pool.remap(&old, &new, &mut wake);
        closed.sort_by_key(|bk| bk.0);
        assert_eq!(
            closed,
            vec![BackendConnKey(20), BackendConnKey(30)],
            "2 left, 3 is disabled"
        );
        assert_eq!(wake, vec![ClientKey(7)], "routed again");
        assert_eq!(pool.take_idle(TableIndex(1)), Some(BackendConnKey(10)));
        assert_eq!(pool.take_idle(TableIndex(0)), None);
    }
}
