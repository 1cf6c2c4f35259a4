//! The backend table: an immutable, versioned snapshot of the backend set that every worker routes by.
//!
//! The control thread owns the authoritative list and publishes a new [`BackendTable`] for every change
//! (add, remove, weight, enable, health flip, strategy). A worker swaps its `Arc` between events, so it
//! always routes by one whole version and never sees half an update; a connection already bound to a
//! backend keeps that backend. The only state all cores write is [`BackendStats`]: a few atomics per
//! backend (in-flight requests, open connections) that load-aware strategies must read across cores.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::strategy::{StrategyKind, StrategyParams};

/// Identifies a backend across table versions; never reused within a process.
pub type BackendId = u64;

/// Per-backend counters every worker updates and reads. Cache-line aligned so two backends' counters
/// never share a line.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests sent and not yet answered (HTTP), or tunnels open (TCP), across all workers.
    pub in_flight: AtomicU64,
    /// Open connections to the backend, idle pooled ones included.
    pub conns: AtomicU64,
    /// Requests waiting in the workers' queues for a connection (`--backend-max-conns`).
    pub queued: AtomicU64,
    /// Peak-EWMA response time in microseconds, stored as `f64` bits (see [`BackendStats::latency_us`]).
    latency_ewma_bits: AtomicU64,
    /// When `latency_ewma_bits` was last updated, in ms of [`crate::clock`].
    latency_stamp_ms: AtomicU64,
    /// Set while the threshold strategy skips this backend as overloaded.
    pub overloaded: AtomicBool,
    /// Failed attempts in a row, across workers; passive ejection reads it.
    consecutive_failures: AtomicU32,
    /// Learned success probability and rate limit (the `bandit` strategy).
    pub learned: crate::learn::Learned,
}

/// Decay time of the Peak-EWMA latency estimate (linkerd and tower use 10 s).
pub const LATENCY_DECAY_MS: f64 = 10_000.0;
/// Latency charged for a failed response, so a backend that fails fast does not look fast.
pub const FAILURE_PENALTY_US: f64 = 1_000_000.0;

impl BackendStats {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn conns(&self) -> u64 {
        self.conns.load(Ordering::Relaxed)
    }

    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Counts a failed attempt; returns the failures in a row so far.
    pub fn note_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a successful attempt. Reads before writing so the common case (no failures) does not
    /// write a line that other cores read.
    pub fn note_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    pub fn reset_failures(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// The Peak-EWMA response time in microseconds (0 before the first response).
    ///
    /// Peak-EWMA as in linkerd and tower's `PeakEwma`: a sample above the estimate replaces it at once
    /// (react to a slowdown immediately); a sample below it is averaged in with weight
    /// `1 - exp(-elapsed / decay)` (forget a slowdown gradually).
    pub fn latency_us(&self) -> f64 {
        f64::from_bits(self.latency_ewma_bits.load(Ordering::Relaxed))
    }

    /// The estimate as of `now_ms`, decayed toward zero for the time since the last response, as
    /// tower's `PeakEwma` does when it is read: a backend that got no traffic after a slow spell
    /// looks cheaper as time passes, so it is tried again.
    pub fn latency_us_at(&self, now_ms: u64) -> f64 {
        let estimate = self.latency_us();
        if estimate == 0.0 {
            return 0.0;
        }
        let idle_ms = now_ms.saturating_sub(self.latency_stamp_ms.load(Ordering::Relaxed)) as f64;
        estimate * (-idle_ms / LATENCY_DECAY_MS).exp()
    }

    /// Records one response: its latency, or [`FAILURE_PENALTY_US`] when it failed. Concurrent updates
    /// from two workers may lose one sample; the estimate stays a valid mix of recent samples.
    pub fn record_response(&self, latency_us: u64, ok: bool, now_ms: u64) {
        let sample = if ok {
            latency_us as f64
        } else {
            FAILURE_PENALTY_US.max(latency_us as f64)
        };
        let prev = self.latency_us();
        let last_ms = self.latency_stamp_ms.swap(now_ms, Ordering::Relaxed);
        let next = if prev == 0.0 || sample > prev {
            sample
        } else {
            let elapsed_ms = now_ms.saturating_sub(last_ms) as f64;
            let keep = (-elapsed_ms / LATENCY_DECAY_MS).exp();
            prev * keep + sample * (1.0 - keep)
        };
        self.latency_ewma_bits
            .store(next.to_bits(), Ordering::Relaxed);
    }
}

/// Default and largest backend weights, as HAProxy's 1 and 256; weight 0 takes no new traffic.
pub const DEFAULT_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 256;

/// One backend as of one table version.
#[derive(Clone, Debug)]
pub struct Backend {
    pub id: BackendId,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Set by an operator (disable drains it).
    pub enabled: bool,
    /// Set by health checks.
    pub healthy: bool,
    /// When the backend last became eligible (added, enabled, or healthy again), in ms of
    /// [`crate::clock`]; slow start ramps its weight from here.
    pub since_ms: u64,
    pub stats: Arc<BackendStats>,
}

impl Backend {
    pub fn new(id: BackendId, addr: SocketAddr, weight: u32) -> Backend {
        Backend {
            id,
            addr,
            weight,
            enabled: true,
            healthy: true,
            since_ms: 0,
            stats: Arc::new(BackendStats::default()),
        }
    }

    /// May receive new requests and connections.
    pub fn is_eligible(&self) -> bool {
        self.enabled && self.healthy && self.weight > 0
    }
}

/// One version of the backend set and the strategy that routes over it.
#[derive(Debug)]
pub struct BackendTable {
    pub version: u64,
    pub backends: Vec<Backend>,
    pub strategy: StrategyKind,
    pub params: StrategyParams,
    /// Whether workers keep each backend's Peak-EWMA latency up to date: only strategies that
    /// read it (`least-time`, `p2c`, and `adaptive`, which may switch to them) pay for the shared
    /// writes on every response.
    pub latency_aware: bool,
    /// Indices of eligible backends, computed once per version so a pick never filters.
    pub eligible: Vec<usize>,
}

impl BackendTable {
    pub fn new(version: u64, backends: Vec<Backend>, strategy: StrategyKind) -> BackendTable {
        let eligible = (0..backends.len())
            .filter(|&i| backends[i].is_eligible())
            .collect();
        BackendTable {
            version,
            backends,
            strategy,
            params: StrategyParams::default(),
            latency_aware: true,
            eligible,
        }
    }

    /// Position of backend `id` in this version.
    pub fn position(&self, id: BackendId) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    /// Position of backend `id`, trying `hint` first.
    pub fn position_hinted(&self, id: BackendId, hint: usize) -> Option<usize> {
        match self.backends.get(hint) {
            Some(b) if b.id == id => Some(hint),
            _ => self.position(id),
        }
    }
}

/// A backend as given on the command line: `ADDR` or `ADDR,weight=N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    pub weight: u32,
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},weight={}", self.addr, self.weight)
    }
}

impl std::str::FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let addr_text = parts.next().unwrap_or("").trim();
        let addr = parse_backend_addr(addr_text)?;
        let mut weight = DEFAULT_WEIGHT;
        for option in parts {
            match option.trim().split_once('=') {
                Some(("weight", w)) => weight = parse_weight(w)?,
                _ => {
                    return Err(format!(
                        "unknown backend option {option:?} (expected weight=N)"
                    ))
                }
            }
        }
        Ok(BackendSpec { addr, weight })
    }
}

/// Parses `host:port`, resolving a host name once (at start-up or when the API is called).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(_) => Err(format!(
            "bad address {text:?} (expected host:port, for example 127.0.0.1:8081)"
        )),
    }
}

/// A backend address: like [`parse_addr`], but port 0 (which no backend listens on) is refused.
pub fn parse_backend_addr(text: &str) -> Result<SocketAddr, String> {
    let addr = parse_addr(text)?;
    if addr.port() == 0 {
        return Err(format!(
            "bad address {text:?}: a backend cannot listen on port 0"
        ));
    }
    Ok(addr)
}

pub fn parse_weight(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(w) if w <= MAX_WEIGHT => Ok(w),
        _ => Err(format!(
            "bad weight {text:?} (expected an integer from 0 to {MAX_WEIGHT})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_spec_parses_address_and_weight() {
        let s: BackendSpec = "127.0.0.1:81,weight=5".parse().unwrap();
        assert_eq!(s.addr, "127.0.0.1:81".parse().unwrap());
        assert_eq!(s.weight, 5);
        assert_eq!(
            "[::1]:80".parse::<BackendSpec>().unwrap().weight,
            DEFAULT_WEIGHT
        );
        assert!("127.0.0.1".parse::<BackendSpec>().is_err());
        assert!("127.0.0.1:80,weight=999".parse::<BackendSpec>().is_err());
        assert!("127.0.0.1:80,speed=1".parse::<BackendSpec>().is_err());
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = BackendStats::default();
        s.record_response(1_000, true, 1);
        assert_eq!(s.latency_us(), 1_000.0);
        s.record_response(5_000, true, 2);
        assert_eq!(
            s.latency_us(),
            5_000.0,
            "a slower sample replaces the estimate"
        );
        s.record_response(1_000, true, 2 + LATENCY_DECAY_MS as u64);
        let after_one_decay = s.latency_us();
        let expected = 5_000.0 * (-1.0f64).exp() + 1_000.0 * (1.0 - (-1.0f64).exp());
        assert!(
            (after_one_decay - expected).abs() < 1e-6,
            "{after_one_decay} vs {expected}"
        );
        s.record_response(10, false, 3 + LATENCY_DECAY_MS as u64);
        assert_eq!(
            s.latency_us(),
            FAILURE_PENALTY_US,
            "a failure costs the penalty"
        );
    }

    #[test]
    fn eligible_excludes_disabled_unhealthy_and_zero_weight() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut b = vec![
            Backend::new(1, addr, 1),
            Backend::new(2, addr, 1),
            Backend::new(3, addr, 0),
            Backend::new(4, addr, 2),
        ];
        b[0].enabled = false;
        b[1].healthy = false;
        let t = BackendTable::new(1, b, StrategyKind::RoundRobin);
        assert_eq!(t.eligible, vec![3]);
        assert_eq!(t.position_hinted(4, 0), Some(3));
        assert_eq!(t.position_hinted(4, 3), Some(3));
        assert_eq!(t.position(9), None);
    }
}
