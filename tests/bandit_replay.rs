//! The flaky-servers challenge replayed in simulated time: the `bandit` strategy and what it learns
//! (`sluice::backend::learn::Learned`) in front of ten servers that follow `loadgen sim`'s flaky profiles
//! rule for rule, with the simulator's own parameters, limits, penalty box and random streams
//! (same seed, same servers as `loadgen sim --profile flakyN --seed S`: each server is the
//! simulator's own `ServerState`, answering by its rules and random stream). Ids arrive at 10 (or
//! 30) per second; each gets up to 3 attempts, retried at once on a 5xx, a 429 or a closed
//! connection (a server in an outage) as sluice does with `--retry-on
//! connect,timeout,broken,5xx,429 --retry-methods any`; a `Choice::Wait` is honoured for at most
//! `--max-pacing-wait` (1 s), then for as long again only for room (no sure 429), then the pick is
//! forced. The score is divided by the simulator's
//! oracle bound, as `loadgen challenge` does, and every answer is checked against the ledger the
//! servers keep (an id told it succeeded was accepted, an id told it failed was not).
//!
//! Nothing here waits for real time, so whole two-minute runs take milliseconds and always give
//! the same numbers: a regression in the strategy shows as a lower score, not as a flaky test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use loadgen::rng::Rng as SimRng;
use loadgen::sim::oracle::{accepted_share_over, OracleServer};
use loadgen::sim::{Profile, ServerParams, ServerState, DEFAULT_SERVICE_TIME_MS};

use sluice::backend::{Backend, BackendId};
use sluice::strategy::{self, Choice, PickContext, StrategyKind, StrategyParams};

const SERVERS: usize = 10;
const MAX_ATTEMPTS: usize = 3;
/// `--max-pacing-wait` (1 s, the default, as scripts/challenge.sh runs sluice).
const MAX_PACING_WAIT_MS: u64 = 1_000;
/// The simulator has been up this long when the first id arrives (flaky3's limits depend on it).
const SIM_HEAD_START_MS: u64 = 1_000;

/// One server of the simulator, drawn as `Sim::start` draws it.
struct Server {
    params: ServerParams,
    state: ServerState,
}

impl Server {
    /// The simulator's servers for `profile` and `seed`.
    fn all(profile: Profile, seed: u64) -> Vec<Server> {
        let mut master = SimRng::with_seed(seed);
        (0..SERVERS)
            .map(|i| {
                let mut rng = master.fork(i as u64);
                let params = ServerParams::draw(profile, &mut rng, DEFAULT_SERVICE_TIME_MS, 4);
                Server {
                    state: ServerState::new(params.clone(), rng),
                    params,
                }
            })
            .collect()
    }
}

/// What one replayed run came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub ids: u64,
    pub accepted: u64,
    pub attempts: u64,
    pub too_many_requests: u64,
    /// Attempts beyond the 3rd (never, by construction; kept to read like the ledger).
    pub penalty_attempts: u64,
    pub oracle_share: f64,
    /// Answers the ledger contradicts (must be 0).
    pub disagreements: u64,
    /// Median and 99th percentile of the time from an id's arrival to its last answer.
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
}

impl Outcome {
    pub fn score_vs_oracle(&self) -> f64 {
        (self.accepted as f64 - self.penalty_attempts as f64)
            / (self.oracle_share * self.ids as f64)
    }
}

#[derive(Default)]
struct Request {
    done_ms: u64,
    tried: Vec<BackendId>,
    pace_until_ms: u64,
    /// What the client was told: success or not.
    told_ok: bool,
    /// What the servers' ledger says: some server accepted the id.
    ledger_accepted: bool,
}

#[derive(Clone, Copy)]
enum Event {
    /// Pick a backend for request `r` (its first attempt, a retry, or after a wait).
    Dispatch(usize),
    /// Backend `b` answered request `r` (status 0: it closed the connection unanswered).
    Answer(usize, usize, u16, Option<u32>),
}

/// Events by time; equal times first come, first served.
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    events: Vec<Event>,
}

impl Queue {
    fn push(&mut self, at_ms: u64, e: Event) {
        self.heap.push(Reverse((at_ms, self.events.len())));
        self.events.push(e);
    }

    fn pop(&mut self) -> Option<(u64, Event)> {
        let Reverse((at_ms, i)) = self.heap.pop()?;
        Some((at_ms, self.events[i]))
    }
}

/// Ten backends of weight 1, as the replay's servers.
fn backends() -> Vec<Backend> {
    (0..SERVERS)
        .map(|i| {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 10_000 + i as u16));
            Backend::new(i as u64 + 1, addr, 1)
        })
        .collect()
}

/// A first attempt from one client with no request key.
fn ctx() -> PickContext<'static> {
    PickContext {
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        key: b"",
        now_ms: 1,
        tried: &[],
        relax: false,
        force: false,
    }
}

/// Replays `duration_s` of the challenge's traffic at `ids_per_s` through a `bandit` instance
/// seeded `seed` against the simulator's servers.
fn replay(profile: Profile, seed: u64, duration_s: u64, ids_per_s: u64) -> Outcome {
    let mut servers = Server::all(profile, seed);
    let table: Vec<Backend> = backends();
    let mut bandit = strategy::build(
        StrategyKind::Bandit,
        &StrategyParams::default(),
        &table,
        seed,
    );
    let candidates: Vec<usize> = (0..SERVERS).collect();
    let origin = Instant::now();
    let ids = duration_s * ids_per_s;
    let mut requests: Vec<Request> = (0..ids).map(|_| Request::default()).collect();
    let mut queue = Queue::default();
    for r in 0..ids as usize {
        queue.push(r as u64 * 1000 / ids_per_s + 1, Event::Dispatch(r));
    }
    let mut out = Outcome {
        ids,
        accepted: 0,
        attempts: 0,
        too_many_requests: 0,
        penalty_attempts: 0,
        oracle_share: 0.0,
        disagreements: 0,
        latency_p50_ms: 0,
        latency_p99_ms: 0,
    };
    while let Some((now_ms, e)) = queue.pop() {
        match e {
            Event::Dispatch(r) => {
                let req = &mut requests[r];
                let c = PickContext {
                    now_ms,
                    tried: &req.tried,
                    relax: req.pace_until_ms != 0 && now_ms >= req.pace_until_ms,
                    force: req.pace_until_ms != 0
                        && now_ms >= req.pace_until_ms + MAX_PACING_WAIT_MS,
                    ..ctx()
                };
                match bandit.choose(&table, &candidates, &c) {
                    Choice::Wait { ms } => {
                        if req.pace_until_ms == 0 {
                            req.pace_until_ms = now_ms + MAX_PACING_WAIT_MS;
                        }
                        let until = if now_ms >= req.pace_until_ms {
                            req.pace_until_ms + MAX_PACING_WAIT_MS
                        } else {
                            req.pace_until_ms
                        };
                        let wake = (now_ms + ms).min(until).max(now_ms + 1);
                        queue.push(wake, Event::Dispatch(r));
                    }
                    Choice::Backend(b) => {
                        req.pace_until_ms = 0;
                        req.tried.push(table[b].id);
                        out.attempts += 1;
                        let at = origin + Duration::from_millis(now_ms);
                        let t_s = (now_ms + SIM_HEAD_START_MS) as f64 / 1000.0;
                        let answer = servers[b].state.answer_attempt(at, t_s);
                        let (status, retry_after_s) = answer.unwrap_or((0, None));
                        if status == 200 {
                            req.ledger_accepted = true;
                        }
                        let delay = if status == 429 || status == 0 {
                            0
                        } else {
                            DEFAULT_SERVICE_TIME_MS
                        };
                        let retry_after_s = retry_after_s.map(|s| s as u32);
                        queue.push(now_ms + delay, Event::Answer(r, b, status, retry_after_s));
                    }
                }
            }
            Event::Answer(r, b, status, retry_after_s) => {
                let learned = &table[b].stats.learned;
                if status == 429 {
                    out.too_many_requests += 1;
                    learned.rate_limited(retry_after_s, now_ms);
                } else if status == 0 {
                    learned.observe(false, now_ms);
                    learned.unreachable(now_ms);
                } else {
                    learned.observe(status == 200, now_ms);
                }
                if status == 200 {
                    out.accepted += 1;
                    requests[r].told_ok = true;
                } else if requests[r].tried.len() < MAX_ATTEMPTS {
                    queue.push(now_ms, Event::Dispatch(r));
                }
                requests[r].done_ms = now_ms;
            }
        }
    }
    let mut latencies: Vec<u64> = requests
        .iter()
        .enumerate()
        .map(|(r, req)| req.done_ms - (r as u64 * 1000 / ids_per_s + 1))
        .collect();
    latencies.sort_unstable();
    out.latency_p50_ms = latencies[latencies.len() / 2];
    out.latency_p99_ms = latencies[latencies.len() * 99 / 100];
    out.disagreements = requests
        .iter()
        .filter(|r| r.told_ok != r.ledger_accepted)
        .count() as u64;
    let from_s = (1 + SIM_HEAD_START_MS) as f64 / 1000.0;
    let to_s = from_s + (ids - 1) as f64 / ids_per_s as f64;
    out.oracle_share = accepted_share_over(from_s, to_s, ids_per_s as f64, |t| {
        servers
            .iter()
            .map(|s| OracleServer::at(&s.params, false, t))
            .collect()
    });
    out
}

const PROFILES: [Profile; 4] = [
    Profile::Flaky1,
    Profile::Flaky2,
    Profile::Flaky3,
    Profile::Flaky4,
];

/// Seeds per configuration for the means.
const SEEDS: u64 = 50;

/// Runs every profile over seeds 1..=[`SEEDS`] at `ids_per_s` (in parallel: the runs are
/// independent), checks every run against its ledger, and returns each profile's mean and worst
/// score ÷ oracle.
fn over_seeds(ids_per_s: u64, duration_s: u64) -> Vec<(Profile, f64, f64)> {
    PROFILES
        .map(|profile| {
            std::thread::spawn(move || {
                let ratios: Vec<f64> = (1..=SEEDS)
                    .map(|seed| {
                        let out = replay(profile, seed, duration_s, ids_per_s);
                        assert_eq!(out.penalty_attempts, 0);
                        assert_eq!(out.disagreements, 0, "{profile:?} seed {seed}: {out:?}");
                        out.score_vs_oracle()
                    })
                    .collect();
                let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
                let worst = ratios.iter().copied().fold(f64::MAX, f64::min);
                println!(
                    "{profile:?} at {ids_per_s}/s: mean {mean:.4}, worst {worst:.3} of the oracle over {SEEDS} seeds"
                );
                (profile, mean, worst)
            })
        })
        .into_iter()
        .map(|h| h.join().expect("a replay thread panicked"))
        .collect()
}

/// The means over 50 seeds when this was written: 0.9983, 0.9942, 0.9813 and 0.9802 (flaky1 to
/// flaky4). The target is 0.99 everywhere; configurations 3 and 4 miss it (PERF.md says by how
/// much and why), so their floors guard against a regression rather than state the target.
#[test]
fn the_challenge_replayed_over_fifty_seeds_stays_close_to_the_oracle_in_every_configuration() {
    for (profile, mean, _) in over_seeds(10, 120) {
        let floor = match profile {
            Profile::Flaky1 => 0.995,
            Profile::Flaky2 => 0.99,
            _ => 0.975,
        };
        assert!(mean >= floor, "{profile:?}: mean {mean:.4} < {floor}");
    }
}

#[test]
fn rate_limits_are_learned_not_hammered() {
    // Configuration 2: one 429 teaches each limit, then only failed probes, ever further
    // apart, are refused: a few per busy server in two minutes, out of ~1,500 attempts.
    let out = replay(Profile::Flaky2, 1, 120, 10);
    assert!(out.too_many_requests < 60, "{out:?}");
}

/// `cargo test --release --test bandit_replay -- --ignored --nocapture at_30`: the same at 30
/// ids per second, where the limits bind.
#[test]
#[ignore]
fn the_challenge_replayed_at_30_ids_per_second() {
    for (profile, mean, worst) in over_seeds(30, 120) {
        println!("{profile:?}: {mean:.4} {worst:.3}");
    }
}

/// `RATE=30 cargo test --release --test bandit_replay -- --ignored --nocapture worst_seeds`: the
/// six worst seeds of configurations 3 and 4, for tuning.
#[test]
#[ignore]
fn worst_seeds() {
    let rate: u64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for profile in [Profile::Flaky3, Profile::Flaky4] {
        let mut rows: Vec<(f64, u64, Outcome)> = (1..=50)
            .map(|seed| {
                let o = replay(profile, seed, 120, rate);
                (o.score_vs_oracle(), seed, o)
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (r, seed, o) in rows.iter().take(6) {
            println!(
                "{profile:?} seed {seed}: {r:.3} acc {}/{} oracle {:.1} attempts {} 429s {}",
                o.accepted,
                o.ids,
                o.oracle_share * o.ids as f64,
                o.attempts,
                o.too_many_requests
            );
        }
        let tot429: u64 = rows.iter().map(|r| r.2.too_many_requests).sum();
        println!("{profile:?} total 429s {tot429}");
    }
}
