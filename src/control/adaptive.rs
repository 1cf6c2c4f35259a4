//! The adaptive decision engine: once a second the control thread hands it what it
//! measured per backend, and it decides which strategy the workers should run.
//!
//! The rules, checked in order:
//! 1. **A backend is over its limit** (its requests in flight reach `--threshold-high`):
//!    `threshold`, which skips it until it drains below `--threshold-low` (the remedy for a few slow
//!    requests backing up one server under round robin).
//! 2. **Error rates differ** by [`ERROR_SPREAD`], or **attempts fail everywhere** (the median
//!    backend fails [`ERRORS_ENTER`] of its attempts, timeouts included): `least-time`, which
//!    charges a failure as a slow response, so a backend that fails fast does not attract traffic
//!    (as it would under least connections), and new attempts go where attempts failed least
//!    lately. When a short `--response-timeout` retries slow requests elsewhere, the backend that
//!    timed out is still busy with the abandoned request, and a failure is the only trace of that:
//!    the proxy no longer counts the request in flight. Round-robin there feeds busy backends,
//!    which time out more, which retries more: a retry storm that also looks "alike" everywhere.
//! 3. **Latency varies per request** (a heavy tail: on the median backend p99 is [`TAIL_ENTER`]
//!    times p50 and at least [`TAIL_MIN_US`] above it): `least-connections`. When a few requests
//!    take many times longer than the rest and each backend works on a bounded number at once,
//!    the next request waits least on the backend with the fewest requests queued or in service
//!    (join-the-shortest-queue; Winston, "Optimality of the shortest line discipline", J. Appl.
//!    Prob. 1977). Latency history says little about the next request there: which backend drew
//!    the last slow requests is luck, not a property of the backend, so least-time's Peak-EWMA
//!    factor only adds noise to the in-flight count it multiplies (in `scripts/shootout.sh` the two
//!    reach the same p99 and p90; round-robin's p90 is 18 times theirs).
//! 4. **A backend backs up** relative to the others (at least [`BACKLOG_FACTOR`] times the median
//!    in flight and at least [`BACKLOG_MIN`], still under `--threshold-high`, so threshold would
//!    not skip it): `least-connections`, which routes by exactly what is piling up.
//! 5. **Latency spreads** between backends (the slowest backend's p99 is [`SPREAD_ENTER`] times
//!    the median): `least-time`, which weighs each backend by its Peak-EWMA response time and
//!    in-flight load. With many backends, `p2c` gets the same effect at constant cost per pick.
//! 6. Otherwise the **backends look alike**: `round-robin`, the cheapest and fairest.
//!
//! Hysteresis keeps it from flapping: a latency-aware strategy stays until the spread falls below
//! [`SPREAD_EXIT`], least-connections for a heavy tail until the tail ratio falls below
//! [`TAIL_EXIT`] (both lower than their entry ratios), threshold until the backlog is under
//! `--threshold-low`; a new choice must win [`CONFIRMATIONS`] evaluations in a row, and there is
//! at most one switch per `--switch-interval`. The tail rule reads a quantity that least
//! connections does not hide: once it evens out the queues, in-flight counts look alike, but each
//! request's own service time still varies, so the choice holds instead of falling back to
//! round-robin and backing up again.

use crate::strategy::{StrategyKind, StrategyParams};

/// Enter a latency-aware strategy when the slowest p99 is this many times the median p99...
pub(crate) const SPREAD_ENTER: f64 = 2.0;
/// ...and leave it only when the ratio falls below this.
pub(crate) const SPREAD_EXIT: f64 = 1.5;
/// Error rates this far apart (absolute) also call for a latency-aware strategy.
pub(crate) const ERROR_SPREAD: f64 = 0.2;
/// Attempts fail everywhere: the median backend's error rate reaches this...
pub(crate) const ERRORS_ENTER: f64 = 0.05;
/// ...and a latency-aware strategy chosen for it stays until the rate falls below this.
pub(crate) const ERRORS_EXIT: f64 = 0.01;
/// A heavy tail: on the median backend, p99 is at least this many times p50...
pub(crate) const TAIL_ENTER: f64 = 4.0;
/// ...and least-connections stays until the ratio falls below this.
pub(crate) const TAIL_EXIT: f64 = 3.0;
/// The tail must also be this far above p50, so that scheduling jitter on backends that answer in
/// microseconds (p50 50 µs, p99 400 µs) is not taken for a heavy tail.
pub(crate) const TAIL_MIN_US: u64 = 1_000;
/// A backend with this many times the median in flight (and at least [`BACKLOG_MIN`]) is backed up.
pub(crate) const BACKLOG_FACTOR: f64 = 4.0;
pub(crate) const BACKLOG_MIN: u64 = 8;
/// Consecutive evaluations that must agree before a switch.
pub(crate) const CONFIRMATIONS: u32 = 3;
/// Above this many backends, `p2c` replaces `least-time` (constant cost per pick).
pub(crate) const P2C_ABOVE_BACKENDS: usize = 16;

/// What the engine sees of one routable backend.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    /// p50 over the recent window, in microseconds; `None` when it served nothing lately.
    pub p50_us: Option<u64>,
    /// p99 over the recent window, in microseconds; `None` when it served nothing lately.
    pub p99_us: Option<u64>,
    pub error_rate: f64,
    pub in_flight: u64,
}

/// A decision to switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Switch {
    pub to: StrategyKind,
    pub reason: String,
}

pub(crate) struct AdaptiveEngine {
    switch_interval_ms: u64,
    /// What the workers run now.
    pub active: StrategyKind,
    pub last_reason: Option<String>,
    pub switches: u64,
    last_switch_ms: Option<u64>,
    candidate: Option<(StrategyKind, u32)>,
    /// Last p99 seen per backend, so a backend that gets no traffic (because it is slow) is still
    /// remembered as slow rather than forgotten.
    memory: Vec<(String, u64)>,
}

impl AdaptiveEngine {
    pub(crate) fn new(switch_interval_ms: u64) -> AdaptiveEngine {
        AdaptiveEngine {
            switch_interval_ms,
            active: StrategyKind::RoundRobin,
            last_reason: Some("starting with round-robin until there are measurements".into()),
            switches: 0,
            last_switch_ms: None,
            candidate: None,
            memory: Vec::new(),
        }
    }

    /// Evaluates one second's measurements; returns a switch when one is due.
    pub(crate) fn evaluate(
        &mut self,
        now_ms: u64,
        samples: &[Sample],
        params: &StrategyParams,
    ) -> Option<Switch> {
        let (want, reason) = self.desired(samples, params);
        if want == self.active {
            self.candidate = None;
            return None;
        }
        let streak = match self.candidate {
            Some((k, n)) if k == want => n + 1,
            _ => 1,
        };
        self.candidate = Some((want, streak));
        let interval_ok = self
            .last_switch_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.switch_interval_ms);
        if streak < CONFIRMATIONS || !interval_ok {
            return None;
        }
        self.candidate = None;
        self.last_switch_ms = Some(now_ms);
        self.active = want;
        self.switches += 1;
        self.last_reason = Some(reason.clone());
        Some(Switch { to: want, reason })
    }

    /// The strategy the rules call for now, and why.
    fn desired(&mut self, samples: &[Sample], params: &StrategyParams) -> (StrategyKind, String) {
        if samples.len() < 2 {
            return (self.active, "fewer than two backends to compare".into());
        }
        self.remember_p99s(samples);
        let latency_aware = if samples.len() > P2C_ABOVE_BACKENDS {
            StrategyKind::P2c
        } else {
            StrategyKind::LeastTime
        };
        self.over_limit(samples, params)
            .or_else(|| self.errors(samples, latency_aware))
            .or_else(|| self.heavy_tail(samples))
            .or_else(|| backlog(samples))
            .or_else(|| self.latency_spread(samples, latency_aware))
            .unwrap_or_else(|| {
                (
                    StrategyKind::RoundRobin,
                    "backends look alike: similar latency, errors and load".into(),
                )
            })
    }

    /// Rule 1: a backend over `--threshold-high`, or threshold still draining one.
    fn over_limit(
        &self,
        samples: &[Sample],
        params: &StrategyParams,
    ) -> Option<(StrategyKind, String)> {
        let busiest = samples.iter().max_by_key(|s| s.in_flight)?;
        if busiest.in_flight >= params.threshold_high {
            return Some((
                StrategyKind::Threshold,
                format!(
                    "{} is over the limit: {} requests in flight, --threshold-high {}",
                    busiest.name, busiest.in_flight, params.threshold_high
                ),
            ));
        }
        (self.active == StrategyKind::Threshold && busiest.in_flight > params.threshold_low).then(
            || {
                (
                    StrategyKind::Threshold,
                    "still draining a backed-up backend".into(),
                )
            },
        )
    }

    /// Rule 2: error rates far apart, or attempts failing on most backends.
    fn errors(
        &self,
        samples: &[Sample],
        latency_aware: StrategyKind,
    ) -> Option<(StrategyKind, String)> {
        let mut rates: Vec<f64> = samples.iter().map(|s| s.error_rate).collect();
        rates.sort_unstable_by(f64::total_cmp);
        let (lo, hi) = (rates[0], rates[rates.len() - 1]);
        if hi - lo >= ERROR_SPREAD {
            return Some((
                latency_aware,
                format!(
                    "error rates differ: {:.0}% to {:.0}%",
                    lo * 100.0,
                    hi * 100.0
                ),
            ));
        }
        let median = rates[(rates.len() - 1) / 2];
        let in_latency_mode = matches!(self.active, StrategyKind::LeastTime | StrategyKind::P2c);
        let limit = if in_latency_mode {
            ERRORS_EXIT
        } else {
            ERRORS_ENTER
        };
        (median >= limit).then(|| {
            (
                latency_aware,
                format!(
                    "attempts fail everywhere: {:.0}% on the median backend (timeouts count), \
                     from {:.0}% to {:.0}%",
                    median * 100.0,
                    lo * 100.0,
                    hi * 100.0
                ),
            )
        })
    }

    /// Rule 3: latency varies per request rather than per backend.
    fn heavy_tail(&self, samples: &[Sample]) -> Option<(StrategyKind, String)> {
        let mut tails: Vec<(f64, u64, u64)> = samples
            .iter()
            .filter_map(|s| match (s.p50_us, s.p99_us) {
                (Some(p50), Some(p99)) => Some((p99 as f64 / p50.max(1) as f64, p50, p99)),
                _ => None,
            })
            .collect();
        if tails.len() < 2 {
            return None;
        }
        tails.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, p50, p99) = tails[(tails.len() - 1) / 2];
        let limit = if self.active == StrategyKind::LeastConnections {
            TAIL_EXIT
        } else {
            TAIL_ENTER
        };
        (ratio >= limit && p99.saturating_sub(p50) >= TAIL_MIN_US).then(|| {
            (
                StrategyKind::LeastConnections,
                format!(
                    "heavy tail: on the median backend p99 is {ratio:.0}x p50 ({:.1} ms vs {:.1} ms); \
                     the fewest requests queued is the best predictor of the next wait",
                    p99 as f64 / 1e3,
                    p50 as f64 / 1e3
                ),
            )
        })
    }

    /// Rule 5: one backend's p99 well above the median backend's.
    fn latency_spread(
        &self,
        samples: &[Sample],
        latency_aware: StrategyKind,
    ) -> Option<(StrategyKind, String)> {
        let mut p99s: Vec<(u64, &str)> = samples
            .iter()
            .filter_map(|s| {
                self.memory
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map(|(_, p)| (*p, s.name.as_str()))
            })
            .collect();
        if p99s.len() < 2 {
            return None;
        }
        p99s.sort_unstable();
        let median = p99s[p99s.len() / 2 - usize::from(p99s.len() % 2 == 0)]
            .0
            .max(1);
        let (slowest, name) = p99s[p99s.len() - 1];
        let ratio = slowest as f64 / median as f64;
        let in_latency_mode = matches!(self.active, StrategyKind::LeastTime | StrategyKind::P2c);
        let limit = if in_latency_mode {
            SPREAD_EXIT
        } else {
            SPREAD_ENTER
        };
        (ratio >= limit).then(|| {
            (
                latency_aware,
                format!(
                    "latency spread: p99 of {name} is {:.1}x the median ({:.1} ms vs {:.1} ms)",
                    ratio,
                    slowest as f64 / 1e3,
                    median as f64 / 1e3
                ),
            )
        })
    }

    /// Keeps the last p99 seen per backend, so that a backend that gets no traffic (because it is
    /// slow) is still remembered as slow rather than forgotten.
    fn remember_p99s(&mut self, samples: &[Sample]) {
        for s in samples {
            if let Some(p99) = s.p99_us {
                match self.memory.iter_mut().find(|(n, _)| *n == s.name) {
                    Some(m) => m.1 = p99,
                    None => self.memory.push((s.name.clone(), p99)),
                }
            }
        }
    }
}

/// Rule 4: one backend with many times the median in flight, under the threshold limit.
fn backlog(samples: &[Sample]) -> Option<(StrategyKind, String)> {
    let mut in_flight: Vec<u64> = samples.iter().map(|s| s.in_flight).collect();
    in_flight.sort_unstable();
    let median = in_flight[in_flight.len() / 2];
    let busiest = samples.iter().max_by_key(|s| s.in_flight)?;
    let backed_up = busiest.in_flight >= BACKLOG_MIN
        && busiest.in_flight as f64 >= BACKLOG_FACTOR * median.max(1) as f64;
    backed_up.then(|| {
        (
            StrategyKind::LeastConnections,
            format!(
                "{} is backing up: {} requests in flight, median {median}",
                busiest.name, busiest.in_flight
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose latency is steady: p50 and p99 alike.
    fn sample(name: &str, p99_ms: u64, in_flight: u64) -> Sample {
        Sample {
            name: name.into(),
            p50_us: Some(p99_ms * 1000),
            p99_us: Some(p99_ms * 1000),
            error_rate: 0.0,
            in_flight,
        }
    }

    /// A backend whose requests mostly take `p50_ms` but a few take many times longer.
    fn tailed(name: &str, p50_ms: u64, p99_ms: u64, in_flight: u64) -> Sample {
        Sample {
            p50_us: Some(p50_ms * 1000),
            ..sample(name, p99_ms, in_flight)
        }
    }

    fn run(
        e: &mut AdaptiveEngine,
        from_ms: u64,
        seconds: u64,
        samples: &[Sample],
    ) -> Vec<(u64, StrategyKind)> {
        let mut switches = Vec::new();
        for s in 0..seconds {
            let now = from_ms + s * 1000;
            if let Some(sw) = e.evaluate(now, samples, &StrategyParams::default()) {
                switches.push((now, sw.to));
            }
        }
        switches
    }

    #[test]
    fn a_slow_backend_moves_it_to_least_time_after_confirmations() {
        let mut e = AdaptiveEngine::new(10_000);
        let alike = [sample("a", 10, 1), sample("b", 11, 1), sample("c", 10, 1)];
        assert!(run(&mut e, 0, 5, &alike).is_empty(), "round robin already");
        let slow = [sample("a", 10, 1), sample("b", 80, 2), sample("c", 10, 1)];
        let switches = run(&mut e, 5_000, 5, &slow);
        assert_eq!(
            switches,
            vec![(7_000, StrategyKind::LeastTime)],
            "third agreeing evaluation"
        );
        assert!(
            e.last_reason
                .as_deref()
                .unwrap()
                .contains("p99 of b is 8.0x"),
            "{:?}",
            e.last_reason
        );
    }

    #[test]
    fn at_most_one_switch_per_interval_and_hysteresis_holds_between_ratios() {
        let mut e = AdaptiveEngine::new(60_000);
        let slow = [sample("a", 10, 1), sample("b", 30, 1)];
        assert_eq!(
            run(&mut e, 0, 3, &slow),
            vec![(2_000, StrategyKind::LeastTime)]
        );
        // 1.7x: below the entry ratio but above the exit ratio: stays.
        let middling = [sample("a", 10, 1), sample("b", 17, 1)];
        assert!(run(&mut e, 3_000, 100, &middling).is_empty());
        // Alike again: the switch back waits for the interval.
        let alike = [sample("a", 10, 1), sample("b", 11, 1)];
        let back = run(&mut e, 103_000, 3, &alike);
        assert_eq!(back, vec![(105_000, StrategyKind::RoundRobin)]);
        let mut e = AdaptiveEngine::new(60_000);
        run(&mut e, 0, 3, &slow);
        assert!(
            run(&mut e, 3_000, 50, &alike).is_empty(),
            "within 60 s of the last switch"
        );
        assert_eq!(
            run(&mut e, 53_000, 10, &alike),
            vec![(62_000, StrategyKind::RoundRobin)]
        );
    }

    #[test]
    fn a_backend_backing_up_under_the_limit_calls_for_least_connections() {
        let mut e = AdaptiveEngine::new(0);
        // 40 in flight: ten times the median, but under --threshold-high (100), which threshold
        // would wait for before skipping it.
        let backlog = [sample("a", 10, 2), sample("b", 10, 40), sample("c", 10, 4)];
        let switches = run(&mut e, 0, 3, &backlog);
        assert_eq!(switches, vec![(2_000, StrategyKind::LeastConnections)]);
        assert!(e
            .last_reason
            .as_deref()
            .unwrap()
            .contains("b is backing up: 40 requests in flight, median 4"));
    }

    #[test]
    fn a_backend_over_threshold_high_calls_for_threshold_until_it_drains() {
        let mut e = AdaptiveEngine::new(0);
        let over = [sample("a", 10, 2), sample("b", 10, 100), sample("c", 10, 3)];
        assert_eq!(
            run(&mut e, 0, 3, &over),
            vec![(2_000, StrategyKind::Threshold)]
        );
        assert!(e
            .last_reason
            .as_deref()
            .unwrap()
            .contains("b is over the limit"));
        // Between --threshold-low (50) and --threshold-high: still draining, it stays.
        let draining = [sample("a", 10, 2), sample("b", 10, 60), sample("c", 10, 3)];
        assert!(run(&mut e, 3_000, 10, &draining).is_empty());
        let drained = [sample("a", 10, 2), sample("b", 10, 3), sample("c", 10, 3)];
        assert_eq!(
            run(&mut e, 13_000, 3, &drained),
            vec![(15_000, StrategyKind::RoundRobin)]
        );
    }

    #[test]
    fn a_heavy_tail_calls_for_least_connections_and_it_holds_once_queues_even_out() {
        let mut e = AdaptiveEngine::new(60_000);
        // Brief 002: most requests take 10 ms, a few 100-500 ms, on every backend alike.
        let tail = [
            tailed("a", 10, 420, 3),
            tailed("b", 10, 400, 3),
            tailed("c", 11, 450, 4),
        ];
        assert_eq!(
            run(&mut e, 0, 3, &tail),
            vec![(2_000, StrategyKind::LeastConnections)]
        );
        let reason = e.last_reason.clone().unwrap();
        assert!(
            reason.contains("heavy tail") && reason.contains("41x p50 (450.0 ms vs 11.0 ms)"),
            "{reason}"
        );
        // Least connections evens out the queues, but the tail is still there: no way back.
        assert!(run(&mut e, 3_000, 120, &tail).is_empty());
        // Between the exit and the entry ratio: it stays.
        let milder = [
            tailed("a", 10, 35, 1),
            tailed("b", 10, 35, 1),
            tailed("c", 10, 35, 1),
        ];
        assert!(run(&mut e, 123_000, 10, &milder).is_empty());
        // The tail is gone: round-robin again.
        let steady = [sample("a", 10, 1), sample("b", 10, 1), sample("c", 10, 1)];
        assert_eq!(
            run(&mut e, 133_000, 3, &steady),
            vec![(135_000, StrategyKind::RoundRobin)]
        );
    }

    #[test]
    fn a_tail_of_a_few_hundred_microseconds_is_jitter_not_a_heavy_tail() {
        let mut e = AdaptiveEngine::new(0);
        let jitter = [
            Sample {
                p50_us: Some(50),
                p99_us: Some(400),
                ..sample("a", 0, 1)
            },
            Sample {
                p50_us: Some(60),
                p99_us: Some(500),
                ..sample("b", 0, 1)
            },
        ];
        assert!(run(&mut e, 0, 10, &jitter).is_empty());
        assert_eq!(e.active, StrategyKind::RoundRobin);
    }

    #[test]
    fn a_heavy_tail_on_one_backend_only_is_a_latency_spread() {
        let mut e = AdaptiveEngine::new(0);
        let one = [
            tailed("a", 10, 400, 1),
            sample("b", 10, 1),
            sample("c", 10, 1),
        ];
        assert_eq!(
            run(&mut e, 0, 3, &one),
            vec![(2_000, StrategyKind::LeastTime)]
        );
    }

    #[test]
    fn attempts_failing_everywhere_call_for_least_time_until_they_stop() {
        // A short --response-timeout with retries against a heavy tail: every backend times out
        // on its slow requests, and round-robin would feed the ones still busy with them.
        let mut e = AdaptiveEngine::new(0);
        let failing = |rate: f64| {
            let mut s = [
                tailed("a", 10, 30, 1),
                tailed("b", 10, 30, 1),
                tailed("c", 10, 30, 1),
            ];
            for (s, r) in s.iter_mut().zip([rate, rate * 1.2, rate * 0.9]) {
                s.error_rate = r;
            }
            s
        };
        assert_eq!(
            run(&mut e, 0, 3, &failing(0.6)),
            vec![(2_000, StrategyKind::LeastTime)]
        );
        let reason = e.last_reason.clone().unwrap();
        assert!(
            reason.contains("attempts fail everywhere: 60% on the median backend"),
            "{reason}"
        );
        // Recovered to the timeouts of the slow requests alone: under the entry rate, over the
        // exit rate, it stays.
        assert!(run(&mut e, 3_000, 10, &failing(0.03)).is_empty());
        assert_eq!(
            run(&mut e, 13_000, 3, &failing(0.0)),
            vec![(15_000, StrategyKind::RoundRobin)]
        );
        // A few failures here and there are not "everywhere".
        let mut e = AdaptiveEngine::new(0);
        let mut few = failing(0.0);
        few[0].error_rate = 0.1;
        assert!(run(&mut e, 0, 10, &few).is_empty());
    }

    #[test]
    fn differing_error_rates_outrank_a_heavy_tail() {
        // Least connections would feed a backend that fails fast: its requests never pile up.
        let mut e = AdaptiveEngine::new(0);
        let mut flaky = [tailed("a", 10, 400, 1), tailed("b", 10, 400, 1)];
        flaky[1].error_rate = 0.5;
        assert_eq!(
            run(&mut e, 0, 3, &flaky),
            vec![(2_000, StrategyKind::LeastTime)]
        );
    }

    #[test]
    fn a_backend_that_stops_getting_traffic_is_remembered_as_slow() {
        let mut e = AdaptiveEngine::new(0);
        run(&mut e, 0, 3, &[sample("a", 10, 0), sample("b", 90, 0)]);
        assert_eq!(e.active, StrategyKind::LeastTime);
        let quiet = [
            sample("a", 10, 0),
            Sample {
                p50_us: None,
                p99_us: None,
                ..sample("b", 0, 0)
            },
        ];
        assert!(
            run(&mut e, 3_000, 10, &quiet).is_empty(),
            "no samples from b is not evidence it recovered"
        );
    }

    #[test]
    fn differing_error_rates_call_for_least_time() {
        let mut e = AdaptiveEngine::new(0);
        let mut flaky = [sample("a", 10, 1), sample("b", 10, 1)];
        flaky[1].error_rate = 0.5;
        assert_eq!(
            run(&mut e, 0, 3, &flaky),
            vec![(2_000, StrategyKind::LeastTime)]
        );
    }

    #[test]
    fn many_backends_use_p2c() {
        let mut e = AdaptiveEngine::new(0);
        let mut many: Vec<Sample> = (0..20).map(|i| sample(&format!("s{i}"), 10, 1)).collect();
        many[7].p99_us = Some(100_000);
        assert_eq!(run(&mut e, 0, 3, &many), vec![(2_000, StrategyKind::P2c)]);
    }
}
