//! The flaky-servers challenge replayed in simulated time: the `bandit` strategy and what it learns
//! (`sluice::backend::learn::Learned`) in front of ten servers that follow `loadgen sim`'s flaky profiles
//! rule for rule, with the simulator's own parameters, limits, penalty box and random streams
//! (same seed, same servers as `loadgen sim --profile flakyN --seed S`). Ids arrive at 10 per
//! second; each gets up to 3 attempts, retried at once on a 5xx or 429 as sluice does with
//! `--retry-on connect,timeout,5xx,429 --retry-methods any`; a `Choice::Wait` is honoured for at
//! most `--max-pacing-wait` (1 s), then the pick is forced. The score is divided by the
//! simulator's oracle bound, as `loadgen challenge` does.
//!
//! Nothing here waits for real time, so whole two-minute runs take milliseconds and always give
//! the same numbers: a regression in the strategy shows as a lower score, not as a flaky test.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use loadgen::rng::Rng as SimRng;
use loadgen::sim::limit::{PenaltyBox, SlidingWindow, PENALTY_DURATION};
use loadgen::sim::oracle::{accepted_share_over, OracleServer};
use loadgen::sim::{Profile, ServerParams, DEFAULT_SERVICE_TIME_MS, RETRY_AFTER_S};

use sluice::backend::{Backend, BackendId};
use sluice::strategy::{self, Choice, PickContext, StrategyKind, StrategyParams};

const SERVERS: usize = 10;
const IDS_PER_S: u64 = 10;
const MAX_ATTEMPTS: usize = 3;
const MAX_PACING_WAIT_MS: u64 = 1_000;
/// The simulator has been up this long when the first id arrives (flaky3's limits depend on it).
const SIM_HEAD_START_MS: u64 = 1_000;

/// One server of the simulator: `loadgen::sim`'s `ServerState::decide_attempt` for a valid
/// `POST /`, minus the service delay (the caller adds it).
struct Server {
    params: ServerParams,
    window: SlidingWindow,
    penalty: PenaltyBox,
    rng: SimRng,
}

impl Server {
    /// The simulator's servers for `profile` and `seed`, drawn as `Sim::start` draws them.
    fn all(profile: Profile, seed: u64) -> Vec<Server> {
        let mut master = SimRng::with_seed(seed);
        (0..SERVERS)
            .map(|i| {
                let mut rng = master.fork(i as u64);
                let params = ServerParams::draw(profile, &mut rng, DEFAULT_SERVICE_TIME_MS, 4);
                Server {
                    params,
                    window: SlidingWindow::default(),
                    penalty: PenaltyBox::default(),
                    rng,
                }
            })
            .collect()
    }

    /// Status and Retry-After for an attempt arriving at `at`, `t_s` after the simulator started.
    fn answer(&mut self, at: Instant, t_s: f64) -> (u16, Option<u32>) {
        if let Some(left) = self.penalty.remaining(at) {
            return (429, Some(left.as_secs_f64().ceil() as u32));
        }
        if let Some(limit) = self.params.rate_limit.at(t_s) {
            if !self.window.try_admit(at, limit) {
                let box_now = self.params.penalty_box && self.penalty.violation(at);
                let s = if box_now {
                    PENALTY_DURATION.as_secs()
                } else {
                    RETRY_AFTER_S
                };
                return (429, Some(s as u32));
            }
        }
        if self.rng.chance(self.params.success_rate) {
            (200, None)
        } else if self.rng.chance(0.5) {
            (500, None)
        } else {
            (503, None)
        }
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
}

#[derive(Clone, Copy)]
enum Event {
    /// Pick a backend for request `r` (its first attempt, a retry, or after a wait).
    Dispatch(usize),
    /// Backend `b` answered request `r`.
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
        force: false,
    }
}

/// Replays `duration_s` of the challenge's traffic through a `bandit` instance seeded `seed`
/// against the simulator's servers.
fn replay(profile: Profile, seed: u64, duration_s: u64) -> Outcome {
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
    let ids = duration_s * IDS_PER_S;
    let mut requests: Vec<Request> = (0..ids).map(|_| Request::default()).collect();
    let mut queue = Queue::default();
    for r in 0..ids as usize {
        queue.push(r as u64 * 1000 / IDS_PER_S + 1, Event::Dispatch(r));
    }
    let mut out = Outcome {
        ids,
        accepted: 0,
        attempts: 0,
        too_many_requests: 0,
        penalty_attempts: 0,
        oracle_share: 0.0,
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
                    force: req.pace_until_ms != 0 && now_ms >= req.pace_until_ms,
                    ..ctx()
                };
                match bandit.choose(&table, &candidates, &c) {
                    Choice::Wait { ms } => {
                        if req.pace_until_ms == 0 {
                            req.pace_until_ms = now_ms + MAX_PACING_WAIT_MS;
                        }
                        let wake = (now_ms + ms).min(req.pace_until_ms).max(now_ms + 1);
                        queue.push(wake, Event::Dispatch(r));
                    }
                    Choice::Backend(b) => {
                        req.pace_until_ms = 0;
                        req.tried.push(table[b].id);
                        out.attempts += 1;
                        let at = origin + Duration::from_millis(now_ms);
                        let t_s = (now_ms + SIM_HEAD_START_MS) as f64 / 1000.0;
                        let (status, retry_after_s) = servers[b].answer(at, t_s);
                        let delay = if status == 429 {
                            0
                        } else {
                            DEFAULT_SERVICE_TIME_MS
                        };
                        queue.push(now_ms + delay, Event::Answer(r, b, status, retry_after_s));
                    }
                }
            }
            Event::Answer(r, b, status, retry_after_s) => {
                let learned = &table[b].stats.learned;
                if status == 429 {
                    out.too_many_requests += 1;
                    learned.rate_limited(retry_after_s, now_ms);
                } else {
                    learned.observe(status == 200, now_ms);
                }
                if status == 200 {
                    out.accepted += 1;
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
        .map(|(r, req)| req.done_ms - (r as u64 * 1000 / IDS_PER_S + 1))
        .collect();
    latencies.sort_unstable();
    out.latency_p50_ms = latencies[latencies.len() / 2];
    out.latency_p99_ms = latencies[latencies.len() * 99 / 100];
    let from_s = (1 + SIM_HEAD_START_MS) as f64 / 1000.0;
    let to_s = from_s + (ids - 1) as f64 / IDS_PER_S as f64;
    out.oracle_share = accepted_share_over(from_s, to_s, IDS_PER_S as f64, |t| {
        servers
            .iter()
            .map(|s| OracleServer {
                success: s.params.success_rate,
                capacity_rps: s.params.rate_limit.at(t).map(f64::from),
            })
            .collect()
    });
    out
}

const PROFILES: [Profile; 3] = [Profile::Flaky1, Profile::Flaky2, Profile::Flaky3];

#[test]
fn the_challenge_replayed_scores_close_to_the_oracle_in_every_configuration() {
    // Seeds 1 to 3, as scripts/challenge.sh runs them. The floors leave room for tuning: the
    // values at the time of writing were 0.996-1.001, 0.993-0.994 and 0.978-0.991 (over 50
    // seeds the means are 0.998, 0.994 and 0.985; configuration 3's spread is wide).
    for (profile, floor) in PROFILES.into_iter().zip([0.98, 0.98, 0.95]) {
        for seed in 1..=3 {
            let out = replay(profile, seed, 120);
            let ratio = out.score_vs_oracle();
            println!(
                "{profile:?} seed {seed}: {ratio:.3} of the oracle, {}/{} accepted, {} attempts, {} 429s",
                out.accepted, out.ids, out.attempts, out.too_many_requests
            );
            assert_eq!(out.penalty_attempts, 0);
            assert!(
                ratio >= floor,
                "{profile:?} seed {seed}: {ratio:.3} < {floor}"
            );
        }
    }
}

#[test]
fn rate_limits_are_learned_not_hammered() {
    // Configuration 2: one 429 teaches each limit, then only failed probes, ever further
    // apart, are refused: a few per busy server in two minutes, out of ~1,500 attempts.
    let out = replay(Profile::Flaky2, 1, 120);
    assert!(out.too_many_requests < 60, "{out:?}");
}

/// `cargo test --release --test bandit_replay -- --ignored --nocapture over_many_seeds`: the spread
/// behind the three seeds above, for tuning.
#[test]
#[ignore]
fn the_challenge_over_many_seeds() {
    for profile in PROFILES {
        let ratios: Vec<f64> = (1..=50)
            .map(|seed| replay(profile, seed, 120).score_vs_oracle())
            .collect();
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let worst = ratios.iter().copied().fold(f64::MAX, f64::min);
        let out = replay(profile, 1, 120);
        println!(
            "{profile:?}: mean {mean:.4}, worst {worst:.3} of the oracle over 50 seeds; seed 1 latency p50 {} ms, p99 {} ms",
            out.latency_p50_ms, out.latency_p99_ms
        );
    }
}
