//! Settling an attempt: the one place that records how an attempt on a backend ended and decides
//! whether its request is sent again.
//!
//! An attempt ends in one of four ways ([`End`]): the backend answered with a final status; the
//! attempt failed without a usable answer (connect, timeout, broken connection, garbage); sluice
//! cut it off for a reason that is not the backend's (its answer's head is over sluice's limits,
//! or the client stalled: [`Cutoff`], counted apart and nothing else, never retried); or
//! `--per-try-timeout` passed with no answer byte while the attempt goes on. [`Settle::settle`]
//! does, once for each: the worker's metrics; the load measure (the backend's Peak-EWMA latency,
//! when a strategy or the control thread reads it); what is learned about the backend (successes
//! and rate limits, when the strategy learns); the per-id attempt budget (a failed connect gives
//! its attempt back, a 2xx marks the id accepted); consecutive failures, with a `Failing` message
//! to the control thread at the `--eject-after`th in a row; and the retry decision ([`Verdict`]).
//!
//! A request may be sent again when the policy allows it for the outcome and method (`--retry-on`,
//! `--retry-methods`), it has attempts left (`--max-attempts`), the whole request is still held
//! (`--retry-buffer`), and its id has an attempt left in the budget all workers share (at most
//! `--max-attempts` delivery attempts per request id, whatever the client does). An early retry
//! after `--per-try-timeout` also needs the request fully sent, a backend not tried yet and a token
//! of this worker's early-retry budget. A pooled connection that breaks before any answer byte was
//! most likely closed by the backend while idle: its request goes once more on a fresh connection,
//! the attempt not counted. In TCP mode only a failed connect is retried.
//!
//! The decisions are pure functions of plain inputs ([`may_retry`], [`stale_pooled_connection`],
//! [`response_wait_ms`]). The backend's in-flight count is not touched here: the backend
//! connection keeps it ([`crate::worker::conn::BackendConn`]).

use crate::backend::{BackendId, BackendStats, BackendTable};
use crate::config::{Mode, ProxyConfig};
use crate::http::head::Method;
use crate::link::{ControlLink, ControlMsg};
use crate::metrics::WorkerMetrics;
use crate::retry::budget::IdBudget;
use crate::retry::{EarlyRetryBudget, Outcome};
use crate::strategy::Feedback;
use crate::worker::conn::{BackendConn, BackendState, ClientKey, ClientState, Conns};
use crate::worker::exchange::Exchange;
use crate::worker::routing::TableIndex;
use crate::worker::{Core, Next, Now};

/// Why a request gets no attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No candidate is left.
    NoBackend,
    /// The picked backend is at its connection limit and its queue is full.
    QueueFull,
    /// The request waited in a backend's queue longer than `--queue-timeout`.
    QueueTimeout,
    /// A backend already accepted this request id.
    IdAccepted,
    /// The request id has no attempts left.
    IdExhausted,
    /// Every backend's learned rate limit is spent for longer than the request may wait
    /// (`--max-pacing-wait`): no attempt is sent that the backend is sure to refuse.
    NoRoom,
}

impl Refusal {
    /// The answer sluice gives in HTTP mode.
    pub(super) fn answer(self) -> (u16, &'static str) {
        match self {
            Refusal::NoBackend => (503, "no backend available"),
            Refusal::QueueFull => (
                503,
                "backend connection limit reached and its queue is full",
            ),
            Refusal::QueueTimeout => (503, "no connection to the backend within the queue timeout"),
            Refusal::IdAccepted => (200, "this request id was already accepted"),
            Refusal::IdExhausted => (503, "no attempts left for this request id"),
            Refusal::NoRoom => (503, "every backend is at its rate limit"),
        }
    }
}

/// Why an attempt failed: a connect that did not succeed (refused, unreachable, timed out), a
/// connection that broke before the response was complete, an answer that is not HTTP/1.x, or no
/// answer within the response timeout.
pub(super) use crate::metrics::FailureKind as Failure;

/// Why sluice cut an attempt off although its backend did nothing wrong: what a client can bring
/// about (a request whose answer is over sluice's limits, a stalled upload or download) must not
/// take a healthy backend out of service.
pub(super) use crate::metrics::CutoffKind as Cutoff;

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The backend answered with a final (not 1xx) status.
    Answered {
        status: u16,
        retry_after_s: Option<u32>,
    },
    Failed(Failure),
    /// Not the backend's doing: no failure, success, latency or lesson is recorded against it.
    CutOff(Cutoff),
    /// `--per-try-timeout` passed without an answer byte; the attempt is still open.
    PerTryExpired {
        /// Some eligible backend was not tried for this request yet.
        untried_candidate: bool,
    },
}

/// What happens to the request once its attempt is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send it again, to the backend the strategy picks.
    Retry,
    /// Send it again on a fresh connection, the attempt not counted: the pooled connection it
    /// died on was most likely closed by the backend while idle.
    RetryFresh,
    /// No more attempts: forward the answer, or answer the failure.
    Final,
    /// A per-try expiry without an early retry: the attempt goes on until `--response-timeout`.
    KeepWaiting,
}

/// What settling reads about a request, copied out of its exchange.
#[derive(Clone, Copy, Debug)]
pub(super) struct RequestFacts {
    pub(super) method: Method,
    /// Attempts made, the one being settled included.
    pub(super) attempts: u8,
    /// The request id's hash, for the attempt budget.
    pub(super) id: Option<u64>,
    /// The whole request is still held, within `--retry-buffer`.
    pub(super) whole: bool,
    /// Every byte of the request went to the backend.
    pub(super) fully_sent: bool,
    /// The attempt went over a connection from the idle pool.
    pub(super) reused_conn: bool,
    /// The request was already sent again once after a stale pooled connection.
    pub(super) stale_retried: bool,
    /// No byte of an answer arrived, and none went to the client.
    pub(super) no_answer_byte: bool,
    /// When the attempt was sent, in us of [`crate::clock`].
    pub(super) started_us: u64,
}

impl RequestFacts {
    #[inline]
    pub(super) fn of(ex: &Exchange, retry_buffer: usize) -> RequestFacts {
        RequestFacts {
            method: ex.method,
            attempts: ex.attempts,
            id: ex.id,
            whole: ex.whole_request_held(retry_buffer),
            fully_sent: ex.req_sent == ex.req_len,
            reused_conn: ex.reused_conn,
            stale_retried: ex.stale_retried,
            no_answer_byte: ex.no_answer_byte(),
            started_us: ex.attempt_started_us,
        }
    }
}

/// The backend an attempt went to.
#[derive(Clone, Copy)]
pub(super) struct AttemptBackend<'a> {
    pub(super) id: BackendId,
    /// Its position in the table (a hint for the metrics' per-backend list).
    pub(super) index: TableIndex,
    pub(super) stats: &'a BackendStats,
}

impl<'a> AttemptBackend<'a> {
    /// The backend of a bound connection.
    #[inline]
    pub(super) fn bound(b: &'a BackendConn) -> AttemptBackend<'a> {
        AttemptBackend {
            id: b.backend_id,
            index: b.table_index,
            stats: b.stats(),
        }
    }

    /// Backend `id` as the current table has it; `None` once it left the table.
    pub(super) fn in_table(table: &'a BackendTable, id: BackendId) -> Option<AttemptBackend<'a>> {
        let i = table.position(id)?;
        Some(AttemptBackend {
            id,
            index: TableIndex(i),
            stats: &table.backends[i].stats,
        })
    }
}

/// Everything settling reads and writes besides the exchange, borrowed from the worker.
pub(super) struct Settle<'a> {
    pub(super) cfg: &'a ProxyConfig,
    pub(super) table: &'a BackendTable,
    pub(super) feedback: Feedback,
    pub(super) budget: &'a IdBudget,
    pub(super) early_retries: &'a mut EarlyRetryBudget,
    pub(super) metrics: &'a mut WorkerMetrics,
    pub(super) control: &'a ControlLink,
    pub(super) now: Now,
}

impl Settle<'_> {
    /// Records how the attempt on `backend` (when known) ended and decides what happens next.
    // Inlined at each of its callers (and `settle_last_attempt` at its own), where `end` is known:
    // the match folds away, which keeps a keep-alive request as cheap as when this code was
    // written out at each caller.
    #[inline(always)]
    pub(super) fn settle(
        &mut self,
        req: &RequestFacts,
        backend: Option<AttemptBackend<'_>>,
        end: End,
    ) -> Verdict {
        match end {
            End::Answered {
                status,
                retry_after_s,
            } => {
                if let Some(b) = backend {
                    self.record_answer(req, b, status, retry_after_s);
                }
                self.after_answer(req, end, status)
            }
            End::Failed(failure) => {
                if let Some(b) = backend {
                    self.record_failure(req, b, failure);
                }
                self.after_failure(req, failure)
            }
            End::CutOff(cutoff) => {
                if let Some(b) = backend {
                    self.metrics.backend(b.id, b.index.0).record_cutoff(cutoff);
                }
                Verdict::Final
            }
            End::PerTryExpired { .. } => self.after_per_try_expiry(req, backend, end),
        }
    }

    fn record_answer(
        &mut self,
        req: &RequestFacts,
        b: AttemptBackend<'_>,
        status: u16,
        retry_after_s: Option<u32>,
    ) {
        let latency_us = self.now.us.saturating_sub(req.started_us);
        self.metrics
            .backend(b.id, b.index.0)
            .record_response(status, latency_us);
        if self.feedback.latency {
            b.stats
                .record_response(latency_us, status < 500, self.now.ms);
        }
        b.stats.note_success();
        if self.feedback.success {
            if status == 429 {
                b.stats.learned.rate_limited(retry_after_s, self.now.ms);
            } else {
                let sent_ms = crate::clock::ms_of_us(req.started_us);
                b.stats.learned.admitted(sent_ms, self.now.ms);
                b.stats.learned.observe(status < 500, self.now.ms);
            }
        }
    }

    fn after_answer(&mut self, req: &RequestFacts, end: End, status: u16) -> Verdict {
        if may_retry(self.cfg, self.budget, self.now.secs(), req, end) {
            return Verdict::Retry;
        }
        self.metrics.current.client_responses[usize::from(status / 100).min(5)] += 1;
        if let (Some(id), 200..=299) = (req.id, status) {
            self.budget.accept(id, self.now.secs());
        }
        Verdict::Final
    }

    /// Counts a failed attempt against its backend, for metrics, the latency estimate, learning
    /// and passive ejection.
    fn record_failure(&mut self, req: &RequestFacts, b: AttemptBackend<'_>, failure: Failure) {
        let latency_us = self.now.us.saturating_sub(req.started_us);
        self.metrics
            .backend(b.id, b.index.0)
            .record_failure(failure);
        if self.feedback.latency {
            b.stats.record_response(latency_us, false, self.now.ms);
        }
        if self.feedback.success {
            b.stats.learned.observe(false, self.now.ms);
            if matches!(failure, Failure::Connect | Failure::Broken) {
                // No answer at all: most likely down for a moment; leave it alone a while.
                b.stats.learned.unreachable(self.now.ms);
            }
        }
        let in_a_row = b.stats.note_failure();
        // A strategy that learns leaves an unreachable backend alone by itself, for less time
        // than an ejection (see `--eject-after`).
        let ejects =
            self.cfg.eject_after > 0 && (self.cfg.eject_under_learning || !self.feedback.success);
        if ejects && in_a_row == self.cfg.eject_after {
            self.control.send(ControlMsg::Failing(b.id));
        }
    }

    fn after_failure(&mut self, req: &RequestFacts, failure: Failure) -> Verdict {
        if failure == Failure::Connect {
            // Nothing reached the backend: the attempt does not count against the id's budget.
            if let Some(id) = req.id {
                self.budget.refund(id, self.now.secs());
            }
        }
        if may_retry(
            self.cfg,
            self.budget,
            self.now.secs(),
            req,
            End::Failed(failure),
        ) {
            Verdict::Retry
        } else if stale_pooled_connection(self.cfg.mode, failure, req) {
            Verdict::RetryFresh
        } else {
            Verdict::Final
        }
    }

    fn after_per_try_expiry(
        &mut self,
        req: &RequestFacts,
        backend: Option<AttemptBackend<'_>>,
        end: End,
    ) -> Verdict {
        let may = may_retry(self.cfg, self.budget, self.now.secs(), req, end);
        if !(may && self.early_retries.try_take(self.now.ms)) {
            return Verdict::KeepWaiting;
        }
        self.metrics.current.early_retries += 1;
        // The backend has taken at least this long: latency-aware strategies learn it.
        if let (Some(b), true) = (backend, self.feedback.latency) {
            let waited_us = self.now.us.saturating_sub(req.started_us);
            b.stats.record_response(waited_us, true, self.now.ms);
        }
        Verdict::Retry
    }
}

/// Whether a request may be sent again after its attempt ended in `end` (a per-try expiry still
/// needs a token of the early-retry budget on top). `now_s` is the id budget's clock.
#[inline]
pub(super) fn may_retry(
    cfg: &ProxyConfig,
    budget: &IdBudget,
    now_s: u32,
    req: &RequestFacts,
    end: End,
) -> bool {
    let attempts_left = usize::from(req.attempts) < usize::from(cfg.max_attempts);
    // What every HTTP retry needs, whatever ended the attempt.
    let may_send_again = || {
        attempts_left
            && req.whole
            && req
                .id
                .is_none_or(|id| budget.would_grant(id, cfg.max_attempts, now_s))
    };
    match (cfg.mode, end) {
        (Mode::Tcp, End::Failed(failure)) => failure == Failure::Connect && attempts_left,
        (Mode::Tcp, _) | (Mode::Http, End::CutOff(_)) => false,
        (Mode::Http, End::Answered { status, .. }) => {
            cfg.retry.allows(Outcome::Status(status), req.method) && may_send_again()
        }
        (Mode::Http, End::Failed(failure)) => {
            cfg.retry.allows(retry_outcome(failure), req.method) && may_send_again()
        }
        (Mode::Http, End::PerTryExpired { untried_candidate }) => {
            cfg.retry.allows_method(req.method)
                && req.fully_sent
                && may_send_again()
                && untried_candidate
        }
    }
}

fn retry_outcome(failure: Failure) -> Outcome {
    match failure {
        Failure::Connect => Outcome::Connect,
        Failure::Timeout => Outcome::Timeout,
        Failure::Broken | Failure::Garbage => Outcome::Broken,
    }
}

/// A pooled connection that broke before a byte of answer was most likely closed by the backend
/// while it sat idle (a keep-alive timeout racing our reuse): the request probably never got there.
/// Such a request is sent once more on a fresh connection, as browsers and nginx do.
pub(super) fn stale_pooled_connection(mode: Mode, failure: Failure, req: &RequestFacts) -> bool {
    mode == Mode::Http
        && failure == Failure::Broken
        && req.reused_conn
        && !req.stale_retried
        && req.no_answer_byte
        && req.whole
}

/// How long a request may wait for its backend from now: what is left of the attempt's
/// `--per-try-timeout` while no answer byte came (`per_try_pending`), `--response-timeout`
/// otherwise.
pub(super) fn response_wait_ms(cfg: &ProxyConfig, per_try_pending: bool, elapsed_us: u64) -> u64 {
    if per_try_pending {
        cfg.per_try_timeout_ms
            .saturating_sub(elapsed_us / 1000)
            .max(1)
    } else {
        cfg.response_timeout_ms
    }
}

impl Core {
    /// Splits the worker into what settling an attempt touches and its connections.
    pub(super) fn settle_view(&mut self) -> (Settle<'_>, &mut Conns) {
        let settle = Settle {
            cfg: &self.cfg,
            table: &self.routing.table,
            feedback: self.routing.feedback,
            budget: &self.routing.budget,
            early_retries: &mut self.routing.early_retries,
            metrics: &mut self.metrics,
            control: &self.control,
            now: self.now,
        };
        (settle, &mut self.conns)
    }

    /// Settles client `k`'s current attempt as ended by `end`, charged to the backend it was made
    /// on while that is still in the table; `None` when the client has no exchange.
    #[inline]
    pub(super) fn settle_last_attempt(&mut self, k: ClientKey, end: End) -> Option<Verdict> {
        let (mut settle, conns) = self.settle_view();
        let ex = conns.exchange(k)?;
        let table = settle.table;
        let backend = ex
            .tried()
            .last()
            .and_then(|&id| AttemptBackend::in_table(table, id));
        let req = RequestFacts::of(ex, settle.cfg.retry_buffer);
        Some(settle.settle(&req, backend, end))
    }

    /// Fails the current attempt of client `k`: settles it, then retries or ends the request.
    pub(super) fn attempt_failed(&mut self, k: ClientKey, failure: Failure) -> Next {
        let Some(verdict) = self.settle_last_attempt(k, End::Failed(failure)) else {
            return Next::Close;
        };
        match verdict {
            Verdict::Retry => self.send_again(k, false),
            Verdict::RetryFresh => self.retry_fresh(k),
            Verdict::Final | Verdict::KeepWaiting => {
                self.unbind_backend(k, false);
                self.answer_failure(k, failure)
            }
        }
    }

    /// Sends client `k`'s request again from its first byte, to the backend the strategy picks;
    /// the last backend connection is pooled when `reusable`, closed otherwise.
    pub(super) fn send_again(&mut self, k: ClientKey, reusable: bool) -> Next {
        self.unbind_backend(k, reusable);
        if let Some(ex) = self.conns.exchange_mut(k) {
            ex.restart_attempt();
        }
        self.dispatch(k)
    }

    /// No attempt is left: an error answer while nothing went to the client yet (HTTP), else close.
    fn answer_failure(&mut self, k: ClientKey, failure: Failure) -> Next {
        let Some(ex) = self.conns.exchange(k) else {
            return Next::Close;
        };
        if self.cfg.mode == Mode::Tcp || ex.resp_started {
            return Next::Close;
        }
        match failure {
            Failure::Connect if ex.backend_tls_failed => {
                self.answer(k, 502, super::backend_tls::TLS_FAILED, false)
            }
            Failure::Connect => self.answer(k, 503, "no backend available", false),
            Failure::Timeout => self.answer(k, 504, "backend timed out", false),
            Failure::Broken | Failure::Garbage => self.answer(k, 502, "backend failed", false),
        }
    }

    /// Sends client `k`'s request again on a fresh connection, the failed attempt not counted
    /// against the backend (it may be picked again); its other idle connections, likely as stale,
    /// are closed.
    fn retry_fresh(&mut self, k: ClientKey) -> Next {
        self.unbind_backend(k, false);
        let Some(ex) = self.conns.exchange_mut(k) else {
            return Next::Close;
        };
        ex.stale_retried = true;
        let id = ex.tried().last().copied();
        ex.attempts = ex.attempts.saturating_sub(1);
        if let Some(i) = id.and_then(|id| self.routing.position(id)) {
            for bk in self.routing.pool.take_all_idle(i) {
                self.close_backend(bk);
            }
        }
        if let Some(ex) = self.conns.exchange_mut(k) {
            ex.restart_attempt();
        }
        self.dispatch(k)
    }

    /// The attempt of client `k` passed `--per-try-timeout` without an answer byte. It is sent to
    /// a backend not tried yet when settling allows an early retry; otherwise it keeps waiting, up
    /// to `--response-timeout` from the attempt's start.
    fn per_try_expired(&mut self, k: ClientKey) -> Next {
        let verdict = {
            let (mut settle, conns) = self.settle_view();
            let Some(ex) = conns.exchange_mut(k) else {
                return Next::Close;
            };
            ex.per_try_pending = false;
            let table = settle.table;
            let tried = ex.tried();
            let untried_candidate = table
                .eligible
                .iter()
                .any(|&i| !tried.contains(&table.backends[i].id));
            let req = RequestFacts::of(ex, settle.cfg.retry_buffer);
            let bound = ex.backend;
            let backend = bound
                .and_then(|bk| conns.backend(bk))
                .map(AttemptBackend::bound);
            settle.settle(&req, backend, End::PerTryExpired { untried_candidate })
        };
        if verdict == Verdict::Retry {
            return self.send_again(k, false);
        }
        let left_ms = self
            .cfg
            .response_timeout_ms
            .saturating_sub(self.cfg.per_try_timeout_ms);
        self.set_deadline(k, left_ms.max(1));
        Next::Wait
    }

    /// How long client `k` may wait for its backend from now ([`response_wait_ms`]).
    pub(super) fn response_wait_ms(&self, k: ClientKey) -> u64 {
        match self.conns.exchange(k) {
            Some(ex) => response_wait_ms(
                &self.cfg,
                ex.per_try_pending,
                self.now.us.saturating_sub(ex.attempt_started_us),
            ),
            None => self.cfg.response_timeout_ms,
        }
    }

    /// The client's deadline passed in `Proxy` or `Tunnel`: a paced request may go now, a request
    /// body the id waits for is too slow, a queued request waited too long, a bound backend is too
    /// slow (or its connect is), the client is (it stopped sending its body or reading the
    /// answer: not the backend's failure), or the attempt's `--per-try-timeout` passed.
    pub(super) fn backend_timed_out(&mut self, k: ClientKey) -> Next {
        let Some(ex) = self.conns.exchange(k) else {
            return Next::Close;
        };
        let Some(bk) = ex.backend else {
            if ex.pace_until_ms != 0 {
                return self.dispatch(k);
            }
            if ex.awaiting_id.is_some() {
                return self.answer(k, 408, "request body timed out", true);
            }
            if ex.queued {
                self.leave_queue(k);
                return self.refuse(k, Refusal::QueueTimeout);
            }
            return Next::Close;
        };
        if self.conns[bk].state() == BackendState::Connecting {
            return self.attempt_failed(k, Failure::Connect);
        }
        match self.conns[k].state {
            ClientState::Proxy if ex.per_try_pending => self.per_try_expired(k),
            ClientState::Proxy if ex.waits_on_client() => {
                self.attempt_cut(k, Cutoff::ClientStalled)
            }
            ClientState::Proxy => self.attempt_failed(k, Failure::Timeout),
            _ => Next::Close,
        }
    }
}

#[cfg(test)]
mod tests;
