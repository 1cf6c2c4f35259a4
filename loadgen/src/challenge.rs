//! The flaky-servers challenge's client (`loadgen challenge`): fresh 24-character ids as `POST /`
//! bodies at a fixed rate through the balancer under test, then the simulator's ledger decides
//! what happened to each id.
//!
//! The report scores only this run's ids: `score = accepted − penalty attempts` from the
//! ledger lines of the ids sent, the oracle bound is the simulator's oracle share × ids sent,
//! and a *disagreement* is an answer the ledger contradicts: a 2xx for an id no server accepted,
//! or a failure (non-2xx or no answer) for an id a server did accept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::client;
use crate::http::{self, Body, HttpConfig, Outcome};
use crate::id::id_str;
use crate::latency::{human_us, LatencySummary};
use crate::sim::{LookupRequest, LookupResponse, Score};

/// The challenge's rate: 10 ids a second.
pub const DEFAULT_RPS: f64 = 10.0;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// Keep-alive connections to the target; enough for 10 rps even if answers take seconds.
pub const DEFAULT_CONNECTIONS: usize = 32;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Ids per `POST /ledger/lookup`.
const LOOKUP_BATCH: usize = 5_000;

#[derive(Debug, Clone)]
pub struct ChallengeConfig {
    /// The balancer: `http://host:port[/path]`, or `host:port`.
    pub target: String,
    /// The simulator's control API.
    pub sim_control: SocketAddr,
    /// Default [`DEFAULT_RPS`].
    pub rps: f64,
    /// Default [`DEFAULT_DURATION`].
    pub duration: Duration,
    /// Seeds the ids; `None` = from entropy.
    pub seed: Option<u64>,
    /// Default [`DEFAULT_CONNECTIONS`].
    pub connections: usize,
    /// Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Clear the simulator's ledger first (`POST /reset`). Default true.
    pub reset: bool,
}

impl ChallengeConfig {
    pub fn new(target: impl Into<String>, sim_control: SocketAddr) -> Self {
        ChallengeConfig {
            target: target.into(),
            sim_control,
            rps: DEFAULT_RPS,
            duration: DEFAULT_DURATION,
            seed: None,
            connections: DEFAULT_CONNECTIONS,
            timeout: DEFAULT_TIMEOUT,
            reset: true,
        }
    }
}

/// What `loadgen challenge` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ChallengeReport {
    pub target: String,
    pub ids_sent: u64,
    /// Answers from the target by status code.
    pub status: BTreeMap<String, u64>,
    /// Requests without an answer, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Ids of this run that the ledger shows accepted.
    pub accepted: u64,
    /// `accepted / ids_sent`.
    pub accepted_share: f64,
    pub attempts: u64,
    pub penalty_attempts: u64,
    /// `accepted − penalty_attempts`.
    pub score: i64,
    pub oracle_accepted_share: f64,
    /// `oracle_accepted_share × ids_sent`.
    pub oracle_bound: f64,
    /// `score / oracle_bound`.
    pub score_vs_oracle: f64,
    pub disagreements: u64,
    /// 2xx answers for ids no server accepted.
    pub false_success: u64,
    /// Failures for ids a server accepted.
    pub false_failure: u64,
    /// Ids that never reached a server.
    pub never_attempted: u64,
    pub latency_us: LatencySummary,
    /// The simulator's own totals (its whole ledger).
    pub sim: Score,
}

impl ChallengeReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let join = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(s, "target          {}", self.target);
        let _ = writeln!(s, "ids sent        {}", self.ids_sent);
        let _ = writeln!(s, "answers         {}", join(&self.status));
        let _ = writeln!(s, "no answer       {}", join(&self.errors));
        let _ = writeln!(
            s,
            "accepted        {} ({:.1}%), {} attempts, {} penalty attempts, {} never reached a server",
            self.accepted,
            self.accepted_share * 100.0,
            self.attempts,
            self.penalty_attempts,
            self.never_attempted
        );
        let _ = writeln!(
            s,
            "score           {}   oracle bound {:.1} (accepted share {:.1}%)   score ÷ oracle {:.3}",
            self.score,
            self.oracle_bound,
            self.oracle_accepted_share * 100.0,
            self.score_vs_oracle
        );
        let _ = writeln!(
            s,
            "disagreements   {} (2xx for an id never accepted: {}, failure for an accepted id: {})",
            self.disagreements, self.false_success, self.false_failure
        );
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "latency         p50 {}  p99 {}  max {}",
            human_us(l.p50),
            human_us(l.p99),
            human_us(l.max)
        );
        s
    }
}

/// Runs the challenge and scores it against the ledger.
pub fn run(cfg: &ChallengeConfig) -> io::Result<ChallengeReport> {
    let url = if cfg.target.starts_with("http://") {
        cfg.target.clone()
    } else {
        format!("http://{}/", cfg.target)
    };
    let mut http_cfg =
        HttpConfig::new(&url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if cfg.rps <= 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--rps must be positive",
        ));
    }
    http_cfg.method = "POST".into();
    http_cfg.body = Body::Id24;
    http_cfg.rate_rps = cfg.rps;
    http_cfg.duration = cfg.duration;
    http_cfg.connections = cfg.connections;
    http_cfg.timeout = cfg.timeout;
    http_cfg.seed = cfg.seed;
    http_cfg.record_outcomes = true;
    if cfg.reset {
        client::request(cfg.sim_control, "POST", "/reset", Some(b"{}")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("simulator control {}: {e}", cfg.sim_control),
            )
        })?;
    }
    let report = http::run(&http_cfg)?;
    let entries = lookup(cfg.sim_control, &report.outcomes)?;
    // The oracle at the rate sent: ids the balancer answered itself never reach the ledger.
    let sim: Score = client::get_json(cfg.sim_control, &format!("/score?ids_per_s={}", cfg.rps))?;
    let mut out = ChallengeReport {
        target: url,
        ids_sent: report.outcomes.len() as u64,
        status: report.status.clone(),
        errors: report.errors.clone(),
        accepted: 0,
        accepted_share: 0.0,
        attempts: 0,
        penalty_attempts: 0,
        score: 0,
        oracle_accepted_share: sim.oracle_accepted_share,
        oracle_bound: 0.0,
        score_vs_oracle: 0.0,
        disagreements: 0,
        false_success: 0,
        false_failure: 0,
        never_attempted: 0,
        latency_us: report.latency_us,
        sim,
    };
    for outcome in &report.outcomes {
        let Some(id) = outcome.id else {
            continue;
        };
        let entry = entries
            .entries
            .get(id_str(&id))
            .copied()
            .unwrap_or_default();
        out.attempts += u64::from(entry.attempts);
        out.penalty_attempts += u64::from(entry.attempts.saturating_sub(crate::sim::FREE_ATTEMPTS));
        out.never_attempted += u64::from(entry.attempts == 0);
        out.accepted += u64::from(entry.accepted);
        let answered_ok = matches!(outcome.result, Ok(status) if (200..300).contains(&status));
        match (answered_ok, entry.accepted) {
            (true, false) => out.false_success += 1,
            (false, true) => out.false_failure += 1,
            _ => {}
        }
    }
    out.disagreements = out.false_success + out.false_failure;
    out.score = out.accepted as i64 - out.penalty_attempts as i64;
    if out.ids_sent > 0 {
        out.accepted_share = out.accepted as f64 / out.ids_sent as f64;
    }
    out.oracle_bound = out.oracle_accepted_share * out.ids_sent as f64;
    if out.oracle_bound > 0.0 {
        out.score_vs_oracle = out.score as f64 / out.oracle_bound;
    }
    Ok(out)
}

fn lookup(control: SocketAddr, outcomes: &[Outcome]) -> io::Result<LookupResponse> {
    let ids: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.id.as_ref().map(|id| id_str(id).to_string()))
        .collect();
    let mut all = LookupResponse::default();
    for batch in ids.chunks(LOOKUP_BATCH) {
        let request = LookupRequest {
            ids: batch.to_vec(),
        };
        let part: LookupResponse = client::post_json(control, "/ledger/lookup", &request)?;
        all.entries.extend(part.entries);
    }
    Ok(all)
}
