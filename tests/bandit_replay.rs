//! The flaky-servers challenge replayed in simulated time: the `bandit` strategy and what it learns
//! (`sluice::backend::learn::Learned`) in front of ten servers that follow `loadgen sim`'s flaky profiles
//! rule for rule, with the simulator's own parameters, limits, penalty box and random streams
//! (same seed, same servers as `loadgen sim --profile flakyN --seed S`: each server is the
//! simulator's own `ServerState`, answering by its rules and random stream). Ids arrive at 10 (or
//! 30) per second; each gets up to 3 attempts, retried at once on a 5xx, a 429 or a closed
//! connection (a server in an outage) as sluice does with `--retry-on
//! connect,timeout,broken,5xx,429 --retry-methods any`; a `Choice::Wait` is honoured for at most
//! `--max-pacing-wait` (2 s, as scripts/challenge.sh runs sluice), then for as long again only for
//! room (no sure 429), then the pick is forced, and never past `--max-pacing-total` (9 s) from the
//! id's arrival; a `Choice::Full` is answered at once (sluice's 503). The client gives up after
//! 10 s, as `loadgen challenge` does: an answer later than that is a failure to it, and a
//! disagreement if a server accepted the id. The score is divided by the simulator's
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
use loadgen::sim::oracle::{self, accepted_share_over, OracleServer};
use loadgen::sim::{
    DynamicLimit, Profile, RateLimit, ServerParams, ServerState, DEFAULT_SERVICE_TIME_MS,
};

use sluice::backend::{Backend, BackendId};
use sluice::strategy::{self, Choice, PickContext, StrategyKind, StrategyParams};

const SERVERS: usize = 10;
const MAX_ATTEMPTS: usize = 3;
/// `--max-pacing-wait` as scripts/challenge.sh runs sluice (2 s).
const MAX_PACING_WAIT_MS: u64 = 2_000;
/// `--max-pacing-total` (9 s, the default): the most a request waits in all, from its arrival.
const MAX_PACING_TOTAL_MS: u64 = 9_000;
/// The simulator has been up this long when the first id arrives (flaky3's limits depend on it).
const SIM_HEAD_START_MS: u64 = 1_000;
/// The challenge client's timeout: an answer later than this is a failure to the client.
const CLIENT_TIMEOUT_MS: u64 = 10_000;

/// One server of the simulator, drawn as `Sim::start` draws it.
struct Server {
    params: ServerParams,
    state: ServerState,
}

impl Server {
    /// The simulator's servers for `profile` and `seed`.
    fn all(profile: Profile, seed: u64, world: LimitWorld) -> Vec<Server> {
        let mut master = SimRng::with_seed(seed);
        (0..SERVERS)
            .map(|i| {
                let mut rng = master.fork(i as u64);
                let mut params = ServerParams::draw(profile, &mut rng, DEFAULT_SERVICE_TIME_MS, 4);
                if let RateLimit::Dynamic(limit) = &mut params.rate_limit {
                    world.apply(limit);
                }
                Server {
                    state: ServerState::new(params.clone(), rng),
                    params,
                }
            })
            .collect()
    }
}

/// Which of a moving limit's two motions the replay keeps, for `diagnose` and `one_run`
/// (`LIMITS=steady|drift|steps`, the challenge's own limits otherwise): taking them apart shows
/// what learning each one costs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LimitWorld {
    /// Drift and steps, as the challenge's servers have them.
    AsDrawn,
    /// Neither: each server keeps its base limit.
    Steady,
    /// The smooth drift only (every step factor 1).
    Drift,
    /// The steps only (no drift).
    Steps,
}

impl LimitWorld {
    fn from_env() -> LimitWorld {
        env_choice(
            "LIMITS",
            LimitWorld::AsDrawn,
            &[
                ("steady", LimitWorld::Steady),
                ("drift", LimitWorld::Drift),
                ("steps", LimitWorld::Steps),
            ],
        )
    }

    fn apply(self, limit: &mut DynamicLimit) {
        if matches!(self, LimitWorld::Steady | LimitWorld::Drift) {
            limit.step_factors = vec![1.0];
        }
        if matches!(self, LimitWorld::Steady | LimitWorld::Steps) {
            limit.amplitude = 0.0;
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
    /// Answers the ledger contradicts (must be 0).
    pub disagreements: u64,
    /// Median and 99th percentile of the time from an id's arrival to its last answer.
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    /// Answers later than the client's timeout ([`CLIENT_TIMEOUT_MS`]): the client saw a failure.
    pub late: u64,
    /// Ids answered without any attempt (no backend had room).
    pub never_attempted: u64,
    /// Per server: attempts it admitted (answered other than 429 or unreachable).
    pub admitted: [u64; SERVERS],
    /// Per server: what its limit allowed over the run (attempts), `f64::INFINITY` when unlimited.
    pub capacity: [f64; SERVERS],
    /// Per server: its success rate.
    pub success: [f64; SERVERS],
    /// 429s by the class of the attempt refused (1st, 2nd, 3rd).
    pub refused_by_class: [u64; MAX_ATTEMPTS],
    /// Total time ids spent waiting for room, ms.
    pub waited_ms: u64,
    /// Sampled once a second over the limited servers: the sum of learned limits (0 when none is
    /// learned), of true limits, and the samples with the server blocked (Retry-After, backoff).
    pub learned_sum: f64,
    pub true_sum: f64,
    pub blocked_samples: u64,
    /// Of those samples, the ones with the server in its penalty box.
    pub boxed_samples: u64,
    pub samples: u64,
    /// Per server: attempts sent to it, by class (1st, 2nd, 3rd).
    pub sent: [[u64; MAX_ATTEMPTS]; SERVERS],
    /// Attempts that succeeded (200), by class.
    pub succeeded_by_class: [u64; MAX_ATTEMPTS],
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
    /// When the request started waiting for room (0: not waiting).
    wait_from_ms: u64,
    tried: Vec<BackendId>,
    /// When its latest attempt was picked.
    sent_ms: u64,
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
    /// Compare what is learned with the truth, once a second.
    Sample,
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
    replay_with(profile, seed, duration_s, ids_per_s, Real::IDEAL)
}

/// What a real run adds to the replay's ideal timing.
#[derive(Clone, Copy, Debug)]
struct Real {
    /// From the pick to the request reaching the server, and from its answer to sluice.
    send_delay_ms: u64,
    /// Waits end on a multiple of this (a worker's timer wheel).
    tick_ms: u64,
    /// The server is not scheduled for `stall_ms` every `stall_every_ms` (a busy machine): a
    /// request that arrives meanwhile is taken, and counted in its window, when the stall ends.
    stall_every_ms: u64,
    stall_ms: u64,
    /// The simulator has been up this long when the first id arrives (its limits are functions
    /// of its clock); a real run's start lands anywhere near a second.
    head_start_ms: u64,
    /// What the balancer knows beyond what it learns, to measure what learning costs.
    knows: Knows,
    /// Which motions of the moving limits the servers keep.
    limits: LimitWorld,
    /// `--max-pacing-wait` and `--max-pacing-total` (0: none).
    pacing_wait_ms: u64,
    pacing_total_ms: u64,
}

/// What the balancer is told of the servers' truth in a replay: nothing (the challenge), or
/// more, to measure what learning it costs (`diagnose` and `one_run` read `KNOWS`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Knows {
    /// `bandit` as it runs.
    Nothing,
    /// `bandit`, with each server's learned limit set to its true one before every pick.
    Limits,
    /// The same, only where the true limit is higher than the learned one (rises found at once).
    Rises,
    /// The same, only where it is lower (falls found at once).
    Falls,
    /// No `bandit`: the likeliest server, by its true success rate, that would admit the
    /// attempt now (every limit, window, penalty box and outage known); otherwise wait.
    Everything,
    /// The same, by the learned success rate instead of the true one.
    Room,
    /// No `bandit`: each class of attempt (first, second, third) follows the oracle's own split
    /// of attempts over the servers ([`oracle::plan`], from the true success rates and limits),
    /// among servers that would admit it now ([`Planner`]).
    Plan,
    /// The same, with the split made from the learned success rates instead of the true ones.
    PlanRates,
}

impl Knows {
    fn from_env() -> Knows {
        env_choice(
            "KNOWS",
            Knows::Nothing,
            &[
                ("limits", Knows::Limits),
                ("rises", Knows::Rises),
                ("falls", Knows::Falls),
                ("everything", Knows::Everything),
                ("room", Knows::Room),
                ("plan", Knows::Plan),
                ("plan-rates", Knows::PlanRates),
            ],
        )
    }
}

impl Real {
    const IDEAL: Real = Real {
        send_delay_ms: 0,
        tick_ms: 1,
        stall_every_ms: 0,
        stall_ms: 0,
        head_start_ms: SIM_HEAD_START_MS,
        knows: Knows::Nothing,
        limits: LimitWorld::AsDrawn,
        pacing_wait_ms: MAX_PACING_WAIT_MS,
        pacing_total_ms: MAX_PACING_TOTAL_MS,
    };

    /// Seconds on the simulator's clock at `ms` into the replay.
    fn sim_s(&self, ms: u64) -> f64 {
        (ms + self.head_start_ms) as f64 / 1000.0
    }

    /// When a request sent at `sent_ms` is taken by the server.
    fn arrival_ms(&self, sent_ms: u64) -> u64 {
        let t = sent_ms + self.send_delay_ms;
        if self.stall_every_ms == 0 || t % self.stall_every_ms >= self.stall_ms {
            return t;
        }
        t - t % self.stall_every_ms + self.stall_ms
    }
}

fn replay_with(
    profile: Profile,
    seed: u64,
    duration_s: u64,
    ids_per_s: u64,
    real: Real,
) -> Outcome {
    let mut servers = Server::all(profile, seed, real.limits);
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
    let mut planner = Planner::default();
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
        late: 0,
        never_attempted: 0,
        admitted: [0; SERVERS],
        capacity: [0.0; SERVERS],
        success: [0.0; SERVERS],
        refused_by_class: [0; MAX_ATTEMPTS],
        waited_ms: 0,
        learned_sum: 0.0,
        true_sum: 0.0,
        blocked_samples: 0,
        boxed_samples: 0,
        samples: 0,
        sent: [[0; MAX_ATTEMPTS]; SERVERS],
        succeeded_by_class: [0; MAX_ATTEMPTS],
    };
    for t in 1..duration_s {
        queue.push(t * 1000, Event::Sample);
    }
    while let Some((now_ms, e)) = queue.pop() {
        match e {
            Event::Dispatch(r) => {
                let req = &mut requests[r];
                let total_until_ms = match real.pacing_total_ms {
                    0 => u64::MAX,
                    total_ms => r as u64 * 1000 / ids_per_s + 1 + total_ms,
                };
                let spent = now_ms >= total_until_ms;
                let c = PickContext {
                    now_ms,
                    tried: &req.tried,
                    relax: spent || (req.pace_until_ms != 0 && now_ms >= req.pace_until_ms),
                    force: spent
                        || (req.pace_until_ms != 0
                            && now_ms >= req.pace_until_ms + real.pacing_wait_ms),
                    ..ctx()
                };
                tell_limits(real, &servers, &table, now_ms);
                let choice = match real.knows {
                    Knows::Everything | Knows::Room | Knows::Plan | Knows::PlanRates => {
                        let arrive_ms = real.arrival_ms(now_ms);
                        let rates: Vec<f64> =
                            if matches!(real.knows, Knows::Room | Knows::PlanRates) {
                                table
                                    .iter()
                                    .map(|b| b.stats.learned.success_mean())
                                    .collect()
                            } else {
                                servers.iter().map(|s| s.params.success_rate).collect()
                            };
                        let attempt = Attempt {
                            class: (req.tried.len() + 1).min(MAX_ATTEMPTS),
                            now_ms,
                            at: origin + Duration::from_millis(arrive_ms),
                            t_s: real.sim_s(arrive_ms),
                            relax: c.relax,
                            force: c.force,
                        };
                        if matches!(real.knows, Knows::Everything | Knows::Room) {
                            likeliest_admitting(&servers, &rates, &attempt)
                        } else {
                            planner.choose(&servers, &rates, ids_per_s as f64, &attempt)
                        }
                    }
                    _ => bandit.choose(&table, &candidates, &c),
                };
                match choice {
                    Choice::Wait { ms } => {
                        if req.wait_from_ms == 0 {
                            req.wait_from_ms = now_ms;
                        }
                        if req.pace_until_ms == 0 {
                            req.pace_until_ms = now_ms + real.pacing_wait_ms;
                        }
                        let until = if now_ms >= req.pace_until_ms {
                            req.pace_until_ms + real.pacing_wait_ms
                        } else {
                            req.pace_until_ms
                        };
                        let wake = (now_ms + ms).min(until).min(total_until_ms).max(now_ms + 1);
                        queue.push(
                            wake.div_ceil(real.tick_ms) * real.tick_ms,
                            Event::Dispatch(r),
                        );
                    }
                    Choice::Full => {
                        // Answered at once: the failure of its last attempt, or a 503 when it
                        // had none.
                        req.pace_until_ms = 0;
                        if req.wait_from_ms != 0 {
                            out.waited_ms += now_ms - req.wait_from_ms;
                            req.wait_from_ms = 0;
                        }
                        req.done_ms = now_ms;
                    }
                    Choice::Backend(b) => {
                        req.pace_until_ms = 0;
                        if req.wait_from_ms != 0 {
                            out.waited_ms += now_ms - req.wait_from_ms;
                            req.wait_from_ms = 0;
                        }
                        req.tried.push(table[b].id);
                        req.sent_ms = now_ms;
                        out.attempts += 1;
                        let arrive_ms = real.arrival_ms(now_ms);
                        let at = origin + Duration::from_millis(arrive_ms);
                        let t_s = real.sim_s(arrive_ms);
                        let answer = servers[b].state.answer_attempt(at, t_s);
                        let (status, retry_after_s) = answer.unwrap_or((0, None));
                        let class = req.tried.len().min(MAX_ATTEMPTS) - 1;
                        out.sent[b][class] += 1;
                        if status == 200 {
                            req.ledger_accepted = true;
                            out.succeeded_by_class[class] += 1;
                        }
                        if status == 429 {
                            out.refused_by_class[class] += 1;
                        } else if status != 0 {
                            out.admitted[b] += 1;
                        }
                        let delay = (arrive_ms - now_ms)
                            + if status == 429 || status == 0 {
                                0
                            } else {
                                DEFAULT_SERVICE_TIME_MS
                            };
                        let retry_after_s = retry_after_s.map(|s| s as u32);
                        queue.push(now_ms + delay, Event::Answer(r, b, status, retry_after_s));
                    }
                }
            }
            Event::Sample => {
                let t_s = real.sim_s(now_ms);
                for (i, s) in servers.iter().enumerate() {
                    let Some(limit) = s.params.rate_limit.at(t_s) else {
                        continue;
                    };
                    let learned = &table[i].stats.learned;
                    out.true_sum += f64::from(limit);
                    out.learned_sum += f64::from(learned.limit().unwrap_or(0));
                    out.blocked_samples += u64::from(learned.blocked_until_ms() > now_ms);
                    let at = origin + Duration::from_millis(now_ms);
                    out.boxed_samples += u64::from(s.state.in_penalty_box(at));
                    out.samples += 1;
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
                    learned.admitted(requests[r].sent_ms, now_ms);
                    learned.observe(status == 200, now_ms);
                }
                if status == 200 {
                    out.accepted += 1;
                    requests[r].told_ok =
                        now_ms <= r as u64 * 1000 / ids_per_s + 1 + CLIENT_TIMEOUT_MS;
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
    out.late = latencies.iter().filter(|&&l| l > CLIENT_TIMEOUT_MS).count() as u64;
    out.never_attempted = requests.iter().filter(|r| r.tried.is_empty()).count() as u64;
    let span_s = (ids as f64 / ids_per_s as f64) + 1.0;
    for (i, s) in servers.iter().enumerate() {
        out.success[i] = s.params.success_rate;
        out.capacity[i] = (0..(span_s * 10.0) as u64)
            .map(|k| {
                let t = real.sim_s(0) + k as f64 / 10.0;
                if s.params.shape.unreachable(t) {
                    0.0
                } else {
                    s.params.rate_limit.at(t).map_or(f64::INFINITY, f64::from) / 10.0
                }
            })
            .sum();
    }
    out.latency_p50_ms = latencies[latencies.len() / 2];
    out.latency_p99_ms = latencies[latencies.len() * 99 / 100];
    out.disagreements = requests
        .iter()
        .filter(|r| r.told_ok != r.ledger_accepted)
        .count() as u64;
    let from_s = real.sim_s(1);
    let to_s = from_s + (ids - 1) as f64 / ids_per_s as f64;
    out.oracle_share = accepted_share_over(from_s, to_s, ids_per_s as f64, |t| {
        servers
            .iter()
            .map(|s| OracleServer::at(&s.params, false, t))
            .collect()
    });
    out
}

/// Before a pick, tells `bandit` the true limits as `real.knows` says.
fn tell_limits(real: Real, servers: &[Server], table: &[Backend], now_ms: u64) {
    if !matches!(real.knows, Knows::Limits | Knows::Rises | Knows::Falls) {
        // The challenge as it runs: nothing to tell, and no limit to work out.
        return;
    }
    for (s, b) in servers.iter().zip(table) {
        let (Some(truth), Some(learned)) = (
            s.params.rate_limit.at(real.sim_s(now_ms)),
            b.stats.learned.limit(),
        ) else {
            continue;
        };
        let tell = match real.knows {
            Knows::Limits => true,
            Knows::Rises => truth > learned,
            Knows::Falls => truth < learned,
            _ => false,
        };
        if tell {
            b.stats.learned.assume_limit(truth.max(1), now_ms);
        }
    }
}

/// The likeliest server by `rates` (true or learned success rates) that would admit attempt
/// `a` when it arrives; else wait a millisecond, or give up when forced.
fn likeliest_admitting(servers: &[Server], rates: &[f64], a: &Attempt) -> Choice {
    let best = (0..servers.len())
        .filter(|&i| servers[i].state.would_admit(a.at, a.t_s))
        .max_by(|&x, &y| rates[x].total_cmp(&rates[y]));
    match best {
        Some(i) => Choice::Backend(i),
        None if a.force => Choice::Full,
        None => Choice::Wait { ms: 1 },
    }
}

/// An attempt to place, for [`Planner::choose`] and [`likeliest_admitting`].
struct Attempt {
    /// 1 (first), 2 or 3.
    class: usize,
    now_ms: u64,
    /// When it would reach a server, on the replay's clock and on the simulator's.
    at: Instant,
    t_s: f64,
    relax: bool,
    force: bool,
}

/// Sends each class of attempt where the oracle's split sends it: the split is made again every
/// [`PLAN_EVERY_MS`] from the servers' limits then, and each server earns credit for a class at
/// the split's rate (at most [`PLAN_MAX_CREDIT`] attempts ahead). An attempt goes to the server
/// with the most credit among those the split uses for its class and that would admit it now,
/// else waits; once its pacing wait is over, to the likeliest server that would admit it.
#[derive(Default)]
struct Planner {
    /// Per server, attempts per second by class.
    split: Vec<[f64; MAX_ATTEMPTS]>,
    split_at_ms: u64,
    credit: Vec<[f64; MAX_ATTEMPTS]>,
    credit_at_ms: u64,
}

const PLAN_EVERY_MS: u64 = 100;
const PLAN_MAX_CREDIT: f64 = 1.5;

impl Planner {
    /// Where `a` goes, with `rates` the success rates the split is made from.
    fn choose(&mut self, servers: &[Server], rates: &[f64], ids_per_s: f64, a: &Attempt) -> Choice {
        if self.split.is_empty() || a.now_ms >= self.split_at_ms + PLAN_EVERY_MS {
            let known: Vec<OracleServer> = servers
                .iter()
                .zip(rates)
                .map(|(s, &success)| OracleServer {
                    success,
                    ..OracleServer::at(&s.params, false, a.t_s)
                })
                .collect();
            self.split = oracle::plan(&known, ids_per_s);
            self.split_at_ms = a.now_ms;
            if self.credit.is_empty() {
                self.credit = vec![[0.0; MAX_ATTEMPTS]; servers.len()];
                self.credit_at_ms = a.now_ms;
            }
        }
        let elapsed_s = (a.now_ms - self.credit_at_ms) as f64 / 1000.0;
        self.credit_at_ms = a.now_ms;
        for (credit, split) in self.credit.iter_mut().zip(&self.split) {
            for (c, rate) in credit.iter_mut().zip(split) {
                *c = (*c + rate * elapsed_s).min(PLAN_MAX_CREDIT);
            }
        }
        let k = a.class - 1;
        let admits = |i: usize| servers[i].state.would_admit(a.at, a.t_s);
        let planned = (0..servers.len())
            .filter(|&i| self.split[i][k] > 1e-9 && admits(i))
            .max_by(|&x, &y| {
                (self.credit[x][k].total_cmp(&self.credit[y][k]))
                    .then(rates[x].total_cmp(&rates[y]))
            });
        if let Some(i) = planned {
            self.credit[i][k] -= 1.0;
            return Choice::Backend(i);
        }
        if a.relax {
            likeliest_admitting(servers, rates, a)
        } else {
            Choice::Wait { ms: 1 }
        }
    }
}

/// The choice the environment variable `name` names among `choices` (for the replay's
/// diagnostics), `default` when it is unset or empty; any other value stops the run with the
/// names it accepts.
fn env_choice<T: Copy>(name: &str, default: T, choices: &[(&str, T)]) -> T {
    let value = std::env::var(name).unwrap_or_default();
    if value.is_empty() {
        return default;
    }
    choices
        .iter()
        .find(|(key, _)| *key == value)
        .map(|&(_, choice)| choice)
        .unwrap_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(key, _)| *key).collect();
            panic!("{name}={value}: expected one of {}", names.join(", "))
        })
}

/// A number from the environment variable `name` (for the replay's diagnostics), else `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// The means over 50 seeds when this was written: 0.9986, 0.9942, 0.9839 and 0.9829 (flaky1 to
/// flaky4). The target is 0.99 everywhere; configurations 3 and 4 miss it (PERF.md says by how
/// much and why), so their floors guard against a regression rather than state the target.
#[test]
fn the_challenge_replayed_over_fifty_seeds_stays_close_to_the_oracle_in_every_configuration() {
    for (profile, mean, _) in over_seeds(10, 120) {
        let floor = match profile {
            Profile::Flaky1 => 0.995,
            Profile::Flaky2 => 0.99,
            _ => 0.98,
        };
        assert!(mean >= floor, "{profile:?}: mean {mean:.4} < {floor}");
    }
}

#[test]
fn rate_limits_are_learned_not_hammered() {
    // Configuration 2: one 429 teaches each limit, then only refused probes, first attempts a
    // second apart on a backend whose window is full: about one 429 a second over the two
    // minutes across the ten backends, out of ~1,700 attempts, and a request's later attempts
    // almost never. (150 and 2 when this was written: first attempts that take a window's
    // unconfirmed top for later ones go on to probe more often; 108 and 5 before that rule.)
    let out = replay(Profile::Flaky2, 1, 120, 10);
    assert!(out.too_many_requests < 160, "{out:?}");
    let later = out.refused_by_class[1] + out.refused_by_class[2];
    assert!(later * 100 < out.ids, "{out:?}");
}

/// `cargo test --release --test bandit_replay -- --ignored --nocapture at_30`: the same at 30
/// ids per second, where the limits bind and the ids are more than they take (ignored by
/// default: about a minute in a debug build). Means over 50 seeds when this was written: 0.9993,
/// 0.9981, 0.9881 and 0.9892 (flaky1 to flaky4), every answer before the client's timeout and
/// agreeing with the ledger; the floors guard against a regression (the target of 0.99 is met
/// for flaky1 and flaky2: PERF.md says what the rest costs).
#[test]
#[ignore]
fn the_challenge_replayed_at_30_ids_per_second() {
    for (profile, mean, _) in over_seeds(30, 120) {
        let floor = match profile {
            Profile::Flaky1 => 0.995,
            Profile::Flaky2 => 0.99,
            _ => 0.98,
        };
        assert!(mean >= floor, "{profile:?}: mean {mean:.4} < {floor}");
    }
}

/// `RATE=30 cargo test --release --test bandit_replay -- --ignored --nocapture worst_seeds`: the
/// six worst seeds of configurations 3 and 4, for tuning.
#[test]
#[ignore]
fn worst_seeds() {
    let rate = env_u64("RATE", 10);
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

/// `RATE=30 cargo test --release --test bandit_replay -- --ignored --nocapture diagnose`: where
/// the capacity goes, per configuration over 50 seeds: the share of the servers' limits used
/// (weighted by success rate: the share of what a full use would accept), 429s by attempt,
/// answers later than the client's timeout, ids never attempted, time spent waiting, and per
/// attempt class the mean success rate of the servers sent to and the share that succeeded. With
/// `KNOWS=limits` (or `rises`, `falls`, `everything`, `room`, `plan`, `plan-rates`: [`Knows`])
/// the balancer is told part of the truth, which measures what learning it costs; `DELAY_MS`
/// adds that long from each pick to the server, as a real run has; `LIMITS` keeps only part of
/// the moving limits of configurations 3 and 4 ([`LimitWorld`]).
#[test]
#[ignore]
fn diagnose() {
    let rate = env_u64("RATE", 30);
    let handles = PROFILES.map(|profile| {
        std::thread::spawn(move || {
            let (mut used, mut cap, mut wused, mut wcap) = (0.0, 0.0, 0.0, 0.0);
            let (mut ratio, mut late, mut never, mut waited, mut ids) = (0.0, 0, 0, 0, 0);
            let (mut dis, mut p50, mut p99) = (0, 0, 0);
            let (mut lsum, mut tsum, mut blocked, mut samples) = (0.0, 0.0, 0, 0);
            let mut boxed = 0;
            // Per class: attempts, the sum of their servers' success rates, successes.
            let mut by_class = [(0u64, 0.0f64, 0u64); MAX_ATTEMPTS];
            let mut refused = [0u64; MAX_ATTEMPTS];
            let real = Real {
                knows: Knows::from_env(),
                limits: LimitWorld::from_env(),
                send_delay_ms: env_u64("DELAY_MS", 0),
                pacing_wait_ms: env_u64("PACING_WAIT_MS", MAX_PACING_WAIT_MS),
                pacing_total_ms: env_u64("PACING_TOTAL_MS", MAX_PACING_TOTAL_MS),
                ..Real::IDEAL
            };
            for seed in 1..=SEEDS {
                let o = replay_with(profile, seed, 120, rate, real);
                ratio += o.score_vs_oracle();
                for i in 0..SERVERS {
                    if o.capacity[i].is_finite() {
                        used += o.admitted[i] as f64;
                        cap += o.capacity[i];
                        wused += o.admitted[i] as f64 * o.success[i];
                        wcap += o.capacity[i] * o.success[i];
                    }
                }
                for (total, n) in refused.iter_mut().zip(o.refused_by_class) {
                    *total += n;
                }
                for (k, tally) in by_class.iter_mut().enumerate() {
                    for i in 0..SERVERS {
                        tally.0 += o.sent[i][k];
                        tally.1 += o.sent[i][k] as f64 * o.success[i];
                    }
                    tally.2 += o.succeeded_by_class[k];
                }
                late += o.late;
                never += o.never_attempted;
                waited += o.waited_ms;
                ids += o.ids;
                dis += o.disagreements;
                lsum += o.learned_sum;
                tsum += o.true_sum;
                blocked += o.blocked_samples;
                boxed += o.boxed_samples;
                samples += o.samples;
                p50 = p50.max(o.latency_p50_ms);
                p99 = p99.max(o.latency_p99_ms);
            }
            println!(
                "{profile:?} at {rate}/s: score/oracle {:.4}; limits used {:.3} (weighted {:.3}); \
                 429s by attempt {refused:?}; late {late}; disagreements {dis}; never attempted \
                 {never}; mean wait {:.0} ms per id; worst p50 {p50} ms, worst p99 {p99} ms; \
                 learned/true limit {:.3}; blocked {:.3} of the time; in a penalty box {:.3}",
                ratio / SEEDS as f64,
                used / cap.max(1.0),
                wused / wcap.max(1.0),
                waited as f64 / ids as f64,
                lsum / tsum.max(1.0),
                blocked as f64 / samples.max(1) as f64,
                boxed as f64 / samples.max(1) as f64,
            );
            let classes: Vec<String> = by_class
                .iter()
                .map(|&(n, p, ok)| {
                    let n_f = n.max(1) as f64;
                    format!(
                        "{n} sent to servers of mean success rate {:.3}, {:.3} succeeded",
                        p / n_f,
                        ok as f64 / n_f
                    )
                })
                .collect();
            println!(
                "{profile:?} at {rate}/s, attempts by class: {}",
                classes.join("; ")
            );
        })
    });
    for h in handles {
        h.join().expect("a replay thread panicked");
    }
}

/// `PROFILE=flaky2 SEED=2 RATE=30 DURATION=30 DELAY_MS=0 TICK_MS=1 cargo test --release --test
/// bandit_replay -- --ignored --nocapture one_run`: one seed, to set beside a real run of the
/// challenge with the same seed, with the real run's delays added to see what they cost.
/// `HEAD_START_MS` moves the simulator's clock against the ids (a real run's lands anywhere
/// near a second: single seeds move by a few hundredths with it), `KNOWS` and `LIMITS` as for
/// `diagnose`; then per server, its success rate, what its limit allowed, the attempts sent to
/// it by class.
#[test]
#[ignore]
fn one_run() {
    let profile = match std::env::var("PROFILE").as_deref() {
        Ok("") | Err(_) => Profile::Flaky2,
        Ok(name) => match name.parse::<Profile>() {
            Ok(p) if p.is_flaky() => p,
            _ => panic!("PROFILE={name}: expected flaky1, flaky2, flaky3 or flaky4"),
        },
    };
    let real = Real {
        send_delay_ms: env_u64("DELAY_MS", 0),
        tick_ms: env_u64("TICK_MS", 1).max(1),
        stall_every_ms: env_u64("STALL_EVERY_MS", 0),
        stall_ms: env_u64("STALL_MS", 0),
        head_start_ms: env_u64("HEAD_START_MS", SIM_HEAD_START_MS),
        knows: Knows::from_env(),
        limits: LimitWorld::from_env(),
        pacing_wait_ms: env_u64("PACING_WAIT_MS", MAX_PACING_WAIT_MS),
        pacing_total_ms: env_u64("PACING_TOTAL_MS", MAX_PACING_TOTAL_MS),
    };
    let o = replay_with(
        profile,
        env_u64("SEED", 2),
        env_u64("DURATION", 30),
        env_u64("RATE", 30),
        real,
    );
    println!(
        "{profile:?} {real:?}: score/oracle {:.4}; accepted {}/{}; attempts {}; 429s {} (by attempt {:?}); never attempted {}; admitted {:?}; learned/true limit {:.3}; in a penalty box {:.3}",
        o.score_vs_oracle(),
        o.accepted,
        o.ids,
        o.attempts,
        o.too_many_requests,
        o.refused_by_class,
        o.never_attempted,
        o.admitted,
        o.learned_sum / o.true_sum.max(1.0),
        o.boxed_samples as f64 / o.samples.max(1) as f64
    );
    for i in 0..SERVERS {
        println!(
            "server {i}: success rate {:.3}, capacity {:.0}, sent by class {:?}, admitted {}",
            o.success[i], o.capacity[i], o.sent[i], o.admitted[i]
        );
    }
}
