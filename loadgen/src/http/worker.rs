//! One generator thread: an event loop over its share of the connections.
//!
//! A connection is either free (no request; maybe an idle keep-alive stream, maybe none) or
//! carries exactly one request (no pipelining). Open loop: requests fall due on the thread's
//! schedule and go to free connections in order; when none is free they wait, and their
//! latency keeps counting from the due time. Closed loop: a connection that becomes free sends
//! its next request at once. Per-request work is one write, usually one read, and an httparse
//! call over a reused buffer.

use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buf::ReadBuf;
use crate::h1::{self, ResponseReader};
use crate::http::report::{ErrorKind, Outcome, Part};
use crate::http::{Body, HttpConfig, Progress};
use crate::id::{Id, IdGenerator, ID_LEN};
use crate::net::{self, interrupted, would_block};
use crate::rng::mix64;
use crate::schedule::Schedule;
use crate::timer::PreciseTimer;
use crate::tls::Stream;

/// The precise wake-up; connection tokens are slab keys.
const TIMER: Token = Token(usize::MAX);
const EVENTS_CAPACITY: usize = 1024;
const READ_CHUNK: usize = 4 * 1024;
/// How often request deadlines are checked.
const TIMEOUT_SCAN: Duration = Duration::from_millis(10);
/// A connection whose connect failed rests this long before its next request, so a closed
/// loop against a dead target doesn't spin.
const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// This thread's slice of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share {
    pub index: usize,
    pub threads: usize,
    pub connections: usize,
    pub start: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    /// Latency origin: the scheduled time (open loop) or the send (closed loop).
    origin: Instant,
    deadline: Instant,
    id: Option<Id>,
    measured: bool,
}

struct Conn {
    stream: Option<Stream>,
    connected: bool,
    /// Its TLS handshake has been counted in the report.
    handshake_counted: bool,
    out: Vec<u8>,
    written: usize,
    inbuf: ReadBuf,
    reader: ResponseReader,
    inflight: Option<Inflight>,
}

struct Worker<'a> {
    cfg: &'a HttpConfig,
    progress: &'a Progress,
    poll: Poll,
    timer: PreciseTimer,
    conns: Slab<Conn>,
    free: Vec<usize>,
    cooling: Vec<(Instant, usize)>,
    inflight: usize,
    template: Vec<u8>,
    ids: Option<IdGenerator>,
    schedule: Option<Schedule>,
    next_send: u64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    source_ips: Vec<IpAddr>,
    next_source: usize,
    head_request: bool,
    part: Part,
}

pub(crate) fn run(cfg: &HttpConfig, share: Share, progress: &Progress) -> io::Result<Part> {
    let mut w = Worker::new(cfg, share, progress)?;
    w.run()?;
    Ok(w.part)
}

impl<'a> Worker<'a> {
    fn new(cfg: &'a HttpConfig, share: Share, progress: &'a Progress) -> io::Result<Self> {
        let measure_from = share.start + cfg.warmup;
        let end = measure_from + cfg.duration;
        let schedule = (cfg.rate_rps > 0.0).then(|| {
            // Threads interleave: thread k's requests fall k / rate after thread 0's.
            let offset = Duration::from_secs_f64(share.index as f64 / cfg.rate_rps);
            let rate = cfg.rate_rps / share.threads as f64;
            Schedule::new(share.start + offset, end, rate)
        });
        let ids = matches!(cfg.body, Body::Id24).then(|| match cfg.seed {
            Some(seed) => IdGenerator::with_seed(mix64(seed ^ share.index as u64)),
            None => IdGenerator::new(),
        });
        let body: Option<Vec<u8>> = match &cfg.body {
            Body::None => None,
            Body::Fixed(b) => Some(b.clone()),
            Body::Id24 => Some(vec![b'0'; ID_LEN]),
        };
        let mut template = Vec::new();
        h1::write_request(
            &mut template,
            &cfg.method,
            &cfg.host,
            &cfg.path,
            &cfg.headers,
            body.as_deref(),
            cfg.close,
        );
        let mut conns = Slab::with_capacity(share.connections);
        for _ in 0..share.connections {
            conns.insert(Conn {
                stream: None,
                connected: false,
                handshake_counted: false,
                out: Vec::new(),
                written: 0,
                inbuf: ReadBuf::with_chunk(READ_CHUNK),
                reader: ResponseReader::new(),
                inflight: None,
            });
        }
        let mut source_ips = cfg.source_ips.clone();
        if !source_ips.is_empty() {
            let k = share.index % source_ips.len();
            source_ips.rotate_left(k);
        }
        let poll = Poll::new()?;
        let timer = PreciseTimer::new(poll.registry(), TIMER)?;
        Ok(Worker {
            cfg,
            progress,
            poll,
            timer,
            free: (0..share.connections).rev().collect(),
            conns,
            cooling: Vec::new(),
            inflight: 0,
            template,
            ids,
            schedule,
            next_send: 0,
            start: share.start,
            measure_from,
            end,
            source_ips,
            next_source: 0,
            head_request: cfg.method.eq_ignore_ascii_case("HEAD"),
            part: Part::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        if !self.cfg.close {
            for key in 0..self.conns.len() {
                // A failed pre-connect is retried (and counted) when a request needs it.
                let _ = self.connect(key);
            }
        }
        // Connects may complete meanwhile; requests start together at the common start.
        while Instant::now() < self.start {
            self.poll_once(&mut events, self.start)?;
        }
        let hard_stop = self.end + self.cfg.timeout + TIMEOUT_SCAN * 2;
        let mut next_scan = Instant::now() + TIMEOUT_SCAN;
        loop {
            let now = Instant::now();
            self.pump(now);
            if (now >= self.end && self.inflight == 0) || now >= hard_stop {
                break;
            }
            let mut wake = next_scan;
            if let Some(s) = &self.schedule {
                // With a backlog, the next wake-up that matters is a connection freeing up.
                if self.next_send >= s.due() {
                    if let Some(due) = s.next_due_at() {
                        // Waking half a window early and sending a whole window's worth spaces
                        // wake-ups by about half the window at high rates (timer re-arming is
                        // the generator's largest cost), and still sends low-rate requests
                        // before their time despite the wake-up latency.
                        let half = self.cfg.send_ahead / 2;
                        wake = wake.min(due.checked_sub(half).unwrap_or(due));
                    }
                }
            } else if now < self.end {
                wake = wake.min(self.end);
            }
            self.poll_once(&mut events, wake)?;
            let now = Instant::now();
            if now >= next_scan {
                self.expire(now);
                next_scan = now + TIMEOUT_SCAN;
            }
        }
        self.account_schedule();
        Ok(())
    }

    /// Waits for events until `wake` at the latest and handles them.
    fn poll_once(&mut self, events: &mut Events, wake: Instant) -> io::Result<()> {
        self.timer.arm(wake)?;
        // Whole milliseconds, rounded up: only a fallback for the precise timer.
        let timeout = wake.saturating_duration_since(Instant::now());
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                TIMER => self.timer.clear(),
                Token(key) => self.drive(key, true),
            }
        }
        Ok(())
    }

    /// Hands due requests (or, closed loop, new ones) to free connections.
    fn pump(&mut self, now: Instant) {
        if let Some(s) = self.schedule.as_mut() {
            s.advance(now + self.cfg.send_ahead);
            loop {
                let Some(s) = self.schedule.as_ref() else {
                    return;
                };
                if self.next_send >= s.due() || self.free.is_empty() {
                    return;
                }
                let scheduled = s.time_of(self.next_send);
                let Some(key) = self.free.pop() else {
                    return;
                };
                self.next_send += 1;
                self.dispatch(key, scheduled, now);
            }
        } else if now < self.end {
            while let Some(key) = self.free.pop() {
                self.dispatch(key, now, now);
            }
        }
    }

    /// Sends the request scheduled at `scheduled` (closed loop: now) on connection `key`.
    fn dispatch(&mut self, key: usize, scheduled: Instant, now: Instant) {
        let measured = scheduled >= self.measure_from && scheduled < self.end;
        // Latency runs from the schedule, or from the send when it went out a little early.
        let origin = scheduled.min(now);
        let id = self.ids.as_mut().map(IdGenerator::next_id);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.out.clear();
        conn.out.extend_from_slice(&self.template);
        if let Some(id) = &id {
            let len = conn.out.len();
            conn.out[len - ID_LEN..].copy_from_slice(id);
        }
        conn.written = 0;
        conn.inflight = Some(Inflight {
            origin,
            deadline: now + self.cfg.timeout,
            id,
            measured,
        });
        self.inflight += 1;
        if measured {
            self.part.sent += 1;
        }
        if conn.stream.is_none() {
            if self.connect(key).is_err() {
                self.fail(key, ErrorKind::Connect);
            }
        } else if conn.connected {
            // The answer can't be there yet: write only, the readable event will follow.
            self.drive(key, false);
        }
    }

    fn connect(&mut self, key: usize) -> io::Result<()> {
        let source = (!self.source_ips.is_empty()).then(|| {
            self.next_source = (self.next_source + 1) % self.source_ips.len();
            self.source_ips[self.next_source]
        });
        let sock = net::connect_from(source, self.cfg.target)?;
        let mut stream = Stream::new(sock, self.cfg.tls.as_ref())?;
        self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.stream = Some(stream);
            conn.connected = false;
            conn.handshake_counted = false;
        }
        Ok(())
    }

    /// Completes a connect, writes the request, and (with `read`) reads the response.
    fn drive(&mut self, key: usize, read: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        if !conn.connected {
            match net::connect_result(stream.socket()) {
                Ok(true) => conn.connected = true,
                Ok(false) => return,
                Err(_) if conn.inflight.is_some() => return self.fail(key, ErrorKind::Connect),
                Err(_) => return self.close_stream(key),
            }
        }
        while conn.written < conn.out.len() {
            match stream.write(&conn.out[conn.written..]) {
                Ok(0) => return self.fail(key, ErrorKind::Reset),
                Ok(n) => conn.written += n,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.fail(key, error_kind(&e)),
            }
        }
        // TLS records rustls still holds (the ClientHello, the rest of a request).
        if let Err(e) = stream.flush() {
            return self.fail_or_close(key, error_kind(&e));
        }
        if !read {
            return;
        }
        loop {
            match conn.inbuf.read_from(stream) {
                Ok((0, _)) if conn.inflight.is_none() => return self.close_stream(key),
                Ok((0, _)) => {
                    return match conn.reader.at_eof() {
                        Some(resp) => self.complete(key, resp.status, false),
                        None => self.fail(key, ErrorKind::Reset),
                    };
                }
                Ok(_) if conn.inflight.is_none() => {
                    // Bytes nobody asked for: the connection is out of step.
                    return self.close_stream(key);
                }
                Ok((_, short)) => match conn.reader.advance(conn.inbuf.data(), self.head_request) {
                    Ok((used, Some(resp))) => {
                        conn.inbuf.consume(used);
                        return self.complete(key, resp.status, resp.keep_alive);
                    }
                    Ok((used, None)) => {
                        conn.inbuf.consume(used);
                        if short {
                            return; // drained; the rest comes with the next readable event
                        }
                    }
                    Err(_) => return self.fail(key, ErrorKind::Parse),
                },
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.fail_or_close(key, error_kind(&e)),
            }
        }
    }

    /// A broken connection fails its request, or is just dropped when it carries none.
    fn fail_or_close(&mut self, key: usize, kind: ErrorKind) {
        if self.conns.get(key).is_some_and(|c| c.inflight.is_some()) {
            self.fail(key, kind);
        } else {
            if kind == ErrorKind::Tls {
                log::debug!("http: TLS failed on an idle connection");
            }
            self.close_stream(key);
        }
    }

    fn complete(&mut self, key: usize, status: u16, keep_alive: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(inflight) = conn.inflight.take() else {
            return;
        };
        self.inflight -= 1;
        let latency_us = inflight.origin.elapsed().as_micros() as u64;
        if inflight.measured && !conn.handshake_counted {
            match conn.stream.as_ref().and_then(Stream::handshake_kind) {
                Some(rustls::HandshakeKind::Resumed) => self.part.handshakes.resumed += 1,
                Some(_) => self.part.handshakes.full += 1,
                None => {}
            }
            conn.handshake_counted = true;
        }
        self.progress.responses.fetch_add(1, Ordering::Relaxed);
        if inflight.measured {
            self.part.responses += 1;
            self.part.hist.saturating_record(latency_us.max(1));
            *self.part.status.entry(status).or_default() += 1;
            if self.cfg.record_outcomes {
                self.part.outcomes.push(Outcome {
                    id: inflight.id,
                    result: Ok(status),
                    latency_us,
                });
            }
        }
        if !keep_alive || self.cfg.close {
            self.close_stream(key);
        }
        self.free.push(key);
    }

    fn fail(&mut self, key: usize, kind: ErrorKind) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(inflight) = conn.inflight.take() else {
            return;
        };
        self.inflight -= 1;
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        if inflight.measured {
            self.part.error(kind);
            if self.cfg.record_outcomes {
                self.part.outcomes.push(Outcome {
                    id: inflight.id,
                    result: Err(kind),
                    latency_us: inflight.origin.elapsed().as_micros() as u64,
                });
            }
        }
        log::debug!("http: request failed: {}", kind.name());
        self.close_stream(key);
        if kind == ErrorKind::Connect {
            self.cooling.push((Instant::now() + CONNECT_RETRY, key));
        } else {
            self.free.push(key);
        }
    }

    /// Drops the connection's stream; the next request on it reconnects.
    fn close_stream(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.connected = false;
        conn.handshake_counted = false;
        conn.inbuf.clear();
        conn.reader = ResponseReader::new();
    }

    /// Times out overdue requests and returns rested connections to the free list.
    fn expire(&mut self, now: Instant) {
        let overdue: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.inflight.is_some_and(|i| i.deadline <= now))
            .map(|(key, _)| key)
            .collect();
        for key in overdue {
            self.fail(key, ErrorKind::Timeout);
        }
        let free = &mut self.free;
        self.cooling.retain(|&(at, key)| {
            if at <= now {
                free.push(key);
            }
            at > now
        });
    }

    /// Scheduled and unsent counts for the measured window.
    fn account_schedule(&mut self) {
        let Some(s) = &self.schedule else {
            return;
        };
        let first_measured = s.index_at(self.measure_from);
        let total = s.total();
        self.part.scheduled = total.saturating_sub(first_measured);
        self.part.unsent = total.saturating_sub(self.next_send.max(first_measured));
    }
}

/// A TLS failure (bad certificate, alert, broken record) shows as invalid data; anything else
/// broke the connection.
fn error_kind(e: &io::Error) -> ErrorKind {
    if e.kind() == io::ErrorKind::InvalidData {
        ErrorKind::Tls
    } else {
        ErrorKind::Reset
    }
}
