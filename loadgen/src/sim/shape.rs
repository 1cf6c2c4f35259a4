//! The shapes a real rate limiter has, beyond its limit over time ([`crate::sim::limit`]): how the
//! window counts (fixed or sliding), whether a 429 says when to come back (`Retry-After`), what
//! pressing on costs (a penalty box), and whether the server is reachable at all (outages).
//! flaky3 and flaky4 draw these per server from the seed ([`Shape::draw`]), so a seed always gives
//! the same servers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::sim::limit::{SlidingWindow, PENALTY_DURATION, PENALTY_VIOLATIONS, PENALTY_WINDOW};

/// How a limit's window counts admitted requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// At most `limit` admissions in any one second (the last second, sliding).
    Sliding,
    /// At most `limit` admissions per whole second since the simulator started; the count starts
    /// over at each second boundary (so a burst across a boundary may admit twice the limit).
    Fixed,
}

/// A window of either kind.
#[derive(Debug, Clone)]
pub struct LimitWindow {
    kind: WindowKind,
    sliding: SlidingWindow,
    /// Fixed window: the second it counts and how many it admitted in it.
    fixed: (u64, u32),
}

impl LimitWindow {
    pub fn new(kind: WindowKind) -> LimitWindow {
        LimitWindow {
            kind,
            sliding: SlidingWindow::default(),
            fixed: (0, 0),
        }
    }

    /// Admits a request at `now` (`t_s` seconds after the simulator started) under `limit`.
    pub fn try_admit(&mut self, now: Instant, t_s: f64, limit: u32) -> bool {
        match self.kind {
            WindowKind::Sliding => self.sliding.try_admit(now, limit),
            WindowKind::Fixed => {
                let second = t_s.max(0.0).floor() as u64;
                if self.fixed.0 != second {
                    self.fixed = (second, 0);
                }
                if self.fixed.1 < limit {
                    self.fixed.1 += 1;
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// When over-limit requests put a server in its penalty box, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PenaltyRule {
    /// Over-limit requests that open the box.
    pub violations: u32,
    /// `true`: that many in a row (an admitted request starts the count over); `false`: that
    /// many within [`PENALTY_WINDOW`].
    pub in_a_row: bool,
    /// How long the box refuses everything.
    pub duration_ms: u64,
}

impl PenaltyRule {
    /// flaky3's rule: three 429s within a second, then two seconds of 429.
    pub const FLAKY3: PenaltyRule = PenaltyRule {
        violations: PENALTY_VIOLATIONS as u32,
        in_a_row: false,
        duration_ms: PENALTY_DURATION.as_millis() as u64,
    };
}

/// Counts violations under a [`PenaltyRule`] and keeps the box.
#[derive(Debug, Clone)]
pub struct PenaltyBox {
    rule: PenaltyRule,
    violations: VecDeque<Instant>,
    until: Option<Instant>,
}

impl PenaltyBox {
    pub fn new(rule: PenaltyRule) -> PenaltyBox {
        PenaltyBox {
            rule,
            violations: VecDeque::new(),
            until: None,
        }
    }

    /// Time left in the box, if in it.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// A request was admitted: a count of violations in a row starts over.
    pub fn admitted(&mut self) {
        if self.rule.in_a_row {
            self.violations.clear();
        }
    }

    /// Records a violation; returns true when it puts the server in the box.
    pub fn violation(&mut self, now: Instant) -> bool {
        if !self.rule.in_a_row {
            if let Some(horizon) = now.checked_sub(PENALTY_WINDOW) {
                while self.violations.front().is_some_and(|&t| t <= horizon) {
                    self.violations.pop_front();
                }
            }
        }
        self.violations.push_back(now);
        if self.violations.len() >= self.rule.violations.max(1) as usize {
            self.violations.clear();
            self.until = Some(now + Duration::from_millis(self.rule.duration_ms));
            return true;
        }
        false
    }
}

/// Times a server is unreachable: `down_s` seconds out of every `every_s`, from `phase_s` on.
/// Meanwhile it closes every connection without an answer (nothing reaches its ledger).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub every_s: f64,
    pub down_s: f64,
    pub phase_s: f64,
}

impl Outage {
    pub fn at(&self, t_s: f64) -> bool {
        (t_s - self.phase_s).rem_euclid(self.every_s) < self.down_s
    }
}

/// A server's limiter shape, besides its limit over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub window: WindowKind,
    /// Share of 429s that carry `Retry-After` (0, 0.5 or 1).
    pub retry_after_share: f64,
    pub penalty: Option<PenaltyRule>,
    pub outage: Option<Outage>,
}

impl Shape {
    /// flaky1 and flaky2: a sliding window, `Retry-After` always, no penalty, always reachable.
    pub const PLAIN: Shape = Shape {
        window: WindowKind::Sliding,
        retry_after_share: 1.0,
        penalty: None,
        outage: None,
    };

    /// flaky3: either window kind, `Retry-After` always or half the time, flaky3's penalty rule.
    /// flaky4 (`harder`): `Retry-After` always, half the time or never, a penalty for 3 to 5
    /// over-limit requests in a row lasting 1 to 2 s, and for a third of the servers an outage of
    /// 2 to 5 s every 40 to 90 s.
    pub fn draw(rng: &mut Rng, harder: bool) -> Shape {
        let window = if rng.chance(0.5) {
            WindowKind::Fixed
        } else {
            WindowKind::Sliding
        };
        let shares: &[f64] = if harder {
            &[0.0, 0.5, 1.0]
        } else {
            &[0.5, 1.0]
        };
        let retry_after_share = shares[rng.range_u64(0, shares.len() as u64 - 1) as usize];
        let penalty = if harder {
            PenaltyRule {
                violations: rng.range_u64(3, 5) as u32,
                in_a_row: true,
                duration_ms: rng.range_u64(1_000, 2_000),
            }
        } else {
            PenaltyRule::FLAKY3
        };
        let outage = (harder && rng.chance(1.0 / 3.0)).then(|| {
            let every_s = rng.range_f64(40.0, 90.0);
            Outage {
                every_s,
                down_s: rng.range_f64(2.0, 5.0),
                phase_s: rng.range_f64(0.0, every_s),
            }
        });
        Shape {
            window,
            retry_after_share,
            penalty: Some(penalty),
            outage,
        }
    }

    /// Whether the server is unreachable `t_s` seconds after the simulator started.
    pub fn unreachable(&self, t_s: f64) -> bool {
        self.outage.is_some_and(|o| o.at(t_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fixed_window_starts_over_at_each_second() {
        let t0 = Instant::now();
        let mut w = LimitWindow::new(WindowKind::Fixed);
        assert!(w.try_admit(t0, 0.8, 2));
        assert!(w.try_admit(t0 + ms(100), 0.9, 2));
        assert!(!w.try_admit(t0 + ms(150), 0.95, 2));
        // A new second: two more at once, though a sliding window would refuse them.
        assert!(w.try_admit(t0 + ms(200), 1.0, 2));
        assert!(w.try_admit(t0 + ms(210), 1.01, 2));
        assert!(!w.try_admit(t0 + ms(220), 1.02, 2));
    }

    #[test]
    fn in_a_row_penalties_start_over_after_an_admission() {
        let rule = PenaltyRule {
            violations: 3,
            in_a_row: true,
            duration_ms: 1_500,
        };
        let t0 = Instant::now();
        let mut p = PenaltyBox::new(rule);
        assert!(!p.violation(t0));
        assert!(!p.violation(t0 + ms(10)));
        p.admitted();
        assert!(!p.violation(t0 + ms(20)));
        assert!(!p.violation(t0 + ms(5_000)), "no window: still in a row");
        assert!(p.violation(t0 + ms(5_001)));
        assert_eq!(p.remaining(t0 + ms(5_001)), Some(ms(1_500)));
        assert_eq!(p.remaining(t0 + ms(6_501)), None);
    }

    #[test]
    fn flaky3s_penalty_box_opens_after_three_violations_within_a_second() {
        let t0 = Instant::now();
        let mut p = PenaltyBox::new(PenaltyRule::FLAKY3);
        assert!(!p.violation(t0));
        assert!(!p.violation(t0 + ms(300)));
        p.admitted();
        assert_eq!(p.remaining(t0 + ms(300)), None);
        assert!(
            p.violation(t0 + ms(600)),
            "admissions do not reset a windowed count"
        );
        assert_eq!(p.remaining(t0 + ms(600)), Some(PENALTY_DURATION));
        assert!(p.remaining(t0 + ms(2599)).is_some());
        assert_eq!(p.remaining(t0 + ms(2600)), None);
        let mut spread = PenaltyBox::new(PenaltyRule::FLAKY3);
        for i in 0..10 {
            assert!(!spread.violation(t0 + ms(600 * i)));
        }
    }

    #[test]
    fn outages_repeat_with_their_period() {
        let o = Outage {
            every_s: 60.0,
            down_s: 3.0,
            phase_s: 10.0,
        };
        assert!(!o.at(9.9));
        assert!(o.at(10.0) && o.at(12.9));
        assert!(!o.at(13.0));
        assert!(o.at(71.0));
    }

    #[test]
    fn drawn_shapes_cover_every_kind() {
        let mut rng = Rng::with_seed(3);
        let shapes: Vec<Shape> = (0..300).map(|_| Shape::draw(&mut rng, true)).collect();
        assert!(shapes.iter().any(|s| s.window == WindowKind::Fixed));
        assert!(shapes.iter().any(|s| s.window == WindowKind::Sliding));
        for share in [0.0, 0.5, 1.0] {
            assert!(shapes.iter().any(|s| s.retry_after_share == share));
        }
        let outages = shapes.iter().filter(|s| s.outage.is_some()).count();
        assert!((60..140).contains(&outages), "{outages}");
        for s in &shapes {
            let p = s.penalty.expect("flaky4 has a penalty");
            assert!((3..=5).contains(&p.violations) && (1_000..=2_000).contains(&p.duration_ms));
        }
    }
}
