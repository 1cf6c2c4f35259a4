//! The control thread's view of the access log and the per-client limits: their admin routes
//! (`GET /api/log`, `POST /api/log/reopen`, `GET /api/clients`), their series in `/metrics`, and
//! the once-a-second scan of the client table for the dashboard's top clients.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::Control;
use crate::access_log::{LogControl, LogTarget};
use crate::admin::AdminResponse;
use crate::limits::{ClientTable, TopClient, TopClients};

/// What the control thread holds of the access log and the client table, when they are on.
#[derive(Default)]
pub(crate) struct ControlOps {
    log: Option<LogControl>,
    clients: Option<Arc<ClientTable>>,
    top: TopClients,
}

/// `GET /api/log`.
#[derive(Serialize)]
struct LogView {
    enabled: bool,
    /// A file's path, or `stdout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    written_lines: u64,
    dropped_lines: u64,
    reopens: u64,
}

/// `GET /api/clients`.
#[derive(Serialize)]
struct ClientsView<'a> {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_conns_per_client: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<u32>,
    refused_connections: u64,
    refused_rate: u64,
    table_bytes: usize,
    top_by_requests: &'a [TopClient],
    top_by_refusals: &'a [TopClient],
}

impl Control {
    /// Hands the control thread the access log's control and the client table.
    pub(crate) fn set_ops(&mut self, log: Option<LogControl>, clients: Option<Arc<ClientTable>>) {
        self.ops = ControlOps {
            log,
            clients,
            top: TopClients::default(),
        };
    }

    /// Once a second: the last second's busiest clients.
    pub(super) fn scan_clients(&mut self) {
        if let Some(t) = &self.ops.clients {
            self.ops.top.scan(t);
        }
    }

    pub(super) fn log_view(&self) -> AdminResponse {
        let view = match &self.ops.log {
            None => LogView {
                enabled: false,
                target: None,
                written_lines: 0,
                dropped_lines: 0,
                reopens: 0,
            },
            Some(log) => LogView {
                enabled: true,
                target: Some(match &log.target {
                    LogTarget::Stdout => "stdout".into(),
                    LogTarget::File(p) => p.display().to_string(),
                }),
                written_lines: log.stats.written.load(Ordering::Relaxed),
                dropped_lines: log.dropped(),
                reopens: log.stats.reopens.load(Ordering::Relaxed),
            },
        };
        AdminResponse::json(200, &view)
    }

    /// `POST /api/log/reopen`: asks the log thread to reopen its file; 202, since it does so
    /// after the lines in hand (`reopens` in `GET /api/log` counts the reopens done).
    pub(super) fn reopen_log(&self) -> AdminResponse {
        match &self.ops.log {
            None => AdminResponse::error(404, "no access log (start sluice with --access-log)"),
            Some(log) => {
                log.reopen();
                AdminResponse::json(
                    202,
                    &serde_json::json!({
                        "reopen_requested": true,
                        "reopens": log.stats.reopens.load(Ordering::Relaxed),
                    }),
                )
            }
        }
    }

    pub(super) fn clients_view(&self) -> AdminResponse {
        let limits = self.ops.clients.as_ref().map(|t| t.limits());
        let (refused_connections, refused_rate) =
            self.ops.clients.as_ref().map_or((0, 0), |t| t.refusals());
        let view = ClientsView {
            enabled: limits.is_some(),
            max_conns_per_client: limits.and_then(|l| l.max_conns),
            rate_per_s: limits
                .and_then(|l| l.rate)
                .map(|r| 1e6 / r.interval_us as f64),
            burst: limits.and_then(|l| l.rate).map(|r| r.burst),
            refused_connections,
            refused_rate,
            table_bytes: self.ops.clients.as_ref().map_or(0, |t| t.memory_bytes()),
            top_by_requests: &self.ops.top.by_requests,
            top_by_refusals: &self.ops.top.by_refusals,
        };
        AdminResponse::json(200, &view)
    }

    /// The access log's and the limits' series, for `/metrics`.
    pub(super) fn ops_metrics(&self, o: &mut String) {
        use super::prometheus::{family, sample};
        if let Some(log) = &self.ops.log {
            let stats = &log.stats;
            for (name, help, n) in [
                (
                    "sluice_access_log_lines_total",
                    "Access log lines written.",
                    stats.written.load(Ordering::Relaxed),
                ),
                (
                    "sluice_access_log_dropped_total",
                    "Access log lines dropped because the log could not keep up (or failed to write).",
                    log.dropped(),
                ),
                (
                    "sluice_access_log_reopens_total",
                    "Times the access log's file was reopened (SIGUSR1, sluice ctl log reopen).",
                    stats.reopens.load(Ordering::Relaxed),
                ),
            ] {
                family(o, name, "counter", help);
                sample(o, name, "", n);
            }
        }
        if let Some(t) = &self.ops.clients {
            let (conns, rate) = t.refusals();
            let name = "sluice_client_limit_refusals_total";
            family(
                o,
                name,
                "counter",
                "Refused by a per-client limit: connections over --max-conns-per-client \
                 (limit=\"connections\"), requests or TCP connections over \
                 --rate-limit-per-client (limit=\"rate\").",
            );
            sample(o, name, "limit=\"connections\"", conns);
            sample(o, name, "limit=\"rate\"", rate);
            let name = "sluice_client_table_bytes";
            family(
                o,
                name,
                "gauge",
                "Memory of the per-client table: fixed, whatever the number of clients.",
            );
            sample(o, name, "", t.memory_bytes());
        }
    }
}
