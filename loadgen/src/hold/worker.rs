//! The holder's event loop: connects at a bounded rate, pings each connection on its own
//! phase of the interval, reconnects what fails, and closes a per-second [`Tick`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::buf::ReadBuf;
use crate::h1::{self, ResponseReader};
use crate::hold::{HoldConfig, HoldSummary, Tick, RECONNECT_DELAY};
use crate::latency::{self, LatencySummary};
use crate::net::{self, interrupted, would_block};
use crate::tls::Stream;

const EVENTS_CAPACITY: usize = 4096;
/// Ping answers are small; 20,000 connections × 512 bytes stays modest.
const READ_CHUNK: usize = 512;
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its turn to connect (initially, or after a failure).
    Idle,
    /// The TCP connect, then (over TLS) the handshake.
    Connecting {
        since: Instant,
    },
    Established,
}

struct Conn {
    stream: Option<Stream>,
    state: State,
    /// Bumped on every (re)connect so timers of an older stream are ignored.
    generation: u64,
    out: Vec<u8>,
    written: usize,
    inbuf: ReadBuf,
    reader: ResponseReader,
    ping_sent: Option<Instant>,
}

struct Holder<'a> {
    cfg: &'a HoldConfig,
    poll: Poll,
    conns: Vec<Conn>,
    /// Connections waiting to connect, in order.
    to_connect: VecDeque<usize>,
    /// (when, connection, generation): next ping of an established connection, or a reconnect.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    ping: Vec<u8>,
    next_source: usize,
    established: u64,
    connecting: u64,
    failed: u64,
    max_established: u64,
    second: Tick,
    second_hist: hdrhistogram::Histogram<u64>,
    total_hist: hdrhistogram::Histogram<u64>,
    /// Pings answered before this time stay out of `total_hist` and `total_pings`.
    measure_from: Instant,
    total_pings: u64,
    total_ping_errors: u64,
}

pub(crate) fn run(cfg: &HoldConfig, mut on_tick: impl FnMut(&Tick)) -> io::Result<HoldSummary> {
    let mut h = Holder::new(cfg)?;
    let start = Instant::now();
    h.measure_from = start + cfg.warmup;
    let end = start + cfg.duration;
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    let mut next_tick = start + TICK;
    let mut credit = 0.0f64;
    let mut last_ramp = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Token bucket: connect_rate connects per second, bursts of at most one second's worth.
        credit = (credit
            + now.duration_since(last_ramp).as_secs_f64() * f64::from(cfg.connect_rate))
        .min(f64::from(cfg.connect_rate.max(1)));
        last_ramp = now;
        while credit >= 1.0 {
            let Some(key) = h.to_connect.pop_front() else {
                break;
            };
            credit -= 1.0;
            h.connect(key, now);
        }
        h.fire_timers(now);
        if now >= next_tick {
            h.second.t_s = now.duration_since(start).as_secs_f64().round() as u64;
            let tick = h.close_second();
            on_tick(&tick);
            next_tick += TICK;
        }
        let mut wake = next_tick.min(end);
        if let Some(Reverse((at, _, _))) = h.timers.peek() {
            wake = wake.min(*at);
        }
        if !h.to_connect.is_empty() {
            wake = wake.min(now + Duration::from_millis(1));
        }
        match h
            .poll
            .poll(&mut events, Some(wake.saturating_duration_since(now)))
        {
            Ok(()) => {}
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            h.drive(event.token().0);
        }
    }
    h.finish_pings(end + cfg.timeout, &mut events)?;
    let l = LatencySummary::of(&h.total_hist);
    Ok(HoldSummary {
        connections: cfg.connections as u64,
        procs: 1,
        duration_s: cfg.duration.as_secs_f64(),
        max_established: h.max_established,
        established_at_end: h.established,
        failed: h.failed,
        pings: h.total_pings,
        ping_errors: h.total_ping_errors,
        latency_us: l,
        hist: latency::to_pairs(&h.total_hist),
    })
}

impl<'a> Holder<'a> {
    fn new(cfg: &'a HoldConfig) -> io::Result<Self> {
        let mut ping = Vec::new();
        h1::write_request(&mut ping, "GET", &cfg.host, &cfg.path, &[], None, false);
        let conns = (0..cfg.connections)
            .map(|_| Conn {
                stream: None,
                state: State::Idle,
                generation: 0,
                out: Vec::new(),
                written: 0,
                inbuf: ReadBuf::with_chunk(READ_CHUNK),
                reader: ResponseReader::new(),
                ping_sent: None,
            })
            .collect();
        Ok(Holder {
            cfg,
            poll: Poll::new()?,
            conns,
            to_connect: (0..cfg.connections).collect(),
            timers: BinaryHeap::new(),
            ping,
            next_source: 0,
            established: 0,
            connecting: 0,
            failed: 0,
            max_established: 0,
            second: Tick::default(),
            second_hist: latency::new_histogram(),
            total_hist: latency::new_histogram(),
            total_pings: 0,
            total_ping_errors: 0,
            measure_from: Instant::now(),
        })
    }

    fn connect(&mut self, key: usize, now: Instant) {
        let source = (!self.cfg.source_ips.is_empty()).then(|| {
            self.next_source = (self.next_source + 1) % self.cfg.source_ips.len();
            self.cfg.source_ips[self.next_source]
        });
        let stream = net::connect_from(source, self.cfg.target).and_then(|sock| {
            let mut s = Stream::new(sock, self.cfg.tls.as_ref())?;
            self.poll.registry().register(
                &mut s,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.generation += 1;
        match stream {
            Ok(stream) => {
                conn.stream = Some(stream);
                conn.state = State::Connecting { since: now };
                self.connecting += 1;
                // Doubles as the connect timeout.
                let generation = conn.generation;
                self.timers
                    .push(Reverse((now + self.cfg.timeout, key, generation)));
            }
            Err(e) => {
                log::debug!("hold: connect: {e}");
                self.failed += 1;
                let generation = conn.generation;
                self.timers
                    .push(Reverse((now + RECONNECT_DELAY, key, generation)));
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, key, generation))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.generation != generation {
                continue;
            }
            match conn.state {
                State::Idle => self.to_connect.push_back(key),
                State::Connecting { since } if now.duration_since(since) >= self.cfg.timeout => {
                    self.lose(key, now);
                }
                State::Connecting { .. } => {}
                State::Established => self.ping(key, at, now),
            }
        }
    }

    /// Sends a ping unless the last one is still out (then it may have timed out).
    fn ping(&mut self, key: usize, scheduled: Instant, now: Instant) {
        let interval = self.cfg.ping_interval;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(sent) = conn.ping_sent {
            if now.duration_since(sent) >= self.cfg.timeout {
                // lose() counts the ping error.
                return self.lose(key, now);
            }
        } else {
            conn.out.clear();
            conn.out.extend_from_slice(&self.ping);
            conn.written = 0;
            conn.ping_sent = Some(now);
        }
        let generation = conn.generation;
        self.timers
            .push(Reverse((scheduled + interval, key, generation)));
        self.drive(key);
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let now = Instant::now();
        if let State::Connecting { .. } = conn.state {
            let connected = net::connect_result(stream.socket())
                .and_then(|tcp| Ok(tcp && stream.complete_handshake()?));
            match connected {
                Ok(true) => {
                    conn.state = State::Established;
                    // Retires the connect-timeout timer.
                    conn.generation += 1;
                    self.connecting -= 1;
                    self.established += 1;
                    self.max_established = self.max_established.max(self.established);
                    // Spread first pings over the interval by connection index.
                    let phase = self
                        .cfg
                        .ping_interval
                        .mul_f64(key as f64 / self.cfg.connections as f64);
                    self.timers
                        .push(Reverse((now + phase, key, conn.generation)));
                }
                Ok(false) => return,
                Err(_) => return self.lose(key, now),
            }
        }
        while conn.written < conn.out.len() {
            match stream.write(&conn.out[conn.written..]) {
                Ok(0) => return self.lose(key, now),
                Ok(n) => conn.written += n,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(_) => return self.lose(key, now),
            }
        }
        if stream.flush().is_err() {
            return self.lose(key, now);
        }
        loop {
            match conn.inbuf.read_from(stream) {
                Ok((0, _)) => return self.lose(key, now),
                Ok(_) => match conn.reader.advance(conn.inbuf.data(), false) {
                    Ok((used, Some(resp))) => {
                        conn.inbuf.consume(used);
                        if let Some(sent) = conn.ping_sent.take() {
                            let us = now.duration_since(sent).as_micros() as u64;
                            self.second_hist.saturating_record(us.max(1));
                            self.second.pings += 1;
                            if now >= self.measure_from {
                                self.total_hist.saturating_record(us.max(1));
                                self.total_pings += 1;
                            }
                        }
                        if !resp.keep_alive {
                            return self.lose(key, now);
                        }
                    }
                    Ok((used, None)) => {
                        conn.inbuf.consume(used);
                    }
                    Err(_) => return self.lose(key, now),
                },
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(_) => return self.lose(key, now),
            }
        }
    }

    /// Counts a failed or lost connection and schedules its reconnect.
    fn lose(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.state {
            State::Established => self.established -= 1,
            State::Connecting { .. } => self.connecting -= 1,
            State::Idle => {}
        }
        if conn.ping_sent.take().is_some() && conn.state == State::Established {
            self.second.ping_errors += 1;
            self.total_ping_errors += 1;
        }
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.state = State::Idle;
        conn.generation += 1;
        conn.inbuf.clear();
        conn.out.clear();
        conn.written = 0;
        conn.reader = ResponseReader::new();
        self.failed += 1;
        self.timers
            .push(Reverse((now + RECONNECT_DELAY, key, conn.generation)));
    }

    /// Sends no new ping and waits until `deadline` for the answers to those already sent, so
    /// every ping sent is counted as answered or failed; one still unanswered then has failed.
    fn finish_pings(&mut self, deadline: Instant, events: &mut Events) -> io::Result<()> {
        let out = |h: &Self| h.conns.iter().filter(|c| c.ping_sent.is_some()).count() as u64;
        while out(self) > 0 {
            let now = Instant::now();
            if now >= deadline {
                let late = out(self);
                self.second.ping_errors += late;
                self.total_ping_errors += late;
                return Ok(());
            }
            match self.poll.poll(events, Some(deadline - now)) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.drive(event.token().0);
            }
        }
        Ok(())
    }

    fn close_second(&mut self) -> Tick {
        let mut tick = std::mem::take(&mut self.second);
        tick.established = self.established;
        tick.connecting = self.connecting;
        tick.failed = self.failed;
        tick.latency_us = LatencySummary::of(&self.second_hist);
        tick.hist = latency::to_pairs(&self.second_hist);
        self.second_hist.reset();
        tick
    }
}
