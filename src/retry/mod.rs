//! When a failed attempt may be sent again (`--retry-on`, `--retry-methods`).
//!
//! A failed connect is always safe to retry: the backend never saw the request. Anything else the
//! backend may have acted on, so by default only idempotent methods (RFC 9110 section 9.2.2) are
//! retried, and only on gateway errors (502, 503, 504), as nginx's `proxy_next_upstream` and
//! HAProxy's `retry-on` default to. The flaky-servers challenge (README) wants everything retried:
//! `--retry-on connect,timeout,5xx,429 --retry-methods any`.

use crate::http::head::Method;

pub(crate) mod budget;
mod early;
pub(crate) use early::EarlyRetryBudget;

/// What ended an attempt, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The connection could not be made.
    Connect,
    /// No answer within the response timeout.
    Timeout,
    /// The connection broke or the answer was not HTTP.
    Broken,
    /// The backend answered with this status.
    Status(u16),
}

/// Which failed attempts are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub timeout: bool,
    /// Any 5xx (not only gateway errors).
    pub any_5xx: bool,
    /// 502, 503 and 504.
    pub gateway: bool,
    pub too_many_requests: bool,
    /// Broken connections and garbage answers.
    pub broken: bool,
    /// Retry non-idempotent methods too.
    pub any_method: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: false,
            any_5xx: false,
            gateway: true,
            too_many_requests: false,
            broken: false,
            any_method: false,
        }
    }
}

impl RetryPolicy {
    /// Parses `--retry-on` (a comma list of `connect`, `timeout`, `broken`, `5xx`, `gateway`, `429`,
    /// or `none`) and `--retry-methods` (`idempotent` or `any`).
    pub fn parse(on: &str, methods: &str) -> Result<RetryPolicy, String> {
        let mut p = RetryPolicy {
            gateway: false,
            ..RetryPolicy::default()
        };
        for item in on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "connect" | "none" => {}
                "timeout" => p.timeout = true,
                "broken" => p.broken = true,
                "5xx" => p.any_5xx = true,
                "gateway" => p.gateway = true,
                "429" => p.too_many_requests = true,
                other => {
                    return Err(format!(
                        "unknown --retry-on item {other:?} (expected connect, timeout, broken, 5xx, gateway, 429)"
                    ))
                }
            }
        }
        p.any_method = match methods {
            "idempotent" => false,
            "any" => true,
            other => {
                return Err(format!(
                    "--retry-methods must be idempotent or any, not {other:?}"
                ))
            }
        };
        Ok(p)
    }

    /// Whether an attempt that ended in `outcome` may be sent again for a `method` request.
    pub fn allows(&self, outcome: Outcome, method: Method) -> bool {
        if outcome == Outcome::Connect {
            return true;
        }
        if !self.allows_method(method) {
            return false;
        }
        match outcome {
            Outcome::Connect => true,
            Outcome::Timeout => self.timeout,
            Outcome::Broken => self.broken,
            Outcome::Status(429) => self.too_many_requests,
            Outcome::Status(s @ 500..=599) => {
                self.any_5xx || (self.gateway && matches!(s, 502..=504))
            }
            Outcome::Status(_) => false,
        }
    }

    /// Whether a `method` request the backend may have acted on may be sent again.
    pub fn allows_method(&self, method: Method) -> bool {
        self.any_method || method.is_idempotent()
    }

    /// Whether some status answer could ever be retried (then responses are inspected before they
    /// are forwarded).
    pub fn retries_statuses(&self) -> bool {
        self.any_5xx || self.gateway || self.too_many_requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_retry_connects_always_and_gateway_errors_for_idempotent_methods() {
        let p = RetryPolicy::default();
        assert!(p.allows(Outcome::Connect, Method::Post));
        assert!(p.allows(Outcome::Status(503), Method::Get));
        assert!(!p.allows(Outcome::Status(503), Method::Post));
        assert!(!p.allows(Outcome::Status(500), Method::Get));
        assert!(!p.allows(Outcome::Status(429), Method::Get));
        assert!(!p.allows(Outcome::Timeout, Method::Get));
        assert!(!p.allows(Outcome::Status(404), Method::Get));
    }

    #[test]
    fn the_challenge_policy_retries_everything() {
        let p = RetryPolicy::parse("connect,timeout,5xx,429", "any").unwrap();
        for outcome in [
            Outcome::Connect,
            Outcome::Timeout,
            Outcome::Status(500),
            Outcome::Status(503),
            Outcome::Status(429),
        ] {
            assert!(p.allows(outcome, Method::Post), "{outcome:?}");
        }
        assert!(!p.allows(Outcome::Status(400), Method::Post));
        assert!(
            !p.allows(Outcome::Broken, Method::Post),
            "broken is its own item"
        );
    }

    #[test]
    fn bad_items_are_named() {
        assert!(RetryPolicy::parse("connect,teapot", "any")
            .unwrap_err()
            .contains("teapot"));
        assert!(RetryPolicy::parse("connect", "some")
            .unwrap_err()
            .contains("idempotent or any"));
        assert!(!RetryPolicy::parse("none", "idempotent")
            .unwrap()
            .retries_statuses());
    }
}
