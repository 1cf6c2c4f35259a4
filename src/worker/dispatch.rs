//! Choosing a backend for a request (or a TCP connection) and getting a connection to it.
//!
//! [`Core::dispatch`] runs every step of starting an attempt: the candidate list (eligible
//! backends, less those tried already unless the strategy may repeat them), the strategy's pick or
//! its request to wait (pacing under learned rate limits, bounded by `--max-pacing-wait`), this
//! worker's share of `--backend-max-conns` (wait in the backend's queue, or 503 when the queue is
//! full), the attempt budget of the request's id, the bookkeeping of the attempt in the exchange,
//! and finally a connection: an idle pooled one, or a non-blocking connect. A request that gets no
//! attempt is refused ([`Refusal`](crate::worker::attempt::Refusal)): an error answer in HTTP mode, a closed connection in TCP mode.
//!
//! A request gets up to `--max-attempts` attempts; a failed connect, here or later in
//! [`Core::ensure_connected`], is settled like every other end of an attempt
//! ([`crate::worker::attempt`]).

use std::io;

use log::debug;
use mio::Interest;

use crate::backend::{BackendStream, BackendTable};
use crate::config::{Mode, ProxyConfig};
use crate::metrics::WorkerMetrics;
use crate::retry::budget::Reserve;
use crate::strategy::{Choice, PickContext};
use crate::worker::attempt::{Failure, Refusal};
use crate::worker::backend_tls::TLS_FAILED;
use crate::worker::conn::{BackendConn, BackendConnKey, BackendState, ClientConn, ClientKey};
use crate::worker::exchange::{Exchange, MAX_TRIED};
use crate::worker::routing::{Routing, TableIndex};
use crate::worker::timer::TimerWheel;
use crate::worker::{Core, Next, Now};

/// Why dispatching stopped before a connection.
enum Stop {
    Next(Next),
    Refuse(Refusal),
}

/// Result of checking a connect in progress.
enum ConnectProgress {
    Pending,
    Connected,
    Failed(io::Error),
}

/// The backends a pick may choose from: every eligible backend on a first attempt or when the
/// strategy may repeat backends (asked only on a retry), otherwise those not tried yet (collected
/// in `scratch`).
fn candidates<'a>(
    table: &'a BackendTable,
    scratch: &'a mut Vec<usize>,
    ex: &Exchange,
    retries_may_repeat: impl FnOnce() -> bool,
) -> &'a [usize] {
    if ex.attempts == 0 || retries_may_repeat() {
        return &table.eligible;
    }
    scratch.clear();
    let tried = ex.tried();
    scratch.extend(
        table
            .eligible
            .iter()
            .copied()
            .filter(|&i| !tried.contains(&table.backends[i].id)),
    );
    scratch
}

/// The bytes the strategy keys on (empty in TCP mode or when the request has none).
fn request_key(ex: &Exchange, mode: Mode) -> &[u8] {
    match (&ex.req, mode) {
        (Some(req), Mode::Http) => req.bytes().get(ex.key.clone()).unwrap_or(b""),
        _ => b"",
    }
}

/// What starting an attempt touches besides the client, borrowed from the worker.
struct Router<'a> {
    routing: &'a mut Routing,
    timers: &'a mut TimerWheel,
    cfg: &'a ProxyConfig,
    metrics: &'a mut WorkerMetrics,
    now: Now,
}

impl Router<'_> {
    /// The strategy's pick among the candidates, or a wait it asked for (the client's timer
    /// dispatches again).
    fn pick(&mut self, k: ClientKey, c: &mut ClientConn) -> Result<TableIndex, Stop> {
        let (routing, now) = (&mut *self.routing, self.now);
        let ex = c.ex.as_deref_mut().ok_or(Stop::Next(Next::Close))?;
        if usize::from(ex.attempts) >= MAX_TRIED {
            return Err(Stop::Refuse(Refusal::NoBackend));
        }
        let strategy = &routing.strategy;
        let repeat = || strategy.retries_may_repeat();
        let candidates = candidates(&routing.table, &mut routing.scratch, ex, repeat);
        if candidates.is_empty() {
            return Err(Stop::Refuse(Refusal::NoBackend));
        }
        // The request's whole waiting budget (`--max-pacing-total`), counted from its arrival.
        let total_until_ms = match self.cfg.max_pacing_total_ms {
            _ if ex.started_us == 0 => u64::MAX,
            0 => u64::MAX,
            total_ms => crate::clock::ms_of_us(ex.started_us) + total_ms,
        };
        let spent = now.ms >= total_until_ms;
        let ctx = PickContext {
            client_ip: c.peer_ip,
            key: request_key(ex, self.cfg.mode),
            now_ms: now.ms,
            tried: ex.tried(),
            relax: spent || (ex.pace_until_ms != 0 && now.ms >= ex.pace_until_ms),
            force: spent
                || (ex.pace_until_ms != 0
                    && now.ms >= ex.pace_until_ms + self.cfg.max_pacing_wait_ms),
        };
        let ms = match routing
            .strategy
            .choose(&routing.table.backends, candidates, &ctx)
        {
            Choice::Backend(i) => {
                ex.pace_until_ms = 0;
                return Ok(TableIndex(i));
            }
            Choice::Wait { ms } => ms,
            Choice::Full => {
                ex.pace_until_ms = 0;
                return Err(Stop::Refuse(Refusal::NoRoom));
            }
        };
        // Every backend's rate budget is spent: wait for one, but not past the deadline (the
        // pacing wait, then as long again for room anywhere rather than a sure 429), nor past
        // the request's whole budget.
        if ex.pace_until_ms == 0 {
            ex.pace_until_ms = now.ms + self.cfg.max_pacing_wait_ms;
        }
        let until = if now.ms >= ex.pace_until_ms {
            ex.pace_until_ms + self.cfg.max_pacing_wait_ms
        } else {
            ex.pace_until_ms
        };
        let wake = (now.ms + ms).min(until).min(total_until_ms).max(now.ms + 1);
        // On the millisecond: a send a tick late leaves part of the backend's window unused.
        c.deadline.set_precise(wake, k.token(), self.timers);
        Err(Stop::Next(Next::Wait))
    }

    /// At its connection limit, backend `i` takes the request into its queue (or refuses it when
    /// the queue is full); the request is woken when a connection frees up.
    fn admit(&mut self, k: ClientKey, c: &mut ClientConn, i: TableIndex) -> Result<(), Stop> {
        let pool = &mut self.routing.pool;
        if !pool.at_limit(i) {
            return Ok(());
        }
        if pool.queue_len(i) >= self.cfg.backend_queue {
            return Err(Stop::Refuse(Refusal::QueueFull));
        }
        let ex = c.ex.as_deref_mut().ok_or(Stop::Next(Next::Close))?;
        pool.enqueue(i, k, &self.routing.table.backends[i.0].stats);
        ex.queued = true;
        let at_ms = self.now.ms + self.cfg.queue_timeout_ms;
        c.deadline.set(at_ms, k.token(), self.timers);
        Err(Stop::Next(Next::Wait))
    }

    /// Takes one of the request id's attempts from the budget all workers share.
    fn reserve_id(&mut self, ex: &Exchange) -> Result<(), Stop> {
        let Some(id) = ex.id else {
            return Ok(());
        };
        match self
            .routing
            .budget
            .reserve(id, self.cfg.max_attempts, self.now.secs())
        {
            Reserve::Granted(_) => Ok(()),
            Reserve::Accepted => Err(Stop::Refuse(Refusal::IdAccepted)),
            Reserve::Exhausted => Err(Stop::Refuse(Refusal::IdExhausted)),
        }
    }

    /// Records the attempt on backend `i` in the exchange and the worker's counts, with what the
    /// strategy adds to the response.
    fn note_attempt(&mut self, ex: &mut Exchange, i: TableIndex) {
        let (routing, cfg) = (&mut *self.routing, self.cfg);
        ex.set_cookie = None;
        if routing.feedback.response_cookie && cfg.mode == Mode::Http {
            let key = request_key(ex, cfg.mode);
            ex.set_cookie = routing.strategy.response_cookie(i.0, key);
        }
        ex.tried[usize::from(ex.attempts)] = routing.table.backends[i.0].id;
        ex.attempts += 1;
        ex.attempt_started_us = self.now.us;
        ex.per_try_pending = cfg.per_try_timeout_ms != 0 && cfg.mode == Mode::Http;
        if ex.per_try_pending && ex.attempts == 1 {
            routing.early_retries.deposit();
        }
        self.metrics.current.attempts += 1;
        if ex.attempts > 1 {
            self.metrics.current.retries += 1;
        }
    }
}

impl Core {
    /// Picks a backend for client `k`'s exchange and binds a connection to it (pooled or new).
    pub(super) fn dispatch(&mut self, k: ClientKey) -> Next {
        match self.start_attempt(k) {
            Ok(next) | Err(Stop::Next(next)) => next,
            Err(Stop::Refuse(refusal)) => self.refuse(k, refusal),
        }
    }

    /// Refuses client `k`'s request: sluice's own answer in HTTP mode, a close in TCP mode.
    pub(super) fn refuse(&mut self, k: ClientKey, refusal: Refusal) -> Next {
        match self.cfg.mode {
            Mode::Tcp => Next::Close,
            Mode::Http => {
                let (status, why) = match self.conns.exchange(k) {
                    // Every candidate was tried and the last failed its TLS handshake.
                    Some(ex) if refusal == Refusal::NoBackend && ex.backend_tls_failed => {
                        (502, TLS_FAILED)
                    }
                    _ => refusal.answer(),
                };
                self.answer(k, status, why, false)
            }
        }
    }

    fn start_attempt(&mut self, k: ClientKey) -> Result<Next, Stop> {
        let Core {
            conns,
            routing,
            io,
            cfg,
            metrics,
            now,
            ..
        } = self;
        let c = conns.client_mut(k).ok_or(Stop::Next(Next::Close))?;
        let mut router = Router {
            routing,
            timers: &mut io.timers,
            cfg,
            metrics,
            now: *now,
        };
        let i = router.pick(k, c)?;
        router.admit(k, c, i)?;
        let ex = c.ex.as_deref_mut().ok_or(Stop::Next(Next::Close))?;
        router.reserve_id(ex)?;
        router.note_attempt(ex, i);
        Ok(self.connect(k, i))
    }

    /// Binds an idle pooled connection to backend `i`, or starts a new one.
    fn connect(&mut self, k: ClientKey, i: TableIndex) -> Next {
        let Some(bk) = self.routing.pool.take_idle(i) else {
            return self.connect_new(k, i);
        };
        self.conns[bk].bind(k);
        if let Some(ex) = self.conns.exchange_mut(k) {
            ex.reused_conn = true;
            ex.backend = Some(bk);
        }
        let wait_ms = self.response_wait_ms(k);
        self.set_deadline(k, wait_ms);
        Next::Again
    }

    fn connect_new(&mut self, k: ClientKey, i: TableIndex) -> Next {
        let Some(ex) = self.conns.exchange_mut(k) else {
            return Next::Close;
        };
        ex.reused_conn = false;
        let backend = self.routing.backend(i);
        let tls = self.backend_tls.as_ref();
        let mut sock =
            match BackendStream::connect_with(&backend.addr, tls, backend.dns_name.as_deref()) {
                Ok(sock) => sock,
                Err(e) => {
                    debug!("connect to {}: {e}", backend.addr);
                    return self.attempt_failed(k, Failure::Connect);
                }
            };
        let bk = self.conns.next_backend_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .io
            .poll
            .registry()
            .register(&mut sock, bk.token(), interest)
        {
            debug!("register backend connection: {e}");
            return self.attempt_failed(k, Failure::Connect);
        }
        let conn = BackendConn::connecting(sock, backend, i, k);
        self.routing.pool.opened(i);
        self.conns.insert_backend(conn);
        let Some(ex) = self.conns.exchange_mut(k) else {
            return Next::Close;
        };
        ex.backend = Some(bk);
        self.set_deadline(k, self.cfg.connect_timeout_ms);
        Next::Again
    }

    /// Checks the bound backend connection's connect; true once it is usable. When the connect
    /// completes, the client's deadline becomes the wait for an answer (HTTP) or the tunnel's idle
    /// timeout (TCP); later calls leave it alone, so that an event that moves nothing does not
    /// push it back. On failure the attempt is failed and `Err` carries what to do next.
    pub(super) fn ensure_connected(
        &mut self,
        k: ClientKey,
        bk: BackendConnKey,
    ) -> Result<bool, Next> {
        let b = &mut self.conns[bk];
        let fresh = b.state() == BackendState::Connecting;
        match connect_progress(b) {
            ConnectProgress::Connected => {
                if fresh {
                    self.conns[bk].connected();
                    self.backend_tls_ok(bk);
                    self.on_connected(k, bk)?;
                    match self.cfg.mode {
                        Mode::Http => self.set_deadline(k, self.response_wait_ms(k)),
                        Mode::Tcp => self.set_tunnel_deadline(k),
                    }
                }
                Ok(true)
            }
            ConnectProgress::Pending => Ok(false),
            ConnectProgress::Failed(e) => {
                debug!("connect to backend {}: {e}", self.conns[bk].backend_id);
                self.backend_tls_failed(k, bk, &e);
                Err(self.attempt_failed(k, Failure::Connect))
            }
        }
    }
}

impl Core {
    /// What a new backend connection starts with: the PROXY header (`--send-proxy-protocol`);
    /// in TCP mode a tunnel is counted as opened. Once per connection, so out of line.
    #[inline(never)]
    fn on_connected(&mut self, k: ClientKey, bk: BackendConnKey) -> Result<(), Next> {
        if let Some(version) = self.cfg.send_proxy_protocol {
            if let Err(e) = self.send_origin(k, bk, version) {
                debug!("PROXY header to backend {}: {e}", self.conns[bk].backend_id);
                return Err(self.attempt_failed(k, Failure::Connect));
            }
        }
        if self.cfg.mode == Mode::Tcp {
            let b = &self.conns[bk];
            self.metrics
                .backend(b.backend_id, b.table_index.0)
                .tunnels_opened += 1;
        }
        Ok(())
    }
}

fn connect_progress(b: &mut BackendConn) -> ConnectProgress {
    if b.state() != BackendState::Connecting {
        return ConnectProgress::Connected;
    }
    // A TLS handshake moves on when the backend's answer makes the socket readable.
    let handshake_input = b.ready.readable && b.sock.is_tls();
    if !(b.ready.writable || b.ready.hup || handshake_input) {
        return ConnectProgress::Pending;
    }
    match b.sock.take_error() {
        Ok(Some(e)) | Err(e) => return ConnectProgress::Failed(e),
        Ok(None) => {}
    }
    match b.sock.is_connected() {
        Ok(true) => ConnectProgress::Connected,
        Ok(false) => {
            b.ready.writable = false;
            b.ready.readable = false;
            ConnectProgress::Pending
        }
        Err(e) => ConnectProgress::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::strategy::StrategyKind;

    fn table(n: u64) -> BackendTable {
        let addr = "127.0.0.1:1".parse().unwrap();
        let backends = (1..=n).map(|id| Backend::new(id, addr, 1)).collect();
        BackendTable::new(1, backends, StrategyKind::RoundRobin)
    }

    #[test]
    fn a_retry_leaves_out_the_backends_tried_unless_the_strategy_may_repeat_them() {
        let t = table(3);
        let mut scratch = Vec::new();
        let mut ex = Exchange::new();
        let unasked = || unreachable!("a first attempt does not ask the strategy");
        assert_eq!(candidates(&t, &mut scratch, &ex, unasked), &[0, 1, 2]);
        ex.tried[0] = 2;
        ex.attempts = 1;
        assert_eq!(candidates(&t, &mut scratch, &ex, || false), &[0, 2]);
        assert_eq!(candidates(&t, &mut scratch, &ex, || true), &[0, 1, 2]);
    }
}
