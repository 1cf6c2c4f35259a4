//! How one simulated server answers a request: the profile's rules applied to the server's
//! parameters and runtime state (down flag, stall, rate-limit window, penalty box, counters).
//!
//! This is pure logic with the clock passed in, so every rule is unit-tested without sockets;
//! the event loop only carries out the [`Decision`] (answer now, after a timer, or after a
//! free worker).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::h1::{Method, Request};
use crate::id::{is_valid_id, Id, ID_LEN};
use crate::rng::Rng;
use crate::sim::profile::{
    Profile, RateLimit, ServerParams, ServerPatch, SLOW_FACTOR_MAX, SLOW_FACTOR_MIN,
};
use crate::sim::shape::{LimitWindow, PenaltyBox, PenaltyRule};

/// `Retry-After` seconds sent with a plain rate-limit 429.
pub const RETRY_AFTER_S: u64 = 1;

/// What to answer and when.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub status: u16,
    pub retry_after_s: Option<u64>,
    pub body: &'static [u8],
    /// Service time before the answer; 0 answers at once.
    pub delay_ms: u64,
    /// Whether the request goes through service (a worker, then `delay_ms`), as opposed to an
    /// immediate refusal.
    pub served: bool,
    /// The server's worker limit; `None` = unbounded.
    pub workers: Option<u32>,
    /// The ledger line this request adds: its id and whether it was accepted.
    pub attempt: Option<(Id, bool)>,
}

impl Decision {
    fn now(status: u16, body: &'static [u8]) -> Self {
        Decision {
            status,
            retry_after_s: None,
            body,
            delay_ms: 0,
            served: false,
            workers: None,
            attempt: None,
        }
    }
}

/// One server's mutable state, behind its mutex in the simulator.
#[derive(Debug)]
pub struct ServerState {
    pub params: ServerParams,
    pub down: bool,
    /// While `start <= now < end`, every answer waits for `end`.
    pub stall: Option<(Instant, Instant)>,
    window: LimitWindow,
    penalty: PenaltyBox,
    rng: Rng,
    status_counts: BTreeMap<u16, u64>,
    requests: u64,
    health_checks: u64,
}

impl ServerState {
    pub fn new(params: ServerParams, rng: Rng) -> Self {
        ServerState {
            window: LimitWindow::new(params.shape.window),
            penalty: PenaltyBox::new(params.shape.penalty.unwrap_or(PenaltyRule::FLAKY3)),
            params,
            down: false,
            stall: None,
            rng,
            status_counts: BTreeMap::new(),
            requests: 0,
            health_checks: 0,
        }
    }

    /// Decides the answer to `req`, arriving at `now`, `t_s` seconds after the simulator started.
    pub(crate) fn decide(
        &mut self,
        profile: Profile,
        req: &Request,
        now: Instant,
        t_s: f64,
    ) -> Decision {
        if req.path == "/health" && matches!(req.method, Method::Get | Method::Head) {
            self.health_checks += 1;
            return if self.down {
                Decision::now(503, b"down\n")
            } else {
                Decision::now(200, b"ok\n")
            };
        }
        self.requests += 1;
        let decision = if profile.is_flaky() {
            self.decide_attempt(req, now, t_s)
        } else if self.down {
            Decision::now(503, b"down\n")
        } else {
            self.serve(200, b"ok\n")
        };
        *self.status_counts.entry(decision.status).or_default() += 1;
        decision
    }

    fn decide_attempt(&mut self, req: &Request, now: Instant, t_s: f64) -> Decision {
        if req.path != "/" {
            return Decision::now(404, b"not found: the only endpoint is POST /\n");
        }
        if req.method != Method::Post {
            return Decision::now(405, b"method not allowed: the only endpoint is POST /\n");
        }
        if !is_valid_id(&req.body) {
            return Decision::now(
                400,
                b"the body must be exactly 24 ASCII alphanumeric characters\n",
            );
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&req.body);
        let mut decision = self.attempt(now, t_s);
        decision.attempt = Some((id, decision.status == 200));
        decision
    }

    /// The answer to a valid attempt: down, penalty box, rate limit, then the success draw.
    fn attempt(&mut self, now: Instant, t_s: f64) -> Decision {
        if self.down {
            Decision::now(503, b"down\n")
        } else if let Some(left) = self.penalty.remaining(now) {
            self.limited(left.as_secs_f64().ceil() as u64)
        } else if self.over_limit(now, t_s) {
            let boxed = self
                .params
                .shape
                .penalty
                .filter(|_| self.penalty.violation(now));
            match boxed {
                Some(rule) => self.limited(rule.duration_ms.div_ceil(1000)),
                None => self.limited(RETRY_AFTER_S),
            }
        } else {
            self.penalty.admitted();
            if self.rng.chance(self.params.success_rate) {
                self.serve(200, b"accepted\n")
            } else if self.rng.chance(0.5) {
                self.serve(500, b"internal error\n")
            } else {
                self.serve(503, b"unavailable\n")
            }
        }
    }

    /// What a valid attempt arriving at `now` (`t_s` after the simulator started) is answered,
    /// by the same rules and random stream as over HTTP: `None` while the server is unreachable
    /// (it closes the connection), else the status and `Retry-After` seconds. For replays of the
    /// simulator in simulated time.
    pub fn answer_attempt(&mut self, now: Instant, t_s: f64) -> Option<(u16, Option<u64>)> {
        if self.unreachable(t_s) {
            return None;
        }
        let d = self.attempt(now, t_s);
        Some((d.status, d.retry_after_s))
    }

    /// Whether the server is refusing everything for pressing on (its penalty box) at `now`.
    pub fn in_penalty_box(&self, now: Instant) -> bool {
        self.penalty.remaining(now).is_some()
    }

    /// Whether an attempt arriving at `now` would be admitted (not refused, not unreachable),
    /// without counting it: what a balancer that knew every limit would see. For replays.
    pub fn would_admit(&self, now: Instant, t_s: f64) -> bool {
        if self.down || self.unreachable(t_s) || self.in_penalty_box(now) {
            return false;
        }
        match self.params.rate_limit.at(t_s) {
            Some(limit) => self.window.clone().try_admit(now, t_s, limit),
            None => true,
        }
    }

    /// Whether the server is in one of its outages (it closes every connection).
    pub fn unreachable(&self, t_s: f64) -> bool {
        self.params.shape.unreachable(t_s)
    }

    /// A 429, carrying `Retry-After: retry_after_s` for the server's share of 429s.
    fn limited(&mut self, retry_after_s: u64) -> Decision {
        let share = self.params.shape.retry_after_share;
        let says = share >= 1.0 || (share > 0.0 && self.rng.chance(share));
        Decision {
            retry_after_s: says.then_some(retry_after_s.max(1)),
            ..Decision::now(429, b"rate limited\n")
        }
    }

    fn over_limit(&mut self, now: Instant, t_s: f64) -> bool {
        match self.params.rate_limit.at(t_s) {
            Some(limit) => !self.window.try_admit(now, t_s, limit),
            None => false,
        }
    }

    /// An answer after the service time (10–50× longer for the slow share).
    fn serve(&mut self, status: u16, body: &'static [u8]) -> Decision {
        let mut delay_ms = self.params.service_time_ms;
        if self.params.slow_share > 0.0 && self.rng.chance(self.params.slow_share) {
            let factor = self.rng.range_f64(SLOW_FACTOR_MIN, SLOW_FACTOR_MAX);
            delay_ms = (delay_ms as f64 * factor).round() as u64;
        }
        Decision {
            delay_ms,
            served: true,
            workers: self.params.workers,
            ..Decision::now(status, body)
        }
    }

    /// The end of the stall `now` falls in, if any.
    pub(crate) fn stalled_until(&self, now: Instant) -> Option<Instant> {
        self.stall
            .filter(|&(start, end)| start <= now && now < end)
            .map(|(_, end)| end)
    }

    /// Applies a validated patch.
    pub(crate) fn apply_patch(&mut self, patch: &ServerPatch, now: Instant) {
        patch.apply(&mut self.params);
        if let Some(down) = patch.down {
            self.down = down;
        }
        if let Some(stall_ms) = patch.stall_ms {
            let start = now + Duration::from_millis(patch.stall_after_ms.unwrap_or(0));
            self.stall = Some((start, start + Duration::from_millis(stall_ms)));
        }
    }

    /// Clears the counters (not the parameters).
    pub(crate) fn reset_counts(&mut self) {
        self.status_counts.clear();
        self.requests = 0;
        self.health_checks = 0;
    }

    pub(crate) fn report(&self, at: ReportContext) -> ServerReport {
        ServerReport {
            index: at.index,
            port: at.addr.port(),
            addr: at.addr.to_string(),
            profile: at.profile.name().to_string(),
            success_rate: self.params.success_rate,
            rate_limit_rps: self.params.rate_limit.at(at.t_s),
            rate_limit: self.params.rate_limit.clone(),
            in_penalty_box: self.in_penalty_box(at.now),
            service_time_ms: self.params.service_time_ms,
            workers: self.params.workers,
            slow_share: self.params.slow_share,
            down: self.down,
            stalled: self.stalled_until(at.now).is_some(),
            requests: self.requests,
            status: self
                .status_counts
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            health_checks: self.health_checks,
            queue_depth: at.queue_depth,
            active: at.active,
        }
    }
}

/// Where and when a report is taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReportContext {
    pub index: usize,
    pub addr: SocketAddr,
    pub profile: Profile,
    pub now: Instant,
    pub t_s: f64,
    pub queue_depth: u64,
    pub active: u64,
}

/// One server as `GET /servers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    pub index: usize,
    pub port: u16,
    pub addr: String,
    pub profile: String,
    pub success_rate: f64,
    /// The limit in force now, requests per sliding second; `null` = unlimited.
    pub rate_limit_rps: Option<u32>,
    /// How the limit is defined (fixed, or flaky3's function of time).
    pub rate_limit: RateLimit,
    pub in_penalty_box: bool,
    pub service_time_ms: u64,
    /// Concurrent requests in service; `null` = unbounded.
    pub workers: Option<u32>,
    pub slow_share: f64,
    pub down: bool,
    pub stalled: bool,
    /// Requests other than health checks.
    pub requests: u64,
    /// Answers by status code (health checks excluded).
    pub status: BTreeMap<String, u64>,
    pub health_checks: u64,
    /// Requests waiting for a worker.
    pub queue_depth: u64,
    /// Requests in service.
    pub active: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::limit::PENALTY_DURATION;
    use crate::sim::profile::{ServerParams, SLOW_SHARE};
    use crate::sim::shape::{Outage, Shape};

    fn post(body: &[u8]) -> Request {
        Request {
            body: body.to_vec(),
            ..Request::new(Method::Post, "/")
        }
    }

    fn get(path: &str) -> Request {
        Request::new(Method::Get, path)
    }

    const ID: &[u8] = b"abcdefghijklmnopqrstuvwx";

    fn flaky(success_rate: f64, rate_limit: RateLimit) -> ServerState {
        let params = ServerParams {
            success_rate,
            service_time_ms: 10,
            workers: None,
            slow_share: 0.0,
            rate_limit,
            shape: Shape::PLAIN,
        };
        ServerState::new(params, Rng::with_seed(1))
    }

    #[test]
    fn flaky_servers_refuse_bad_ids_without_an_attempt() {
        let mut s = flaky(1.0, RateLimit::None);
        let now = Instant::now();
        for body in [&b"short"[..], b"abcdefghijklmnopqrstuvw!", b""] {
            let d = s.decide(Profile::Flaky1, &post(body), now, 0.0);
            assert_eq!((d.status, d.attempt), (400, None));
        }
        assert_eq!(s.decide(Profile::Flaky1, &get("/"), now, 0.0).status, 405);
        assert_eq!(s.decide(Profile::Flaky1, &get("/x"), now, 0.0).status, 404);
        let d = s.decide(Profile::Flaky1, &post(ID), now, 0.0);
        assert_eq!((d.status, d.delay_ms), (200, 10));
        assert_eq!(d.attempt.map(|(_, ok)| ok), Some(true));
    }

    #[test]
    fn failures_follow_the_success_rate_and_are_500_or_503() {
        let mut s = flaky(0.7, RateLimit::None);
        let now = Instant::now();
        let mut counts = BTreeMap::new();
        for _ in 0..20_000 {
            *counts
                .entry(s.decide(Profile::Flaky1, &post(ID), now, 0.0).status)
                .or_insert(0) += 1;
        }
        assert_eq!(
            counts.keys().copied().collect::<Vec<u16>>(),
            vec![200, 500, 503]
        );
        let ok = counts[&200];
        assert!((13_700..14_300).contains(&ok), "{counts:?}");
    }

    #[test]
    fn over_the_limit_answers_429_immediately_and_still_counts_as_an_attempt() {
        let mut s = flaky(1.0, RateLimit::Fixed { rps: 2 });
        let now = Instant::now();
        let statuses: Vec<u16> = (0..3)
            .map(|_| s.decide(Profile::Flaky2, &post(ID), now, 0.0).status)
            .collect();
        assert_eq!(statuses, vec![200, 200, 429]);
        let d = s.decide(Profile::Flaky2, &post(ID), now, 0.0);
        assert_eq!((d.delay_ms, d.retry_after_s), (0, Some(RETRY_AFTER_S)));
        assert_eq!(d.attempt.map(|(_, ok)| ok), Some(false));
    }

    #[test]
    fn repeated_violations_open_the_penalty_box_in_flaky3() {
        let mut s = flaky(1.0, RateLimit::Fixed { rps: 1 });
        s.params.shape.penalty = Some(PenaltyRule::FLAKY3);
        let t0 = Instant::now();
        assert_eq!(s.decide(Profile::Flaky3, &post(ID), t0, 0.0).status, 200);
        for _ in 0..3 {
            assert_eq!(s.decide(Profile::Flaky3, &post(ID), t0, 0.0).status, 429);
        }
        // A second later the window has room again, but the box still refuses.
        let later = t0 + Duration::from_millis(1500);
        let d = s.decide(Profile::Flaky3, &post(ID), later, 1.5);
        assert_eq!((d.status, d.retry_after_s), (429, Some(1)));
        let after = t0 + PENALTY_DURATION + Duration::from_millis(1);
        assert_eq!(s.decide(Profile::Flaky3, &post(ID), after, 2.0).status, 200);
    }

    #[test]
    fn a_server_may_leave_retry_after_out_and_be_unreachable_for_a_while() {
        let mut s = flaky(1.0, RateLimit::Fixed { rps: 1 });
        s.params.shape.retry_after_share = 0.0;
        s.params.shape.outage = Some(Outage {
            every_s: 60.0,
            down_s: 3.0,
            phase_s: 10.0,
        });
        let t0 = Instant::now();
        assert_eq!(s.answer_attempt(t0, 0.0), Some((200, None)));
        assert_eq!(s.answer_attempt(t0, 0.0), Some((429, None)));
        assert_eq!(s.answer_attempt(t0, 11.0), None, "unreachable");
        assert!(s.unreachable(12.9) && !s.unreachable(13.0));
    }

    #[test]
    fn down_servers_fail_health_checks_and_requests() {
        let mut s = flaky(1.0, RateLimit::None);
        let now = Instant::now();
        assert_eq!(
            s.decide(Profile::Flaky1, &get("/health"), now, 0.0).status,
            200
        );
        s.apply_patch(
            &ServerPatch {
                down: Some(true),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            s.decide(Profile::Flaky1, &get("/health"), now, 0.0).status,
            503
        );
        let d = s.decide(Profile::Flaky1, &post(ID), now, 0.0);
        assert_eq!((d.status, d.attempt.map(|(_, ok)| ok)), (503, Some(false)));
        assert_eq!(
            s.decide(Profile::Uniform, &get("/work"), now, 0.0).status,
            503
        );
    }

    #[test]
    fn heavytail_slows_about_five_percent_by_ten_to_fifty_times() {
        let mut rng = Rng::with_seed(4);
        let params = ServerParams::draw(Profile::Heavytail, &mut rng, 10, 4);
        let mut s = ServerState::new(params, rng);
        let now = Instant::now();
        let delays: Vec<u64> = (0..20_000)
            .map(|_| {
                s.decide(Profile::Heavytail, &get("/work"), now, 0.0)
                    .delay_ms
            })
            .collect();
        let slow = delays.iter().filter(|&&d| d > 10).count();
        let expected = (20_000.0 * SLOW_SHARE) as usize;
        assert!(slow.abs_diff(expected) < 150, "{slow}");
        assert!(delays.iter().all(|&d| d == 10 || (100..=500).contains(&d)));
    }

    #[test]
    fn stalls_cover_their_window_only() {
        let mut s = flaky(1.0, RateLimit::None);
        let t0 = Instant::now();
        let patch = ServerPatch {
            stall_ms: Some(1000),
            stall_after_ms: Some(500),
            ..Default::default()
        };
        s.apply_patch(&patch, t0);
        let ms = Duration::from_millis;
        assert_eq!(s.stalled_until(t0), None);
        assert_eq!(s.stalled_until(t0 + ms(600)), Some(t0 + ms(1500)));
        assert_eq!(s.stalled_until(t0 + ms(1500)), None);
    }
}
