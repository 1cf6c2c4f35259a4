//! Simulator profiles and the per-server parameters they draw from the seed.
//!
//! Every server's parameters come from its own fork of the seeded generator, so a seed always
//! produces the same servers, and tests and benchmarks can change any parameter at runtime
//! with a [`ServerPatch`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::rng::Rng;
use crate::sim::limit::DynamicLimit;
use crate::sim::shape::Shape;

/// Success probability of a flaky server is drawn uniformly from `[SUCCESS_MIN, SUCCESS_MAX)`.
pub const SUCCESS_MIN: f64 = 0.33;
pub const SUCCESS_MAX: f64 = 0.96;
/// flaky2's fixed rate limit is drawn uniformly from `FIXED_LIMIT_MIN_RPS..=FIXED_LIMIT_MAX_RPS`.
pub const FIXED_LIMIT_MIN_RPS: u32 = 2;
pub const FIXED_LIMIT_MAX_RPS: u32 = 6;
/// Default service time of every profile: a worker that takes 10 ms per request.
pub const DEFAULT_SERVICE_TIME_MS: u64 = 10;
/// Concurrent requests a heavytail server works on; the rest wait in its queue.
pub const DEFAULT_WORKERS_PER_SERVER: u32 = 4;
/// Share of heavytail requests that are slow, and the range of their slowdown factor.
pub const SLOW_SHARE: f64 = 0.05;
pub const SLOW_FACTOR_MIN: f64 = 10.0;
pub const SLOW_FACTOR_MAX: f64 = 50.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Constant per-server failure probability (the challenge's configuration 1).
    Flaky1,
    /// flaky1 plus a fixed per-server rate limit (configuration 2).
    Flaky2,
    /// flaky1 plus time-varying limits (drifting and jumping), fixed or sliding windows,
    /// `Retry-After` not always sent, and a penalty box (configuration 3).
    Flaky3,
    /// flaky3 harder: deeper steps, `Retry-After` sometimes never sent, a penalty for pressing on
    /// (several over-limit requests in a row), and servers unreachable for a few seconds.
    Flaky4,
    /// Always 200 after a fixed service time.
    Uniform,
    /// Like uniform, but 5% of requests are 10–50× slower and workers are bounded: a heavy tail
    /// that backs servers up under round robin.
    Heavytail,
}

impl Profile {
    pub const ALL: [Profile; 6] = [
        Profile::Flaky1,
        Profile::Flaky2,
        Profile::Flaky3,
        Profile::Flaky4,
        Profile::Uniform,
        Profile::Heavytail,
    ];

    /// The flaky profiles validate ids and keep the ledger.
    pub fn is_flaky(self) -> bool {
        matches!(
            self,
            Profile::Flaky1 | Profile::Flaky2 | Profile::Flaky3 | Profile::Flaky4
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Flaky1 => "flaky1",
            Profile::Flaky2 => "flaky2",
            Profile::Flaky3 => "flaky3",
            Profile::Flaky4 => "flaky4",
            Profile::Uniform => "uniform",
            Profile::Heavytail => "heavytail",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown profile {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A server's rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RateLimit {
    None,
    Fixed { rps: u32 },
    Dynamic(DynamicLimit),
}

impl RateLimit {
    /// The limit in force `t_s` seconds after the simulator started.
    pub fn at(&self, t_s: f64) -> Option<u32> {
        match self {
            RateLimit::None => None,
            RateLimit::Fixed { rps } => Some(*rps),
            RateLimit::Dynamic(d) => Some(d.limit_at(t_s)),
        }
    }
}

/// Everything that decides how one server answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerParams {
    /// Probability that an attempt is accepted (1.0 for uniform and heavytail).
    pub success_rate: f64,
    pub service_time_ms: u64,
    /// Concurrent requests in service; `None` = unbounded.
    pub workers: Option<u32>,
    /// Share of requests that take 10–50× the service time.
    pub slow_share: f64,
    pub rate_limit: RateLimit,
    /// Window kind, `Retry-After`, penalty box and outages ([`Shape::PLAIN`] but for flaky3 and
    /// flaky4).
    pub shape: Shape,
}

impl ServerParams {
    /// Draws one server's parameters for `profile`.
    pub fn draw(profile: Profile, rng: &mut Rng, service_time_ms: u64, workers: u32) -> Self {
        let success_rate = if profile.is_flaky() {
            rng.range_f64(SUCCESS_MIN, SUCCESS_MAX)
        } else {
            1.0
        };
        let rate_limit = match profile {
            Profile::Flaky2 => RateLimit::Fixed {
                rps: rng.range_u64(
                    u64::from(FIXED_LIMIT_MIN_RPS),
                    u64::from(FIXED_LIMIT_MAX_RPS),
                ) as u32,
            },
            Profile::Flaky3 => RateLimit::Dynamic(DynamicLimit::draw(rng, false)),
            Profile::Flaky4 => RateLimit::Dynamic(DynamicLimit::draw(rng, true)),
            _ => RateLimit::None,
        };
        let shape = match profile {
            Profile::Flaky3 => Shape::draw(rng, false),
            Profile::Flaky4 => Shape::draw(rng, true),
            _ => Shape::PLAIN,
        };
        let heavy = profile == Profile::Heavytail;
        ServerParams {
            success_rate,
            service_time_ms,
            workers: heavy.then_some(workers.max(1)),
            slow_share: if heavy { SLOW_SHARE } else { 0.0 },
            rate_limit,
            shape,
        }
    }
}

/// A runtime change to one server; absent fields stay as they are.
///
/// JSON: `{"success_rate":0.5,"service_time_ms":200,"down":true,"rate_limit_rps":5}` (any
/// subset). `"rate_limit_rps": null` and `"workers": null` remove the limit; `stall_ms` makes the
/// server hold every answer until that many milliseconds from now (or from `stall_after_ms`
/// from now), like a stop-the-world pause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<bool>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limit_rps: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub workers: Option<Option<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_after_ms: Option<u64>,
}

/// Tells a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl ServerPatch {
    /// Checks the values before anything is changed.
    pub fn validate(&self) -> Result<(), String> {
        let share = |name: &str, v: Option<f64>| match v {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                Err(format!("{name} must be between 0 and 1, got {x}"))
            }
            _ => Ok(()),
        };
        share("success_rate", self.success_rate)?;
        share("slow_share", self.slow_share)?;
        if self.workers == Some(Some(0)) {
            return Err("workers must be at least 1 (null for unbounded)".into());
        }
        if self.stall_after_ms.is_some() && self.stall_ms.is_none() {
            return Err("stall_after_ms needs stall_ms".into());
        }
        Ok(())
    }

    /// Applies the parameter fields (`down` and the stall are runtime state, applied by the
    /// server that owns them).
    pub fn apply(&self, params: &mut ServerParams) {
        if let Some(x) = self.success_rate {
            params.success_rate = x;
        }
        if let Some(x) = self.service_time_ms {
            params.service_time_ms = x;
        }
        if let Some(limit) = self.rate_limit_rps {
            params.rate_limit = match limit {
                Some(rps) => RateLimit::Fixed { rps },
                None => RateLimit::None,
            };
        }
        if let Some(workers) = self.workers {
            params.workers = workers;
        }
        if let Some(x) = self.slow_share {
            params.slow_share = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_by_name() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
        }
        let err = "flaky9".parse::<Profile>().unwrap_err();
        assert!(err.contains("flaky1, flaky2"), "{err}");
    }

    #[test]
    fn flaky_parameters_come_from_the_documented_ranges() {
        let mut rng = Rng::with_seed(1);
        for _ in 0..1000 {
            let p = ServerParams::draw(Profile::Flaky2, &mut rng, 10, 4);
            assert!((SUCCESS_MIN..SUCCESS_MAX).contains(&p.success_rate));
            let Some(rps) = p.rate_limit.at(0.0) else {
                panic!("flaky2 has a limit")
            };
            assert!((FIXED_LIMIT_MIN_RPS..=FIXED_LIMIT_MAX_RPS).contains(&rps));
            assert_eq!(p.workers, None);
        }
        let p = ServerParams::draw(Profile::Heavytail, &mut rng, 10, 4);
        assert_eq!(
            (p.success_rate, p.workers, p.slow_share),
            (1.0, Some(4), SLOW_SHARE)
        );
    }

    #[test]
    fn patches_tell_null_from_absent() {
        let p: ServerPatch = serde_json::from_str(r#"{"rate_limit_rps":null}"#).unwrap();
        assert_eq!(p.rate_limit_rps, Some(None));
        let p: ServerPatch = serde_json::from_str(r#"{"down":true}"#).unwrap();
        assert_eq!((p.rate_limit_rps, p.down), (None, Some(true)));
        assert!(serde_json::from_str::<ServerPatch>(r#"{"sucess_rate":1}"#).is_err());
    }

    #[test]
    fn patches_change_only_their_fields_and_reject_bad_values() {
        let mut rng = Rng::with_seed(2);
        let mut params = ServerParams::draw(Profile::Flaky3, &mut rng, 10, 4);
        let before = params.clone();
        let patch = ServerPatch {
            rate_limit_rps: Some(Some(5)),
            ..Default::default()
        };
        patch.apply(&mut params);
        assert_eq!(params.rate_limit, RateLimit::Fixed { rps: 5 });
        assert_eq!(params.success_rate, before.success_rate);
        let bad = ServerPatch {
            success_rate: Some(1.5),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
