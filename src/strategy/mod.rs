//! Load-balancing strategies: each picks one backend among candidates, one strategy per file.
//!
//! The split follows pingora-load-balancing and tower's balance: a strategy only chooses; the caller
//! has already removed backends that are disabled, unhealthy or already tried for this request (the
//! `candidates` list), and load measures live in [`crate::backend::BackendStats`], shared by all
//! workers, not in the strategy. Every worker builds its own strategy instance from each table version
//! ([`build`]), so a strategy's state (a round-robin cursor, a random generator) needs no lock.

use std::net::IpAddr;

use crate::backend::Backend;

mod least_connections;
mod round_robin;

pub use least_connections::LeastConnections;
pub use round_robin::RoundRobin;

/// What a strategy may look at in the request being routed.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    pub client_ip: IpAddr,
    /// The request attribute hashing strategies key on (empty in TCP mode).
    pub key: &'a [u8],
    /// Now, in ms of [`crate::clock`].
    pub now_ms: u64,
}

/// Settings some strategies read; the defaults are the flags' defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StrategyParams {
    /// Slow start: a backend's weight ramps from near 0 to full over this long after it becomes
    /// eligible (0 = off).
    pub slow_start_ms: u64,
    /// Threshold: skip a backend with more requests in flight than this...
    pub threshold_high: u64,
    /// ...until it drops below this.
    pub threshold_low: u64,
    /// Threshold: never skip so many that fewer than this many candidates remain.
    pub min_enabled: usize,
}

pub const DEFAULT_SLOW_START_MS: u64 = 0;
pub const DEFAULT_THRESHOLD_HIGH: u64 = 100;
pub const DEFAULT_THRESHOLD_LOW: u64 = 50;
pub const DEFAULT_MIN_ENABLED: usize = 1;

impl Default for StrategyParams {
    fn default() -> Self {
        StrategyParams {
            slow_start_ms: DEFAULT_SLOW_START_MS,
            threshold_high: DEFAULT_THRESHOLD_HIGH,
            threshold_low: DEFAULT_THRESHOLD_LOW,
            min_enabled: DEFAULT_MIN_ENABLED,
        }
    }
}

pub trait Strategy: Send {
    /// Picks one of `candidates` (indices into `backends`, never empty).
    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize;
}

/// The strategies sluice knows, by their command-line names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Each backend in turn.
    RoundRobin,
    /// The backend with the fewest requests in flight for its weight.
    LeastConnections,
}

impl StrategyKind {
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::LeastConnections => "least-connections",
        }
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StrategyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <StrategyKind as clap::ValueEnum>::from_str(s, false).map_err(|_| {
            let names: Vec<&str> = <StrategyKind as clap::ValueEnum>::value_variants()
                .iter()
                .map(|k| k.name())
                .collect();
            format!(
                "unknown strategy {s:?} (expected one of: {})",
                names.join(", ")
            )
        })
    }
}

/// A worker's strategy instance for one table version. `seed` makes random choices reproducible;
/// workers pass different seeds so they do not move in lockstep.
pub fn build(
    kind: StrategyKind,
    params: &StrategyParams,
    backends: &[Backend],
    seed: u64,
) -> Box<dyn Strategy> {
    let _ = (params, backends);
    match kind {
        StrategyKind::RoundRobin => Box::new(RoundRobin::new(seed as usize)),
        StrategyKind::LeastConnections => Box::new(LeastConnections::new(seed as usize)),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    pub fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 10_000 + i as u16));
                Backend::new(i as u64 + 1, addr, w)
            })
            .collect()
    }

    pub fn ctx() -> PickContext<'static> {
        PickContext {
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            key: b"",
            now_ms: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for kind in <StrategyKind as clap::ValueEnum>::value_variants() {
            assert_eq!(kind.name().parse::<StrategyKind>(), Ok(*kind));
            assert_eq!(
                serde_json::to_string(kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
        let err = "fastest".parse::<StrategyKind>().unwrap_err();
        assert!(
            err.contains("round-robin") && err.contains("least-connections"),
            "{err}"
        );
    }
}
