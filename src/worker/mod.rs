//! One worker: a thread with its own mio `Poll`, its own SO_REUSEPORT listener, and slabs of client
//! and backend connections. The kernel spreads new connections over the workers' listeners; after
//! that a connection lives and dies on one thread, so nothing here is shared but the backend table
//! (an `Arc` swapped between events), the per-backend atomics in it, and the per-id attempt budget.
//!
//! The loop is the plain mio shape ([`Worker::run`]): poll, dispatch each event by token, then
//! housekeeping as named steps (expired deadlines, metrics flush, memory trim, paused accepts, the
//! shutdown deadline). Control messages arrive on a crossbeam channel with a `Waker` event.
//!
//! The worker's state (`Core`) is a few parts, each owned by the file that works on it:
//! connections (`conn::Conns`), I/O machinery (`IoParts`: poll, buffers, timers, spare exchanges),
//! routing (`routing::Routing`: table, strategy, pool, budgets), metrics, the link to the control
//! thread, and the lifecycle (`lifecycle::Lifecycle`: listener, accept pausing, shutdown). A
//! request goes: `http` (head) → `dispatch` (backend, connection) → `proxy` (bytes both ways) →
//! `attempt` (settle the outcome, maybe retry; `cutoff` when sluice ends it though the backend did
//! nothing wrong) → `pool` (connection back to the pool) → `http`
//! (next request). TCP mode goes through `dispatch` and `tunnel`.

mod answer;
mod attempt;
mod backend_tls;
mod buffer;
mod conn;
mod cutoff;
mod dispatch;
mod exchange;
mod http;
mod keys;
mod lifecycle;
mod ops;
mod origin;
mod pool;
mod proxy;
mod routing;
mod sock;
mod timer;
mod tls;
mod tunnel;

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use log::error;
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::backend::BackendTable;
use crate::config::{Mode, ProxyConfig};
use crate::link::{ControlLink, WorkerMsg};
use crate::metrics::WorkerMetrics;
use crate::retry::budget::IdBudget;
use buffer::{BufPool, DEFAULT_POOL_MAX_FREE};
use conn::{BackendConnKey, BackendState, ClientKey, ClientState, Conns, Owner};
use exchange::Exchange;
use lifecycle::Lifecycle;
use routing::Routing;
use timer::{TimerEntry, TimerWheel, DEFAULT_SLOTS};

const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);

/// Events handled per `poll` call.
const EVENTS_CAPACITY: usize = 1024;
/// Spare buffers and exchanges kept across a memory trim.
const TRIM_KEEP_SPARES: usize = 16;

/// What a connection handler wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// State changed: run the handler again.
    Again,
    /// Blocked on I/O: wait for the next event.
    Wait,
    /// Close the client connection (and its backend connection, if any).
    Close,
}

/// The worker's clock, read once per loop iteration.
#[derive(Clone, Copy, Debug, Default)]
struct Now {
    /// Milliseconds of [`crate::clock`], for deadlines.
    ms: u64,
    /// The same instant in microseconds, for latencies.
    us: u64,
}

impl Now {
    fn read() -> Now {
        let (ms, us) = crate::clock::now();
        Now { ms, us }
    }

    /// The id budget's clock: whole seconds of the process clock.
    fn secs(self) -> u32 {
        (self.ms / 1000) as u32
    }
}

pub(crate) struct Worker {
    events: Events,
    rx: Receiver<WorkerMsg>,
    core: Core,
}

/// Everything a handler may touch, in parts a handler borrows separately; kept apart from
/// `events` so handlers can borrow it whole.
struct Core {
    cfg: Arc<ProxyConfig>,
    now: Now,
    conns: Conns,
    io: IoParts,
    routing: Routing,
    metrics: WorkerMetrics,
    control: ControlLink,
    life: Lifecycle,
    /// Warnings about response heads refused by sluice's limits, rate-limited.
    refusal_warnings: cutoff::WarnLimit,
    /// The listener's TLS configuration for new handshakes (`--tls`); `None`: plain TCP.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS to the backends (`--backend-tls`); `None`: plain.
    backend_tls: Option<crate::tls::client::BackendTls>,
    backend_tls_warnings: backend_tls::TlsWarnings,
    /// The access log and per-client limits, when on.
    ops: ops::Ops,
}

/// The I/O machinery: readiness, buffers, deadlines, and spare exchanges so a request does not
/// allocate.
struct IoParts {
    poll: Poll,
    bufs: BufPool,
    timers: TimerWheel,
    /// Timer entries due, reused between iterations.
    fired: Vec<TimerEntry>,
    // Boxed so that handing an exchange to a connection moves one pointer, not the struct.
    #[allow(clippy::vec_box)]
    spare_exchanges: Vec<Box<Exchange>>,
}

impl IoParts {
    fn take_exchange(&mut self, now_us: u64) -> Box<Exchange> {
        let mut ex = self.spare_exchanges.pop().unwrap_or_default();
        ex.started_us = now_us;
        ex
    }

    /// Gives an exchange's buffers and the exchange itself back to the free lists.
    fn recycle_exchange(&mut self, mut ex: Box<Exchange>) {
        self.bufs.release(&mut ex.req);
        self.bufs.release(&mut ex.resp);
        ex.reset();
        self.spare_exchanges.push(ex);
    }

    /// Keeps an exchange that holds no buffer and was reset already.
    fn keep_spare(&mut self, ex: Box<Exchange>) {
        self.spare_exchanges.push(ex);
    }

    /// Gives back spare memory beyond [`TRIM_KEEP_SPARES`]; true when it freed any.
    fn trim(&mut self) -> bool {
        self.timers.shrink();
        self.fired.shrink_to(1024);
        let mut released = self.bufs.trim(TRIM_KEEP_SPARES);
        released |= self.spare_exchanges.len() > TRIM_KEEP_SPARES;
        self.spare_exchanges.truncate(TRIM_KEEP_SPARES);
        self.spare_exchanges.shrink_to(TRIM_KEEP_SPARES);
        released
    }
}

/// What a worker is made of; the data plane builds one per worker.
pub(crate) struct WorkerParts {
    pub(crate) index: usize,
    pub(crate) cfg: Arc<ProxyConfig>,
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) rx: Receiver<WorkerMsg>,
    pub(crate) table: Arc<BackendTable>,
    pub(crate) control: ControlLink,
    pub(crate) budget: Arc<IdBudget>,
    pub(crate) installed_version: Arc<AtomicU64>,
    /// The listener's TLS configuration, when it speaks TLS.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS to the backends, when `--backend-tls` is on.
    pub(crate) backend_tls: Option<crate::tls::client::BackendTls>,
    pub(crate) access_log: Option<crate::access_log::LogWriter>,
    pub(crate) clients: Option<Arc<crate::limits::ClientTable>>,
}

impl Worker {
    pub(crate) fn new(parts: WorkerParts) -> io::Result<Worker> {
        let WorkerParts {
            index,
            cfg,
            poll,
            mut listener,
            rx,
            table,
            control,
            budget,
            installed_version,
            tls,
            backend_tls,
            access_log,
            clients,
        } = parts;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let now = Now::read();
        let seed = 0x5eed_0000_u64 + index as u64;
        let core = Core {
            routing: Routing::new(table, &cfg, budget, seed, installed_version, now.ms),
            io: IoParts {
                poll,
                bufs: BufPool::new(cfg.buffer_size, DEFAULT_POOL_MAX_FREE),
                timers: TimerWheel::new(cfg.timer_tick_ms(), DEFAULT_SLOTS),
                fired: Vec::new(),
                spare_exchanges: Vec::new(),
            },
            life: Lifecycle::new(listener, &cfg, now.ms),
            cfg,
            now,
            conns: Conns::default(),
            metrics: WorkerMetrics::new(index),
            control,
            refusal_warnings: cutoff::WarnLimit::default(),
            tls,
            backend_tls,
            backend_tls_warnings: backend_tls::TlsWarnings::default(),
            ops: ops::Ops::new(access_log, clients),
        };
        Ok(Worker {
            events: Events::with_capacity(EVENTS_CAPACITY),
            rx,
            core,
        })
    }

    pub(crate) fn run(mut self) {
        loop {
            let timeout = self.core.poll_timeout();
            if let Err(e) = self.core.io.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("worker poll failed: {e}");
                return;
            }
            self.core.now = Now::read();
            for event in self.events.iter() {
                match event.token() {
                    LISTENER => self.core.accept_all(),
                    WAKER => self.core.drain_messages(&self.rx),
                    token => match Owner::of(token) {
                        Owner::Client(k) => self.core.client_event(k, event),
                        Owner::Backend(bk) => self.core.backend_event(bk, event),
                    },
                }
                self.core.run_wakeups();
            }
            self.core.housekeeping();
            if self.core.finished() {
                return;
            }
        }
    }
}

impl Core {
    fn poll_timeout(&self) -> Option<Duration> {
        let ms = self.life.poll_timeout_ms(self.now.ms);
        let ms = match self.io.timers.poll_timeout_ms(self.now.ms) {
            Some(t) => t.min(ms),
            None => ms,
        };
        let ms = match self.log_poll_timeout_ms() {
            Some(t) => t.min(ms),
            None => ms,
        };
        Some(Duration::from_millis(ms))
    }

    fn drain_messages(&mut self, rx: &Receiver<WorkerMsg>) {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                WorkerMsg::Table(table) => self.install_table(table),
                WorkerMsg::Shutdown { timeout } => self.begin_shutdown(timeout),
                WorkerMsg::Sever(id) => self.sever(id),
                WorkerMsg::Tls(cfg) => self.install_tls(cfg),
            }
        }
    }

    fn client_event(&mut self, k: ClientKey, event: &Event) {
        let Some(c) = self.conns.client_mut(k) else {
            return;
        };
        c.ready.update(event);
        if c.sock.is_tls() && c.ready.writable && c.sock.on_writable().is_err() {
            self.close_client(k);
            return;
        }
        self.drive(k);
    }

    fn backend_event(&mut self, bk: BackendConnKey, event: &Event) {
        let Some(b) = self.conns.backend_mut(bk) else {
            return;
        };
        b.ready.update(event);
        // TLS records a write left behind go when the socket takes them; an error shows on the
        // next read or write.
        if b.ready.writable && b.sock.wants_flush() {
            let _ = b.sock.flush_tls();
        }
        match b.state() {
            BackendState::Idle => {
                if pool::idle_conn_is_dead(&b.ready) {
                    if b.ready.readable && !b.ready.hup && b.sock.survives_idle_read() {
                        b.ready.readable = false;
                    } else {
                        self.close_backend(bk);
                    }
                }
            }
            BackendState::Connecting | BackendState::Busy => {
                let k = b.client;
                self.drive(k);
            }
        }
    }

    /// Runs a client's handler until it blocks or closes.
    fn drive(&mut self, k: ClientKey) {
        loop {
            let Some(c) = self.conns.client(k) else {
                return;
            };
            let next = match c.state {
                ClientState::ProxyHeader => self.proxy_header(k),
                ClientState::TlsHandshake => self.tls_handshake(k),
                ClientState::Head => self.http_head(k),
                ClientState::Proxy => self.http_proxy(k),
                ClientState::Answer { then_close } => self.http_answer(k, then_close),
                ClientState::Tunnel => self.tunnel(k),
                ClientState::Linger => self.linger(k),
            };
            match next {
                Next::Again => continue,
                Next::Wait => return,
                Next::Close => {
                    self.close_client(k);
                    return;
                }
            }
        }
    }

    /// Dispatches client `k` and runs it (a new TCP client, or one whose backend has room now).
    fn dispatch_and_drive(&mut self, k: ClientKey) {
        match self.dispatch(k) {
            Next::Close => self.close_client(k),
            _ => self.drive(k),
        }
    }

    /// Runs clients whose queued backend got room while another client was handled.
    fn run_wakeups(&mut self) {
        while let Some(k) = self.conns.wake.pop() {
            let queued = self
                .conns
                .exchange_mut(k)
                .is_some_and(|ex| std::mem::take(&mut ex.queued));
            if queued {
                self.dispatch_and_drive(k);
            }
        }
    }

    fn housekeeping(&mut self) {
        self.expire_deadlines();
        self.flush_metrics_if_due();
        self.flush_log_if_due();
        self.trim_memory_if_due();
        self.resume_accept_if_due();
        self.close_all_if_shutdown_is_over();
    }

    /// Handles the timer entries due: a backend connection idle past `--pool-idle-timeout` is
    /// closed, a client past its deadline is handled by its state ([`Core::timed_out`]).
    fn expire_deadlines(&mut self) {
        let mut fired = std::mem::take(&mut self.io.fired);
        self.io.timers.expire(self.now.ms, &mut fired);
        for entry in fired.drain(..) {
            match Owner::of(entry.token) {
                Owner::Backend(bk) => {
                    let Some(b) = self.conns.backend_mut(bk) else {
                        continue;
                    };
                    if b.deadline.fire(entry, self.now.ms, &mut self.io.timers)
                        && b.state() == BackendState::Idle
                    {
                        self.close_backend(bk);
                    }
                }
                Owner::Client(k) => {
                    let Some(c) = self.conns.client_mut(k) else {
                        continue;
                    };
                    if c.deadline.fire(entry, self.now.ms, &mut self.io.timers) {
                        self.timed_out(k);
                    }
                }
            }
        }
        self.io.fired = fired;
    }

    fn timed_out(&mut self, k: ClientKey) {
        let Some(c) = self.conns.client(k) else {
            return;
        };
        let next = match c.state {
            ClientState::ProxyHeader => self.proxy_header_timed_out(k),
            ClientState::TlsHandshake => self.tls_handshake_timed_out(k),
            ClientState::Head => self.http_head_timed_out(k),
            ClientState::Proxy | ClientState::Tunnel => self.backend_timed_out(k),
            ClientState::Answer { .. } | ClientState::Linger => Next::Close,
        };
        match next {
            Next::Close => self.close_client(k),
            _ => self.drive(k),
        }
    }

    /// Sets the client's deadline `after_ms` from now.
    fn set_deadline(&mut self, k: ClientKey, after_ms: u64) {
        if let Some(c) = self.conns.client_mut(k) {
            c.deadline
                .set(self.now.ms + after_ms, k.token(), &mut self.io.timers);
        }
    }

    fn close_client(&mut self, k: ClientKey) {
        if self.conns.client(k).is_none() {
            return;
        }
        self.unbind_backend(k, false);
        self.leave_queue(k);
        let Some(c) = self.conns.remove_client(k) else {
            return;
        };
        self.metrics.current.closed += 1;
        if self.ops.log.is_some() || self.ops.clients.is_some() {
            self.client_closed(&c);
        }
        if let Some(ex) = c.ex {
            self.io.recycle_exchange(ex);
        }
        let mut sock = c.sock;
        sock.close();
        drop(sock);
        self.resume_accept_after_close();
    }

    /// A new client in TCP mode is a tunnel from the start. With `--accept-proxy-protocol`, its
    /// first bytes are checked for a header it may not send.
    fn start_tunnel(&mut self, k: ClientKey) {
        if self.cfg.mode != Mode::Tcp {
            return;
        }
        self.make_tunnel(k, self.cfg.proxy_protocol_from.is_some());
        self.dispatch_and_drive(k);
    }

    /// Makes client `k` a tunnel, not yet dispatched.
    fn make_tunnel(&mut self, k: ClientKey, vet_first_bytes: bool) {
        let mut ex = self.io.take_exchange(self.now.us);
        ex.vet_first_bytes = vet_first_bytes;
        let c = &mut self.conns[k];
        c.ex = Some(ex);
        c.state = ClientState::Tunnel;
    }
}
