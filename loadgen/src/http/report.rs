//! What a generator run measured: per-thread parts merged into one [`Report`], printed for
//! people or as one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::http::HttpConfig;
use crate::id::Id;
use crate::latency::{self, human_us, LatencySummary};

const KINDS: usize = 5;

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The connection could not be established.
    Connect,
    /// No complete response within the timeout.
    Timeout,
    /// The connection was reset or closed before the response was complete.
    Reset,
    /// The response was not valid HTTP/1.1.
    Parse,
    /// The TLS handshake failed (a certificate not trusted, an alert) or a record was invalid.
    Tls,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; KINDS] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Parse,
        ErrorKind::Tls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Parse => "parse",
            ErrorKind::Tls => "tls",
        }
    }
}

/// One request's fate (kept only with `record_outcomes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The body id, with [`Body::Id24`](crate::http::Body::Id24).
    pub id: Option<Id>,
    /// The status code, or why there was none.
    pub result: Result<u16, ErrorKind>,
    pub latency_us: u64,
}

/// One thread's measurements.
#[derive(Debug)]
pub(crate) struct Part {
    pub hist: Histogram<u64>,
    pub status: BTreeMap<u16, u64>,
    pub errors: [u64; KINDS],
    pub sent: u64,
    pub responses: u64,
    pub scheduled: u64,
    pub unsent: u64,
    pub outcomes: Vec<Outcome>,
    pub handshakes: TlsHandshakes,
}

impl Part {
    pub(crate) fn new() -> Self {
        Part {
            hist: latency::new_histogram(),
            status: BTreeMap::new(),
            errors: [0; KINDS],
            sent: 0,
            responses: 0,
            scheduled: 0,
            unsent: 0,
            outcomes: Vec::new(),
            handshakes: TlsHandshakes::default(),
        }
    }

    pub(crate) fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }
}

/// TLS handshakes of the connections that carried measured requests, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TlsHandshakes {
    pub full: u64,
    pub resumed: u64,
}

/// The result of a run. Counts cover requests scheduled (closed loop: sent) in the measured
/// window.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Responses received, whatever their status.
    pub requests: u64,
    /// Requests written to a connection.
    pub sent: u64,
    /// Requests the schedule called for (closed loop: equal to `sent`).
    pub scheduled: u64,
    /// Scheduled requests still waiting for a free connection when the run ended.
    pub unsent: u64,
    pub duration_s: f64,
    /// `requests / duration_s`.
    pub throughput_rps: f64,
    /// Target rate; 0 = closed loop.
    pub rate_rps: f64,
    pub connections: usize,
    pub threads: usize,
    /// Failed requests by kind (`connect`, `timeout`, `reset`, `parse`); empty when none.
    pub errors: BTreeMap<String, u64>,
    /// Responses by status code.
    pub status: BTreeMap<String, u64>,
    /// From the scheduled time (open loop) or the send (closed loop) to the complete response.
    pub latency_us: LatencySummary,
    /// Over TLS: how many handshakes were full and how many resumed a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshakes: Option<TlsHandshakes>,
    #[serde(skip)]
    pub outcomes: Vec<Outcome>,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
    #[serde(skip)]
    status_codes: BTreeMap<u16, u64>,
    #[serde(skip)]
    error_counts: [u64; KINDS],
}

impl Report {
    pub(crate) fn empty(cfg: &HttpConfig, threads: usize) -> Self {
        Report {
            requests: 0,
            sent: 0,
            scheduled: 0,
            unsent: 0,
            duration_s: cfg.duration.as_secs_f64(),
            throughput_rps: 0.0,
            rate_rps: cfg.rate_rps,
            connections: cfg.connections,
            threads,
            errors: BTreeMap::new(),
            status: BTreeMap::new(),
            latency_us: LatencySummary::default(),
            tls_handshakes: cfg.tls.is_some().then(TlsHandshakes::default),
            outcomes: Vec::new(),
            histogram: latency::new_histogram(),
            status_codes: BTreeMap::new(),
            error_counts: [0; KINDS],
        }
    }

    pub(crate) fn merge(&mut self, part: Part) {
        latency::merge(&mut self.histogram, &part.hist);
        for (code, n) in part.status {
            *self.status_codes.entry(code).or_default() += n;
        }
        for (total, n) in self.error_counts.iter_mut().zip(part.errors) {
            *total += n;
        }
        self.sent += part.sent;
        self.requests += part.responses;
        self.scheduled += part.scheduled;
        self.unsent += part.unsent;
        self.outcomes.extend(part.outcomes);
        if let Some(h) = self.tls_handshakes.as_mut() {
            h.full += part.handshakes.full;
            h.resumed += part.handshakes.resumed;
        }
    }

    pub(crate) fn finish(&mut self, cfg: &HttpConfig) {
        if cfg.rate_rps == 0.0 {
            self.scheduled = self.sent;
        }
        self.throughput_rps = if self.duration_s > 0.0 {
            (self.requests as f64 / self.duration_s * 10.0).round() / 10.0
        } else {
            0.0
        };
        self.status = self
            .status_codes
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect();
        self.errors = ErrorKind::ALL
            .iter()
            .zip(self.error_counts)
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| (kind.name().to_string(), n))
            .collect();
        self.latency_us = LatencySummary::of(&self.histogram);
    }

    /// Failed requests of one kind.
    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.error_counts[kind as usize]
    }

    /// Responses with one status code.
    pub fn status_count(&self, code: u16) -> u64 {
        self.status_codes.get(&code).copied().unwrap_or(0)
    }

    pub fn total_errors(&self) -> u64 {
        self.error_counts.iter().sum()
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mode = if self.rate_rps > 0.0 {
            format!("open loop at {} req/s", self.rate_rps)
        } else {
            "closed loop".to_string()
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{mode}, {} connections, {} threads, {:.2} s measured",
            self.connections, self.threads, self.duration_s
        );
        let _ = writeln!(
            s,
            "requests    {} ({} sent, {} scheduled, {} unsent)",
            self.requests, self.sent, self.scheduled, self.unsent
        );
        let _ = writeln!(s, "throughput  {:.1} req/s", self.throughput_rps);
        let statuses: Vec<String> = self
            .status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(s, "status      {}", or_none(&statuses));
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(s, "errors      {}", or_none(&errors));
        if let Some(h) = &self.tls_handshakes {
            let _ = writeln!(
                s,
                "tls         {} full, {} resumed handshakes",
                h.full, h.resumed
            );
        }
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "latency     p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            human_us(l.p50),
            human_us(l.p90),
            human_us(l.p99),
            human_us(l.p999),
            human_us(l.p9999),
            human_us(l.max)
        );
        s
    }
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}
