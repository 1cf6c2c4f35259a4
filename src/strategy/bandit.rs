//! `bandit`: for unreliable backends (the flaky-servers challenge in the README). Each attempt, first or retry, goes to the backend
//! most likely to succeed now, among those whose learned rate limit leaves room for it.
//!
//! A first attempt is chosen by Thompson sampling (Thompson 1933; Chapelle and Li, "An Empirical
//! Evaluation of Thompson Sampling", NIPS 2011): draw a success probability for each candidate from
//! its Beta posterior ([`crate::backend::learn::Learned`]) and take the highest draw. Uncertain backends get
//! tried now and then, proven ones get most of the traffic, and no tuning knob is needed. A retry
//! exploits instead: it takes the highest posterior mean, because a request that already failed
//! has the fewest attempts left and exploring with it is what costs an id (the challenge scores
//! ids, and information is cheap on first attempts). A retry may go back once to a backend that
//! failed the request, as to any other; one that failed it [`AVOID_AFTER_FAILURES`] times is
//! avoided unless its posterior mean is still clearly the best ([`CLEARLY_BEST_MARGIN`]): with
//! constant per-attempt error rates, trying the best one again beats a worse one.
//!
//! A backend without room under its learned limit is skipped. Whether a third 429 within a second
//! must be kept out is judged by every candidate's evidence together
//! ([`crate::backend::penalty::PenaltyRule::of_pool`]): backends of one pool most likely run one
//! limiter, and one backend's own evidence comes after it was punished. Room depends on the attempt's class
//! ([`crate::backend::learn::class_of`]): a request's last chance may fill a backend's window, earlier
//! attempts only what later ones leave over ([`crate::backend::learn::Learned::wait_ms`]), so that the few
//! slots of a good but rate-limited backend go where a success is worth the most, as the simulator's
//! oracle (a linear program over attempts) sends them. When a retry's best backend by mean is
//! among those skipped and beats every backend with room by more than [`WAIT_MARGIN`], the caller
//! is told to wait for it ([`Choice::Wait`]) rather than spend the attempt on a clearly worse
//! backend; a first attempt does not wait for a better backend (the replay of the challenge in
//! `tests/bandit_replay.rs` showed it only added a second to the median latency, for no more ids
//! accepted). When none has room,
//! either is told how long until one does, rather than spend the attempt on a likely 429. The
//! caller bounds the waiting (`--max-pacing-wait`, then as long again for room anywhere) and then
//! forces a pick, which takes the likeliest backend with room in its whole window; when none has
//! room, the request is answered at once ([`Choice::Full`]: sluice's own 503, the request
//! accepted by no backend) rather than sent where a 429 is sure. That answer is what keeps a
//! load above what the limits take from queueing: at 30 ids/s in the challenge, sure 429s and
//! the waits before them held answers for 6–9 s, past the client's timeout, and the 429s put
//! servers in their penalty boxes (the replay in `tests/bandit_replay.rs`: 0.83 / 0.59 / 0.77 of
//! the oracle in configurations 2–4 with them, 0.93 / 0.74 / 0.77 without). Waiting costs
//! latency, not ids (the challenge scores ids accepted): with rate limits, retries that wait make
//! the 99th percentile about a second at 10 ids/s.

use super::{Choice, Feedback, PickContext, Strategy};
use crate::backend::learn::{class_of, PenaltyRule, CLASSES, WINDOW_MS};
use crate::backend::Backend;
use crate::rng::Rng;

/// How much higher the mean success of a backend that failed the request
/// [`AVOID_AFTER_FAILURES`] times must be than every other candidate's for a retry to go back to
/// it. Small: with independent failures (the challenge's first configuration) the best backend is
/// the best retry too; the margin only keeps a retry off a backend that is best by a hair. (0.15
/// before the replay in `tests/bandit_replay.rs` showed 0.05 accepting 0.2% more ids in
/// configuration 1.)
pub(super) const CLEARLY_BEST_MARGIN: f64 = 0.05;

/// How many times a backend may fail one request before a retry avoids it (unless it is clearly
/// the best, [`CLEARLY_BEST_MARGIN`]). Two, not one: most failures are the backend's luck, not the
/// request's, and under rate limits the best backends are few, so a retry kept off the one that
/// just failed it often had only much worse ones left with room. Avoiding it after the second
/// failure still bounds what a failure tied to one request and one backend can cost. (The replay
/// in `tests/bandit_replay.rs`, 50 seeds at 30 ids/s: 0.9993 / 0.9981 / 0.9881 / 0.9892 of the
/// oracle in configurations 1–4 with two, 0.9988 / 0.9968 / 0.9848 / 0.9856 with one; never
/// avoiding one gave about the same.)
pub(super) const AVOID_AFTER_FAILURES: usize = 2;

/// How much higher the mean success of a backend without room must be than that of the best one
/// with room for a request to wait for it.
pub(super) const WAIT_MARGIN: f64 = 0.05;

/// How many times a pick is made again when another worker sent to the picked backend between
/// the count of its window and this send ([`crate::backend::learn::Learned::take_after`]); the
/// last pick sends whatever happened meanwhile.
pub(super) const MAX_PICK_RACES: usize = 4;

pub struct Bandit {
    rng: Rng,
}

impl Bandit {
    pub fn with_seed(seed: u64) -> Bandit {
        Bandit {
            rng: Rng::with_seed(seed),
        }
    }

    /// A pick that may not wait although no candidate has room for its class: the likeliest with
    /// room in its whole window (the share kept for later attempts is given up). Relaxed but not
    /// forced, with no room anywhere: wait for the soonest room. Forced, with no room anywhere:
    /// [`Choice::Full`], never a backend sure to answer 429 (a sure 429 would spend one of the
    /// request's attempts for nothing, and press a limiter that may punish it).
    fn forced(
        &self,
        backends: &[Backend],
        candidates: &[usize],
        excluded: &[bool],
        means: &[f64],
        rule: PenaltyRule,
        ctx: &PickContext<'_>,
    ) -> Choice {
        let open: Vec<(usize, u64)> = (0..candidates.len())
            .filter(|&i| !excluded[i])
            .map(|i| {
                let learned = &backends[candidates[i]].stats.learned;
                (i, learned.wait_in_pool_ms(ctx.now_ms, CLASSES, rule))
            })
            .collect();
        if let Some(&(i, _)) = open
            .iter()
            .filter(|&&(_, w)| w == 0)
            .max_by(|x, y| means[x.0].total_cmp(&means[y.0]))
        {
            return Choice::Backend(i);
        }
        match open.iter().min_by_key(|&&(_, w)| w) {
            Some(&(_, w)) if !ctx.force && w != u64::MAX => Choice::Wait { ms: w },
            Some(_) => Choice::Full,
            None => Choice::Backend(0),
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
pub(super) fn beta(rng: &mut Rng, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    if x + y == 0.0 {
        0.5
    } else {
        x / (x + y)
    }
}

impl Strategy for Bandit {
    fn feedback(&self) -> Feedback {
        Feedback {
            success: true,
            ..Feedback::default()
        }
    }

    fn pick(&mut self, backends: &[Backend], candidates: &[usize], ctx: &PickContext<'_>) -> usize {
        let forced = PickContext {
            force: true,
            ..*ctx
        };
        match self.choose(backends, candidates, &forced) {
            Choice::Backend(i) => i,
            Choice::Wait { .. } | Choice::Full => candidates[0],
        }
    }

    fn choose(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        ctx: &PickContext<'_>,
    ) -> Choice {
        // Another worker may send to the picked backend between the count of its window and this
        // send: then pick again with that send in view (a few times at most, then send anyway).
        for _ in 1..MAX_PICK_RACES {
            if let Some(choice) = self.choose_once(backends, candidates, ctx, false) {
                return choice;
            }
        }
        self.choose_once(backends, candidates, ctx, true)
            .unwrap_or(Choice::Full)
    }

    fn retries_may_repeat(&self) -> bool {
        true
    }
}

impl Bandit {
    /// One pick; None if another attempt went to the picked backend meanwhile, unless `insist`.
    fn choose_once(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        ctx: &PickContext<'_>,
        insist: bool,
    ) -> Option<Choice> {
        let seqs: Vec<usize> = candidates
            .iter()
            .map(|&c| backends[c].stats.learned.send_seq())
            .collect();
        let retry = !ctx.tried.is_empty();
        let class = class_of(ctx.tried.len() + 1);
        let means: Vec<f64> = candidates
            .iter()
            .map(|&c| backends[c].stats.learned.success_mean())
            .collect();
        // Backends of one pool most likely run one limiter: judge its penalty rule by them all.
        let rule = PenaltyRule::of_pool(
            candidates
                .iter()
                .map(|&c| backends[c].stats.learned.penalty_evidence()),
        );
        // Per candidate: left out (it failed this request and is not clearly the best), or how
        // long until it has room for this attempt's class.
        let mut excluded = vec![false; candidates.len()];
        let mut waits = vec![0u64; candidates.len()];
        // The best candidate with room now (by draw, or by mean on a retry), and the best one
        // without room by mean, with its wait.
        let mut now: Option<(f64, usize)> = None;
        let mut later: Option<(f64, u64)> = None;
        for (i, &c) in candidates.iter().enumerate() {
            let b = &backends[c];
            let failed_here = ctx.tried.iter().filter(|&&id| id == b.id).count();
            if failed_here >= AVOID_AFTER_FAILURES {
                let others_best = means
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &m)| m)
                    .fold(0.0, f64::max);
                if means[i] < others_best + CLEARLY_BEST_MARGIN {
                    excluded[i] = true;
                    continue;
                }
            }
            waits[i] = b.stats.learned.wait_in_pool_ms(ctx.now_ms, class, rule);
            if waits[i] > 0 {
                // Waiting is for room that comes, not for a backend kept for later attempts.
                let comes = waits[i] != u64::MAX;
                if comes
                    && later.is_none_or(|(m, w)| means[i] > m || (means[i] == m && waits[i] < w))
                {
                    later = Some((means[i], waits[i]));
                }
                continue;
            }
            let score = if retry {
                means[i]
            } else {
                let (a, bb) = b.stats.learned.beta();
                beta(&mut self.rng, a, bb)
            };
            if now.is_none_or(|(s, _)| score > s) {
                now = Some((score, i));
            }
        }
        let pick = match (now, later) {
            (Some((_, i)), Some((m, wait_ms)))
                if retry && !ctx.relax && !ctx.force && m > means[i] + WAIT_MARGIN =>
            {
                return Some(Choice::Wait { ms: wait_ms });
            }
            (Some((_, i)), _) => i,
            // Everyone failed this request already: take the likeliest anyway.
            (None, _) if excluded.iter().all(|&e| e) => (0..candidates.len())
                .max_by(|&x, &y| means[x].total_cmp(&means[y]))
                .unwrap_or(0),
            // Nothing has room: wait for the first that will (or a window, if all are kept for
            // later attempts), unless out of time.
            (None, later) if !ctx.relax && !ctx.force => {
                return Some(Choice::Wait {
                    ms: later.map_or(WINDOW_MS, |_| {
                        waits
                            .iter()
                            .copied()
                            .filter(|&w| w > 0)
                            .min()
                            .unwrap_or(WINDOW_MS)
                    }),
                });
            }
            (None, _) => match self.forced(backends, candidates, &excluded, &means, rule, ctx) {
                Choice::Backend(i) => i,
                wait => return Some(wait),
            },
        };
        let learned = &backends[candidates[pick]].stats.learned;
        if insist {
            learned.take(ctx.now_ms, class);
        } else if !learned.take_after(seqs[pick], ctx.now_ms, class) {
            return None;
        }
        if retry {
            // This attempt wanted the backend it got, and every likelier one that had no room.
            for (i, &c) in candidates.iter().enumerate() {
                if i == pick || (!excluded[i] && waits[i] > 0 && means[i] > means[pick]) {
                    backends[c].stats.learned.note_demand(class, ctx.now_ms);
                }
            }
        }
        Some(Choice::Backend(candidates[pick]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::learn::test_support::two_429s_50_ms_apart;
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
    fn a_retry_goes_back_once_and_avoids_a_backend_that_failed_twice_unless_clearly_best() {
        let b = backends(&[1, 1, 1]);
        teach(&b[0], 0.7, 100, 1);
        teach(&b[1], 0.68, 100, 1);
        teach(&b[2], 0.2, 100, 1);
        let mut bandit = Bandit::with_seed(3);
        // One failure is most likely the backend's luck: the likeliest backend is still taken.
        let once = [b[0].id];
        let c = PickContext {
            tried: &once,
            ..ctx()
        };
        for _ in 0..50 {
            assert_eq!(bandit.choose(&b, &[0, 1, 2], &c), Choice::Backend(0));
        }
        // Two failures of this request there: the next best, nearly as likely, is taken instead.
        let twice = [b[0].id, b[0].id];
        let c = PickContext {
            tried: &twice,
            ..ctx()
        };
        for _ in 0..50 {
            assert_eq!(bandit.choose(&b, &[0, 1, 2], &c), Choice::Backend(1));
        }
        let b = backends(&[1, 1]);
        teach(&b[0], 0.95, 200, 1);
        teach(&b[1], 0.3, 200, 1);
        let twice = [b[0].id, b[0].id];
        let c = PickContext {
            tried: &twice,
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
    fn waits_when_every_bucket_is_empty_and_answers_at_once_when_it_may_wait_no_longer() {
        let b = backends(&[1, 1]);
        b[0].stats.learned.rate_limited(Some(3), 1);
        b[1].stats.learned.rate_limited(Some(2), 1);
        let mut bandit = Bandit::with_seed(1);
        let c = PickContext { now_ms: 1, ..ctx() };
        assert_eq!(bandit.choose(&b, &[0, 1], &c), Choice::Wait { ms: 2000 });
        let forced = PickContext { force: true, ..c };
        assert_eq!(bandit.choose(&b, &[0, 1], &forced), Choice::Full);
        // Once its Retry-After has passed, backend 1 has room again.
        let later = PickContext {
            now_ms: 2_100,
            ..ctx()
        };
        assert_eq!(bandit.choose(&b, &[0, 1], &later), Choice::Backend(1));
    }

    /// Teaches `b` a limit of `per_window` the way a backend does: that many admitted, then a 429.
    fn limit_to(b: &Backend, per_window: u64, now_ms: u64) {
        for t in 0..per_window {
            b.stats.learned.take(now_ms + t, 1);
        }
        b.stats.learned.take(now_ms + per_window, 1);
        b.stats.learned.rate_limited(None, now_ms + per_window);
    }

    #[test]
    fn a_retry_takes_the_likeliest_backend_where_a_first_attempt_explores() {
        let b = backends(&[1, 1, 1]);
        teach(&b[0], 0.8, 200, 1);
        teach(&b[1], 0.5, 2, 1);
        let mut bandit = Bandit::with_seed(7);
        let first = (0..200)
            .filter(|_| bandit.choose(&b, &[0, 1], &ctx()) == Choice::Backend(1))
            .count();
        assert!(first > 0, "the uncertain backend gets some first attempts");
        let tried = [b[2].id];
        let retry = PickContext {
            tried: &tried,
            ..ctx()
        };
        for _ in 0..200 {
            assert_eq!(bandit.choose(&b, &[0, 1], &retry), Choice::Backend(0));
        }
    }

    #[test]
    fn a_retry_waits_for_a_clearly_better_backend_without_room_unless_forced() {
        let b = backends(&[1, 1, 1, 1]);
        teach(&b[0], 0.95, 200, 1);
        teach(&b[1], 0.6, 200, 1);
        teach(&b[2], 0.93, 200, 1);
        teach(&b[3], 0.3, 200, 1);
        limit_to(&b[0], 2, 10);
        let mut bandit = Bandit::with_seed(1);
        let tried = [b[3].id];
        let c = PickContext {
            tried: &tried,
            now_ms: 20,
            ..ctx()
        };
        // Backend 2 is nearly as good: no reason to wait.
        assert_eq!(bandit.choose(&b, &[0, 1, 2], &c), Choice::Backend(2));
        // Only a much worse one has room: wait until backend 0's window frees a slot.
        let c = PickContext { now_ms: 30, ..c };
        match bandit.choose(&b, &[0, 1], &c) {
            Choice::Wait { ms } => assert!((900..=1_020).contains(&ms), "{ms}"),
            other => panic!("{other:?}"),
        }
        let forced = PickContext { force: true, ..c };
        assert_eq!(bandit.choose(&b, &[0, 1], &forced), Choice::Backend(1));
    }

    #[test]
    fn a_first_attempt_does_not_wait_for_a_better_backend() {
        let b = backends(&[1, 1]);
        teach(&b[0], 0.95, 200, 1);
        teach(&b[1], 0.6, 200, 1);
        limit_to(&b[0], 2, 10);
        let mut bandit = Bandit::with_seed(4);
        let first = PickContext {
            now_ms: 30,
            ..ctx()
        };
        assert_eq!(bandit.choose(&b, &[0, 1], &first), Choice::Backend(1));
    }

    #[test]
    fn a_first_attempt_leaves_a_scarce_good_backend_to_the_last_chances_that_want_it() {
        let b = backends(&[1, 1]);
        teach(&b[0], 0.95, 200, 1);
        teach(&b[1], 0.6, 200, 1);
        limit_to(&b[0], 2, 1);
        // Last chances have wanted backend 0 about twice a second lately: its whole limit.
        for t in 0..120 {
            b[0].stats.learned.note_demand(CLASSES, 1_000 + t * 500);
        }
        let now_ms = 62_000;
        let mut bandit = Bandit::with_seed(2);
        let first = PickContext { now_ms, ..ctx() };
        for _ in 0..20 {
            assert_eq!(bandit.choose(&b, &[0, 1], &first), Choice::Backend(1));
        }
        let tried = [b[1].id, b[1].id];
        let last = PickContext {
            now_ms,
            tried: &tried,
            ..ctx()
        };
        assert_eq!(bandit.choose(&b, &[0, 1], &last), Choice::Backend(0));
    }

    #[test]
    fn a_forced_pick_never_goes_to_a_sure_429() {
        let b = backends(&[1, 1]);
        teach(&b[0], 0.95, 200, 1);
        teach(&b[1], 0.5, 200, 1);
        // The better backend asked for 3 s of quiet, the other is full for a moment only.
        b[0].stats.learned.rate_limited(Some(3), 1);
        limit_to(&b[1], 1, 500);
        let mut bandit = Bandit::with_seed(3);
        let forced = PickContext {
            now_ms: 600,
            force: true,
            ..ctx()
        };
        assert_eq!(bandit.choose(&b, &[0, 1], &forced), Choice::Full);
        // Relaxed but not forced, it waits for the soonest room: backend 1's window.
        let relaxed = PickContext {
            force: false,
            relax: true,
            ..forced
        };
        match bandit.choose(&b, &[0, 1], &relaxed) {
            Choice::Wait { ms } => assert!((400..=1_000).contains(&ms), "{ms}"),
            other => panic!("{other:?}"),
        }
        let later = PickContext {
            now_ms: 1_600,
            ..forced
        };
        assert_eq!(bandit.choose(&b, &[0, 1], &later), Choice::Backend(1));
    }

    #[test]
    fn the_pool_decides_whether_a_third_429_in_a_second_is_kept_out() {
        let b = backends(&[1, 1]);
        // Backend 0: a limit learned, then two 429s within a second, an admitted attempt between.
        two_429s_50_ms_apart(&b[0].stats.learned);
        let mut bandit = Bandit::with_seed(1);
        let at = PickContext {
            now_ms: 2_150,
            ..ctx()
        };
        // Backend 1 is boxed after a single 429: its limiter counts 429s within a window, and so,
        // most likely, does backend 0's, which waits until its 429 at 1,200 is a second old.
        b[1].stats.learned.rate_limited(Some(2), 2_000);
        assert_eq!(bandit.choose(&b, &[0, 1], &at), Choice::Wait { ms: 50 });
        // In a pool of its own, backend 0 showed no rule and is not held.
        assert_eq!(bandit.choose(&b, &[0], &at), Choice::Backend(0));
    }
}
