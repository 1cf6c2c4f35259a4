//! The worker's side of the operators' features: the access log (a line per HTTP request, or per
//! TCP connection, into the worker's own [`LogWriter`]) and the per-client limits (the shared
//! [`ClientTable`]: connections counted at accept and at close, a token taken per HTTP request
//! or TCP connection). Also where a finished HTTP request is counted for `/metrics`
//! (`sluice_http_requests_total`, `sluice_http_request_duration_seconds`).
//!
//! Both features are off by default, and then cost the request path a branch on an `Option`:
//! everything else here runs only with a flag on, out of line so that the hot functions it is
//! called from do not grow.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::access_log::{Entry, LogWriter};
use crate::backend::{BackendId, BackendTable};
use crate::config::Mode;
use crate::limits::ClientTable;
use crate::worker::conn::{ClientConn, ClientKey, ClientState};
use crate::worker::{Core, Next};

/// The access log and the client table, when their flags are on.
#[derive(Default)]
pub(crate) struct Ops {
    pub(crate) log: Option<Box<LogWriter>>,
    pub(crate) clients: Option<Arc<ClientTable>>,
    backend_text: BackendText,
}

/// The last backend's address as text: made again only when a line names another backend.
#[derive(Default)]
struct BackendText {
    id: Option<BackendId>,
    text: String,
}

impl BackendText {
    fn of(&mut self, table: &BackendTable, id: BackendId) -> Option<&str> {
        if self.id != Some(id) {
            let b = table.backends.get(table.position(id)?)?;
            self.text.clear();
            let _ = write!(self.text, "{}", b.addr);
            self.id = Some(id);
        }
        Some(&self.text)
    }
}

impl Ops {
    pub(crate) fn new(log: Option<LogWriter>, clients: Option<Arc<ClientTable>>) -> Ops {
        Ops {
            log: log.map(Box::new),
            clients,
            backend_text: BackendText::default(),
        }
    }
}

impl Core {
    /// A new connection from `ip` (after its PROXY header, if it sends one): false when the
    /// client is at its connection cap or, in TCP mode, over its rate (refused, counted).
    #[inline(never)]
    pub(super) fn client_may_connect(&mut self, ip: IpAddr) -> bool {
        let Some(table) = &self.ops.clients else {
            return true;
        };
        if !table.open(ip) {
            return false;
        }
        if self.cfg.mode == Mode::Tcp && table.admit(ip, self.now.us).is_err() {
            table.close(ip);
            return false;
        }
        true
    }

    /// HTTP mode, a whole request head from client `k`: `Some` (a 429 on its way) when the
    /// client is over its rate.
    #[inline(never)]
    pub(super) fn rate_limit_request(&mut self, k: ClientKey) -> Option<Next> {
        let table = self.ops.clients.as_ref()?;
        let ip = self.conns.client(k)?.peer_ip;
        let retry_after_s = table.admit(ip, self.now.us).err()?;
        let mut header = String::with_capacity(32);
        let _ = write!(header, "Retry-After: {retry_after_s}\r\n");
        Some(self.answer_with(k, 429, "too many requests from this client", false, &header))
    }

    /// Client `c` left the slab: its connection leaves its client's count, and a TCP
    /// connection gets its log line.
    #[inline(never)]
    pub(super) fn client_closed(&mut self, c: &ClientConn) {
        // A connection still reading its PROXY header was never counted (its client was unknown).
        if c.state != ClientState::ProxyHeader {
            if let Some(table) = &self.ops.clients {
                table.close(c.peer_ip);
            }
        }
        if self.cfg.mode == Mode::Tcp && c.state == ClientState::Tunnel {
            self.log_connection(c);
        }
    }

    /// An HTTP request's answer went out whole (`status` is what the client got): counted for
    /// `/metrics`, and logged.
    pub(super) fn request_done(&mut self, k: ClientKey, status: u16) {
        let Some(ex) = self.conns.exchange(k) else {
            return;
        };
        let duration_us = if ex.started_us == 0 {
            0
        } else {
            self.now.us.saturating_sub(ex.started_us)
        };
        let (last, bound) = (ex.tried().last().copied(), ex.backend);
        // The bound connection knows its backend's place in the metrics' list.
        let hint = bound
            .and_then(|bk| self.conns.backend_mut(bk))
            .map_or(0, |b| b.table_index.0);
        let m = &mut self.metrics;
        m.current.request_duration.record(duration_us);
        let class = usize::from(status / 100).min(5);
        match last {
            Some(id) => m.backend(id, hint).requests[class] += 1,
            None => m.current.requests_no_backend[class] += 1,
        }
        if self.ops.log.is_some() {
            self.log_request(k, status, duration_us);
        }
    }

    #[inline(never)]
    fn log_request(&mut self, k: ClientKey, status: u16, duration_us: u64) {
        let Core {
            conns,
            ops,
            routing,
            now,
            ..
        } = self;
        let Some(c) = conns.client(k) else { return };
        let Some(ex) = c.ex.as_deref() else { return };
        let Some(log) = ops.log.as_deref_mut() else {
            return;
        };
        let backend = ex
            .tried()
            .last()
            .and_then(|&id| ops.backend_text.of(&routing.table, id));
        let (tls_version, sni) = c.sock.tls_facts();
        let entry = Entry {
            unix_ms: unix_ms(),
            client_ip: Some(c.peer_ip),
            client_port: c.peer_port,
            request: Some(&ex.log_request),
            minor_version: ex.minor_version,
            status,
            bytes_in: ex.bytes_in + ex.body_bytes,
            bytes_out: ex.bytes_out,
            duration_us,
            backend_us: (ex.attempts > 0).then(|| now.us.saturating_sub(ex.attempt_started_us)),
            backend,
            attempts: ex.attempts,
            request_id: ex.id,
            tls_version,
            sni,
        };
        log.log(&entry, now.ms);
    }

    fn log_connection(&mut self, c: &ClientConn) {
        let Core {
            ops, routing, now, ..
        } = self;
        let (Some(log), Some(ex)) = (ops.log.as_deref_mut(), c.ex.as_deref()) else {
            return;
        };
        let (tls_version, sni) = c.sock.tls_facts();
        let backend = ex
            .tried()
            .last()
            .and_then(|&id| ops.backend_text.of(&routing.table, id));
        let entry = Entry {
            unix_ms: unix_ms(),
            client_ip: Some(c.peer_ip),
            client_port: c.peer_port,
            bytes_in: ex.bytes_in,
            bytes_out: ex.bytes_out,
            duration_us: now.us.saturating_sub(ex.started_us),
            backend,
            attempts: ex.attempts,
            tls_version,
            sni,
            ..Entry::default()
        };
        log.log(&entry, now.ms);
    }

    /// Hands log lines that waited long enough to the log thread.
    pub(super) fn flush_log_if_due(&mut self) {
        if let Some(log) = self.ops.log.as_deref_mut() {
            log.flush_if_due(self.now.ms);
        }
    }

    /// How long the loop may sleep before log lines are due.
    pub(super) fn log_poll_timeout_ms(&self) -> Option<u64> {
        self.ops.log.as_deref()?.poll_timeout_ms(self.now.ms)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Core {
    /// At accept: a client that sends no PROXY header is known now and counted; one that must
    /// send a header is counted once the header names it ([`Core::client_may_connect`]).
    #[inline(never)]
    pub(super) fn may_connect_at_accept(&mut self, peer: std::net::SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.first_state(ip) == ClientState::ProxyHeader || self.client_may_connect(ip)
    }
}
