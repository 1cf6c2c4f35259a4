//! `GET /metrics`: everything the control thread knows, in the Prometheus text exposition format
//! (version 0.0.4). Names carry the `sluice_` prefix and their unit, counters end in `_total`,
//! per-backend series carry a `backend` label and status classes a `class` label; latencies are a
//! summary (quantiles over the last [`crate::metrics::LATENCY_WINDOW_S`] seconds, with `_sum` and
//! `_count` since start). `promtool check metrics` accepts the output (a test runs it).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::state::BackendEntry;
use super::Control;
use crate::metrics::{BackendAggregate, TlsCounts};
use crate::strategy::threshold::THRESHOLD_FLIPS;

/// A per-backend metric family: name, help, and how to read its value.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

const CLASSES: [&str; 6] = ["", "1xx", "2xx", "3xx", "4xx", "5xx"];
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Writes one metric family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The listener's TLS handshakes: completed (full or resumed) and failed, by reason.
fn tls_families(o: &mut String, tls: &TlsCounts) {
    family(
        o,
        "sluice_tls_handshakes_total",
        "counter",
        "TLS handshakes completed on the listener, full or resumed (a session ticket or the \
         session cache).",
    );
    sample(o, "sluice_tls_handshakes_total", "kind=\"full\"", tls.full);
    sample(
        o,
        "sluice_tls_handshakes_total",
        "kind=\"resumed\"",
        tls.resumed,
    );
    family(
        o,
        "sluice_tls_handshake_failures_total",
        "counter",
        "Client connections to a TLS listener closed before their handshake completed, by \
         reason: plain_http (answered 400), not_tls, timeout (--tls-handshake-timeout), closed \
         (by the client), unknown_sni (--tls-strict-sni), protocol (a TLS alert was sent).",
    );
    for (reason, n) in tls.failures_by_reason() {
        sample(
            o,
            "sluice_tls_handshake_failures_total",
            &format!("reason=\"{reason}\""),
            n,
        );
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Control {
    pub(crate) fn prometheus(&self) -> String {
        let hub = &self.hub;
        let mut o = String::with_capacity(8 * 1024);
        let simple: [(&str, &str, &str, u64); 11] = [
            (
                "sluice_connections_accepted_total",
                "counter",
                "Client connections accepted.",
                hub.accepted,
            ),
            (
                "sluice_connections_closed_total",
                "counter",
                "Client connections closed.",
                hub.closed,
            ),
            (
                "sluice_connections_active",
                "gauge",
                "Client connections open now.",
                hub.active_clients(),
            ),
            (
                "sluice_attempts_total",
                "counter",
                "Attempts sent to backends (first tries and retries).",
                hub.attempts,
            ),
            (
                "sluice_retries_total",
                "counter",
                "Attempts that were retries of a failed attempt.",
                hub.retries,
            ),
            (
                "sluice_early_retries_total",
                "counter",
                "Retries of attempts with no answer after --per-try-timeout (in sluice_retries_total too).",
                hub.early_retries,
            ),
            (
                "sluice_received_bytes_total",
                "counter",
                "Bytes read from clients.",
                hub.bytes_in,
            ),
            (
                "sluice_sent_bytes_total",
                "counter",
                "Bytes written to clients.",
                hub.bytes_out,
            ),
            (
                "sluice_health_flips_total",
                "counter",
                "Backends marked down or up by active health checks.",
                self.counters.health_flips,
            ),
            (
                "sluice_ejections_total",
                "counter",
                "Backends ejected by passive outlier detection.",
                self.counters.ejections,
            ),
            (
                "sluice_strategy_switches_total",
                "counter",
                "Strategy switches made by the adaptive engine.",
                self.counters.strategy_switches,
            ),
        ];
        for (name, kind, help, value) in simple {
            family(&mut o, name, kind, help);
            sample(&mut o, name, "", value);
        }
        family(
            &mut o,
            "sluice_threshold_skips_total",
            "counter",
            "Backends the threshold strategy started skipping as overloaded.",
        );
        sample(
            &mut o,
            "sluice_threshold_skips_total",
            "",
            THRESHOLD_FLIPS.skips.load(Ordering::Relaxed),
        );
        family(
            &mut o,
            "sluice_threshold_returns_total",
            "counter",
            "Overloaded backends the threshold strategy took back.",
        );
        sample(
            &mut o,
            "sluice_threshold_returns_total",
            "",
            THRESHOLD_FLIPS.returns.load(Ordering::Relaxed),
        );
        family(
            &mut o,
            "sluice_table_version",
            "gauge",
            "Version of the backend table the workers route by.",
        );
        sample(&mut o, "sluice_table_version", "", self.state.version());
        family(
            &mut o,
            "sluice_config_revision",
            "gauge",
            "Configuration revision the table was built from (in a cluster, an etcd revision).",
        );
        sample(&mut o, "sluice_config_revision", "", self.state.revision());
        if let Some(c) = &self.cluster {
            family(
                &mut o,
                "sluice_cluster_store_up",
                "gauge",
                "1 while the cluster's configuration store (etcd) answers, else 0.",
            );
            sample(&mut o, "sluice_cluster_store_up", "", u8::from(c.store_up));
            family(
                &mut o,
                "sluice_cluster_members",
                "gauge",
                "Instances registered in the cluster's configuration store.",
            );
            sample(&mut o, "sluice_cluster_members", "", c.mirror.members.len());
        }

        family(
            &mut o,
            "sluice_responses_total",
            "counter",
            "Responses sent to clients, by status class (sluice's own errors included).",
        );
        for (i, class) in CLASSES.iter().enumerate().skip(1) {
            sample(
                &mut o,
                "sluice_responses_total",
                &format!("class=\"{class}\""),
                hub.client_responses[i],
            );
        }

        family(
            &mut o,
            "sluice_proxy_protocol_headers_total",
            "counter",
            "PROXY protocol headers at the start of client connections (--accept-proxy-protocol): \
             accepted, or why the connection was closed (missing, untrusted, malformed, timeout).",
        );
        for (outcome, n) in hub.proxy_headers.by_outcome() {
            sample(
                &mut o,
                "sluice_proxy_protocol_headers_total",
                &format!("outcome=\"{outcome}\""),
                n,
            );
        }

        tls_families(&mut o, &hub.tls);

        let backends: Vec<(String, &BackendEntry)> = self
            .state
            .backends
            .iter()
            .map(|b| (format!("backend=\"{}\"", label(&b.addr.to_string())), b))
            .collect();
        let gauges: [Family<BackendEntry>; 6] = [
            (
                "sluice_backend_up",
                "1 when active health checks pass.",
                |b| u64::from(b.health.healthy),
            ),
            (
                "sluice_backend_enabled",
                "1 when the backend is enabled.",
                |b| u64::from(b.enabled),
            ),
            (
                "sluice_backend_ejected",
                "1 while passive outlier detection ejects the backend.",
                |b| u64::from(b.is_ejected()),
            ),
            (
                "sluice_backend_in_flight",
                "Requests (HTTP) or tunnels (TCP) in progress.",
                |b| b.stats.in_flight(),
            ),
            (
                "sluice_backend_queued",
                "Requests waiting for a connection under --backend-max-conns.",
                |b| b.stats.queued(),
            ),
            (
                "sluice_backend_connections",
                "Open connections to the backend, idle pooled ones included.",
                |b| b.stats.conns(),
            ),
        ];
        for (name, help, get) in gauges {
            family(&mut o, name, "gauge", help);
            for (l, b) in &backends {
                sample(&mut o, name, l, get(b));
            }
        }
        family(
            &mut o,
            "sluice_backend_weight",
            "gauge",
            "Configured weight.",
        );
        for (l, b) in &backends {
            sample(&mut o, "sluice_backend_weight", l, b.weight);
        }

        family(
            &mut o,
            "sluice_backend_responses_total",
            "counter",
            "Responses received from the backend, by status class.",
        );
        for (l, b) in &backends {
            if let Some(a) = hub.backends.get(&b.id) {
                for (i, class) in CLASSES.iter().enumerate().skip(1) {
                    sample(
                        &mut o,
                        "sluice_backend_responses_total",
                        &format!("{l},class=\"{class}\""),
                        a.responses[i],
                    );
                }
            }
        }
        let counters: [Family<BackendAggregate>; 6] = [
            (
                "sluice_backend_tunnels_opened_total",
                "TCP mode: connections made through to the backend, a tunnel each.",
                |a| a.tunnels_opened,
            ),
            (
                "sluice_backend_connect_errors_total",
                "Connections to the backend that could not be made.",
                |a| a.connect_errors,
            ),
            (
                "sluice_backend_timeouts_total",
                "Attempts the backend did not answer in time.",
                |a| a.timeouts,
            ),
            (
                "sluice_backend_broken_total",
                "Attempts whose connection broke or got a malformed answer.",
                |a| a.broken,
            ),
            (
                "sluice_response_head_too_large_total",
                "Response heads over --max-response-header-bytes or 256 fields: answered 502, not counted as the backend failing.",
                |a| a.heads_too_large,
            ),
            (
                "sluice_client_stalls_total",
                "Attempts cut off because the client stopped sending its body or reading the answer for --response-timeout; not counted as the backend failing.",
                |a| a.client_stalls,
            ),
        ];
        for (name, help, get) in counters {
            family(&mut o, name, "counter", help);
            for (l, b) in &backends {
                sample(&mut o, name, l, hub.backends.get(&b.id).map_or(0, get));
            }
        }

        family(
            &mut o,
            "sluice_backend_latency_seconds",
            "summary",
            "Time from sending a request to its response head, per backend.",
        );
        for (l, b) in &backends {
            let Some(a) = hub.backends.get(&b.id) else {
                continue;
            };
            if let Some(q) = a.latency_quantiles_us(&QUANTILES) {
                for (quantile, value_us) in QUANTILES.iter().zip(q) {
                    sample(
                        &mut o,
                        "sluice_backend_latency_seconds",
                        &format!("{l},quantile=\"{quantile}\""),
                        value_us as f64 / 1e6,
                    );
                }
            }
            sample(
                &mut o,
                "sluice_backend_latency_seconds_sum",
                l,
                a.latency_sum_us as f64 / 1e6,
            );
            sample(
                &mut o,
                "sluice_backend_latency_seconds_count",
                l,
                a.answered(),
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }
}
