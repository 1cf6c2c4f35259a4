//! A worker's life around its connections: accepting (paused when the process runs out of file
//! descriptors, blocked at this worker's share of `--max-conns`), the periodic chores (metrics to
//! the control thread every second, memory given back after a crowd), and a graceful shutdown
//! (stop accepting, give idle keep-alive clients a short grace, finish what is in flight within
//! the shutdown timeout).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::Interest;

use crate::backend::{BackendId, BackendTable};
use crate::config::ProxyConfig;
use crate::link::ControlMsg;
use crate::worker::conn::{ClientConn, ClientKey, ClientState, Ready};
use crate::worker::sock::ClientSock;
use crate::worker::timer::Deadline;
use crate::worker::Core;

/// How long accepting pauses after the process runs out of file descriptors.
const ACCEPT_PAUSE_MS: u64 = 100;
/// At shutdown, idle keep-alive clients stay open this long in case a request is on its way.
const SHUTDOWN_IDLE_GRACE_MS: u64 = 500;
/// How often a worker gives memory back after a crowd of connections left.
const TRIM_EVERY_MS: u64 = 5_000;
/// How often a worker hands its metrics to the control thread.
const METRICS_FLUSH_MS: u64 = 1_000;

pub(super) struct Lifecycle {
    /// `None` once shutting down: dropping it closes it, and connections still in its backlog go
    /// to the other listeners sharing the port, or are refused.
    listener: Option<TcpListener>,
    /// Accepting resumes at this time (ms); 0 = not paused.
    accept_paused_until_ms: u64,
    /// Accepting stopped at `max_clients`; a close resumes it.
    accept_blocked: bool,
    /// This worker's share of `--max-conns`.
    max_clients: usize,
    pub(super) shutting_down: bool,
    shutdown_deadline_ms: u64,
    next_flush_ms: u64,
    next_trim_ms: u64,
}

impl Lifecycle {
    pub(super) fn new(listener: TcpListener, cfg: &ProxyConfig, now_ms: u64) -> Lifecycle {
        Lifecycle {
            listener: Some(listener),
            accept_paused_until_ms: 0,
            accept_blocked: false,
            max_clients: cfg.max_conns.div_ceil(cfg.workers.max(1)).max(1),
            shutting_down: false,
            shutdown_deadline_ms: 0,
            next_flush_ms: now_ms + METRICS_FLUSH_MS,
            next_trim_ms: now_ms + TRIM_EVERY_MS,
        }
    }

    /// How long the loop may sleep for the chores here: the next metrics flush, the end of an
    /// accept pause, the shutdown deadline.
    pub(super) fn poll_timeout_ms(&self, now_ms: u64) -> u64 {
        let mut ms = self.next_flush_ms.saturating_sub(now_ms);
        if self.accept_paused_until_ms != 0 {
            ms = ms.min(self.accept_paused_until_ms.saturating_sub(now_ms));
        }
        if self.shutting_down {
            ms = ms.min(self.shutdown_deadline_ms.saturating_sub(now_ms));
        }
        ms
    }
}

impl Core {
    pub(super) fn accept_all(&mut self) {
        if self.life.accept_paused_until_ms != 0 {
            return;
        }
        loop {
            if self.conns.client_count() >= self.life.max_clients {
                self.life.accept_blocked = true;
                return;
            }
            let Some(listener) = self.life.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => self.add_client(sock, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    // Out of descriptors or memory: the pending connection stays in the backlog.
                    // Pause instead of spinning on an accept that keeps failing.
                    warn!("accept paused for {ACCEPT_PAUSE_MS} ms: {e}");
                    self.life.accept_paused_until_ms = self.now.ms + ACCEPT_PAUSE_MS;
                    return;
                }
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    fn add_client(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        self.metrics.current.accepted += 1;
        let _ = sock.set_nodelay(true);
        let k = self.conns.next_client_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .io
            .poll
            .registry()
            .register(&mut sock, k.token(), interest)
        {
            warn!("register client: {e}");
            return;
        }
        // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses.
        let peer_ip = peer.ip().to_canonical();
        let state = self.first_state(peer_ip);
        let wait_ms = match state {
            ClientState::ProxyHeader => self.cfg.head_timeout_ms,
            _ => self.cfg.idle_timeout_ms,
        };
        let mut deadline = Deadline::default();
        deadline.set(self.now.ms + wait_ms, k.token(), &mut self.io.timers);
        let inserted = self.conns.insert_client(ClientConn {
            sock: ClientSock::plain(sock),
            ready: Ready::default(),
            state,
            peer_ip,
            peer_port: peer.port(),
            deadline,
            ex: None,
        });
        debug_assert_eq!(inserted, k);
        if state == ClientState::Head {
            if self.tls_listener() {
                self.start_tls(k);
            } else {
                self.start_tunnel(k);
            }
        }
    }

    /// A client closed: accepting resumes if it stopped at `max_clients`.
    pub(super) fn resume_accept_after_close(&mut self) {
        if self.life.accept_blocked && self.conns.client_count() < self.life.max_clients {
            self.life.accept_blocked = false;
            self.accept_all();
        }
    }

    pub(super) fn resume_accept_if_due(&mut self) {
        let paused_until_ms = self.life.accept_paused_until_ms;
        if paused_until_ms != 0 && self.now.ms >= paused_until_ms {
            self.life.accept_paused_until_ms = 0;
            self.accept_all();
        }
    }

    pub(super) fn begin_shutdown(&mut self, timeout: Duration) {
        let timeout_ms = timeout.as_millis() as u64;
        self.life.shutting_down = true;
        self.life.shutdown_deadline_ms = self.now.ms + timeout_ms;
        self.life.listener = None;
        // Idle keep-alive clients get a short grace: one that is sending its next request right now
        // is answered (with Connection: close) instead of finding its connection reset.
        let idle: Vec<ClientKey> = self
            .conns
            .clients()
            .filter(|(_, c)| {
                c.state == ClientState::Head && c.ex.as_ref().is_none_or(|ex| ex.req.is_none())
            })
            .map(|(k, _)| k)
            .collect();
        let grace_ms = SHUTDOWN_IDLE_GRACE_MS.min(timeout_ms);
        for k in idle {
            if grace_ms == 0 {
                self.close_client(k);
            } else {
                self.set_deadline(k, grace_ms);
            }
        }
        for bk in self.routing.pool.drain_idle() {
            self.close_backend(bk);
        }
    }

    pub(super) fn close_all_if_shutdown_is_over(&mut self) {
        if self.life.shutting_down && self.now.ms >= self.life.shutdown_deadline_ms {
            let all: Vec<ClientKey> = self.conns.clients().map(|(k, _)| k).collect();
            for k in all {
                self.close_client(k);
            }
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.life.shutting_down
            && (self.conns.has_no_clients() || self.now.ms >= self.life.shutdown_deadline_ms)
    }

    /// Hands the metrics counted since the last flush to the control thread, per backend in
    /// `layout`'s order.
    pub(super) fn flush_metrics(&mut self, layout: &BackendTable) {
        let order: Vec<BackendId> = layout.backends.iter().map(|b| b.id).collect();
        let snap = self.metrics.take(self.conns.client_count() as u64, &order);
        self.control.send(ControlMsg::Metrics(Box::new(snap)));
        self.life.next_flush_ms = self.now.ms + METRICS_FLUSH_MS;
    }

    pub(super) fn flush_metrics_if_due(&mut self) {
        if self.now.ms >= self.life.next_flush_ms {
            let table = self.routing.table.clone();
            self.flush_metrics(&table);
        }
    }

    /// Returns memory held for connections that are gone: a slab much larger than its contents is
    /// cut back, as are timer slots, spare exchanges and spare buffers. So RSS falls back after a
    /// crowd of connections leaves.
    pub(super) fn trim_memory_if_due(&mut self) {
        if self.now.ms < self.life.next_trim_ms {
            return;
        }
        self.life.next_trim_ms = self.now.ms + TRIM_EVERY_MS;
        let mut released = self.conns.trim();
        released |= self.io.trim();
        // glibc keeps freed memory in per-thread arenas; after a crowd or a burst of requests in
        // flight (a stalled backend) has gone, hand it back to the system. Every 5 s at most.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if released {
            // SAFETY: malloc_trim only releases free heap memory; no pointer we hold is affected.
            unsafe { libc::malloc_trim(0) };
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let _ = released;
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
