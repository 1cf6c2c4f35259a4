//! The oracle bound: the best accepted share a balancer could expect if it knew every server's
//! success probability and rate limit.
//!
//! # Model
//!
//! Ids arrive at `λ` per second (the ledger's measured rate of new ids). Server `s` accepts an
//! attempt with probability `p_s`, independently, and takes at most `c_s` attempts per second
//! (unlimited without a rate limit; 0 while marked down). Every id may be tried up to 3 times
//! (a 4th attempt costs a point and gains less than one, so it never pays). Let `a[k][s]` be the
//! rate of `k`-th attempts (k = 1, 2, 3) sent to server `s`. Any balancer's long-run expected
//! rates satisfy
//!
//! ```text
//! Σ_s a[1][s]          ≤ λ                              (one first attempt per id)
//! Σ_s a[k][s]          ≤ Σ_s (1 − p_s) · a[k−1][s]      (retries only for failures, k = 2, 3)
//! Σ_k a[k][s]          ≤ c_s                            (rate limits)
//! ```
//!
//! and its expected accepted rate is `Σ_k Σ_s p_s · a[k][s]`. The oracle's accepted share is the
//! maximum of that linear program divided by `λ`, solved exactly with a small simplex
//! ([`accepted_share`]). Without rate limits it is `1 − (1 − max_s p_s)^3` (every attempt goes to
//! the best server); limits make it smaller, and the program finds the best split, including
//! sending first attempts to weaker servers to keep a capped good server for retries.
//!
//! For time-varying limits (flaky3, flaky4) the program is solved at evenly spaced instants across
//! the span of the ledger's ids (at most [`MAX_SAMPLES`], at least one per second when that fits)
//! with each server's limit at that instant (its capacity is 0 while it is unreachable), and the
//! shares are averaged. The oracle knows every limit as it changes, so it loses nothing to
//! learning a limit, to a step, or to a server that went away. The penalty box never enters: the
//! oracle never exceeds a limit. `Retry-After` does not enter: the oracle needs no hint.
//!
//! The bound is an expectation for a fluid model: a short run can beat it by luck. A fixed
//! window lets a balancer send up to twice its limit across a second boundary; the oracle counts
//! the limit per second for both kinds (over any whole second, a fixed window admits no more
//! than its limit on average, so this stays an upper bound for long runs), and it ignores that a
//! sliding window admits bursts no faster than its limit.

use crate::sim::ledger::FREE_ATTEMPTS;
use crate::sim::profile::ServerParams;

/// Most instants the time-varying bound is sampled at.
pub const MAX_SAMPLES: usize = 600;
const EPS: f64 = 1e-12;
const MAX_PIVOTS: usize = 10_000;

/// What the oracle knows about one server at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleServer {
    pub success: f64,
    /// Attempts per second it takes; `None` = unlimited.
    pub capacity_rps: Option<f64>,
}

impl OracleServer {
    /// What the oracle knows of a server with `params` at `t_s`: its success rate, and its limit
    /// then (0 while it is marked down or in one of its outages).
    pub fn at(params: &ServerParams, down: bool, t_s: f64) -> OracleServer {
        OracleServer {
            success: params.success_rate,
            capacity_rps: if down || params.shape.unreachable(t_s) {
                Some(0.0)
            } else {
                params.rate_limit.at(t_s).map(f64::from)
            },
        }
    }
}

/// Expected accepted share (0..=1) for `offered_ids_per_s` new ids per second.
pub fn accepted_share(servers: &[OracleServer], offered_ids_per_s: f64) -> f64 {
    if offered_ids_per_s <= 0.0 || servers.is_empty() {
        return 0.0;
    }
    let (accepted_rps, _) = solve(servers, offered_ids_per_s);
    (accepted_rps / offered_ids_per_s).clamp(0.0, 1.0)
}

/// The oracle's plan behind [`accepted_share`]: per server, the rate of its first, second and
/// third attempts (per second) in one optimal split (the replay of the challenge,
/// `tests/bandit_replay.rs`, routes by it to measure how close a balancer can come to the bound).
pub fn plan(
    servers: &[OracleServer],
    offered_ids_per_s: f64,
) -> Vec<[f64; FREE_ATTEMPTS as usize]> {
    let mut out = vec![[0.0; FREE_ATTEMPTS as usize]; servers.len()];
    if offered_ids_per_s <= 0.0 || servers.is_empty() {
        return out;
    }
    let (_, x) = solve(servers, offered_ids_per_s);
    let n = servers.len();
    for (s, rates) in out.iter_mut().enumerate() {
        for (k, rate) in rates.iter_mut().enumerate() {
            *rate = x[k * n + s];
        }
    }
    out
}

/// The linear program of the module docs: accepted attempts per second, and the rates
/// `a[k][s]` at index `k * n + s`.
fn solve(servers: &[OracleServer], offered_ids_per_s: f64) -> (f64, Vec<f64>) {
    let n = servers.len();
    let rounds = FREE_ATTEMPTS as usize;
    let var = |k: usize, s: usize| k * n + s;
    let mut objective = vec![0.0; rounds * n];
    for k in 0..rounds {
        for (s, srv) in servers.iter().enumerate() {
            objective[var(k, s)] = srv.success.clamp(0.0, 1.0);
        }
    }
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut bounds: Vec<f64> = Vec::new();
    let mut first = vec![0.0; rounds * n];
    for s in 0..n {
        first[var(0, s)] = 1.0;
    }
    rows.push(first);
    bounds.push(offered_ids_per_s);
    for k in 1..rounds {
        let mut row = vec![0.0; rounds * n];
        for (s, srv) in servers.iter().enumerate() {
            row[var(k, s)] = 1.0;
            row[var(k - 1, s)] = -(1.0 - srv.success.clamp(0.0, 1.0));
        }
        rows.push(row);
        bounds.push(0.0);
    }
    for (s, srv) in servers.iter().enumerate() {
        if let Some(cap) = srv.capacity_rps {
            let mut row = vec![0.0; rounds * n];
            for k in 0..rounds {
                row[var(k, s)] = 1.0;
            }
            rows.push(row);
            bounds.push(cap.max(0.0));
        }
    }
    simplex_max(&objective, &rows, &bounds)
}

/// Average of [`accepted_share`] over sample instants in `[from_s, to_s]`, with the servers at
/// each instant given by `servers_at`.
pub fn accepted_share_over(
    from_s: f64,
    to_s: f64,
    offered_ids_per_s: f64,
    mut servers_at: impl FnMut(f64) -> Vec<OracleServer>,
) -> f64 {
    let times = sample_times(from_s, to_s);
    let total: f64 = times
        .iter()
        .map(|&t| accepted_share(&servers_at(t), offered_ids_per_s))
        .sum();
    total / times.len() as f64
}

/// Evenly spaced instants covering `[from_s, to_s]`: one per second, at most [`MAX_SAMPLES`],
/// or just the midpoint for spans under a second.
pub fn sample_times(from_s: f64, to_s: f64) -> Vec<f64> {
    let span = (to_s - from_s).max(0.0);
    if span < 1.0 {
        return vec![from_s + span / 2.0];
    }
    let count = (span.ceil() as usize + 1).min(MAX_SAMPLES);
    (0..count)
        .map(|i| from_s + span * i as f64 / (count - 1) as f64)
        .collect()
}

/// Maximises `c·x` subject to `A x ≤ b`, `x ≥ 0`, for `b ≥ 0` (so the origin is feasible and no
/// phase one is needed). Dense tableau simplex with Bland's rule, which cannot cycle on the
/// degenerate `b = 0` rows. Returns the optimum (infinity if unbounded) and a solution `x`.
fn simplex_max(c: &[f64], a: &[Vec<f64>], b: &[f64]) -> (f64, Vec<f64>) {
    let (m, n) = (a.len(), c.len());
    let width = n + m;
    let mut tableau: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .enumerate()
        .map(|(i, (row, &bi))| {
            let mut full = row.clone();
            full.resize(width, 0.0);
            full[n + i] = 1.0;
            full.push(bi);
            full
        })
        .collect();
    // Reduced costs; the last entry holds minus the objective value.
    let mut reduced: Vec<f64> = c.to_vec();
    reduced.resize(width + 1, 0.0);
    let mut basis: Vec<usize> = (n..width).collect();
    for _ in 0..MAX_PIVOTS {
        let Some(enter) = (0..width).find(|&j| reduced[j] > EPS) else {
            break;
        };
        let mut leave: Option<(f64, usize)> = None;
        for (i, row) in tableau.iter().enumerate() {
            if row[enter] <= EPS {
                continue;
            }
            let ratio = row[width] / row[enter];
            leave = match leave {
                Some((best, bi))
                    if ratio > best + EPS || (ratio >= best - EPS && basis[bi] < basis[i]) =>
                {
                    Some((best, bi))
                }
                _ => Some((ratio, i)),
            };
        }
        let Some((_, p)) = leave else {
            return (f64::INFINITY, vec![0.0; n]);
        };
        let pivot = tableau[p][enter];
        tableau[p].iter_mut().for_each(|v| *v /= pivot);
        let pivot_row = tableau[p].clone();
        for (i, row) in tableau.iter_mut().enumerate() {
            let factor = row[enter];
            if i != p && factor != 0.0 {
                row.iter_mut()
                    .zip(&pivot_row)
                    .for_each(|(v, pv)| *v -= factor * pv);
            }
        }
        let factor = reduced[enter];
        reduced
            .iter_mut()
            .zip(&pivot_row)
            .for_each(|(v, pv)| *v -= factor * pv);
        basis[p] = enter;
    }
    let mut x = vec![0.0; n];
    for (row, &j) in tableau.iter().zip(&basis) {
        if j < n {
            x[j] = row[width];
        }
    }
    (-reduced[width], x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn srv(success: f64, capacity_rps: Option<f64>) -> OracleServer {
        OracleServer {
            success,
            capacity_rps,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn without_limits_every_attempt_goes_to_the_best_server() {
        let servers = [srv(0.4, None), srv(0.9, None), srv(0.6, None)];
        let share = accepted_share(&servers, 10.0);
        assert!(close(share, 1.0 - 0.1f64.powi(3)), "{share}");
    }

    #[test]
    fn a_capped_best_server_is_kept_for_retries() {
        // 0.9 server capped at 5/s (0.5 attempts per id), 0.5 server unlimited. Per-id plans:
        // (weak, weak, strong) accepts 0.975 using 0.25 strong attempts; (weak, strong, strong)
        // accepts 0.995 using 0.55. Mixing them 1:5 uses exactly 0.5: 0.975 + 0.02 × 5/6.
        // Greedy (strong first) would only reach 0.925.
        let servers = [srv(0.9, Some(5.0)), srv(0.5, None)];
        let share = accepted_share(&servers, 10.0);
        assert!(close(share, 0.975 + 0.02 * 5.0 / 6.0), "{share}");
        assert!(close(greedy_share(&servers, 10.0), 0.925));
    }

    #[test]
    fn the_plan_is_the_split_behind_the_share() {
        // As above: every first attempt to the weak server (10/s), second attempts split 5:1
        // between the mixes, and the strong server's 5/s spent on later attempts only.
        let servers = [srv(0.9, Some(5.0)), srv(0.5, None)];
        let plan = plan(&servers, 10.0);
        assert!(
            close(plan[0][0], 0.0) && close(plan[1][0], 10.0),
            "{plan:?}"
        );
        assert!(close(plan[0].iter().sum::<f64>(), 5.0), "{plan:?}");
        let accepted: f64 = plan
            .iter()
            .zip(&servers)
            .map(|(rates, s)| rates.iter().sum::<f64>() * s.success)
            .sum();
        assert!(close(accepted / 10.0, accepted_share(&servers, 10.0)));
        // Each later class is fed only by the failures of the one before.
        for k in 1..3 {
            let sent: f64 = plan.iter().map(|r| r[k]).sum();
            let failed: f64 = plan
                .iter()
                .zip(&servers)
                .map(|(r, s)| r[k - 1] * (1.0 - s.success))
                .sum();
            assert!(sent <= failed + 1e-9, "class {k}: {sent} > {failed}");
        }
    }

    #[test]
    fn total_capacity_caps_the_share() {
        // One perfect server taking 4 attempts/s out of 10 ids/s.
        assert!(close(accepted_share(&[srv(1.0, Some(4.0))], 10.0), 0.4));
        assert_eq!(accepted_share(&[srv(0.9, Some(0.0))], 10.0), 0.0);
        assert_eq!(accepted_share(&[], 10.0), 0.0);
    }

    /// Round by round, fill attempts into servers in order of success up to their capacity: a
    /// feasible policy, so the optimum can't be below it.
    fn greedy_share(servers: &[OracleServer], rate: f64) -> f64 {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        order.sort_by(|&a, &b| servers[b].success.total_cmp(&servers[a].success));
        let mut left: Vec<f64> = servers
            .iter()
            .map(|s| s.capacity_rps.unwrap_or(f64::INFINITY))
            .collect();
        let (mut pending, mut accepted) = (rate, 0.0);
        for _ in 0..3 {
            let mut failed = 0.0;
            for &s in &order {
                let x = pending.min(left[s]);
                left[s] -= x;
                pending -= x;
                accepted += x * servers[s].success;
                failed += x * (1.0 - servers[s].success);
            }
            pending = failed;
        }
        accepted / rate
    }

    #[test]
    fn the_optimum_lies_between_greedy_and_the_unlimited_bound() {
        let mut rng = Rng::with_seed(77);
        for _ in 0..300 {
            let servers: Vec<OracleServer> = (0..rng.range_u64(1, 10))
                .map(|_| {
                    let cap = rng.chance(0.7).then(|| rng.range_f64(0.0, 8.0));
                    srv(rng.range_f64(0.33, 0.96), cap)
                })
                .collect();
            let rate = rng.range_f64(1.0, 30.0);
            let share = accepted_share(&servers, rate);
            let best = servers.iter().map(|s| s.success).fold(0.0, f64::max);
            assert!(
                share >= greedy_share(&servers, rate) - 1e-9,
                "{servers:?} {rate}"
            );
            assert!(
                share <= 1.0 - (1.0 - best).powi(3) + 1e-9,
                "{servers:?} {rate}"
            );
        }
    }

    #[test]
    fn sampling_covers_the_span() {
        assert_eq!(sample_times(5.0, 5.5), vec![5.25]);
        let t = sample_times(0.0, 10.0);
        assert_eq!((t.len(), t[0], t[10]), (11, 0.0, 10.0));
        assert_eq!(sample_times(0.0, 10_000.0).len(), MAX_SAMPLES);
    }

    #[test]
    fn averaging_over_time_weights_each_sample_equally() {
        // Capacity 10 for the first half of the samples, 0 for the rest.
        let share = accepted_share_over(0.0, 9.0, 10.0, |t| {
            vec![srv(1.0, Some(if t < 4.5 { 10.0 } else { 0.0 }))]
        });
        assert!(close(share, 0.5), "{share}");
    }
}
