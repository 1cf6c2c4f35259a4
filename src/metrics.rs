//! Metrics without locks: each worker counts in plain integers and HdrHistograms of its own, and
//! once a second hands the control thread what it counted since the last time ([`WorkerSnapshot`]).
//! The control thread merges the snapshots ([`MetricsHub`]) into running totals, per-second rates
//! and a sliding window of latencies, which the admin API, `/metrics` and the dashboard read.

use std::collections::{HashMap, VecDeque};

use hdrhistogram::Histogram;

use crate::backend::BackendId;

/// Latencies are recorded in microseconds up to this bound (larger ones are clamped).
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Seconds of latency history behind the quantiles the API reports.
pub(crate) const LATENCY_WINDOW_S: usize = 10;
/// Seconds of per-second history kept for the dashboard's charts.
pub(crate) const HISTORY_S: usize = 300;
/// Seconds that rates and error rates average over: workers hand their counts over once a second
/// on their own clocks, so a single second can hold two of one worker's snapshots, or none.
pub(crate) const RATE_WINDOW_S: usize = 5;

/// Two significant figures: 1% resolution in a few KiB, which is what a quantile needs.
#[allow(clippy::expect_used)] // constant bounds: 1 <= low, high >= 2 * low, 2 significant figures
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant histogram bounds are valid")
}

/// Why an attempt on a backend failed, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Connect,
    Timeout,
    Broken,
    Garbage,
}

/// Why sluice cut an attempt short although its backend did nothing wrong, for counting. Such an
/// attempt is never counted as the backend failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CutoffKind {
    /// The response head is larger than `--max-response-header-bytes`.
    ResponseHeadTooLarge,
    /// The response head has more fields than sluice parses.
    ResponseHeadTooManyFields,
    /// The client stopped sending its request body, or reading the response, for the response
    /// timeout.
    ClientStalled,
}

/// One backend's counts on one worker since the last snapshot.
#[derive(Clone, Debug)]
pub(crate) struct BackendCounts {
    pub id: BackendId,
    /// Responses received by status class: index 1 = 1xx ... 5 = 5xx.
    pub responses: [u64; 6],
    pub connect_errors: u64,
    pub timeouts: u64,
    /// Broken connections and garbage responses.
    pub broken: u64,
    /// TCP mode: connections made through to the backend (a tunnel each).
    pub tunnels_opened: u64,
    /// Response heads over sluice's limits (answered 502, not the backend's failure).
    pub heads_too_large: u64,
    /// Attempts cut off because their client stalled.
    pub client_stalls: u64,
    pub latency_us: Histogram<u64>,
    /// Sum of recorded latencies, for the Prometheus summary's `_sum`.
    pub latency_sum_us: u64,
}

impl BackendCounts {
    pub(crate) fn new(id: BackendId) -> BackendCounts {
        BackendCounts {
            id,
            responses: [0; 6],
            connect_errors: 0,
            timeouts: 0,
            broken: 0,
            tunnels_opened: 0,
            heads_too_large: 0,
            client_stalls: 0,
            latency_us: new_histogram(),
            latency_sum_us: 0,
        }
    }

    pub(crate) fn record_response(&mut self, status: u16, latency_us: u64) {
        self.responses[usize::from(status / 100).min(5)] += 1;
        self.latency_sum_us += latency_us;
        let _ = self.latency_us.record(latency_us.clamp(1, MAX_LATENCY_US));
    }

    pub(crate) fn record_failure(&mut self, kind: FailureKind) {
        match kind {
            FailureKind::Connect => self.connect_errors += 1,
            FailureKind::Timeout => self.timeouts += 1,
            FailureKind::Broken | FailureKind::Garbage => self.broken += 1,
        }
    }

    pub(crate) fn record_cutoff(&mut self, kind: CutoffKind) {
        match kind {
            CutoffKind::ResponseHeadTooLarge | CutoffKind::ResponseHeadTooManyFields => {
                self.heads_too_large += 1
            }
            CutoffKind::ClientStalled => self.client_stalls += 1,
        }
    }

    /// Attempts that ended in a failure: a 5xx answer or no answer at all.
    pub(crate) fn failures(&self) -> u64 {
        self.responses[5] + self.connect_errors + self.timeouts + self.broken
    }

    pub(crate) fn answered(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// Attempts of any outcome: an answer, a failure, a cut-off, or (TCP mode) a tunnel opened.
    pub(crate) fn attempts(&self) -> u64 {
        self.answered()
            + self.connect_errors
            + self.timeouts
            + self.broken
            + self.heads_too_large
            + self.client_stalls
            + self.tunnels_opened
    }
}

/// What became of PROXY protocol headers (`--accept-proxy-protocol`), for
/// `sluice_proxy_protocol_headers_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProxyHeaderCounts {
    /// Read from a listed peer; its client is the connection's client.
    pub accepted: u64,
    /// A listed peer's connection started without one.
    pub missing: u64,
    /// A header from a peer not listed in `--proxy-protocol-from`.
    pub untrusted: u64,
    /// Not a well-formed header, or cut short by the peer's close.
    pub malformed: u64,
    /// Not complete within `--head-timeout`.
    pub timed_out: u64,
}

impl ProxyHeaderCounts {
    /// Each outcome with its label value.
    pub(crate) fn by_outcome(&self) -> [(&'static str, u64); 5] {
        [
            ("accepted", self.accepted),
            ("missing", self.missing),
            ("untrusted", self.untrusted),
            ("malformed", self.malformed),
            ("timeout", self.timed_out),
        ]
    }

    fn add(&mut self, o: &ProxyHeaderCounts) {
        self.accepted += o.accepted;
        self.missing += o.missing;
        self.untrusted += o.untrusted;
        self.malformed += o.malformed;
        self.timed_out += o.timed_out;
    }
}

/// TLS handshakes on the listener, for `sluice_tls_handshakes_total` and
/// `sluice_tls_handshake_failures_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsCounts {
    pub full: u64,
    pub resumed: u64,
    /// A plain HTTP request on the TLS port (answered 400).
    pub plain_http: u64,
    /// First bytes that are neither TLS nor HTTP.
    pub not_tls: u64,
    /// Not complete within `--tls-handshake-timeout`.
    pub timed_out: u64,
    /// The client closed during the handshake.
    pub closed: u64,
    /// No certificate for the name asked for (`--tls-strict-sni`).
    pub unknown_sni: u64,
    /// Any other TLS error (the client got rustls's alert).
    pub protocol: u64,
}

impl TlsCounts {
    /// Each failure with its label value.
    pub(crate) fn failures_by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("plain_http", self.plain_http),
            ("not_tls", self.not_tls),
            ("timeout", self.timed_out),
            ("closed", self.closed),
            ("unknown_sni", self.unknown_sni),
            ("protocol", self.protocol),
        ]
    }

    fn add(&mut self, o: &TlsCounts) {
        self.full += o.full;
        self.resumed += o.resumed;
        self.plain_http += o.plain_http;
        self.not_tls += o.not_tls;
        self.timed_out += o.timed_out;
        self.closed += o.closed;
        self.unknown_sni += o.unknown_sni;
        self.protocol += o.protocol;
    }
}

/// Everything one worker counted since its last snapshot. Gauges (`active_clients`) are current.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerSnapshot {
    pub worker: usize,
    pub accepted: u64,
    pub closed: u64,
    pub active_clients: u64,
    /// Responses sent to clients by status class (index 1-5), sluice's own errors included.
    pub client_responses: [u64; 6],
    pub attempts: u64,
    pub retries: u64,
    /// Retries after `--per-try-timeout` (also counted in `retries`).
    pub early_retries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub proxy_headers: ProxyHeaderCounts,
    pub tls: TlsCounts,
    pub backends: Vec<BackendCounts>,
}

/// A worker's running counts.
#[derive(Default)]
pub(crate) struct WorkerMetrics {
    pub current: WorkerSnapshot,
}

impl WorkerMetrics {
    pub(crate) fn new(worker: usize) -> WorkerMetrics {
        WorkerMetrics {
            current: WorkerSnapshot {
                worker,
                ..WorkerSnapshot::default()
            },
        }
    }

    /// The counts for backend `id`, found at `hint` when the list is aligned with the table.
    pub(crate) fn backend(&mut self, id: BackendId, hint: usize) -> &mut BackendCounts {
        let list = &mut self.current.backends;
        let i = match list.get(hint) {
            Some(b) if b.id == id => hint,
            _ => match list.iter().position(|b| b.id == id) {
                Some(i) => i,
                None => {
                    list.push(BackendCounts::new(id));
                    list.len() - 1
                }
            },
        };
        &mut list[i]
    }

    /// Hands over what was counted and starts again, with per-backend slots in `order`.
    pub(crate) fn take(&mut self, active_clients: u64, order: &[BackendId]) -> WorkerSnapshot {
        let fresh = WorkerSnapshot {
            worker: self.current.worker,
            backends: order.iter().map(|&id| BackendCounts::new(id)).collect(),
            ..WorkerSnapshot::default()
        };
        let mut snap = std::mem::replace(&mut self.current, fresh);
        snap.active_clients = active_clients;
        snap
    }
}

/// Running totals and recent history for one backend, on the control thread.
#[derive(Debug)]
pub(crate) struct BackendAggregate {
    pub responses: [u64; 6],
    pub latency_sum_us: u64,
    pub connect_errors: u64,
    pub timeouts: u64,
    pub broken: u64,
    pub tunnels_opened: u64,
    pub heads_too_large: u64,
    pub client_stalls: u64,
    /// Per-second latency histograms, newest last.
    window: VecDeque<Histogram<u64>>,
    current: Histogram<u64>,
    /// Attempts, failures and tunnels opened in the last complete seconds, newest last.
    rates: VecDeque<SecondCounts>,
    second: SecondCounts,
}

/// One second of a backend's attempts.
#[derive(Clone, Copy, Debug, Default)]
struct SecondCounts {
    attempts: u64,
    failures: u64,
    tunnels: u64,
}

impl Default for BackendAggregate {
    fn default() -> Self {
        BackendAggregate {
            responses: [0; 6],
            latency_sum_us: 0,
            connect_errors: 0,
            timeouts: 0,
            broken: 0,
            tunnels_opened: 0,
            heads_too_large: 0,
            client_stalls: 0,
            window: VecDeque::new(),
            current: new_histogram(),
            rates: VecDeque::new(),
            second: SecondCounts::default(),
        }
    }
}

impl BackendAggregate {
    fn add(&mut self, c: &BackendCounts) {
        for i in 0..6 {
            self.responses[i] += c.responses[i];
        }
        self.latency_sum_us += c.latency_sum_us;
        self.connect_errors += c.connect_errors;
        self.timeouts += c.timeouts;
        self.broken += c.broken;
        self.tunnels_opened += c.tunnels_opened;
        self.heads_too_large += c.heads_too_large;
        self.client_stalls += c.client_stalls;
        self.second.attempts += c.attempts();
        self.second.failures += c.failures();
        self.second.tunnels += c.tunnels_opened;
        let _ = self.current.add(&c.latency_us);
    }

    /// Closes the second; returns its latency histogram's place in the window.
    fn rotate(&mut self) -> &Histogram<u64> {
        let done = std::mem::replace(&mut self.current, new_histogram());
        self.window.push_back(done);
        while self.window.len() > LATENCY_WINDOW_S {
            self.window.pop_front();
        }
        self.rates.push_back(std::mem::take(&mut self.second));
        while self.rates.len() > RATE_WINDOW_S {
            self.rates.pop_front();
        }
        let last = self.window.len() - 1;
        &self.window[last]
    }

    /// Responses counted so far (all classes).
    pub(crate) fn answered(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// Latency quantiles over the window, in microseconds; `None` before any response.
    pub(crate) fn latency_quantiles_us(&self, quantiles: &[f64]) -> Option<Vec<u64>> {
        let mut merged = new_histogram();
        for h in &self.window {
            let _ = merged.add(h);
        }
        if merged.is_empty() {
            return None;
        }
        Some(
            quantiles
                .iter()
                .map(|&q| merged.value_at_quantile(q))
                .collect(),
        )
    }

    /// Share of the recent attempts ([`RATE_WINDOW_S`]) that failed.
    pub(crate) fn error_rate(&self) -> f64 {
        let (attempts, failures) = self
            .rates
            .iter()
            .fold((0, 0), |(a, f), r| (a + r.attempts, f + r.failures));
        if attempts == 0 {
            0.0
        } else {
            failures as f64 / attempts as f64
        }
    }

    /// Attempts per second over the recent window (in TCP mode: connection attempts).
    pub(crate) fn requests_per_s(&self) -> f64 {
        self.per_s(|r| r.attempts)
    }

    /// TCP mode: tunnels opened to the backend per second over the recent window.
    pub(crate) fn tunnels_per_s(&self) -> f64 {
        self.per_s(|r| r.tunnels)
    }

    fn per_s(&self, count: impl Fn(&SecondCounts) -> u64) -> f64 {
        if self.rates.is_empty() {
            return 0.0;
        }
        self.rates.iter().map(count).sum::<u64>() as f64 / self.rates.len() as f64
    }
}

/// One second of the whole balancer, for charts.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HistoryPoint {
    /// Unix time of the end of the second, in ms.
    pub t_ms: u64,
    pub requests_per_s: f64,
    /// Client connections accepted in the second.
    #[serde(default)]
    pub connections_per_s: f64,
    /// Share of responses to clients that were 5xx.
    pub error_rate: f64,
    pub active_connections: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Totals over all workers, on the control thread.
#[derive(Debug, Default)]
pub(crate) struct MetricsHub {
    pub accepted: u64,
    pub closed: u64,
    pub client_responses: [u64; 6],
    pub attempts: u64,
    pub retries: u64,
    pub early_retries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub proxy_headers: ProxyHeaderCounts,
    pub tls: TlsCounts,
    /// Latest active-client gauge from each worker.
    active_by_worker: HashMap<usize, u64>,
    pub backends: HashMap<BackendId, BackendAggregate>,
    /// Client responses in the last complete second.
    pub last_second_responses: u64,
    second_responses: u64,
    second_errors: u64,
    second_accepted: u64,
    /// The last [`HISTORY_S`] seconds, oldest first.
    pub history: VecDeque<HistoryPoint>,
}

impl MetricsHub {
    pub(crate) fn merge(&mut self, snap: &WorkerSnapshot) {
        self.accepted += snap.accepted;
        self.second_accepted += snap.accepted;
        self.closed += snap.closed;
        self.proxy_headers.add(&snap.proxy_headers);
        self.tls.add(&snap.tls);
        for i in 0..6 {
            self.client_responses[i] += snap.client_responses[i];
        }
        self.second_responses += snap.client_responses.iter().sum::<u64>();
        self.second_errors += snap.client_responses[5];
        self.attempts += snap.attempts;
        self.retries += snap.retries;
        self.early_retries += snap.early_retries;
        self.bytes_in += snap.bytes_in;
        self.bytes_out += snap.bytes_out;
        self.active_by_worker
            .insert(snap.worker, snap.active_clients);
        for c in &snap.backends {
            self.backends.entry(c.id).or_default().add(c);
        }
    }

    /// Closes the current second: rates and latency windows move on, and the second joins the
    /// history. `unix_ms` stamps the history point.
    pub(crate) fn rotate(&mut self, unix_ms: u64) {
        let mut second = new_histogram();
        for b in self.backends.values_mut() {
            let _ = second.add(b.rotate());
        }
        self.last_second_responses = std::mem::take(&mut self.second_responses);
        let errors = std::mem::take(&mut self.second_errors);
        let quantile_ms =
            |q: f64| (!second.is_empty()).then(|| second.value_at_quantile(q) as f64 / 1000.0);
        self.history.push_back(HistoryPoint {
            t_ms: unix_ms,
            requests_per_s: self.last_second_responses as f64,
            connections_per_s: std::mem::take(&mut self.second_accepted) as f64,
            error_rate: if self.last_second_responses == 0 {
                0.0
            } else {
                errors as f64 / self.last_second_responses as f64
            },
            active_connections: self.active_clients(),
            p50_ms: quantile_ms(0.5),
            p99_ms: quantile_ms(0.99),
        });
        while self.history.len() > HISTORY_S {
            self.history.pop_front();
        }
    }

    pub(crate) fn active_clients(&self) -> u64 {
        self.active_by_worker.values().sum()
    }

    /// Client responses per second over the recent window.
    pub(crate) fn requests_per_s(&self) -> f64 {
        self.recent_per_s(|p| p.requests_per_s)
    }

    /// Client connections accepted per second over the recent window.
    pub(crate) fn connections_per_s(&self) -> f64 {
        self.recent_per_s(|p| p.connections_per_s)
    }

    fn recent_per_s(&self, rate: impl Fn(&HistoryPoint) -> f64) -> f64 {
        let recent: Vec<f64> = self
            .history
            .iter()
            .rev()
            .take(RATE_WINDOW_S)
            .map(rate)
            .collect();
        if recent.is_empty() {
            0.0
        } else {
            recent.iter().sum::<f64>() / recent.len() as f64
        }
    }

    /// Forgets backends that are gone.
    pub(crate) fn retain_backends(&mut self, keep: impl Fn(BackendId) -> bool) {
        self.backends.retain(|&id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(worker: usize, id: BackendId, statuses: &[(u16, u64)]) -> WorkerSnapshot {
        let mut m = WorkerMetrics::new(worker);
        for &(status, latency) in statuses {
            m.backend(id, 0).record_response(status, latency);
            m.current.client_responses[usize::from(status / 100)] += 1;
        }
        m.current.accepted = statuses.len() as u64;
        m.take(statuses.len() as u64, &[id])
    }

    #[test]
    fn merging_workers_adds_counts_and_latencies() {
        let mut hub = MetricsHub::default();
        hub.merge(&snapshot(
            0,
            7,
            &[(200, 1_000), (200, 1_000), (503, 50_000)],
        ));
        hub.merge(&snapshot(1, 7, &[(200, 2_000)]));
        hub.rotate(0);
        assert_eq!(hub.accepted, 4);
        assert_eq!(hub.client_responses[2], 3);
        assert_eq!(hub.client_responses[5], 1);
        assert_eq!(hub.active_clients(), 4);
        let b = &hub.backends[&7];
        assert_eq!(b.responses[2], 3);
        assert_eq!(b.requests_per_s(), 4.0);
        assert_eq!(b.error_rate(), 0.25);
        let q = b.latency_quantiles_us(&[0.5, 0.99]).unwrap();
        assert!((990..=1_010).contains(&q[0]), "{q:?}");
        assert!((49_500..=50_500).contains(&q[1]), "{q:?}");
    }

    #[test]
    fn take_resets_counts_but_gauges_are_replaced() {
        let mut m = WorkerMetrics::new(3);
        m.current.accepted = 5;
        m.backend(9, 0).record_failure(FailureKind::Connect);
        let first = m.take(2, &[9]);
        assert_eq!(first.accepted, 5);
        assert_eq!(first.backends[0].connect_errors, 1);
        let second = m.take(1, &[9]);
        assert_eq!(second.accepted, 0);
        assert_eq!(second.backends[0].connect_errors, 0);
        let mut hub = MetricsHub::default();
        hub.merge(&first);
        hub.merge(&second);
        assert_eq!(hub.active_clients(), 1, "the latest gauge of worker 3");
    }

    #[test]
    fn rates_average_over_the_window_so_uneven_snapshots_even_out() {
        let mut hub = MetricsHub::default();
        let ten: Vec<(u16, u64)> = (0..10).map(|_| (200, 1_000)).collect();
        // One worker's snapshots land twice in one second and not at all in the next.
        hub.merge(&snapshot(0, 1, &ten));
        hub.merge(&snapshot(0, 1, &ten));
        hub.rotate(1_000);
        hub.rotate(2_000);
        assert_eq!(hub.backends[&1].requests_per_s(), 10.0);
        assert_eq!(hub.requests_per_s(), 10.0);
    }

    #[test]
    fn the_latency_window_forgets_old_seconds() {
        let mut hub = MetricsHub::default();
        hub.merge(&snapshot(0, 1, &[(200, 100_000)]));
        hub.rotate(0);
        for _ in 0..LATENCY_WINDOW_S {
            hub.merge(&snapshot(0, 1, &[(200, 1_000)]));
            hub.rotate(0);
        }
        let q = hub.backends[&1].latency_quantiles_us(&[1.0]).unwrap();
        assert!(q[0] < 2_000, "the slow second left the window: {q:?}");
    }
}
