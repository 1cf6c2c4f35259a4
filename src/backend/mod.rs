//! Backends: what one backend is ([`Backend`]) and where it listens ([`BackendAddr`]: TCP or a
//! Unix-domain socket, reached through a [`BackendStream`]), the load measure every worker updates
//! ([`stats`]), what is learned about flaky backends ([`learn`], with its mirror of each one's
//! rate-limit window, [`send_log`]), and the immutable, versioned snapshot of the backend set that
//! every worker routes by ([`table`]).
//!
//! The control thread owns the authoritative list and publishes a new [`BackendTable`] for every change
//! (add, remove, weight, enable, health flip, strategy). A worker swaps its `Arc` between events, so it
//! always routes by one whole version and never sees half an update; a connection already bound to a
//! backend keeps that backend. The only state all cores write is [`BackendStats`]: a few atomics per
//! backend (in-flight requests, open connections) that load-aware strategies must read across cores.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

mod addr;
pub mod belief;
pub mod learn;
mod limit;
pub mod penalty;
pub mod posterior;
pub mod refusals;
pub mod send_log;
pub(crate) mod stats;
pub mod stream;
pub(crate) mod table;
pub mod tls_stream;

pub use addr::{parse_backend_addr, BackendAddr, UNIX_PREFIX};
pub use stats::BackendStats;
pub use stream::BackendStream;
pub use table::BackendTable;

/// Identifies a backend across table versions; never reused within a process.
pub type BackendId = u64;

/// Default and largest backend weights, as HAProxy's 1 and 256; weight 0 takes no new traffic.
pub const DEFAULT_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 256;

/// One backend as of one table version.
#[derive(Clone, Debug)]
pub struct Backend {
    pub id: BackendId,
    pub addr: BackendAddr,
    pub weight: u32,
    /// Set by an operator (disable drains it).
    pub enabled: bool,
    /// Set by health checks.
    pub healthy: bool,
    /// When the backend last became eligible (added, enabled, or healthy again), in ms of
    /// [`crate::clock`]; slow start ramps its weight from here.
    pub since_ms: u64,
    pub stats: Arc<BackendStats>,
    /// The DNS name it was given by, when it is a member of a backend given by name: what
    /// `--backend-tls` verifies it against.
    pub dns_name: Option<Arc<str>>,
}

impl Backend {
    /// A backend at a TCP address.
    pub fn new(id: BackendId, addr: SocketAddr, weight: u32) -> Backend {
        Backend::at(id, BackendAddr::Ip(addr), weight)
    }

    /// A backend at any address, TCP or Unix.
    pub fn at(id: BackendId, addr: BackendAddr, weight: u32) -> Backend {
        Backend {
            id,
            addr,
            weight,
            enabled: true,
            healthy: true,
            since_ms: 0,
            stats: Arc::new(BackendStats::default()),
            dns_name: None,
        }
    }

    /// The host of the name a member of a backend given by name came from.
    pub fn host_of(name: Option<&BackendAddr>) -> Option<Arc<str>> {
        match name {
            Some(BackendAddr::Name { host, .. }) => Some(host.as_str().into()),
            _ => None,
        }
    }

    /// May receive new requests and connections.
    pub fn is_eligible(&self) -> bool {
        self.enabled && self.healthy && self.weight > 0
    }
}

/// A backend as given on the command line: `ADDR` or `ADDR,weight=N`, where `ADDR` is
/// `host:port` or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: BackendAddr,
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

/// Parses `host:port`, resolving a host name once (`--listen`, `--admin`: at start-up).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "bad address {text:?} (expected host:port, for example 127.0.0.1:8081)"
        ));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "bad address {text:?} (expected host:port, for example 127.0.0.1:8081)"
        ));
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{host:?} resolves to no address")),
        Err(e) => Err(format!("{host:?} did not resolve: {e}")),
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
        assert_eq!(s.addr, BackendAddr::Ip("127.0.0.1:81".parse().unwrap()));
        let u: BackendSpec = "unix:/run/app.sock,weight=2".parse().unwrap();
        assert_eq!(u.addr.to_string(), "unix:/run/app.sock");
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
    fn a_name_that_does_not_resolve_is_told_apart_from_a_malformed_address() {
        let e = parse_addr("no-such-host.invalid:80").unwrap_err();
        assert!(e.contains("did not resolve"), "{e}");
        for bad in ["localhost", "localhost:http", ":"] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains("expected host:port"), "{bad}: {e}");
        }
    }
}
