//! One worker: a thread with its own mio `Poll`, its own SO_REUSEPORT listener, and slabs of client
//! and backend connections. The kernel spreads new connections over the workers' listeners; after
//! that a connection lives and dies on one thread, so nothing here is shared but the backend table
//! (an `Arc` swapped between events) and the per-backend atomics in it.
//!
//! The loop is the plain mio shape: poll, dispatch each event by token, then housekeeping (expired
//! deadlines, paused accepts). Control messages arrive on a crossbeam channel with a `Waker` event.

pub(crate) mod buffer;
pub(crate) mod conn;
mod dispatch;
mod http;
pub(crate) mod timer;
mod tunnel;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use log::{debug, error, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::backend::{BackendId, BackendTable};
use crate::config::{Mode, ProxyConfig};
use crate::link::{ControlLink, ControlMsg, WorkerMsg};
use crate::metrics::WorkerMetrics;
use crate::retry::budget::IdBudget;
use crate::retry::EarlyRetryBudget;
use crate::strategy::{self, Strategy};
use buffer::{BufPool, DEFAULT_POOL_MAX_FREE};
use conn::{BackendConn, BackendState, ClientConn, ClientState, Exchange, Ready};
use dispatch::Slot;
use timer::{Deadline, TimerEntry, TimerWheel, DEFAULT_SLOTS};

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX - 2);
/// Backend connection tokens are their slab key with this bit set; client tokens are bare keys.
pub const BACKEND_BIT: usize = 1 << 40;

/// How long accepting pauses after the process runs out of file descriptors.
const ACCEPT_PAUSE_MS: u64 = 100;
/// Events handled per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

/// At shutdown, idle keep-alive clients stay open this long in case a request is on its way.
const SHUTDOWN_IDLE_GRACE_MS: u64 = 500;

/// How often a worker gives memory back after a crowd of connections left.
const TRIM_EVERY_MS: u64 = 5_000;
/// Spare buffers kept across a trim.
const TRIM_KEEP_BUFFERS: usize = 16;

/// How often a worker hands its metrics to the control thread.
const METRICS_FLUSH_MS: u64 = 1_000;

/// What a connection handler wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// State changed: run the handler again.
    Again,
    /// Blocked on I/O: wait for the next event.
    Wait,
    /// Close the client connection (and its backend connection, if any).
    Close,
}

pub struct Worker {
    events: Events,
    rx: Receiver<WorkerMsg>,
    core: Core,
}

/// Everything a handler may touch; kept apart from `events` so handlers can borrow it whole.
pub struct Core {
    pub cfg: Arc<ProxyConfig>,
    pub poll: Poll,
    pub listener: Option<TcpListener>,
    pub clients: Slab<ClientConn>,
    pub backends: Slab<BackendConn>,
    pub bufs: BufPool,
    /// Spare exchanges, so a request does not allocate.
    pub spare_exchanges: Vec<Box<Exchange>>,
    pub timers: TimerWheel,
    fired: Vec<TimerEntry>,
    pub table: Arc<BackendTable>,
    pub strategy: Box<dyn Strategy>,
    /// Per backend, indexed like `table.backends`: idle connections, connections open, queue.
    pub slots: Vec<Slot>,
    /// Clients to run again after the current event (their queued backend has room now).
    pub wake: Vec<usize>,
    /// Candidate list for retries (eligible backends not tried yet).
    pub scratch: Vec<usize>,
    seed: u64,
    pub now_ms: u64,
    /// The same instant as `now_ms`, in microseconds, for latencies.
    pub now_us: u64,
    pub control: ControlLink,
    pub metrics: WorkerMetrics,
    /// The attempt budget per request id, shared by all workers.
    pub budget: Arc<IdBudget>,
    /// Early retries after `--per-try-timeout` this worker may still make.
    pub early_retries: EarlyRetryBudget,
    /// The version of `table`, for the control thread (see [`crate::link::Workers::installed_version`]).
    installed_version: Arc<AtomicU64>,
    next_flush_ms: u64,
    next_trim_ms: u64,
    accept_paused_until_ms: u64,
    accept_blocked: bool,
    max_clients: usize,
    pub shutting_down: bool,
    shutdown_deadline_ms: u64,
}

/// What a worker is made of; the data plane builds one per worker.
pub struct WorkerParts {
    pub index: usize,
    pub cfg: Arc<ProxyConfig>,
    pub poll: Poll,
    pub listener: TcpListener,
    pub rx: Receiver<WorkerMsg>,
    pub table: Arc<BackendTable>,
    pub control: ControlLink,
    pub budget: Arc<IdBudget>,
    pub installed_version: Arc<AtomicU64>,
}

impl Worker {
    pub fn new(parts: WorkerParts) -> io::Result<Worker> {
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
        } = parts;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let seed = 0x5eed_0000_u64 + index as u64;
        let strategy = strategy::build(table.strategy, &table.params, &table.backends, seed);
        let max_clients = cfg.max_conns.div_ceil(cfg.workers.max(1)).max(1);
        let tick_ms = cfg.timer_tick_ms();
        let early_retries =
            EarlyRetryBudget::new(cfg.per_try_budget_percent, crate::clock::now_ms());
        let core = Core {
            bufs: BufPool::new(cfg.buffer_size, DEFAULT_POOL_MAX_FREE),
            cfg,
            poll,
            listener: Some(listener),
            clients: Slab::new(),
            backends: Slab::new(),
            spare_exchanges: Vec::new(),
            timers: TimerWheel::new(tick_ms, DEFAULT_SLOTS),
            fired: Vec::new(),
            slots: (0..table.backends.len()).map(|_| Slot::default()).collect(),
            wake: Vec::new(),
            table,
            strategy,
            scratch: Vec::new(),
            seed,
            now_ms: crate::clock::now_ms(),
            now_us: crate::clock::now_us(),
            control,
            budget,
            early_retries,
            installed_version,
            metrics: WorkerMetrics::new(index),
            next_flush_ms: crate::clock::now_ms() + METRICS_FLUSH_MS,
            next_trim_ms: crate::clock::now_ms() + TRIM_EVERY_MS,
            accept_paused_until_ms: 0,
            accept_blocked: false,
            max_clients,
            shutting_down: false,
            shutdown_deadline_ms: 0,
        };
        Ok(Worker {
            events: Events::with_capacity(EVENTS_CAPACITY),
            rx,
            core,
        })
    }

    pub fn run(mut self) {
        loop {
            let timeout = self.core.poll_timeout();
            if let Err(e) = self.core.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("worker poll failed: {e}");
                return;
            }
            self.core.tick();
            for event in self.events.iter() {
                match event.token() {
                    LISTENER => self.core.accept_all(),
                    WAKER => self.core.drain_messages(&self.rx),
                    Token(t) if t & BACKEND_BIT != 0 => {
                        self.core.backend_event(t & !BACKEND_BIT, event)
                    }
                    Token(k) => self.core.client_event(k, event),
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
    fn tick(&mut self) {
        (self.now_ms, self.now_us) = crate::clock::now();
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let flush = self.next_flush_ms.saturating_sub(self.now_ms);
        let mut ms = Some(
            self.timers
                .poll_timeout_ms(self.now_ms)
                .map_or(flush, |t| t.min(flush)),
        );
        if self.accept_paused_until_ms != 0 {
            let wait = self.accept_paused_until_ms.saturating_sub(self.now_ms);
            ms = Some(ms.map_or(wait, |m| m.min(wait)));
        }
        if self.shutting_down {
            let wait = self.shutdown_deadline_ms.saturating_sub(self.now_ms);
            ms = Some(ms.map_or(wait, |m| m.min(wait)));
        }
        ms.map(Duration::from_millis)
    }

    fn drain_messages(&mut self, rx: &Receiver<WorkerMsg>) {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                WorkerMsg::Table(table) => self.install_table(table),
                WorkerMsg::Shutdown { timeout } => self.begin_shutdown(timeout),
                WorkerMsg::Sever(id) => self.sever(id),
            }
        }
    }

    /// Switches to a new table version: each backend's slot (idle connections, connection count,
    /// queue) follows it by id. Idle connections to backends that left or may no longer take
    /// traffic are closed, and requests queued for them are routed again.
    fn install_table(&mut self, table: Arc<BackendTable>) {
        // Counts so far go out under the old layout; the new ones follow the new table's order.
        self.flush_metrics(&table);
        let mut slots: Vec<Slot> = (0..table.backends.len()).map(|_| Slot::default()).collect();
        let old_slots = std::mem::take(&mut self.slots);
        let mut to_close = Vec::new();
        for (i, mut slot) in old_slots.into_iter().enumerate() {
            let position = self
                .table
                .backends
                .get(i)
                .and_then(|old| table.position(old.id));
            let stats = &self.table.backends[i].stats;
            match position {
                Some(j) => {
                    if !table.backends[j].is_eligible() {
                        to_close.append(&mut slot.idle);
                        slot.drain_queue(stats, &mut self.wake);
                    }
                    slots[j] = slot;
                }
                None => {
                    to_close.append(&mut slot.idle);
                    slot.drain_queue(stats, &mut self.wake);
                }
            }
        }
        // Every connection learns its backend's new position.
        for (_, b) in self.backends.iter_mut() {
            if let Some(j) = table.position_hinted(b.backend_id, b.table_index) {
                b.table_index = j;
            }
        }
        self.slots = slots;
        for bk in to_close {
            self.close_backend(bk);
        }
        self.strategy = strategy::build(table.strategy, &table.params, &table.backends, self.seed);
        debug!("worker installed backend table version {}", table.version);
        // Release: the in-flight counts of picks made under the old table are visible to the
        // control thread before the version that says this worker stopped making them.
        self.installed_version
            .store(table.version, Ordering::Release);
        self.table = table;
    }

    /// Hands the metrics counted since the last flush to the control thread.
    fn flush_metrics(&mut self, layout: &BackendTable) {
        let order: Vec<BackendId> = layout.backends.iter().map(|b| b.id).collect();
        let snap = self.metrics.take(self.clients.len() as u64, &order);
        self.control.send(ControlMsg::Metrics(Box::new(snap)));
        self.next_flush_ms = self.now_ms + METRICS_FLUSH_MS;
    }

    /// Closes every client bound to backend `id`, and idle connections to it.
    fn sever(&mut self, id: BackendId) {
        let bound: Vec<usize> = self
            .backends
            .iter()
            .filter(|(_, b)| b.backend_id == id)
            .map(|(bk, _)| bk)
            .collect();
        for bk in bound {
            match self.backends[bk].state {
                BackendState::Idle => self.close_backend(bk),
                BackendState::Busy | BackendState::Connecting => {
                    let k = self.backends[bk].client;
                    self.close_client(k);
                }
            }
        }
    }

    fn begin_shutdown(&mut self, timeout: Duration) {
        self.shutting_down = true;
        self.shutdown_deadline_ms = self.now_ms + timeout.as_millis() as u64;
        // Dropping the listener closes it; connections still in its backlog go to the other
        // listeners sharing the port, or are refused.
        self.listener = None;
        // Idle keep-alive clients get a short grace: one that is sending its next request right now
        // is answered (with Connection: close) instead of finding its connection reset.
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.state == ClientState::Head && c.ex.as_ref().is_none_or(|ex| ex.req.is_none())
            })
            .map(|(k, _)| k)
            .collect();
        let grace_ms = SHUTDOWN_IDLE_GRACE_MS.min(timeout.as_millis() as u64);
        for k in idle {
            if grace_ms == 0 {
                self.close_client(k);
            } else {
                self.set_deadline(k, grace_ms);
            }
        }
        let pooled: Vec<usize> = self
            .slots
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.idle))
            .collect();
        for bk in pooled {
            self.close_backend(bk);
        }
    }

    fn finished(&self) -> bool {
        self.shutting_down && (self.clients.is_empty() || self.now_ms >= self.shutdown_deadline_ms)
    }

    fn accept_all(&mut self) {
        if self.accept_paused_until_ms != 0 {
            return;
        }
        loop {
            if self.clients.len() >= self.max_clients {
                self.accept_blocked = true;
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => self.add_client(sock, peer.ip()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    // Out of descriptors or memory: the pending connection stays in the backlog.
                    // Pause instead of spinning on an accept that keeps failing.
                    warn!("accept paused for {ACCEPT_PAUSE_MS} ms: {e}");
                    self.accept_paused_until_ms = self.now_ms + ACCEPT_PAUSE_MS;
                    return;
                }
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    fn add_client(&mut self, mut sock: TcpStream, peer_ip: std::net::IpAddr) {
        self.metrics.current.accepted += 1;
        let _ = sock.set_nodelay(true);
        let entry = self.clients.vacant_entry();
        let k = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(k),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register client: {e}");
            return;
        }
        let mut deadline = Deadline::default();
        deadline.set(self.now_ms + self.cfg.idle_timeout_ms, k, &mut self.timers);
        entry.insert(ClientConn {
            sock,
            ready: Ready::default(),
            state: ClientState::Head,
            peer_ip,
            deadline,
            ex: None,
        });
        if self.cfg.mode == Mode::Tcp {
            let ex = self.take_exchange();
            self.clients[k].ex = Some(ex);
            self.clients[k].state = ClientState::Tunnel;
            match self.dispatch(k) {
                Next::Close => self.close_client(k),
                _ => self.drive(k),
            }
        }
    }

    fn client_event(&mut self, k: usize, event: &Event) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        c.ready.update(event);
        self.drive(k);
    }

    fn backend_event(&mut self, bk: usize, event: &Event) {
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        b.ready.update(event);
        match b.state {
            BackendState::Idle => {
                // An idle connection has nothing to say: data or a hang-up means it is done.
                if b.ready.readable || b.ready.hup {
                    self.close_backend(bk);
                }
            }
            BackendState::Connecting | BackendState::Busy => {
                let k = b.client;
                self.drive(k);
            }
        }
    }

    /// Runs a client's handler until it blocks or closes.
    pub fn drive(&mut self, k: usize) {
        loop {
            let Some(c) = self.clients.get(k) else { return };
            let next = match c.state {
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

    /// Returns memory held for connections that are gone: a slab much larger than its contents is
    /// cut back (to its last live entry: keys stay valid), as are timer slots, spare exchanges and
    /// spare buffers. So RSS falls back after a crowd of connections leaves.
    fn trim_memory(&mut self) {
        let mut released = false;
        if self.clients.capacity() > 4 * self.clients.len() + 1024 {
            self.clients.shrink_to_fit();
            released = true;
        }
        if self.backends.capacity() > 4 * self.backends.len() + 1024 {
            self.backends.shrink_to_fit();
            released = true;
        }
        self.timers.shrink();
        self.fired.shrink_to(1024);
        released |= self.bufs.trim(TRIM_KEEP_BUFFERS);
        released |= self.spare_exchanges.len() > TRIM_KEEP_BUFFERS;
        self.spare_exchanges.truncate(TRIM_KEEP_BUFFERS);
        self.spare_exchanges.shrink_to(TRIM_KEEP_BUFFERS);
        // glibc keeps freed memory in per-thread arenas; after a crowd or a burst of requests in
        // flight (a stalled backend) has gone, hand it back to the system. Every 5 s at most.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if released {
            // SAFETY: malloc_trim only releases free heap memory; no pointer we hold is affected.
            unsafe { libc::malloc_trim(0) };
        }
    }

    /// Runs clients whose queued backend got room while another client was handled.
    fn run_wakeups(&mut self) {
        while let Some(k) = self.wake.pop() {
            let queued = self
                .clients
                .get_mut(k)
                .and_then(|c| c.ex.as_mut())
                .is_some_and(|ex| std::mem::take(&mut ex.queued));
            if !queued {
                continue;
            }
            match self.dispatch(k) {
                Next::Close => self.close_client(k),
                _ => self.drive(k),
            }
        }
    }

    fn housekeeping(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now_ms, &mut fired);
        for entry in fired.drain(..) {
            if entry.token & BACKEND_BIT != 0 {
                let bk = entry.token & !BACKEND_BIT;
                let Some(b) = self.backends.get_mut(bk) else {
                    continue;
                };
                if b.deadline.fire(entry, self.now_ms, &mut self.timers)
                    && b.state == BackendState::Idle
                {
                    self.close_backend(bk);
                }
            } else {
                let k = entry.token;
                let Some(c) = self.clients.get_mut(k) else {
                    continue;
                };
                if c.deadline.fire(entry, self.now_ms, &mut self.timers) {
                    self.timed_out(k);
                }
            }
        }
        self.fired = fired;
        if self.now_ms >= self.next_flush_ms {
            let table = self.table.clone();
            self.flush_metrics(&table);
        }
        if self.now_ms >= self.next_trim_ms {
            self.next_trim_ms = self.now_ms + TRIM_EVERY_MS;
            self.trim_memory();
        }
        if self.accept_paused_until_ms != 0 && self.now_ms >= self.accept_paused_until_ms {
            self.accept_paused_until_ms = 0;
            self.accept_all();
        }
        if self.shutting_down && self.now_ms >= self.shutdown_deadline_ms {
            let all: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
            for k in all {
                self.close_client(k);
            }
        }
    }

    fn timed_out(&mut self, k: usize) {
        let Some(c) = self.clients.get(k) else { return };
        let next = match c.state {
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
    pub fn set_deadline(&mut self, k: usize, after_ms: u64) {
        if let Some(c) = self.clients.get_mut(k) {
            c.deadline.set(self.now_ms + after_ms, k, &mut self.timers);
        }
    }

    pub fn take_exchange(&mut self) -> Box<Exchange> {
        let mut ex = self.spare_exchanges.pop().unwrap_or_default();
        ex.started_ms = self.now_ms;
        ex
    }

    /// Gives an exchange's buffers and the exchange itself back to the worker's free lists.
    pub fn recycle_exchange(&mut self, mut ex: Box<Exchange>) {
        self.bufs.release(&mut ex.req);
        self.bufs.release(&mut ex.resp);
        ex.reset();
        self.spare_exchanges.push(ex);
    }

    pub fn close_client(&mut self, k: usize) {
        if !self.clients.contains(k) {
            return;
        }
        self.unbind_backend(k, false);
        self.leave_queue(k);
        let c = self.clients.remove(k);
        self.metrics.current.closed += 1;
        if let Some(ex) = c.ex {
            self.recycle_exchange(ex);
        }
        drop(c.sock);
        if self.accept_blocked && self.clients.len() < self.max_clients {
            self.accept_blocked = false;
            self.accept_all();
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
