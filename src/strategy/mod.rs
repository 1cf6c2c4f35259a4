//! Load-balancing strategies: each picks one backend among candidates, one strategy per file.
//!
//! The split follows pingora-load-balancing and tower's balance: a strategy only chooses; the caller
//! has already removed backends that are disabled, unhealthy or already tried for this request (the
//! `candidates` list), and load measures live in [`crate::backend::BackendStats`], shared by all
//! workers, not in the strategy. Every worker builds its own strategy instance from each table version
//! ([`build`]), so a strategy's state (a round-robin cursor, a random generator) needs no lock.
//!
//! Weights: the dynamic strategies (weighted round robin, least connections, least time, p2c, random,
//! and sticky's fallback) weigh backends by [`effective_weight`], which applies slow start. The hashing
//! strategies (ip-hash, url-hash, maglev) use the configured weight as is, as HAProxy applies
//! `slowstart` to dynamic algorithms only: a key must map to the same backend for a whole table version.

use std::net::IpAddr;

use crate::backend::Backend;

mod bandit;
pub(crate) mod hash;
mod least_connections;
mod least_time;
mod maglev;
mod p2c;
mod random;
mod rendezvous;
mod round_robin;
pub(crate) mod sticky;
pub(crate) mod threshold;
mod weighted_round_robin;

pub use bandit::Bandit;
pub use least_connections::LeastConnections;
pub use least_time::{LeastTime, DEFAULT_LATENCY_US};
pub use maglev::{Maglev, MAGLEV_TABLE_SIZE};
pub use p2c::PowerOfTwoChoices;
pub use random::WeightedRandom;
pub use rendezvous::{HashKey, Rendezvous};
pub use round_robin::RoundRobin;
pub use sticky::{
    sticky_token, ResponseCookie, Sticky, SET_COOKIE_MAX_LEN, STICKY_COOKIE_NAME, STICKY_TOKEN_LEN,
};
pub use threshold::{Threshold, ThresholdFlips, THRESHOLD_FLIPS};
pub use weighted_round_robin::WeightedRoundRobin;

/// What a strategy may look at in the request being routed.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    pub client_ip: IpAddr,
    /// The request attribute hashing strategies key on (empty in TCP mode).
    pub key: &'a [u8],
    /// Now, in ms of [`crate::clock`].
    pub now_ms: u64,
    /// Backends already tried for this request, oldest first.
    pub tried: &'a [crate::backend::BackendId],
    /// The request waited its pacing time: a strategy that keeps capacity for later attempts
    /// gives it up now, but may still wait for room rather than send where a refusal is sure.
    pub relax: bool,
    /// Pick even if the strategy would rather wait (its waiting time ran out twice over).
    pub force: bool,
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

/// Strategies weigh in units of 1/`WEIGHT_SCALE` of a configured weight, so that slow start can ramp
/// even a weight-1 backend in small steps with integer arithmetic.
pub const WEIGHT_SCALE: u64 = 1_000;
/// Where slow start begins, in percent of the configured weight: HAProxy's weight "grows linearly from
/// 1 to 100%", and a positive start lets the backend take its first requests at once.
pub const SLOW_START_FLOOR_PERCENT: u64 = 1;

/// The weight a dynamic strategy gives `b` at `now_ms`, in 1/[`WEIGHT_SCALE`] units; never 0, so it can
/// be divided by (a weight-0 backend is never a candidate anyway).
///
/// Slow start as HAProxy's `slowstart` server option: for `params.slow_start_ms` after `b.since_ms`
/// (when the backend was added, enabled, or became healthy again) the weight grows linearly from
/// [`SLOW_START_FLOOR_PERCENT`] to 100%. `since_ms == 0` means "eligible since the process started",
/// which HAProxy never slow-starts ("it would cause trouble to running servers"). Off when
/// `slow_start_ms` is 0.
pub fn effective_weight(b: &Backend, params: &StrategyParams, now_ms: u64) -> u64 {
    let full = u64::from(b.weight) * WEIGHT_SCALE;
    let ramp_ms = params.slow_start_ms;
    let elapsed_ms = now_ms.saturating_sub(b.since_ms);
    if ramp_ms == 0 || b.since_ms == 0 || elapsed_ms >= ramp_ms {
        return full.max(1);
    }
    // u128: a ramp of years times a weight must not overflow.
    let ramped = (u128::from(full) * u128::from(elapsed_ms) / u128::from(ramp_ms)) as u64;
    ramped.max(full * SLOW_START_FLOOR_PERCENT / 100).max(1)
}

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

    /// Picks, or asks the caller to wait (a strategy that paces attempts under learned rate limits).
    fn choose(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        ctx: &PickContext<'_>,
    ) -> Choice {
        Choice::Backend(self.pick(backends, candidates, ctx))
    }

    /// Whether a retry may go back to a backend that already failed for the request (the strategy
    /// then gets every eligible backend and sees `ctx.tried`); otherwise the caller leaves those out.
    fn retries_may_repeat(&self) -> bool {
        false
    }

    /// What the strategy needs reported about each attempt, and whether it adds to responses. The
    /// data plane reads it once per table version, so a strategy that needs nothing costs a flag
    /// test per request.
    fn feedback(&self) -> Feedback {
        Feedback::default()
    }

    /// The cookie to add to the response to a request routed to `backend` (an index into the
    /// table's backends) whose [`PickContext::key`] was `key`, or `None`. Asked only when
    /// [`Feedback::response_cookie`] is set, in HTTP mode, once per attempt.
    fn response_cookie(&self, _backend: usize, _key: &[u8]) -> Option<ResponseCookie> {
        None
    }
}

/// What a strategy asks of the data plane besides a pick ([`Strategy::feedback`]). The load measure
/// and the learned state live in [`crate::backend::BackendStats`], shared by all workers; each
/// shared write costs cycles on every response, so only what some strategy reads is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Feedback {
    /// Each answer's latency (and a penalty for each failure) into the backend's Peak-EWMA
    /// estimate ([`crate::backend::BackendStats::record_response`]).
    pub latency: bool,
    /// Each attempt's success or failure, and 429 rate limits with their `Retry-After`, into what
    /// is learned about the backend ([`crate::backend::learn::Learned`]).
    pub success: bool,
    /// Ask [`Strategy::response_cookie`] for every request routed.
    pub response_cookie: bool,
}

/// What [`Strategy::choose`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Backend(usize),
    /// No candidate should be sent to for this long.
    Wait {
        ms: u64,
    },
    /// No candidate has room under its learned rate limit, and the request may wait no longer:
    /// answer it at once rather than send an attempt sure to be refused.
    Full,
}

/// The strategies sluice knows, by their command-line names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Each backend in turn, ignoring weights.
    RoundRobin,
    /// Each backend in proportion to its weight, interleaved (nginx's smooth weighted round robin).
    WeightedRoundRobin,
    /// The backend with the fewest requests in flight for its weight.
    LeastConnections,
    /// The backend with the lowest Peak-EWMA response time times requests in flight, for its weight.
    LeastTime,
    /// Power of two choices: two distinct backends at random, the one with the lower least-time cost.
    P2c,
    /// A backend at random, in proportion to its weight.
    Random,
    /// The same client address to the same backend (weighted rendezvous hashing).
    IpHash,
    /// The same path and query to the same backend (weighted rendezvous hashing).
    UrlHash,
    /// Maglev consistent hashing of the request key, or of the client address when there is none.
    Maglev,
    /// HTTP session affinity by a cookie naming the backend; least connections for new sessions.
    Sticky,
    /// Round robin that skips backends over --threshold-high in flight until below --threshold-low.
    Threshold,
    /// Switches among round-robin, least-time, p2c and threshold from live measurements.
    Adaptive,
    /// For flaky backends: Thompson sampling on learned success rates, paced under learned rate limits.
    Bandit,
}

impl StrategyKind {
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::WeightedRoundRobin => "weighted-round-robin",
            StrategyKind::LeastConnections => "least-connections",
            StrategyKind::LeastTime => "least-time",
            StrategyKind::P2c => "p2c",
            StrategyKind::Random => "random",
            StrategyKind::IpHash => "ip-hash",
            StrategyKind::UrlHash => "url-hash",
            StrategyKind::Maglev => "maglev",
            StrategyKind::Sticky => "sticky",
            StrategyKind::Threshold => "threshold",
            StrategyKind::Adaptive => "adaptive",
            StrategyKind::Bandit => "bandit",
        }
    }
}

/// What the HTTP session puts in [`PickContext::key`] for a strategy (TCP mode always leaves it empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKey {
    /// The strategy ignores the key.
    None,
    /// The request target's path and query (`url-hash`).
    PathAndQuery,
    /// The value of the [`STICKY_COOKIE_NAME`] cookie, empty if absent (`sticky`).
    StickyCookie,
    /// The configured request attribute; empty hashes the client address instead (`maglev`).
    Configured,
}

impl StrategyKind {
    pub fn request_key(self) -> RequestKey {
        match self {
            StrategyKind::UrlHash => RequestKey::PathAndQuery,
            StrategyKind::Sticky => RequestKey::StickyCookie,
            StrategyKind::Maglev => RequestKey::Configured,
            StrategyKind::RoundRobin
            | StrategyKind::WeightedRoundRobin
            | StrategyKind::LeastConnections
            | StrategyKind::LeastTime
            | StrategyKind::P2c
            | StrategyKind::Random
            | StrategyKind::IpHash
            | StrategyKind::Threshold
            | StrategyKind::Adaptive
            | StrategyKind::Bandit => RequestKey::None,
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
/// workers pass different seeds so they do not move in lockstep. Hashing strategies ignore it: every
/// worker must map a key the same way.
pub fn build(
    kind: StrategyKind,
    params: &StrategyParams,
    backends: &[Backend],
    seed: u64,
) -> Box<dyn Strategy> {
    let params = *params;
    match kind {
        StrategyKind::RoundRobin => Box::new(RoundRobin::new(seed as usize)),
        StrategyKind::WeightedRoundRobin => {
            Box::new(WeightedRoundRobin::new(params, backends, seed))
        }
        StrategyKind::LeastConnections => Box::new(LeastConnections::new(seed as usize, params)),
        StrategyKind::LeastTime => Box::new(LeastTime::new(seed as usize, params)),
        StrategyKind::P2c => Box::new(PowerOfTwoChoices::with_seed(seed, params)),
        StrategyKind::Random => Box::new(WeightedRandom::with_seed(seed, params)),
        StrategyKind::IpHash => Box::new(Rendezvous::new(HashKey::ClientIp, backends)),
        StrategyKind::UrlHash => Box::new(Rendezvous::new(HashKey::Request, backends)),
        StrategyKind::Maglev => Box::new(Maglev::new(backends)),
        StrategyKind::Sticky => Box::new(Sticky::new(seed as usize, params, backends)),
        StrategyKind::Threshold => Box::new(Threshold::new(seed as usize, params, backends.len())),
        // The control thread resolves `adaptive` to the strategy it chose; tables never carry it.
        StrategyKind::Adaptive => Box::new(RoundRobin::new(seed as usize)),
        StrategyKind::Bandit => Box::new(Bandit::with_seed(seed)),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    pub(crate) fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 10_000 + i as u16));
                Backend::new(i as u64 + 1, addr, w)
            })
            .collect()
    }

    pub(crate) fn ctx() -> PickContext<'static> {
        PickContext {
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            key: b"",
            now_ms: 1,
            tried: &[],
            relax: false,
            force: false,
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
        assert_eq!("p2c".parse(), Ok(StrategyKind::P2c));
        assert_eq!("ip-hash".parse(), Ok(StrategyKind::IpHash));
        assert_eq!(
            "weighted-round-robin".parse(),
            Ok(StrategyKind::WeightedRoundRobin)
        );
    }

    #[test]
    fn every_strategy_only_picks_candidates() {
        let b = test_support::backends(&[1, 2, 3, 1, 1]);
        let params = StrategyParams::default();
        for &kind in <StrategyKind as clap::ValueEnum>::value_variants() {
            let mut s = build(kind, &params, &b, 42);
            for candidates in [&[0, 1, 2, 3, 4][..], &[1, 3], &[4]] {
                for i in 0..50u32 {
                    let key = i.to_le_bytes();
                    let ctx = PickContext {
                        key: &key,
                        ..test_support::ctx()
                    };
                    let p = s.pick(&b, candidates, &ctx);
                    assert!(candidates.contains(&p), "{kind} picked {p}");
                }
            }
        }
    }

    #[test]
    fn only_the_strategies_that_read_a_measure_ask_for_it() {
        let b = test_support::backends(&[1, 1]);
        let params = StrategyParams::default();
        for &kind in <StrategyKind as clap::ValueEnum>::value_variants() {
            let feedback = build(kind, &params, &b, 1).feedback();
            assert_eq!(
                feedback.latency,
                matches!(kind, StrategyKind::LeastTime | StrategyKind::P2c),
                "{kind}"
            );
            assert_eq!(feedback.success, kind == StrategyKind::Bandit, "{kind}");
            assert_eq!(
                feedback.response_cookie,
                kind == StrategyKind::Sticky,
                "{kind}"
            );
        }
    }

    #[test]
    fn slow_start_ramps_linearly_from_one_percent() {
        let mut b = test_support::backends(&[4]).remove(0);
        b.since_ms = 1_000;
        let params = StrategyParams {
            slow_start_ms: 10_000,
            ..StrategyParams::default()
        };
        let full = 4 * WEIGHT_SCALE;
        let at = |now_ms| effective_weight(&b, &params, now_ms);
        assert_eq!(at(1_000), full / 100, "starts at 1%, not 0");
        assert_eq!(
            at(500),
            full / 100,
            "a clock read before since_ms counts as 0 elapsed"
        );
        assert_eq!(at(1_050), full / 100);
        assert_eq!(at(2_000), full / 10);
        assert_eq!(at(6_000), full / 2);
        assert_eq!(at(10_999), full * 9_999 / 10_000);
        assert_eq!(at(11_000), full);
        assert_eq!(at(u64::MAX), full);
    }

    #[test]
    fn slow_start_is_off_when_zero_or_since_process_start() {
        let mut b = test_support::backends(&[3]).remove(0);
        b.since_ms = 1_000;
        let off = StrategyParams::default();
        assert_eq!(effective_weight(&b, &off, 1_000), 3 * WEIGHT_SCALE);
        let on = StrategyParams {
            slow_start_ms: 10_000,
            ..off
        };
        b.since_ms = 0;
        assert_eq!(effective_weight(&b, &on, 1), 3 * WEIGHT_SCALE);
        b.weight = 0;
        assert_eq!(effective_weight(&b, &on, 1), 1, "never 0");
    }
}
