//! The adaptive decision engine (brief 004): once a second the control thread hands it what it
//! measured per backend, and it decides which strategy the workers should run.
//!
//! The rules, checked in order:
//! 1. **A backend backs up** (its requests in flight reach `--threshold-high`, or are at least
//!    [`BACKLOG_FACTOR`] times the median and at least [`BACKLOG_MIN`]): `threshold`, which skips it
//!    until it drains (brief 002's remedy).
//! 2. **Latency spreads** (the slowest backend's p99 is [`SPREAD_ENTER`] times the median, or error
//!    rates differ by [`ERROR_SPREAD`]): `least-time`, which weighs each backend by its Peak-EWMA
//!    response time and in-flight load, and charges failures as slow responses. With many backends,
//!    `p2c` gets the same effect at constant cost per pick.
//! 3. Otherwise the **backends look alike**: `round-robin`, the cheapest and fairest.
//!
//! Hysteresis keeps it from flapping: a latency-aware strategy stays until the spread falls below
//! [`SPREAD_EXIT`] (lower than the entry ratio), a new choice must win [`CONFIRMATIONS`] evaluations
//! in a row, and there is at most one switch per `--switch-interval`.

use crate::strategy::{StrategyKind, StrategyParams};

/// Enter a latency-aware strategy when the slowest p99 is this many times the median p99...
pub const SPREAD_ENTER: f64 = 2.0;
/// ...and leave it only when the ratio falls below this.
pub const SPREAD_EXIT: f64 = 1.5;
/// Error rates this far apart (absolute) also call for a latency-aware strategy.
pub const ERROR_SPREAD: f64 = 0.2;
/// A backend with this many times the median in flight (and at least [`BACKLOG_MIN`]) is backed up.
pub const BACKLOG_FACTOR: f64 = 4.0;
pub const BACKLOG_MIN: u64 = 8;
/// Consecutive evaluations that must agree before a switch.
pub const CONFIRMATIONS: u32 = 3;
/// Above this many backends, `p2c` replaces `least-time` (constant cost per pick).
pub const P2C_ABOVE_BACKENDS: usize = 16;
pub const DEFAULT_SWITCH_INTERVAL_MS: u64 = 60_000;

/// What the engine sees of one routable backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// p99 over the recent window, in microseconds; `None` when it served nothing lately.
    pub p99_us: Option<u64>,
    pub error_rate: f64,
    pub in_flight: u64,
}

/// A decision to switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    pub to: StrategyKind,
    pub reason: String,
}

pub struct AdaptiveEngine {
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
    pub fn new(switch_interval_ms: u64) -> AdaptiveEngine {
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
    pub fn evaluate(
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
        // 1. A backend backing up.
        let mut in_flight: Vec<u64> = samples.iter().map(|s| s.in_flight).collect();
        in_flight.sort_unstable();
        let median_in_flight = in_flight[in_flight.len() / 2];
        if let Some(s) = samples.iter().max_by_key(|s| s.in_flight) {
            let by_ratio = s.in_flight >= BACKLOG_MIN
                && s.in_flight as f64 >= BACKLOG_FACTOR * median_in_flight.max(1) as f64;
            if s.in_flight >= params.threshold_high || by_ratio {
                return (
                    StrategyKind::Threshold,
                    format!(
                        "{} is backing up: {} requests in flight, median {}",
                        s.name, s.in_flight, median_in_flight
                    ),
                );
            }
        }
        if self.active == StrategyKind::Threshold
            && in_flight.last().is_some_and(|&m| m > params.threshold_low)
        {
            return (
                StrategyKind::Threshold,
                "still draining a backed-up backend".into(),
            );
        }
        // 2. Latency or errors spread.
        for s in samples {
            if let Some(p99) = s.p99_us {
                match self.memory.iter_mut().find(|(n, _)| *n == s.name) {
                    Some(m) => m.1 = p99,
                    None => self.memory.push((s.name.clone(), p99)),
                }
            }
        }
        let mut p99s: Vec<(u64, &str)> = samples
            .iter()
            .filter_map(|s| {
                self.memory
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map(|(_, p)| (*p, s.name.as_str()))
            })
            .collect();
        p99s.sort_unstable();
        let latency_aware = if samples.len() > P2C_ABOVE_BACKENDS {
            StrategyKind::P2c
        } else {
            StrategyKind::LeastTime
        };
        let in_latency_mode = matches!(self.active, StrategyKind::LeastTime | StrategyKind::P2c);
        if p99s.len() >= 2 {
            let median = p99s[p99s.len() / 2 - usize::from(p99s.len() % 2 == 0)]
                .0
                .max(1);
            let (slowest, name) = p99s[p99s.len() - 1];
            let ratio = slowest as f64 / median as f64;
            let limit = if in_latency_mode {
                SPREAD_EXIT
            } else {
                SPREAD_ENTER
            };
            if ratio >= limit {
                return (
                    latency_aware,
                    format!(
                        "latency spread: p99 of {name} is {:.1}x the median ({:.1} ms vs {:.1} ms)",
                        ratio,
                        slowest as f64 / 1e3,
                        median as f64 / 1e3
                    ),
                );
            }
        }
        let errors = samples.iter().map(|s| s.error_rate);
        let (lo, hi) = errors.fold((f64::MAX, f64::MIN), |(lo, hi), e| (lo.min(e), hi.max(e)));
        if hi - lo >= ERROR_SPREAD {
            return (
                latency_aware,
                format!(
                    "error rates differ: {:.0}% to {:.0}%",
                    lo * 100.0,
                    hi * 100.0
                ),
            );
        }
        (
            StrategyKind::RoundRobin,
            "backends look alike: similar latency, errors and load".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, p99_ms: u64, in_flight: u64) -> Sample {
        Sample {
            name: name.into(),
            p99_us: Some(p99_ms * 1000),
            error_rate: 0.0,
            in_flight,
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
    fn a_backed_up_backend_calls_for_threshold() {
        let mut e = AdaptiveEngine::new(0);
        let backlog = [sample("a", 10, 2), sample("b", 10, 40), sample("c", 10, 3)];
        let switches = run(&mut e, 0, 3, &backlog);
        assert_eq!(switches, vec![(2_000, StrategyKind::Threshold)]);
        assert!(e
            .last_reason
            .as_deref()
            .unwrap()
            .contains("b is backing up"));
    }

    #[test]
    fn a_backend_that_stops_getting_traffic_is_remembered_as_slow() {
        let mut e = AdaptiveEngine::new(0);
        run(&mut e, 0, 3, &[sample("a", 10, 0), sample("b", 90, 0)]);
        assert_eq!(e.active, StrategyKind::LeastTime);
        let quiet = [
            sample("a", 10, 0),
            Sample {
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
