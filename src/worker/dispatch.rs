//! Choosing a backend for a request and getting a connection to it: the candidate list, the strategy,
//! the per-worker idle pool, non-blocking connects, and what happens when an attempt fails.
//!
//! A request (or a TCP connection) gets up to `--max-attempts` attempts on distinct backends. Whether
//! a failed attempt may be retried depends on what the backend could have seen: a failed connect saw
//! nothing; a reused pooled connection that closes before answering a byte most likely never saw the
//! request (the backend closed it while idle); anything else is answered with an error.

use std::io;
use std::sync::atomic::Ordering;

use log::debug;
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::backend::BackendStats;
use crate::config::Mode;
use crate::retry::budget::Reserve;
use crate::retry::Outcome;
use crate::strategy::sticky::sticky_token;
use crate::strategy::{Choice, PickContext, StrategyKind};
use crate::worker::conn::Exchange;
use crate::worker::conn::{BackendConn, BackendState, ClientState, Ready, MAX_TRIED};
use crate::worker::timer::Deadline;
use crate::worker::{Core, Next, BACKEND_BIT};

/// Why an attempt failed: a connect that did not succeed (refused, unreachable, timed out), a
/// connection that broke before the response was complete, an answer that is not HTTP/1.x, or no
/// answer within the response timeout.
pub use crate::metrics::FailureKind as Failure;

/// A worker's view of one backend.
#[derive(Debug, Default)]
pub struct Slot {
    /// Idle pooled connections, most recently used last.
    pub idle: Vec<usize>,
    /// Connections this worker has open to the backend, idle ones included.
    pub conns: usize,
    /// Clients waiting for a connection while the backend is at `--backend-max-conns`; every
    /// change is mirrored in the backend's shared `queued` count.
    queue: std::collections::VecDeque<usize>,
}

impl Slot {
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    fn enqueue(&mut self, k: usize, stats: &BackendStats) {
        self.queue.push_back(k);
        stats.queued.fetch_add(1, Ordering::Relaxed);
    }

    fn dequeue(&mut self, stats: &BackendStats) -> Option<usize> {
        let k = self.queue.pop_front()?;
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        Some(k)
    }

    /// Takes client `k` out of the queue if it waits there.
    fn leave(&mut self, k: usize, stats: &BackendStats) {
        if let Some(i) = self.queue.iter().position(|&x| x == k) {
            self.queue.remove(i);
            stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Empties the queue into `out` (its clients are routed again).
    pub fn drain_queue(&mut self, stats: &BackendStats, out: &mut Vec<usize>) {
        stats
            .queued
            .fetch_sub(self.queue.len() as u64, Ordering::Relaxed);
        out.extend(self.queue.drain(..));
    }
}

/// The budget's clock: seconds of the process clock.
pub fn now_s(now_ms: u64) -> u32 {
    (now_ms / 1000) as u32
}

/// Result of checking a connect in progress.
enum ConnectProgress {
    Pending,
    Connected,
    Failed(io::Error),
}

impl Core {
    /// Picks a backend for client `k`'s exchange and binds a connection to it (pooled or new).
    pub fn dispatch(&mut self, k: usize) -> Next {
        let Some(c) = self.clients.get_mut(k) else {
            return Next::Close;
        };
        let Some(ex) = c.ex.as_mut() else {
            return Next::Close;
        };
        if usize::from(ex.attempts) >= MAX_TRIED {
            return self.no_backend(k);
        }
        let candidates: &[usize] = if ex.attempts == 0 || self.strategy.retries_may_repeat() {
            &self.table.eligible
        } else {
            self.scratch.clear();
            let tried = ex.tried();
            let backends = &self.table.backends;
            self.scratch.extend(
                self.table
                    .eligible
                    .iter()
                    .copied()
                    .filter(|&i| !tried.contains(&backends[i].id)),
            );
            &self.scratch
        };
        if candidates.is_empty() {
            return self.no_backend(k);
        }
        let key = match (&ex.req, self.cfg.mode) {
            (Some(req), Mode::Http) => req.bytes().get(ex.key.clone()).unwrap_or(b""),
            _ => b"",
        };
        let ctx = PickContext {
            client_ip: c.peer_ip,
            key,
            now_ms: self.now_ms,
            tried: ex.tried(),
            force: ex.pace_until_ms != 0 && self.now_ms >= ex.pace_until_ms,
        };
        let idx = match self.strategy.choose(&self.table.backends, candidates, &ctx) {
            Choice::Backend(i) => i,
            Choice::Wait { ms } => {
                // Every backend's rate budget is spent: wait for one, but not past the deadline.
                if ex.pace_until_ms == 0 {
                    ex.pace_until_ms = self.now_ms + self.cfg.max_pacing_wait_ms;
                }
                let wake = (self.now_ms + ms)
                    .min(ex.pace_until_ms)
                    .max(self.now_ms + 1);
                c.deadline.set(wake, k, &mut self.timers);
                return Next::Wait;
            }
        };
        ex.pace_until_ms = 0;
        // At its connection limit: wait in the backend's queue for a connection.
        let limit = self.cfg.backend_max_conns.div_ceil(self.cfg.workers.max(1));
        let slot = &mut self.slots[idx];
        if self.cfg.backend_max_conns != 0 && slot.idle.is_empty() && slot.conns >= limit {
            if slot.queue_len() >= self.cfg.backend_queue {
                return match self.cfg.mode {
                    Mode::Http => self.answer(
                        k,
                        503,
                        "backend connection limit reached and its queue is full",
                        false,
                    ),
                    Mode::Tcp => Next::Close,
                };
            }
            slot.enqueue(k, &self.table.backends[idx].stats);
            ex.queued = true;
            c.deadline
                .set(self.now_ms + self.cfg.queue_timeout_ms, k, &mut self.timers);
            return Next::Wait;
        }
        if let Some(id) = ex.id {
            match self
                .budget
                .reserve(id, self.cfg.max_attempts, now_s(self.now_ms))
            {
                Reserve::Granted(_) => {}
                Reserve::Accepted => {
                    return self.answer(k, 200, "this request id was already accepted", false)
                }
                Reserve::Exhausted => {
                    return self.answer(k, 503, "no attempts left for this request id", false)
                }
            }
        }
        let backend = &self.table.backends[idx];
        ex.set_cookie = None;
        if self.table.strategy == StrategyKind::Sticky && self.cfg.mode == Mode::Http {
            let token = sticky_token(backend);
            if key != token {
                ex.set_cookie = Some(token);
            }
        }
        ex.tried[usize::from(ex.attempts)] = backend.id;
        ex.attempts += 1;
        ex.attempt_started_us = self.now_us;
        ex.per_try_pending = self.cfg.per_try_timeout_ms != 0 && self.cfg.mode == Mode::Http;
        if ex.per_try_pending && ex.attempts == 1 {
            self.early_retries.deposit();
        }
        self.metrics.current.attempts += 1;
        if ex.attempts > 1 {
            self.metrics.current.retries += 1;
        }

        if let Some(bk) = self.slots[idx].idle.pop() {
            ex.reused_conn = true;
            ex.backend = Some(bk);
            let b = &mut self.backends[bk];
            b.state = BackendState::Busy;
            b.client = k;
            b.deadline.clear();
            b.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let wait_ms = self.response_wait_ms(k);
            self.set_deadline(k, wait_ms);
            return Next::Again;
        }

        ex.reused_conn = false;
        let (addr, backend_id, stats) = (backend.addr, backend.id, backend.stats.clone());
        let mut sock = match TcpStream::connect(addr) {
            Ok(sock) => sock,
            Err(e) => {
                debug!("connect to {addr}: {e}");
                return self.attempt_failed(k, Failure::Connect);
            }
        };
        let _ = sock.set_nodelay(true);
        let entry = self.backends.vacant_entry();
        let bk = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(bk | BACKEND_BIT), interest)
        {
            debug!("register backend connection: {e}");
            return self.attempt_failed(k, Failure::Connect);
        }
        stats.conns.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.slots[idx].conns += 1;
        entry.insert(BackendConn {
            sock,
            ready: Ready::default(),
            state: BackendState::Connecting,
            backend_id,
            table_index: idx,
            stats,
            client: k,
            deadline: Deadline::default(),
        });
        let Some(ex) = self.clients.get_mut(k).and_then(|c| c.ex.as_mut()) else {
            return Next::Close;
        };
        ex.backend = Some(bk);
        self.set_deadline(k, self.cfg.connect_timeout_ms);
        Next::Again
    }

    /// Checks the bound backend connection's connect; true once it is usable. On failure the
    /// attempt is failed and `Err` carries what to do next.
    pub fn ensure_connected(&mut self, k: usize, bk: usize) -> Result<bool, Next> {
        match self.connect_progress(bk) {
            ConnectProgress::Connected => {
                self.backends[bk].state = BackendState::Busy;
                let after = match self.cfg.mode {
                    Mode::Http => self.response_wait_ms(k),
                    Mode::Tcp => self.cfg.idle_timeout_ms,
                };
                self.set_deadline(k, after);
                Ok(true)
            }
            ConnectProgress::Pending => Ok(false),
            ConnectProgress::Failed(e) => {
                debug!("connect to backend {}: {e}", self.backends[bk].backend_id);
                Err(self.attempt_failed(k, Failure::Connect))
            }
        }
    }

    fn connect_progress(&mut self, bk: usize) -> ConnectProgress {
        let b = &mut self.backends[bk];
        if b.state != BackendState::Connecting {
            return ConnectProgress::Connected;
        }
        if !b.ready.writable && !b.ready.hup {
            return ConnectProgress::Pending;
        }
        match b.sock.take_error() {
            Ok(Some(e)) | Err(e) => return ConnectProgress::Failed(e),
            Ok(None) => {}
        }
        match b.sock.peer_addr() {
            Ok(_) => ConnectProgress::Connected,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                b.ready.writable = false;
                ConnectProgress::Pending
            }
            Err(e) => ConnectProgress::Failed(e),
        }
    }

    /// Fails the current attempt of client `k`: closes its backend connection, then retries on
    /// another backend when that is safe and attempts remain, or ends the request.
    pub fn attempt_failed(&mut self, k: usize, failure: Failure) -> Next {
        self.record_failure(k, failure);
        let now_s = now_s(self.now_ms);
        let retry = {
            let Some(ex) = self.clients.get(k).and_then(|c| c.ex.as_ref()) else {
                return Next::Close;
            };
            if failure == Failure::Connect {
                // Nothing reached the backend: the attempt does not count against the id's budget.
                if let Some(id) = ex.id {
                    self.budget.refund(id, now_s);
                }
            }
            match self.cfg.mode {
                Mode::Tcp => failure == Failure::Connect && self.attempts_left(ex),
                Mode::Http => {
                    let outcome = match failure {
                        Failure::Connect => Outcome::Connect,
                        Failure::Timeout => Outcome::Timeout,
                        Failure::Broken | Failure::Garbage => Outcome::Broken,
                    };
                    self.cfg.retry.allows(outcome, ex.method) && self.may_send_again(ex, now_s)
                }
            }
        };
        if !retry && self.stale_connection(k, failure) {
            return self.retry_fresh(k);
        }
        self.unbind_backend(k, false);
        if retry {
            self.reset_attempt(k);
            return self.dispatch(k);
        }
        let Some(ex) = self.clients.get_mut(k).and_then(|c| c.ex.as_mut()) else {
            return Next::Close;
        };
        if self.cfg.mode == Mode::Tcp || ex.resp_started {
            return Next::Close;
        }
        match failure {
            Failure::Connect => self.answer(k, 503, "no backend available", false),
            Failure::Timeout => self.answer(k, 504, "backend timed out", false),
            Failure::Broken | Failure::Garbage => self.answer(k, 502, "backend failed", false),
        }
    }

    /// A pooled connection that broke before a byte of answer was most likely closed by the backend
    /// while it sat idle (a keep-alive timeout racing our reuse): the request probably never got
    /// there. Such a request is sent once more on a fresh connection, as browsers and nginx do.
    fn stale_connection(&self, k: usize, failure: Failure) -> bool {
        let Some(ex) = self.clients.get(k).and_then(|c| c.ex.as_ref()) else {
            return false;
        };
        self.cfg.mode == Mode::Http
            && failure == Failure::Broken
            && ex.reused_conn
            && !ex.stale_retried
            && !ex.resp_started
            && ex.resp.as_ref().is_none_or(|r| r.is_empty())
            && self.replayable(ex)
    }

    /// Sends client `k`'s request again on a fresh connection, the failed attempt not counted
    /// against the backend (it may be picked again); its other idle connections, likely as stale,
    /// are closed.
    fn retry_fresh(&mut self, k: usize) -> Next {
        self.unbind_backend(k, false);
        let Some(ex) = self.clients.get_mut(k).and_then(|c| c.ex.as_mut()) else {
            return Next::Close;
        };
        ex.stale_retried = true;
        let id = ex.tried().last().copied();
        ex.attempts = ex.attempts.saturating_sub(1);
        if let Some(i) = id.and_then(|id| self.table.position(id)) {
            let idle = std::mem::take(&mut self.slots[i].idle);
            for bk in idle {
                self.close_backend(bk);
            }
        }
        self.reset_attempt(k);
        self.dispatch(k)
    }

    /// Whether the whole request is still held, within `--retry-buffer`, so it can be sent again.
    /// Whether the request has attempts left, is still whole in its buffer, and its id (if any)
    /// may have another attempt: what every retry needs, whatever made the attempt fail.
    fn may_send_again(&self, ex: &Exchange, now_s: u32) -> bool {
        self.attempts_left(ex)
            && self.replayable(ex)
            && ex
                .id
                .is_none_or(|id| self.budget.would_grant(id, self.cfg.max_attempts, now_s))
    }

    fn attempts_left(&self, ex: &Exchange) -> bool {
        usize::from(ex.attempts) < usize::from(self.cfg.max_attempts)
    }

    pub fn replayable(&self, ex: &Exchange) -> bool {
        ex.replayable && ex.req_body.is_done() && ex.req_len <= self.cfg.retry_buffer
    }

    /// Prepares client `k`'s exchange for another attempt: the request is sent again from its start
    /// and whatever the last backend answered is forgotten.
    pub fn reset_attempt(&mut self, k: usize) {
        let Some(ex) = self.clients.get_mut(k).and_then(|c| c.ex.as_mut()) else {
            return;
        };
        ex.req_sent = 0;
        ex.resp_len = 0;
        ex.resp_phase = crate::worker::conn::RespPhase::Head;
        ex.resp_head = None;
        ex.backend_overran = false;
        if let Some(resp) = ex.resp.as_mut() {
            resp.clear();
        }
    }

    /// Counts a failed attempt of client `k` against its backend, for metrics, the latency
    /// estimate and passive ejection.
    fn record_failure(&mut self, k: usize, failure: Failure) {
        let Some(ex) = self.clients.get(k).and_then(|c| c.ex.as_ref()) else {
            return;
        };
        let Some(&id) = ex.tried().last() else { return };
        let latency_us = self.now_us.saturating_sub(ex.attempt_started_us);
        let Some(i) = self.table.position(id) else {
            return;
        };
        let stats = &self.table.backends[i].stats;
        self.metrics.backend(id, i).record_failure(failure);
        if self.table.latency_aware {
            stats.record_response(latency_us, false, self.now_ms);
        }
        if self.table.strategy == StrategyKind::Bandit {
            stats.learned.observe(false, self.now_ms);
        }
        let in_a_row = stats.note_failure();
        if self.cfg.eject_after > 0 && in_a_row == self.cfg.eject_after {
            self.control.send(crate::link::ControlMsg::Failing(id));
        }
    }

    /// No candidate is left: 503 in HTTP mode, a closed connection in TCP mode.
    fn no_backend(&mut self, k: usize) -> Next {
        match self.cfg.mode {
            Mode::Tcp => Next::Close,
            Mode::Http => self.answer(k, 503, "no backend available", false),
        }
    }

    /// The client's deadline passed in `Proxy` or `Tunnel`: a paced request may go now, a request
    /// body the id waits for is too slow, a queued request waited too long, a bound backend is too
    /// slow (or its connect is).
    pub fn backend_timed_out(&mut self, k: usize) -> Next {
        let Some(ex) = self.clients.get(k).and_then(|c| c.ex.as_ref()) else {
            return Next::Close;
        };
        let Some(bk) = ex.backend else {
            if ex.pace_until_ms != 0 {
                return self.dispatch(k);
            }
            if ex.awaiting_id {
                return self.answer(k, 408, "request body timed out", true);
            }
            if ex.queued {
                self.leave_queue(k);
                return match self.cfg.mode {
                    Mode::Http => self.answer(
                        k,
                        503,
                        "no connection to the backend within the queue timeout",
                        false,
                    ),
                    Mode::Tcp => Next::Close,
                };
            }
            return Next::Close;
        };
        if self.backends[bk].state == BackendState::Connecting {
            return self.attempt_failed(k, Failure::Connect);
        }
        match self.clients[k].state {
            ClientState::Proxy if ex.per_try_pending => self.per_try_expired(k),
            ClientState::Proxy => self.attempt_failed(k, Failure::Timeout),
            _ => Next::Close,
        }
    }

    /// How long client `k` may wait for its backend from now: what is left of the attempt's
    /// `--per-try-timeout` while no answer byte came, `--response-timeout` otherwise.
    pub fn response_wait_ms(&self, k: usize) -> u64 {
        match self.clients.get(k).and_then(|c| c.ex.as_ref()) {
            Some(ex) if ex.per_try_pending => {
                let elapsed_ms = self.now_us.saturating_sub(ex.attempt_started_us) / 1000;
                self.cfg
                    .per_try_timeout_ms
                    .saturating_sub(elapsed_ms)
                    .max(1)
            }
            _ => self.cfg.response_timeout_ms,
        }
    }

    /// The attempt of client `k` passed `--per-try-timeout` without an answer byte. It is sent
    /// to a backend not tried yet when the request may be sent again and the worker's early-retry
    /// budget has room; otherwise it keeps waiting, up to `--response-timeout` from the attempt's
    /// start.
    fn per_try_expired(&mut self, k: usize) -> Next {
        let now_s = now_s(self.now_ms);
        let Some(ex) = self.clients.get(k).and_then(|c| c.ex.as_ref()) else {
            return Next::Close;
        };
        let may_retry = self.cfg.retry.allows_method(ex.method)
            && ex.req_sent == ex.req_len
            && self.may_send_again(ex, now_s)
            && self
                .table
                .eligible
                .iter()
                .any(|&i| !ex.tried().contains(&self.table.backends[i].id));
        let waited_us = self.now_us.saturating_sub(ex.attempt_started_us);
        if let Some(ex) = self.clients.get_mut(k).and_then(|c| c.ex.as_mut()) {
            ex.per_try_pending = false;
        }
        if may_retry && self.early_retries.try_take(self.now_ms) {
            self.metrics.current.early_retries += 1;
            // The backend has taken at least this long: latency-aware strategies learn it.
            let bound = self.clients[k].ex.as_ref().and_then(|ex| ex.backend);
            if let Some(b) = bound.and_then(|bk| self.backends.get(bk)) {
                if self.table.latency_aware {
                    b.stats.record_response(waited_us, true, self.now_ms);
                }
            }
            self.unbind_backend(k, false);
            self.reset_attempt(k);
            return self.dispatch(k);
        }
        let left_ms = self
            .cfg
            .response_timeout_ms
            .saturating_sub(self.cfg.per_try_timeout_ms);
        self.set_deadline(k, left_ms.max(1));
        Next::Wait
    }

    /// Detaches client `k`'s backend connection: back to the idle pool when `reuse` and the backend
    /// still takes traffic, closed otherwise.
    pub fn unbind_backend(&mut self, k: usize, reuse: bool) {
        let Some(bk) = self
            .clients
            .get_mut(k)
            .and_then(|c| c.ex.as_mut())
            .and_then(|ex| ex.backend.take())
        else {
            return;
        };
        let b = &mut self.backends[bk];
        b.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if reuse && !self.shutting_down && b.state == BackendState::Busy {
            let position = self.table.position_hinted(b.backend_id, b.table_index);
            if let Some(i) = position.filter(|&i| self.table.backends[i].is_eligible()) {
                if self.slots[i].idle.len() < self.cfg.pool_max_idle {
                    b.state = BackendState::Idle;
                    b.table_index = i;
                    b.deadline.set(
                        self.now_ms + self.cfg.pool_idle_timeout_ms,
                        bk | BACKEND_BIT,
                        &mut self.timers,
                    );
                    self.slots[i].idle.push(bk);
                    self.wake_one(i);
                    return;
                }
            }
        }
        self.close_backend(bk);
    }

    /// Closes a backend connection, taking it out of its pool if it is idle.
    pub fn close_backend(&mut self, bk: usize) {
        let Some(b) = self.backends.try_remove(bk) else {
            return;
        };
        b.stats.conns.fetch_sub(1, Ordering::Relaxed);
        let Some(i) = self.table.position_hinted(b.backend_id, b.table_index) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(i) {
            if b.state == BackendState::Idle {
                slot.idle.retain(|&x| x != bk);
            }
            slot.conns = slot.conns.saturating_sub(1);
        }
        self.wake_one(i);
    }

    /// This worker's share of `--backend-max-conns`.
    fn conn_limit(&self) -> usize {
        if self.cfg.backend_max_conns == 0 {
            usize::MAX
        } else {
            self.cfg.backend_max_conns.div_ceil(self.cfg.workers.max(1))
        }
    }

    /// Lets the first client queued for backend `i` try again, if the backend has room now.
    fn wake_one(&mut self, i: usize) {
        let limit = self.conn_limit();
        if let (Some(slot), Some(b)) = (self.slots.get_mut(i), self.table.backends.get(i)) {
            if slot.conns < limit || !slot.idle.is_empty() {
                if let Some(k) = slot.dequeue(&b.stats) {
                    self.wake.push(k);
                }
            }
        }
    }

    /// Takes client `k` out of any backend queue.
    pub fn leave_queue(&mut self, k: usize) {
        let queued = self
            .clients
            .get_mut(k)
            .and_then(|c| c.ex.as_mut())
            .is_some_and(|ex| std::mem::take(&mut ex.queued));
        if queued {
            for (slot, b) in self.slots.iter_mut().zip(self.table.backends.iter()) {
                slot.leave(k, &b.stats);
            }
        }
    }
}
