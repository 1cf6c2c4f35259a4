//! Rate limits of the flaky2, flaky3 and flaky4 profiles.
//!
//! flaky2 uses a fixed limit on a sliding one-second window. flaky3's and flaky4's limit is a
//! function of time since the simulator started ([`DynamicLimit::limit_at`]): a per-server
//! sinusoid with its own period and phase (a limit that drifts smoothly), times a step factor
//! that changes every few tens of seconds (a limit that jumps, down to a fifth and back). How the
//! window counts, the penalty box and outages are the server's [`crate::sim::shape::Shape`].

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rng::{mix64, Rng};

/// Width of the sliding window the limits count requests in.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Violations (429 answers) within [`PENALTY_WINDOW`] that put a flaky3 server in the box
/// ([`crate::sim::shape::PenaltyRule::FLAKY3`]).
pub const PENALTY_VIOLATIONS: usize = 3;
pub const PENALTY_WINDOW: Duration = Duration::from_secs(1);
/// How long the box lasts: every request is answered 429 meanwhile.
pub const PENALTY_DURATION: Duration = Duration::from_secs(2);

/// Step multipliers of flaky3; one is picked per server per step epoch by a fixed hash.
pub const STEP_FACTORS: [f64; 6] = [0.2, 0.5, 1.0, 1.0, 1.0, 1.5];
/// flaky4's: more often a step down to a fifth and back.
pub const STEP_FACTORS_FLAKY4: [f64; 4] = [0.2, 1.0, 1.0, 1.5];

/// Admits at most `limit` requests in any sliding one-second window. Only admitted requests
/// count, so a client over the limit gets through again as soon as old admissions age out.
#[derive(Debug, Default, Clone)]
pub struct SlidingWindow {
    admitted: VecDeque<Instant>,
}

impl SlidingWindow {
    pub fn try_admit(&mut self, now: Instant, limit: u32) -> bool {
        self.expire(now);
        if self.admitted.len() < limit as usize {
            self.admitted.push_back(now);
            true
        } else {
            false
        }
    }

    /// Admissions in the window ending at `now`.
    pub fn count(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.admitted.len()
    }

    fn expire(&mut self, now: Instant) {
        let Some(horizon) = now.checked_sub(WINDOW) else {
            return;
        };
        while self.admitted.front().is_some_and(|&t| t <= horizon) {
            self.admitted.pop_front();
        }
    }
}

/// flaky3's time-varying limit, in requests per second:
///
/// `limit(t) = round(base_rps × step(t) × (1 + amplitude × sin(2π t / period_s + phase_rad)))`
///
/// where `step(t) = step_factors[mix64(step_seed ^ epoch) % step_factors.len()]` with
/// `epoch = floor(t / step_every_s)`, and `t` is seconds since the simulator started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicLimit {
    pub base_rps: f64,
    /// Fraction of `base_rps` the sinusoid swings by, in `[0, 1)`.
    pub amplitude: f64,
    pub period_s: f64,
    pub phase_rad: f64,
    pub step_every_s: f64,
    pub step_seed: u64,
    /// [`STEP_FACTORS`] (flaky3) or [`STEP_FACTORS_FLAKY4`].
    pub step_factors: Vec<f64>,
}

impl DynamicLimit {
    pub const BASE_RPS: (f64, f64) = (3.0, 8.0);
    pub const AMPLITUDE: (f64, f64) = (0.3, 0.8);
    pub const PERIOD_S: (f64, f64) = (10.0, 60.0);
    pub const STEP_EVERY_S: (f64, f64) = (15.0, 60.0);

    /// Draws each parameter uniformly from its range above; `harder` (flaky4) steps with
    /// [`STEP_FACTORS_FLAKY4`].
    pub fn draw(rng: &mut Rng, harder: bool) -> Self {
        DynamicLimit {
            base_rps: rng.range_f64(Self::BASE_RPS.0, Self::BASE_RPS.1),
            amplitude: rng.range_f64(Self::AMPLITUDE.0, Self::AMPLITUDE.1),
            period_s: rng.range_f64(Self::PERIOD_S.0, Self::PERIOD_S.1),
            phase_rad: rng.range_f64(0.0, TAU),
            step_every_s: rng.range_f64(Self::STEP_EVERY_S.0, Self::STEP_EVERY_S.1),
            step_seed: rng.next_u64(),
            step_factors: if harder {
                STEP_FACTORS_FLAKY4.to_vec()
            } else {
                STEP_FACTORS.to_vec()
            },
        }
    }

    pub fn step_factor(&self, t_s: f64) -> f64 {
        let epoch = (t_s.max(0.0) / self.step_every_s).floor() as u64;
        let n = self.step_factors.len().max(1) as u64;
        self.step_factors
            .get((mix64(self.step_seed ^ epoch) % n) as usize)
            .copied()
            .unwrap_or(1.0)
    }

    pub fn limit_at(&self, t_s: f64) -> u32 {
        let wave = 1.0 + self.amplitude * (TAU * t_s / self.period_s + self.phase_rad).sin();
        (self.base_rps * self.step_factor(t_s) * wave)
            .round()
            .max(0.0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn window_admits_up_to_the_limit_per_second() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        assert!(w.try_admit(t0, 2));
        assert!(w.try_admit(t0 + ms(100), 2));
        assert!(!w.try_admit(t0 + ms(200), 2));
        assert!(!w.try_admit(t0 + ms(999), 2));
        // The first admission ages out exactly one second later.
        assert!(w.try_admit(t0 + ms(1000), 2));
        assert!(!w.try_admit(t0 + ms(1050), 2));
        assert!(w.try_admit(t0 + ms(1100), 2));
        assert_eq!(w.count(t0 + ms(1500)), 2);
        assert_eq!(w.count(t0 + ms(5000)), 0);
    }

    #[test]
    fn a_zero_limit_admits_nothing() {
        let mut w = SlidingWindow::default();
        assert!(!w.try_admit(Instant::now(), 0));
    }

    fn flat(step_seed: u64) -> DynamicLimit {
        DynamicLimit {
            base_rps: 4.0,
            amplitude: 0.5,
            period_s: 40.0,
            phase_rad: 0.0,
            step_every_s: 30.0,
            step_seed,
            step_factors: STEP_FACTORS.to_vec(),
        }
    }

    #[test]
    fn flaky3_limit_follows_the_sinusoid_within_a_step() {
        let l = flat(11);
        let step = l.step_factor(0.0);
        // Quarter period: sin = 1, so base × step × 1.5; three quarters: sin = -1.
        assert_eq!(l.limit_at(10.0), (4.0 * step * 1.5f64).round() as u32);
        assert_eq!(l.limit_at(0.0), (4.0 * step).round() as u32);
        assert_eq!(l.step_factor(29.9), step, "same epoch, same step");
    }

    #[test]
    fn flaky3_limit_is_a_pure_function_of_time() {
        let mut rng = Rng::with_seed(5);
        let l = DynamicLimit::draw(&mut rng, false);
        let a: Vec<u32> = (0..600).map(|t| l.limit_at(f64::from(t) * 0.5)).collect();
        let b: Vec<u32> = (0..600).map(|t| l.limit_at(f64::from(t) * 0.5)).collect();
        assert_eq!(a, b);
        let (lo, hi) = (a.iter().min().unwrap(), a.iter().max().unwrap());
        assert!(lo < hi, "the limit should move over 5 minutes: {lo}..{hi}");
        let cap = (DynamicLimit::BASE_RPS.1 * 1.5 * 1.8).ceil() as u32;
        assert!(*hi <= cap);
    }

    #[test]
    fn flaky3_steps_change_between_epochs() {
        // Over many epochs every factor shows up, so the steps really happen.
        let l = flat(3);
        let seen: std::collections::HashSet<u64> = (0..200)
            .map(|e| (l.step_factor(f64::from(e) * 30.0) * 100.0) as u64)
            .collect();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn drawn_parameters_stay_in_their_ranges() {
        let mut rng = Rng::with_seed(1);
        for _ in 0..1000 {
            let l = DynamicLimit::draw(&mut rng, false);
            assert!((3.0..8.0).contains(&l.base_rps));
            assert!((0.3..0.8).contains(&l.amplitude));
            assert!((10.0..60.0).contains(&l.period_s));
            assert!((15.0..60.0).contains(&l.step_every_s));
        }
    }
}
