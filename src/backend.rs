//! The backend table: an immutable, versioned snapshot of the backend set that every worker routes by.
//!
//! The control thread owns the authoritative list and publishes a new [`BackendTable`] for every change
//! (add, remove, weight, enable, health flip, strategy). A worker swaps its `Arc` between events, so it
//! always routes by one whole version and never sees half an update; a connection already bound to a
//! backend keeps that backend. The only state all cores write is [`BackendStats`]: a few atomics per
//! backend (in-flight requests, open connections) that load-aware strategies must read across cores.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::strategy::StrategyKind;

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
}

impl BackendStats {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn conns(&self) -> u64 {
        self.conns.load(Ordering::Relaxed)
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
        let addr = parse_addr(addr_text)?;
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
