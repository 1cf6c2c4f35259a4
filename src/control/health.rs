//! Active health checks: every `--health-interval`, a non-blocking probe per backend (TCP or
//! Unix-domain socket), run on the control thread's event loop. A TCP probe passes when the
//! connect succeeds; an HTTP probe sends `GET --health-path` and passes on a 2xx status line. With
//! `--send-proxy-protocol` an HTTP probe starts with a PROXY header that names no client
//! (`LOCAL`, as HAProxy's `check-send-proxy` sends), since a backend that requires the header
//! refuses a request without one; a connect-only probe sends nothing. [`Hysteresis`] turns results into state
//! flips: `--fall` consecutive failures mark a backend down, `--rise` consecutive passes bring it
//! back, so one lost probe does not move traffic. With `--backend-tls` a probe speaks TLS as
//! the workers do (same roots, same name): it passes only once the handshake completed (and, for
//! an HTTP probe, on a 2xx answer over it), so a backend whose certificate stops verifying is
//! marked down.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::backend::{BackendAddr, BackendId, BackendStream};
use crate::config::{HealthConfig, ProbeKind};
use crate::proxy_protocol::{self, Version};
use crate::tls::client::BackendTls;

/// A backend to probe: its id, address, and the DNS name it was given by (for TLS).
pub(crate) struct ProbeTarget {
    pub backend: BackendId,
    pub addr: BackendAddr,
    pub dns_name: Option<Arc<str>>,
}

/// Consecutive-result counters for one backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hysteresis {
    pub healthy: bool,
    passes: u32,
    failures: u32,
}

impl Default for Hysteresis {
    /// Backends start healthy: a fresh backend takes traffic until checks say otherwise.
    fn default() -> Self {
        Hysteresis {
            healthy: true,
            passes: 0,
            failures: 0,
        }
    }
}

impl Hysteresis {
    /// Records one result; returns true when the state flipped.
    pub(crate) fn observe(&mut self, passed: bool, rise: u32, fall: u32) -> bool {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.healthy && self.passes >= rise.max(1) {
                self.healthy = true;
                return true;
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= fall.max(1) {
                self.healthy = false;
                return true;
            }
        }
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Reading,
}

struct Probe {
    backend: BackendId,
    addr: BackendAddr,
    sock: BackendStream,
    phase: Phase,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    deadline_ms: u64,
}

/// One finished probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProbeResult {
    pub backend: BackendId,
    pub passed: bool,
}

/// The probes in flight. Tokens are `token_base + slab key`.
pub(crate) struct HealthChecker {
    pub cfg: HealthConfig,
    /// `--send-proxy-protocol`: HTTP probes start with a `LOCAL` header.
    send_proxy: Option<Version>,
    probes: Slab<Probe>,
    token_base: usize,
    next_round_ms: u64,
    /// `--backend-tls`: probes speak TLS.
    pub backend_tls: Option<BackendTls>,
}

impl HealthChecker {
    pub(crate) fn new(
        cfg: HealthConfig,
        send_proxy: Option<Version>,
        token_base: usize,
    ) -> HealthChecker {
        HealthChecker {
            cfg,
            send_proxy,
            probes: Slab::new(),
            token_base,
            next_round_ms: 0,
            backend_tls: None,
        }
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && self.probes.contains(token.0 - self.token_base)
    }

    /// Starts a round of probes when one is due. `targets` are the backends to check.
    pub(crate) fn maybe_start_round(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        targets: &[ProbeTarget],
        out: &mut Vec<ProbeResult>,
    ) {
        if self.cfg.interval_ms == 0 || now_ms < self.next_round_ms {
            return;
        }
        self.next_round_ms = now_ms + self.cfg.interval_ms;
        for target in targets {
            let (backend, addr) = (target.backend, &target.addr);
            if self.probes.iter().any(|(_, p)| p.backend == backend) {
                continue; // the previous probe is still running; its timeout will count
            }
            if let Err(e) = self.start(target, now_ms, registry) {
                log::debug!("health probe of {addr} could not start: {e}");
                out.push(ProbeResult {
                    backend,
                    passed: false,
                });
            }
        }
    }

    fn start(&mut self, target: &ProbeTarget, now_ms: u64, registry: &Registry) -> io::Result<()> {
        let (backend, addr) = (target.backend, &target.addr);
        let tls = self.backend_tls.as_ref();
        let mut sock = BackendStream::connect_with(addr, tls, target.dns_name.as_deref())?;
        let entry = self.probes.vacant_entry();
        registry.register(
            &mut sock,
            Token(self.token_base + entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let out = match &self.cfg.kind {
            ProbeKind::Tcp => Vec::new(),
            ProbeKind::Http { path } => {
                // A unix socket has no host name; `localhost` is what curl sends there.
                let host = match addr {
                    BackendAddr::Ip(ip) => ip.to_string(),
                    BackendAddr::Unix(_) => "localhost".to_string(),
                    BackendAddr::Name { host, .. } => host.clone(),
                };
                let mut out = self
                    .send_proxy
                    .map_or(Vec::new(), |v| proxy_protocol::local(v).to_vec());
                out.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-health\r\nConnection: close\r\n\r\n").as_bytes());
                out
            }
        };
        entry.insert(Probe {
            backend,
            addr: addr.clone(),
            sock,
            phase: Phase::Connecting,
            out,
            inbuf: Vec::new(),
            deadline_ms: now_ms + self.cfg.timeout_ms,
        });
        Ok(())
    }

    /// Advances a probe after an event; pushes its result when it finished.
    pub(crate) fn on_ready(&mut self, token: Token, out: &mut Vec<ProbeResult>) {
        let key = token.0 - self.token_base;
        let Some(p) = self.probes.get_mut(key) else {
            return;
        };
        if let Some(passed) = advance(p) {
            out.push(ProbeResult {
                backend: p.backend,
                passed,
            });
            self.probes.remove(key);
        }
    }

    /// Fails probes past their deadline.
    pub(crate) fn expire(&mut self, now_ms: u64, out: &mut Vec<ProbeResult>) {
        let late: Vec<usize> = self
            .probes
            .iter()
            .filter(|(_, p)| now_ms >= p.deadline_ms)
            .map(|(k, _)| k)
            .collect();
        for k in late {
            let p = self.probes.remove(k);
            log::debug!("health probe of {} timed out", p.addr);
            out.push(ProbeResult {
                backend: p.backend,
                passed: false,
            });
        }
    }
}

/// Moves a probe forward; `Some(passed)` once it is decided.
fn advance(p: &mut Probe) -> Option<bool> {
    loop {
        match p.phase {
            Phase::Connecting => {
                match p.sock.take_error() {
                    Ok(Some(_)) | Err(_) => return Some(false),
                    Ok(None) => {}
                }
                match p.sock.is_connected() {
                    Ok(true) if p.out.is_empty() => return Some(true),
                    Ok(true) => p.phase = Phase::Sending,
                    Ok(false) => return None,
                    Err(e) => {
                        log::debug!("health probe of {}: {e}", p.addr);
                        return Some(false);
                    }
                }
            }
            Phase::Sending => match p.sock.write(&p.out) {
                Ok(n) => {
                    p.out.drain(..n);
                    if p.out.is_empty() {
                        p.phase = Phase::Reading;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(false),
            },
            Phase::Reading => {
                // TLS records the last write left behind.
                if p.sock.flush_tls().is_err() {
                    return Some(false);
                }
                let mut chunk = [0u8; 512];
                match p.sock.read(&mut chunk) {
                    Ok(0) => return Some(status_passes(&p.inbuf).unwrap_or(false)),
                    Ok(n) => {
                        p.inbuf.extend_from_slice(&chunk[..n]);
                        if let Some(passed) = status_passes(&p.inbuf) {
                            return Some(passed);
                        }
                        if p.inbuf.len() > 4096 {
                            return Some(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Some(false),
                }
            }
        }
    }
}

/// `Some(true)` for a 2xx status line, `Some(false)` for any other, `None` until the line is complete.
fn status_passes(input: &[u8]) -> Option<bool> {
    let line_end = input.windows(2).position(|w| w == b"\r\n")?;
    let line = &input[..line_end];
    let passes =
        line.starts_with(b"HTTP/1.") && line.len() >= 12 && line[8] == b' ' && line[9] == b'2';
    Some(passes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_flips_after_fall_failures_and_rise_passes() {
        let mut h = Hysteresis::default();
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(true, 2, 3), "a pass resets the failure count");
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(h.observe(false, 2, 3), "third failure in a row: down");
        assert!(!h.healthy);
        assert!(!h.observe(false, 2, 3), "already down: no flip");
        assert!(!h.observe(true, 2, 3));
        assert!(h.observe(true, 2, 3), "second pass in a row: up");
        assert!(h.healthy);
    }

    #[test]
    fn only_2xx_status_lines_pass() {
        assert_eq!(status_passes(b"HTTP/1.1 200 OK\r\n"), Some(true));
        assert_eq!(status_passes(b"HTTP/1.0 204 No Content\r\n"), Some(true));
        assert_eq!(status_passes(b"HTTP/1.1 503 Unavailable\r\n"), Some(false));
        assert_eq!(status_passes(b"HTTP/1.1 301 Moved\r\n"), Some(false));
        assert_eq!(status_passes(b"SSH-2.0\r\n"), Some(false));
        assert_eq!(status_passes(b"HTTP/1.1 200"), None);
    }
}
