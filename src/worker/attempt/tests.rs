use std::sync::Arc;

use crossbeam_channel::Receiver;
use mio::{Poll, Token, Waker};

use super::*;
use crate::backend::Backend;
use crate::retry::budget::Reserve;
use crate::retry::RetryPolicy;
use crate::strategy::StrategyKind;

const ID: u64 = 0xfeed;
const NOW_MS: u64 = 10_000;

/// One worker's settling parts around a table of two backends; attempts go to the first.
struct Harness {
    cfg: ProxyConfig,
    table: BackendTable,
    feedback: Feedback,
    budget: IdBudget,
    early_retries: EarlyRetryBudget,
    metrics: WorkerMetrics,
    control: ControlLink,
    from_workers: Receiver<ControlMsg>,
    _poll: Poll,
    now: Now,
}

impl Harness {
    fn new(cfg: ProxyConfig) -> Harness {
        let addr = "127.0.0.1:1".parse().unwrap();
        let backends = vec![Backend::new(1, addr, 1), Backend::new(2, addr, 1)];
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, from_workers) = crossbeam_channel::unbounded();
        Harness {
            early_retries: EarlyRetryBudget::new(cfg.per_try_budget_percent, NOW_MS),
            cfg,
            table: BackendTable::new(1, backends, StrategyKind::RoundRobin),
            feedback: Feedback::default(),
            budget: IdBudget::new(64, 600),
            metrics: WorkerMetrics::new(0),
            control: ControlLink::new(tx, waker),
            from_workers,
            _poll: poll,
            now: Now {
                ms: NOW_MS,
                us: NOW_MS * 1000,
            },
        }
    }

    /// How many times the control thread was asked to eject the first backend since last asked.
    fn ejections_asked(&self) -> usize {
        self.from_workers
            .try_iter()
            .filter(|m| matches!(m, ControlMsg::Failing(1)))
            .count()
    }

    fn http() -> Harness {
        Harness::new(ProxyConfig::default())
    }

    fn settle(&mut self, req: &RequestFacts, end: End) -> Verdict {
        let backend = AttemptBackend::in_table(&self.table, 1);
        Settle {
            cfg: &self.cfg,
            table: &self.table,
            feedback: self.feedback,
            budget: &self.budget,
            early_retries: &mut self.early_retries,
            metrics: &mut self.metrics,
            control: &self.control,
            now: self.now,
        }
        .settle(req, backend, end)
    }

    fn stats(&self) -> &BackendStats {
        &self.table.backends[0].stats
    }

    fn counts(&mut self) -> &crate::metrics::BackendCounts {
        self.metrics.backend(1, 0)
    }

    /// Makes `n` attempts for [`ID`] in the shared budget.
    fn reserve(&self, n: u8) {
        for _ in 0..n {
            assert!(matches!(
                self.budget
                    .reserve(ID, self.cfg.max_attempts, self.now.secs()),
                Reserve::Granted(_)
            ));
        }
    }
}

/// A first attempt of a GET, whole and fully sent, that took 2 ms so far.
fn get() -> RequestFacts {
    RequestFacts {
        method: Method::Get,
        attempts: 1,
        id: None,
        whole: true,
        fully_sent: true,
        reused_conn: false,
        stale_retried: false,
        no_answer_byte: true,
        started_us: NOW_MS * 1000 - 2_000,
    }
}

fn answered(status: u16) -> End {
    End::Answered {
        status,
        retry_after_s: None,
    }
}

const PER_TRY: End = End::PerTryExpired {
    untried_candidate: true,
};

#[test]
fn a_failed_connect_is_retried_on_another_backend_while_attempts_remain() {
    let mut h = Harness::http();
    let post = RequestFacts {
        method: Method::Post,
        ..get()
    };
    assert_eq!(
        h.settle(&post, End::Failed(Failure::Connect)),
        Verdict::Retry,
        "nothing reached the backend: safe for any method"
    );
    assert_eq!(h.counts().connect_errors, 1);
}

#[test]
fn a_failed_connect_is_answered_once_attempts_are_exhausted() {
    let mut h = Harness::http();
    let last = RequestFacts {
        attempts: h.cfg.max_attempts,
        ..get()
    };
    assert_eq!(
        h.settle(&last, End::Failed(Failure::Connect)),
        Verdict::Final
    );
}

#[test]
fn a_failed_connect_gives_its_attempt_back_to_the_request_ids_budget() {
    let mut h = Harness::http();
    h.reserve(1);
    let req = RequestFacts {
        id: Some(ID),
        ..get()
    };
    h.settle(&req, End::Failed(Failure::Connect));
    assert_eq!(h.budget.attempts(ID, h.now.secs()), 0);
}

#[test]
fn a_gateway_error_is_retried_only_for_an_idempotent_method() {
    let mut h = Harness::http();
    assert_eq!(h.settle(&get(), answered(503)), Verdict::Retry);
    assert_eq!(
        h.metrics.current.client_responses[5], 0,
        "a retried answer does not reach the client"
    );
    let post = RequestFacts {
        method: Method::Post,
        ..get()
    };
    assert_eq!(h.settle(&post, answered(503)), Verdict::Final);
    assert_eq!(h.metrics.current.client_responses[5], 1);
    assert_eq!(h.counts().responses[5], 2, "both answers counted");
}

#[test]
fn a_request_no_longer_held_whole_is_not_sent_again() {
    let mut h = Harness::http();
    let streamed = RequestFacts {
        whole: false,
        ..get()
    };
    assert_eq!(h.settle(&streamed, answered(502)), Verdict::Final);
    assert_eq!(
        h.settle(&streamed, End::Failed(Failure::Connect)),
        Verdict::Final
    );
}

#[test]
fn a_request_id_whose_attempts_are_spent_is_not_sent_again_by_any_worker() {
    let mut h = Harness::http();
    let req = RequestFacts {
        id: Some(ID),
        ..get()
    };
    h.reserve(1);
    assert_eq!(h.settle(&req, answered(503)), Verdict::Retry);
    // Another worker (or another connection) spent the id's other attempts meanwhile.
    h.reserve(h.cfg.max_attempts - 1);
    assert_eq!(h.settle(&req, answered(503)), Verdict::Final);
}

#[test]
fn a_2xx_answer_marks_the_request_id_accepted() {
    let mut h = Harness::http();
    h.reserve(1);
    let req = RequestFacts {
        id: Some(ID),
        ..get()
    };
    assert_eq!(h.settle(&req, answered(201)), Verdict::Final);
    assert_eq!(h.metrics.current.client_responses[2], 1);
    assert_eq!(
        h.budget.reserve(ID, h.cfg.max_attempts, h.now.secs()),
        Reserve::Accepted
    );
}

#[test]
fn the_eject_after_th_failure_in_a_row_asks_the_control_thread_to_eject_once() {
    let mut h = Harness::new(ProxyConfig {
        eject_after: 3,
        ..ProxyConfig::default()
    });
    for _ in 0..4 {
        h.settle(&get(), End::Failed(Failure::Broken));
    }
    assert_eq!(h.ejections_asked(), 1);
    h.settle(&get(), answered(200));
    for _ in 0..2 {
        h.settle(&get(), End::Failed(Failure::Timeout));
    }
    assert_eq!(h.ejections_asked(), 0, "a success starts the count again");
    h.settle(&get(), End::Failed(Failure::Garbage));
    assert_eq!(h.ejections_asked(), 1);
}

#[test]
fn a_strategy_that_learns_is_not_ejected_for_it_unless_asked() {
    // Without --eject-after, bandit backs off by itself; with it, it is ejected as well.
    for (eject_under_learning, asked) in [(false, 0), (true, 1)] {
        let mut h = Harness::new(ProxyConfig {
            eject_after: 2,
            eject_under_learning,
            ..ProxyConfig::default()
        });
        h.feedback.success = true;
        for _ in 0..3 {
            h.settle(&get(), End::Failed(Failure::Connect));
        }
        assert_eq!(h.ejections_asked(), asked, "{eject_under_learning}");
        assert!(h.stats().learned.blocked_until_ms() > NOW_MS);
    }
}

#[test]
fn only_a_strategy_that_learns_is_told_successes_failures_and_rate_limits() {
    let mut h = Harness::http();
    h.settle(&get(), answered(200));
    h.settle(&get(), End::Failed(Failure::Broken));
    h.settle(&get(), answered(429));
    assert_eq!(h.stats().learned.beta(), (1.0, 1.0), "the prior only");
    assert_eq!(h.stats().learned.limit(), None);

    h.feedback.success = true;
    h.settle(&get(), answered(200));
    h.settle(&get(), End::Failed(Failure::Broken));
    h.settle(&get(), answered(500));
    let (successes, failures) = h.stats().learned.beta();
    assert!(successes > 1.9 && failures > 2.9, "{successes} {failures}");
    h.settle(&get(), answered(429));
    assert!(h.stats().learned.limit().is_some());
}

#[test]
fn latencies_are_recorded_only_when_someone_reads_them() {
    let mut h = Harness::http();
    h.settle(&get(), answered(200));
    assert_eq!(h.stats().latency_us(), 0.0);
    h.feedback.latency = true;
    h.settle(&get(), answered(200));
    assert_eq!(h.stats().latency_us(), 2_000.0);
    h.settle(&get(), End::Failed(Failure::Timeout));
    assert_eq!(
        h.stats().latency_us(),
        crate::backend::stats::FAILURE_PENALTY_US
    );
}

#[test]
fn a_per_try_expiry_is_retried_early_while_the_early_retry_budget_has_room() {
    let mut h = Harness::http();
    h.feedback.latency = true;
    assert_eq!(h.settle(&get(), PER_TRY), Verdict::Retry);
    assert_eq!(h.metrics.current.early_retries, 1);
    assert_eq!(
        h.stats().latency_us(),
        2_000.0,
        "the wait so far is a lower bound of the backend's latency"
    );
    assert_eq!(h.counts().failures(), 0, "not a failure of the backend");
}

#[test]
fn a_per_try_expiry_keeps_waiting_once_the_early_retry_budget_is_spent() {
    let mut h = Harness::http();
    while h.early_retries.try_take(NOW_MS) {}
    assert_eq!(h.settle(&get(), PER_TRY), Verdict::KeepWaiting);
    assert_eq!(h.metrics.current.early_retries, 0);
}

#[test]
fn a_per_try_expiry_keeps_waiting_unless_an_untried_backend_and_the_whole_request_are_there() {
    let mut h = Harness::http();
    let everyone_tried = End::PerTryExpired {
        untried_candidate: false,
    };
    assert_eq!(h.settle(&get(), everyone_tried), Verdict::KeepWaiting);
    let still_sending = RequestFacts {
        fully_sent: false,
        ..get()
    };
    assert_eq!(h.settle(&still_sending, PER_TRY), Verdict::KeepWaiting);
    let post = RequestFacts {
        method: Method::Post,
        ..get()
    };
    assert_eq!(h.settle(&post, PER_TRY), Verdict::KeepWaiting);
    let last = RequestFacts {
        attempts: h.cfg.max_attempts,
        ..get()
    };
    assert_eq!(h.settle(&last, PER_TRY), Verdict::KeepWaiting);
    assert_eq!(
        h.metrics.current.early_retries, 0,
        "no early-retry token taken"
    );
}

#[test]
fn tcp_mode_retries_a_failed_connect_only() {
    let mut h = Harness::new(ProxyConfig {
        mode: Mode::Tcp,
        retry: RetryPolicy::parse("connect,timeout,broken,5xx", "any").unwrap(),
        ..ProxyConfig::default()
    });
    assert_eq!(
        h.settle(&get(), End::Failed(Failure::Connect)),
        Verdict::Retry
    );
    assert_eq!(
        h.settle(&get(), End::Failed(Failure::Broken)),
        Verdict::Final
    );
    assert_eq!(
        h.settle(&get(), End::Failed(Failure::Timeout)),
        Verdict::Final
    );
    let reused = RequestFacts {
        reused_conn: true,
        ..get()
    };
    assert_eq!(
        h.settle(&reused, End::Failed(Failure::Broken)),
        Verdict::Final,
        "no stale-connection retry in TCP mode"
    );
}

#[test]
fn a_pooled_connection_that_breaks_before_any_answer_byte_is_retried_fresh_once() {
    let mut h = Harness::http();
    let reused = RequestFacts {
        reused_conn: true,
        ..get()
    };
    assert_eq!(
        h.settle(&reused, End::Failed(Failure::Broken)),
        Verdict::RetryFresh,
        "although the default policy does not retry broken connections"
    );
    let again = RequestFacts {
        stale_retried: true,
        ..reused
    };
    assert_eq!(
        h.settle(&again, End::Failed(Failure::Broken)),
        Verdict::Final
    );
}

#[test]
fn a_connection_is_not_stale_when_it_was_fresh_or_answered_or_failed_otherwise() {
    let reused = RequestFacts {
        reused_conn: true,
        ..get()
    };
    let stale = |req: &RequestFacts, failure| stale_pooled_connection(Mode::Http, failure, req);
    assert!(stale(&reused, Failure::Broken));
    assert!(!stale(&get(), Failure::Broken), "a fresh connection");
    let answering = RequestFacts {
        no_answer_byte: false,
        ..reused
    };
    assert!(!stale(&answering, Failure::Broken), "the backend answered");
    assert!(!stale(&reused, Failure::Timeout));
    assert!(!stale(&reused, Failure::Garbage));
    let streamed = RequestFacts {
        whole: false,
        ..reused
    };
    assert!(!stale(&streamed, Failure::Broken), "cannot be sent again");
}

#[test]
fn the_wait_for_an_answer_is_what_is_left_of_the_per_try_timeout_then_the_response_timeout() {
    let cfg = ProxyConfig {
        per_try_timeout_ms: 30,
        response_timeout_ms: 5_000,
        ..ProxyConfig::default()
    };
    assert_eq!(response_wait_ms(&cfg, true, 0), 30);
    assert_eq!(response_wait_ms(&cfg, true, 12_500), 18);
    assert_eq!(
        response_wait_ms(&cfg, true, 90_000),
        1,
        "overdue: at once, not never"
    );
    assert_eq!(response_wait_ms(&cfg, false, 12_500), 5_000);
}

#[test]
fn a_cut_off_attempt_is_counted_apart_and_never_charged_to_its_backend() {
    let mut h = Harness::new(ProxyConfig {
        eject_after: 2,
        ..ProxyConfig::default()
    });
    h.feedback.latency = true;
    h.feedback.success = true;
    let cuts = [
        Cutoff::ResponseHeadTooLarge,
        Cutoff::ResponseHeadTooManyFields,
        Cutoff::ClientStalled,
    ];
    for cutoff in cuts.into_iter().cycle().take(9) {
        assert_eq!(h.settle(&get(), End::CutOff(cutoff)), Verdict::Final);
    }
    assert_eq!(h.from_workers.try_iter().count(), 0, "no ejection asked");
    assert_eq!(h.stats().note_failure(), 1, "no failure in a row before");
    assert_eq!(h.stats().learned.beta(), (1.0, 1.0), "nothing learned");
    assert_eq!(h.stats().latency_us(), 0.0, "no latency recorded");
    let counts = h.counts();
    assert_eq!((counts.heads_too_large, counts.client_stalls), (6, 3));
    assert_eq!(counts.failures(), 0);
    assert_eq!(counts.attempts(), 9);
}

#[test]
fn a_cut_off_attempt_is_not_sent_again_whatever_the_policy() {
    let h = Harness::new(ProxyConfig {
        retry: RetryPolicy::parse("connect,timeout,broken,5xx", "any").unwrap(),
        ..ProxyConfig::default()
    });
    let end = End::CutOff(Cutoff::ResponseHeadTooLarge);
    assert!(!may_retry(&h.cfg, &h.budget, h.now.secs(), &get(), end));
}
