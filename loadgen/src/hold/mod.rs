//! The connection holder (`loadgen hold`): opens N connections, keeps them open, and sends a
//! small keep-alive `GET /` on each every ping interval, reporting each second how many are
//! established, how many failed, and the ping latency.
//!
//! One process runs one event loop ([`run`]). Because a process may hold at most ~20,000 file
//! descriptors here, larger counts run in K child processes ([`procs::run_children`]) that
//! print one JSON line per second; the parent merges them (histograms merge exactly).

pub mod procs;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::latency::{self, human_us, LatencySummary};
use crate::tls::TlsClient;

pub const DEFAULT_CONNECTIONS: usize = 1_000;
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// New connections opened per second (a gentle ramp keeps SYN backlogs from overflowing).
pub const DEFAULT_CONNECT_RATE: u32 = 5_000;
/// A connect or ping without an answer for this long counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before reopening a connection that failed.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Descriptors a process keeps for stdio, epoll, the waker and friends.
pub const FD_RESERVE: u64 = 64;

#[derive(Debug, Clone)]
pub struct HoldConfig {
    pub target: SocketAddr,
    /// `Host` header of the pings.
    pub host: String,
    pub path: String,
    /// Default [`DEFAULT_CONNECTIONS`].
    pub connections: usize,
    /// Default [`DEFAULT_PING_INTERVAL`].
    pub ping_interval: Duration,
    /// Default [`DEFAULT_DURATION`].
    pub duration: Duration,
    /// Bound round-robin; empty = kernel's choice.
    pub source_ips: Vec<IpAddr>,
    /// Default [`DEFAULT_CONNECT_RATE`].
    pub connect_rate: u32,
    /// Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Pings answered before this much time has passed are not in the summary's latencies (the
    /// per-second ticks still show them): the trickle is measured once connections are open.
    pub warmup: Duration,
    /// Speak TLS; a connection counts as established once its handshake is done.
    pub tls: Option<TlsClient>,
}

impl HoldConfig {
    pub fn new(target: SocketAddr) -> Self {
        HoldConfig {
            target,
            host: target.to_string(),
            path: "/".to_string(),
            connections: DEFAULT_CONNECTIONS,
            ping_interval: DEFAULT_PING_INTERVAL,
            duration: DEFAULT_DURATION,
            source_ips: Vec::new(),
            connect_rate: DEFAULT_CONNECT_RATE,
            timeout: DEFAULT_TIMEOUT,
            warmup: Duration::ZERO,
            tls: None,
        }
    }
}

/// One second of one process (or, merged, of all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Seconds since the start.
    pub t_s: u64,
    /// Connections open now.
    pub established: u64,
    /// Connects in progress now.
    pub connecting: u64,
    /// Connections that failed or were lost, since the start.
    pub failed: u64,
    /// Pings answered this second.
    pub pings: u64,
    /// Pings that failed this second.
    pub ping_errors: u64,
    pub latency_us: LatencySummary,
    /// This second's ping latencies as `[value_us, count]` (children send it to the parent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hist: Vec<[u64; 2]>,
}

impl Tick {
    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        format!(
            "[{:>4}s] established {:>6}  connecting {:>5}  failed {:>5}  pings {:>6} ({} errors)  p50 {}  p99 {}  max {}",
            self.t_s,
            self.established,
            self.connecting,
            self.failed,
            self.pings,
            self.ping_errors,
            human_us(l.p50),
            human_us(l.p99),
            human_us(l.max)
        )
    }

    /// Adds another process's tick for the same second.
    pub fn absorb(&mut self, other: &Tick, hist: &mut Histogram<u64>) {
        self.established += other.established;
        self.connecting += other.connecting;
        self.failed += other.failed;
        self.pings += other.pings;
        self.ping_errors += other.ping_errors;
        latency::add_pairs(hist, &other.hist);
        self.latency_us = LatencySummary::of(hist);
    }
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldSummary {
    pub connections: u64,
    pub procs: u64,
    pub duration_s: f64,
    pub max_established: u64,
    pub established_at_end: u64,
    pub failed: u64,
    pub pings: u64,
    pub ping_errors: u64,
    pub latency_us: LatencySummary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hist: Vec<[u64; 2]>,
}

impl HoldSummary {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        format!(
            "held {} connections in {} process(es) for {:.1} s: max established {}, at end {}, failed {}\npings {} ({} errors)  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            self.connections,
            self.procs,
            self.duration_s,
            self.max_established,
            self.established_at_end,
            self.failed,
            self.pings,
            self.ping_errors,
            human_us(l.p50),
            human_us(l.p90),
            human_us(l.p99),
            human_us(l.p999),
            human_us(l.max)
        )
    }
}

/// Checks that `per_process` connections fit under the open-file limit (raising the soft
/// limit to the hard one first); the error says how many processes would be needed.
pub fn check_fd_limit(per_process: usize, procs: usize) -> Result<u64, String> {
    let limit =
        crate::net::raise_fd_limit().map_err(|e| format!("reading the open-file limit: {e}"))?;
    let needed = per_process as u64 + FD_RESERVE;
    if needed > limit {
        let total = per_process * procs;
        let usable = limit.saturating_sub(FD_RESERVE).max(1);
        let min_procs = (total as u64).div_ceil(usable);
        return Err(format!(
            "{per_process} connections per process need {needed} file descriptors but the \
             open-file limit is {limit}; use --procs {min_procs} or more for {total} connections"
        ));
    }
    Ok(limit)
}

/// Holds connections in this process, calling `on_tick` every second.
pub fn run(cfg: &HoldConfig, on_tick: impl FnMut(&Tick)) -> io::Result<HoldSummary> {
    if cfg.connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "connections must be at least 1",
        ));
    }
    check_fd_limit(cfg.connections, 1)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    worker::run(cfg, on_tick)
}
