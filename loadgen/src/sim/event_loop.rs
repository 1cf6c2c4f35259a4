//! The simulator's event loop: one per thread, serving the HTTP/1.1 servers (and the control
//! listener) assigned to it.
//!
//! Service times are deadlines in a binary heap that bounds the poll timeout, never sleeping
//! threads. A server with bounded workers (heavytail) admits a request when it has a free
//! worker and queues it otherwise; each deadline that releases a worker starts the next queued
//! request. Requests on one connection are answered in order, one at a time. A client that
//! closes its side abandons its pending request.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buf::ReadBuf;
use crate::h1::{self, H1Error, Method, Request, RequestReader, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use crate::net::{interrupted, would_block};
use crate::sim::{control, lock, Shared};
use crate::timer::PreciseTimer;

pub(crate) const WAKER: Token = Token(usize::MAX);
/// The precise wake-up for service-time deadlines.
const TIMER: Token = Token(usize::MAX - 1);
/// Listener `i` has token `FIRST_LISTENER + i`; connection tokens are slab keys below it.
const FIRST_LISTENER: usize = usize::MAX / 2;
const EVENTS_CAPACITY: usize = 1024;
/// Read buffers grow by this much (requests are small; bodies up to 1 MiB grow it further).
const READ_CHUNK: usize = 4 * 1024;
/// Stop reading from a connection that has this much unprocessed input.
const MAX_INBUF: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Server(usize),
    Control,
}

pub(crate) struct Listener {
    pub socket: TcpListener,
    pub origin: Origin,
}

/// What a thread needs to run its loop.
pub(crate) struct LoopParts {
    pub poll: Poll,
    pub listeners: Vec<Listener>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
}

/// An answer decided but not yet written.
#[derive(Debug, Clone, Copy)]
struct Reply {
    status: u16,
    retry_after_s: Option<u64>,
    body: &'static [u8],
    close: bool,
}

struct Conn {
    stream: TcpStream,
    origin: Origin,
    /// Distinguishes this connection from later ones that reuse its slab key.
    serial: u64,
    inbuf: ReadBuf,
    outbuf: Vec<u8>,
    written: usize,
    reader: RequestReader,
    /// The current request's answer, while it waits for a timer or a worker.
    pending: Option<Reply>,
    queued_at: Option<usize>,
    close_after_flush: bool,
    peer_closed: bool,
}

impl Conn {
    fn fill(&mut self) -> io::Result<()> {
        while !self.peer_closed && self.inbuf.len() < MAX_INBUF {
            match self.inbuf.read_from(&mut self.stream) {
                Ok((0, _)) => self.peer_closed = true,
                Ok((_, true)) => return Ok(()), // drained
                Ok((_, false)) => {}
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.outbuf.clear();
        self.written = 0;
        Ok(())
    }

    fn flushed(&self) -> bool {
        self.outbuf.is_empty()
    }

    fn write_reply(&mut self, reply: Reply) {
        let retry;
        let extra: &[(&str, String)] = match reply.retry_after_s {
            Some(s) => {
                retry = [("Retry-After", s.to_string())];
                &retry
            }
            None => &[],
        };
        h1::write_response(
            &mut self.outbuf,
            reply.status,
            "text/plain",
            extra,
            reply.body,
            reply.close,
        );
        self.close_after_flush |= reply.close;
    }
}

/// A deadline: answer connection `key` (if it is still connection `serial`), and release a
/// worker of `worker_of` if the request held one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    seq: u64,
    key: usize,
    serial: u64,
    worker_of: Option<usize>,
}

/// A request waiting for a worker.
#[derive(Debug, Clone, Copy)]
struct Job {
    key: usize,
    serial: u64,
    delay_ms: u64,
}

#[derive(Debug, Default)]
struct Workers {
    busy: u32,
    waiting: VecDeque<Job>,
}

struct Loop {
    poll: Poll,
    timer: PreciseTimer,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    next_serial: u64,
    workers: Vec<Workers>,
    shared: Arc<Shared>,
}

/// Runs until `stop` is set (and the waker fires).
pub(crate) fn run(parts: LoopParts) -> io::Result<()> {
    let LoopParts {
        poll,
        mut listeners,
        shared,
        stop,
    } = parts;
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry()
            .register(&mut l.socket, Token(FIRST_LISTENER + i), Interest::READABLE)?;
    }
    let timer = PreciseTimer::new(poll.registry(), TIMER)?;
    let mut lp = Loop {
        poll,
        timer,
        listeners,
        conns: Slab::new(),
        timers: BinaryHeap::new(),
        timer_seq: 0,
        next_serial: 0,
        workers: (0..shared.servers.len())
            .map(|_| Workers::default())
            .collect(),
        shared,
    };
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    while !stop.load(Ordering::Acquire) {
        let next = lp.timers.peek().map(|Reverse(t)| t.at);
        if let Some(at) = next {
            lp.timer.arm(at)?;
        }
        // Whole milliseconds, rounded up: only a fallback for the precise timer.
        let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = lp.poll.poll(&mut events, timeout) {
            if interrupted(&e) {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                TIMER => lp.timer.clear(),
                Token(t) if t >= FIRST_LISTENER => lp.accept(t - FIRST_LISTENER),
                Token(key) => lp.drive(key),
            }
        }
        lp.fire_timers();
    }
    Ok(())
}

impl Loop {
    fn accept(&mut self, index: usize) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let origin = listener.origin;
        loop {
            match listener.socket.accept() {
                Ok((mut stream, _)) => {
                    if self.unreachable(origin) {
                        // An outage: the connection is closed at once, nothing is read.
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(entry.key()), interest)
                    {
                        log::warn!("sim: register connection: {e}");
                        continue;
                    }
                    self.next_serial += 1;
                    entry.insert(Conn {
                        stream,
                        origin,
                        serial: self.next_serial,
                        inbuf: ReadBuf::with_chunk(READ_CHUNK),
                        outbuf: Vec::new(),
                        written: 0,
                        reader: RequestReader::default(),
                        pending: None,
                        queued_at: None,
                        close_after_flush: false,
                        peer_closed: false,
                    });
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    // Typically EMFILE: the pending connection stays in the backlog until the
                    // next accept event.
                    log::warn!("sim: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads, answers what can be answered now, writes; closes the connection when done.
    fn drive(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.fill().and_then(|()| conn.flush()).is_err() {
                return self.close(key);
            }
            if conn.flushed() && conn.close_after_flush {
                return self.close(key);
            }
            if conn.peer_closed && conn.pending.is_some() {
                // The client gave up (or half-closed): drop its request, freeing a queue slot.
                // Work already in service keeps its worker until its deadline, like a real
                // server that cannot cancel.
                return self.close(key);
            }
            if conn.pending.is_some() || conn.close_after_flush {
                return;
            }
            match conn.reader.advance(conn.inbuf.data()) {
                Ok((n, Some(req))) => {
                    conn.inbuf.consume(n);
                    self.handle(key, req);
                }
                Ok((n, None)) => {
                    conn.inbuf.consume(n);
                    if conn.peer_closed && conn.flushed() {
                        self.close(key);
                    }
                    return;
                }
                Err(e) => {
                    let status = if e == H1Error::BodyTooLarge { 413 } else { 400 };
                    conn.inbuf.clear();
                    let body = format!("{e}\n");
                    h1::write_response(
                        &mut conn.outbuf,
                        status,
                        "text/plain",
                        &[],
                        body.as_bytes(),
                        true,
                    );
                    conn.close_after_flush = true;
                }
            }
        }
    }

    fn handle(&mut self, key: usize, req: Request) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let index = match conn.origin {
            Origin::Control => {
                let (status, body) = control::route(&self.shared, &req);
                let close = !req.keep_alive;
                h1::write_response(
                    &mut conn.outbuf,
                    status,
                    "application/json",
                    &[],
                    &body,
                    close,
                );
                conn.close_after_flush |= close;
                return;
            }
            Origin::Server(index) => index,
        };
        let serial = conn.serial;
        let now = Instant::now();
        let t_s = self.shared.t_s(now);
        let Some(slot) = self.shared.servers.get(index) else {
            return;
        };
        if lock(&slot.state).unreachable(t_s) {
            // An outage: kept-alive connections are closed without an answer too.
            return self.close(key);
        }
        let (decision, stalled_until) = {
            let mut state = lock(&slot.state);
            let decision = state.decide(self.shared.profile, &req, now, t_s);
            (decision, state.stalled_until(now))
        };
        if let Some((id, accepted)) = decision.attempt {
            lock(&self.shared.ledger).record(id, accepted, now);
        }
        conn.pending = Some(Reply {
            status: decision.status,
            retry_after_s: decision.retry_after_s,
            body: if req.method == Method::Head {
                b""
            } else {
                decision.body
            },
            close: !req.keep_alive,
        });
        let instant = decision.delay_ms == 0 && decision.workers.is_none();
        if decision.served && !instant {
            // Unbounded servers go through the same accounting, so `active` counts every
            // request in service.
            let limit = decision.workers.unwrap_or(u32::MAX);
            self.admit(index, key, serial, decision.delay_ms, limit, now);
        } else if let Some(until) = stalled_until {
            self.push_timer(until, key, serial, None);
        } else if decision.delay_ms == 0 {
            // The caller's drive loop flushes it.
            self.write_pending(key);
        } else {
            let at = now + Duration::from_millis(decision.delay_ms);
            self.push_timer(at, key, serial, None);
        }
    }

    /// Starts the request on a free worker or queues it.
    fn admit(
        &mut self,
        index: usize,
        key: usize,
        serial: u64,
        delay_ms: u64,
        limit: u32,
        now: Instant,
    ) {
        let Some(w) = self.workers.get_mut(index) else {
            return;
        };
        if w.busy < limit {
            w.busy += 1;
            self.push_timer(
                now + Duration::from_millis(delay_ms),
                key,
                serial,
                Some(index),
            );
        } else {
            w.waiting.push_back(Job {
                key,
                serial,
                delay_ms,
            });
            if let Some(conn) = self.conns.get_mut(key) {
                conn.queued_at = Some(index);
            }
        }
        self.publish(index);
    }

    /// Frees a worker of server `index` and starts queued requests while workers are free.
    fn release_worker(&mut self, index: usize, now: Instant) {
        let limit = match self.shared.servers.get(index) {
            Some(slot) => lock(&slot.state).params.workers.unwrap_or(u32::MAX),
            None => return,
        };
        let Some(w) = self.workers.get_mut(index) else {
            return;
        };
        w.busy = w.busy.saturating_sub(1);
        let mut started = Vec::new();
        while w.busy < limit {
            let Some(job) = w.waiting.pop_front() else {
                break;
            };
            let alive = self
                .conns
                .get(job.key)
                .is_some_and(|c| c.serial == job.serial);
            if alive {
                w.busy += 1;
                started.push(job);
            }
        }
        for job in started {
            if let Some(conn) = self.conns.get_mut(job.key) {
                conn.queued_at = None;
            }
            let at = now + Duration::from_millis(job.delay_ms);
            self.push_timer(at, job.key, job.serial, Some(index));
        }
        self.publish(index);
    }

    /// Mirrors queue depth and workers in service for `GET /servers`.
    fn publish(&self, index: usize) {
        if let (Some(w), Some(slot)) = (self.workers.get(index), self.shared.servers.get(index)) {
            slot.queue_depth
                .store(w.waiting.len() as u64, Ordering::Relaxed);
            slot.active.store(u64::from(w.busy), Ordering::Relaxed);
        }
    }

    fn push_timer(&mut self, at: Instant, key: usize, serial: u64, worker_of: Option<usize>) {
        self.timer_seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq: self.timer_seq,
            key,
            serial,
            worker_of,
        }));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(timer)) = self.timers.peek().copied() {
            if timer.at > now {
                return;
            }
            self.timers.pop();
            let server = match self.conns.get(timer.key) {
                Some(c) if c.serial == timer.serial => match c.origin {
                    Origin::Server(i) => Some(i),
                    Origin::Control => None,
                },
                _ => timer.worker_of,
            };
            let stalled = server
                .and_then(|i| self.shared.servers.get(i))
                .and_then(|slot| lock(&slot.state).stalled_until(now));
            if let Some(until) = stalled {
                // The worker (if any) stays busy through the stall.
                self.push_timer(until, timer.key, timer.serial, timer.worker_of);
                continue;
            }
            if let Some(index) = timer.worker_of {
                self.release_worker(index, now);
            }
            if self
                .conns
                .get(timer.key)
                .is_some_and(|c| c.serial == timer.serial)
            {
                self.answer(timer.key);
            }
        }
    }

    /// Writes the pending answer and carries on with the connection.
    fn answer(&mut self, key: usize) {
        self.write_pending(key);
        self.drive(key);
    }

    fn write_pending(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if let Some(reply) = conn.pending.take() {
                conn.write_reply(reply);
            }
        }
    }

    /// Whether the server behind `origin` is in one of its outages now.
    fn unreachable(&self, origin: Origin) -> bool {
        let Origin::Server(index) = origin else {
            return false;
        };
        let t_s = self.shared.t_s(Instant::now());
        self.shared
            .servers
            .get(index)
            .is_some_and(|slot| lock(&slot.state).unreachable(t_s))
    }

    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(index) = conn.queued_at {
            if let Some(w) = self.workers.get_mut(index) {
                w.waiting
                    .retain(|job| !(job.key == key && job.serial == conn.serial));
            }
            self.publish(index);
        }
    }
}
