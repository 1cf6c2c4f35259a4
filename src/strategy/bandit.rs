//! `bandit`: for unreliable backends (brief 000). Each attempt, first or retry, goes to the backend
//! most likely to succeed now, among those whose learned rate limit leaves room for it.
//!
//! Choosing is Thompson sampling (Thompson 1933; Chapelle and Li, "An Empirical Evaluation of
//! Thompson Sampling", NIPS 2011): draw a success probability for each candidate from its Beta
//! posterior ([`crate::learn::Learned`]) and take the highest draw. Uncertain backends get tried
//! now and then, proven ones get most of the traffic, and no tuning knob is needed. A retry avoids a
//! backend that already failed for this request unless its posterior mean is still clearly the best
//! ([`CLEARLY_BEST_MARGIN`]): with constant per-attempt error rates, trying the best one again beats
//! a worse one. A backend whose token bucket is empty is skipped; when all are, the caller is told
//! how long to wait ([`Choice::Wait`]) instead of spending an attempt on a likely 429.

use super::{Choice, PickContext, Strategy};
use crate::backend::Backend;
use crate::rng::Rng;

/// How much higher a failed backend's mean success must be than every other candidate's for a
/// retry to go back to it.
pub const CLEARLY_BEST_MARGIN: f64 = 0.15;

pub struct Bandit {
    rng: Rng,
}

impl Bandit {
    pub fn with_seed(seed: u64) -> Bandit {
        Bandit {
            rng: Rng::with_seed(seed),
        }
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(shape, 1) draw: Marsaglia and Tsang, "A Simple Method for Generating Gamma Variables",
/// ACM TOMS 2000, with the `shape < 1` boost from the same paper.
fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = rng.next_f64().max(f64::MIN_POSITIVE);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = rng.next_f64();
        if u < 1.0 - 0.0331 * x.powi(4)
            || u.max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d * (1.0 - v + v.ln())
        {
            return d * v;
        }
    }
}

/// A Beta(a, b) draw.
pub fn beta(rng: &mut Rng, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    if x + y == 0.0 {
        0.5
    } else {
        x / (x + y)
    }
}

impl Strategy for Bandit {
    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        let forced = PickContext {
            force: true,
            ..*ctx
        };
        match self.choose(backends, candidates, &forced) {
            Choice::Backend(i) => i,
            Choice::Wait { .. } => candidates[0],
        }
    }

    fn choose(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        ctx: &PickContext<'_>,
    ) -> Choice {
        let means: Vec<f64> = candidates
            .iter()
            .map(|&c| backends[c].stats.learned.success_mean())
            .collect();
        let mut best: Option<(f64, usize)> = None;
        let mut min_wait_ms = u64::MAX;
        for (i, &c) in candidates.iter().enumerate() {
            let b = &backends[c];
            if ctx.tried.contains(&b.id) {
                let others_best = means
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &m)| m)
                    .fold(0.0, f64::max);
                if means[i] < others_best + CLEARLY_BEST_MARGIN {
                    continue;
                }
            }
            let wait_ms = b.stats.learned.wait_ms(ctx.now_ms);
            if wait_ms > 0 && !ctx.force {
                min_wait_ms = min_wait_ms.min(wait_ms);
                continue;
            }
            let (a, bb) = b.stats.learned.beta();
            let draw = beta(&mut self.rng, a, bb);
            if best.is_none_or(|(d, _)| draw > d) {
                best = Some((draw, c));
            }
        }
        match best {
            Some((_, c)) => {
                backends[c].stats.learned.take(ctx.now_ms);
                Choice::Backend(c)
            }
            // Everyone failed this request already: take the likeliest anyway.
            None if min_wait_ms == u64::MAX => {
                let i = (0..candidates.len())
                    .max_by(|&x, &y| means[x].total_cmp(&means[y]))
                    .unwrap_or(0);
                backends[candidates[i]].stats.learned.take(ctx.now_ms);
                Choice::Backend(candidates[i])
            }
            None => Choice::Wait { ms: min_wait_ms },
        }
    }

    fn retries_may_repeat(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};

    fn teach(b: &Backend, success_rate: f64, n: usize, now_ms: u64) {
        for i in 0..n {
            b.stats
                .learned
                .observe((i as f64 / n as f64) < success_rate, now_ms);
        }
    }

    #[test]
    fn beta_draws_have_the_right_mean() {
        let mut rng = Rng::with_seed(1);
        let n = 20_000;
        let mean = (0..n).map(|_| beta(&mut rng, 8.0, 2.0)).sum::<f64>() / n as f64;
        assert!((mean - 0.8).abs() < 0.01, "{mean}");
        let small = (0..n).map(|_| beta(&mut rng, 0.5, 0.5)).sum::<f64>() / n as f64;
        assert!((small - 0.5).abs() < 0.02, "{small}");
    }

    #[test]
    fn learning_converges_to_the_best_backend() {
        // Three backends with success 0.4, 0.9, 0.6: play 3000 rounds, learning from outcomes.
        let b = backends(&[1, 1, 1]);
        let truth = [0.4, 0.9, 0.6];
        let mut world = Rng::with_seed(99);
        let mut bandit = Bandit::with_seed(5);
        let mut picks = [0usize; 3];
        for round in 0..3000u64 {
            let c = ctx();
            let c = PickContext {
                now_ms: round * 50,
                ..c
            };
            let Choice::Backend(i) = bandit.choose(&b, &[0, 1, 2], &c) else {
                panic!("no rate limit here")
            };
            picks[i] += 1;
            b[i].stats
                .learned
                .observe(world.next_f64() < truth[i], round * 50);
        }
        assert!(picks[1] > 2500, "{picks:?}");
    }

    #[test]
    fn a_retry_avoids_the_failed_backend_unless_it_is_clearly_best() {
        let b = backends(&[1, 1, 1]);
        teach(&b[0], 0.7, 100, 1);
        teach(&b[1], 0.65, 100, 1);
        teach(&b[2], 0.2, 100, 1);
        let mut bandit = Bandit::with_seed(3);
        let tried = [b[0].id];
        let c = PickContext {
            tried: &tried,
            ..ctx()
        };
        for _ in 0..50 {
            assert_ne!(bandit.choose(&b, &[0, 1, 2], &c), Choice::Backend(0));
        }
        let b = backends(&[1, 1]);
        teach(&b[0], 0.95, 200, 1);
        teach(&b[1], 0.3, 200, 1);
        let tried = [b[0].id];
        let c = PickContext {
            tried: &tried,
            ..ctx()
        };
        let again = (0..50)
            .filter(|_| bandit.choose(&b, &[0, 1], &c) == Choice::Backend(0))
            .count();
        assert!(
            again > 45,
            "the clearly best backend is tried again: {again}/50"
        );
    }

    #[test]
    fn waits_when_every_bucket_is_empty() {
        let b = backends(&[1, 1]);
        b[0].stats.learned.rate_limited(Some(2), 1);
        b[1].stats.learned.rate_limited(Some(1), 1);
        let mut bandit = Bandit::with_seed(1);
        let c = PickContext { now_ms: 1, ..ctx() };
        assert_eq!(bandit.choose(&b, &[0, 1], &c), Choice::Wait { ms: 1000 });
        let forced = PickContext { force: true, ..c };
        assert!(matches!(
            bandit.choose(&b, &[0, 1], &forced),
            Choice::Backend(_)
        ));
        let later = PickContext {
            now_ms: 1001,
            ..ctx()
        };
        assert_eq!(bandit.choose(&b, &[0, 1], &later), Choice::Backend(1));
    }
}
