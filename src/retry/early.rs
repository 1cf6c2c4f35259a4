//! The early-retry budget: how many attempts a worker may abandon for another backend when
//! `--per-try-timeout` fires before the first answer byte.

/// Early retries after `--per-try-timeout` allowed per worker, as linkerd's retry budget: each new
/// request deposits `percent / 100` of a token, each early retry takes a whole one, and
/// [`MIN_EARLY_RETRIES_PER_S`] more accrue every second so a quiet proxy may still retry. The
/// balance is capped at [`EARLY_RETRY_BURST`]. A retry after a timeout adds work while the
/// abandoned attempt still occupies its backend; capping retries to a share of requests keeps that
/// extra work bounded, so it cannot grow into a retry storm (Dean and Barroso, "The Tail at
/// Scale", CACM 2013; Envoy's and linkerd's retry budgets).
#[derive(Debug, Clone)]
pub(crate) struct EarlyRetryBudget {
    per_request: f64,
    tokens: f64,
    refilled_ms: u64,
}

/// Early retries a worker may make per second whatever its traffic.
pub(super) const MIN_EARLY_RETRIES_PER_S: f64 = 10.0;
/// Most early retries saved up.
pub(super) const EARLY_RETRY_BURST: f64 = 100.0;

impl EarlyRetryBudget {
    pub(crate) fn new(percent: u32, now_ms: u64) -> EarlyRetryBudget {
        EarlyRetryBudget {
            per_request: f64::from(percent) / 100.0,
            tokens: MIN_EARLY_RETRIES_PER_S,
            refilled_ms: now_ms,
        }
    }

    /// A new request arrived.
    pub(crate) fn deposit(&mut self) {
        self.tokens = (self.tokens + self.per_request).min(EARLY_RETRY_BURST);
    }

    /// Takes one early retry if the budget has one.
    pub(crate) fn try_take(&mut self, now_ms: u64) -> bool {
        let elapsed_s = now_ms.saturating_sub(self.refilled_ms) as f64 / 1000.0;
        self.refilled_ms = now_ms;
        self.tokens = (self.tokens + elapsed_s * MIN_EARLY_RETRIES_PER_S).min(EARLY_RETRY_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_retries_are_a_share_of_requests_plus_a_floor_per_second() {
        let mut b = EarlyRetryBudget::new(25, 1_000);
        // The floor is there from the start, then runs out.
        for i in 0..10 {
            assert!(b.try_take(1_000), "retry {i}");
        }
        assert!(!b.try_take(1_000));
        // 100 requests at 25% pay for 25 more retries.
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!((0..40).filter(|_| b.try_take(1_000)).count(), 25);
        // Half a second of the floor: 5 more.
        assert_eq!((0..20).filter(|_| b.try_take(1_500)).count(), 5);
        // A long quiet spell saves up to the burst, no more.
        assert_eq!(
            (0..1_000).filter(|_| b.try_take(1_000_000)).count(),
            EARLY_RETRY_BURST as usize
        );
    }

    #[test]
    fn a_zero_budget_allows_only_the_floor() {
        let mut b = EarlyRetryBudget::new(0, 0);
        for _ in 0..10_000 {
            b.deposit();
        }
        assert_eq!((0..100).filter(|_| b.try_take(0)).count(), 10);
    }
}
