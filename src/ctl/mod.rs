//! `sluice ctl`: the command-line client of the admin API. It formats what the API returns for a
//! terminal and turns failures into clear messages and exit codes: 1 when the API refused the
//! request (its error message is shown), 3 when sluice cannot be reached.

pub mod tls;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::admin::schema::{BackendView, ClusterView, StatusView, StrategyView};
use crate::config::DEFAULT_ADMIN;
use tls::TlsCommand;

/// How long ctl waits for the admin API.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone)]
pub struct CtlArgs {
    /// Address of sluice's admin API: host:port, or the URL sluice prints (http://host:port).
    #[arg(long, default_value = DEFAULT_ADMIN, value_name = "ADDR", global = true)]
    pub admin: String,

    /// Admin token, when sluice runs with --admin-token.
    #[arg(
        long,
        env = "SLUICE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// List, add, remove, enable, disable or re-weight backends.
    #[command(subcommand)]
    Backends(BackendsCommand),
    /// Show or change the load-balancing strategy.
    #[command(subcommand)]
    Strategy(StrategyCommand),
    /// Table version and live numbers per backend.
    Status,
    /// The cluster's members and the configuration revision each has installed.
    Cluster,
    /// The certificates the TLS listener serves (`tls` or `tls list`), or `tls reload`.
    Tls {
        #[command(subcommand)]
        command: Option<TlsCommand>,
    },
    /// The access log: its counts, or reopen its file after logrotate renamed it.
    #[command(subcommand)]
    Log(LogCommand),
    /// Per-client limits: refusals and the busiest clients of the last second.
    Clients,
    /// The status table, refreshed every second until Ctrl-C.
    Top {
        /// Stop after this many refreshes (0 = never).
        #[arg(long, short = 'n', default_value_t = 0)]
        count: u64,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum BackendsCommand {
    /// List backends.
    List,
    /// Add a backend.
    Add {
        /// ip:port, name:port (every address it resolves to) or unix:/path
        address: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Add a name that does not resolve yet (it serves nothing until it does).
        #[arg(long)]
        allow_unresolved: bool,
    },
    /// Remove a backend (it drains first).
    Remove { address: String },
    /// Enable a backend.
    Enable { address: String },
    /// Disable a backend (it drains; it stays configured).
    Disable { address: String },
    /// Set a backend's weight (0-256).
    Weight { address: String, weight: u32 },
}

#[derive(Subcommand, Debug, Clone)]
pub enum LogCommand {
    /// Lines written and dropped, reopens done.
    Status,
    /// Reopen the log file (as SIGUSR1 does); sluice does it after the lines in hand.
    Reopen,
}

#[derive(Subcommand, Debug, Clone)]
pub enum StrategyCommand {
    /// Show the configured and active strategy.
    Get,
    /// Change the strategy.
    Set { name: String },
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct CtlError {
    pub message: String,
    pub exit_code: u8,
}

fn api_error(status: u16, body: &[u8]) -> CtlError {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    CtlError {
        message: format!("{text} (HTTP {status})"),
        exit_code: 1,
    }
}

/// `host:port` from `--admin`, which may also be an `http://` URL (what sluice prints at start),
/// with or without a trailing slash.
fn admin_address(text: &str) -> Result<String, CtlError> {
    if text.starts_with("https://") {
        return Err(CtlError {
            message: format!("--admin {text}: the admin API speaks plain HTTP; use http://"),
            exit_code: 2,
        });
    }
    let rest = text.strip_prefix("http://").unwrap_or(text);
    Ok(rest.trim_end_matches('/').to_string())
}

/// Percent-encodes an address for a path segment (IPv6 brackets, and anything unusual).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client {
    admin: String,
    token: Option<String>,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Vec<u8>, CtlError> {
        let unreachable = |e: String| CtlError {
            message: format!(
                "cannot reach the sluice admin API at {}: {e} (is sluice running with --admin {}?)",
                self.admin, self.admin
            ),
            exit_code: 3,
        };
        let addr = self
            .admin
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address".into()))?;
        let mut sock =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| unreachable(e.to_string()))?;
        sock.set_read_timeout(Some(TIMEOUT)).ok();
        sock.set_write_timeout(Some(TIMEOUT)).ok();
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.admin
        );
        if let Some(token) = &self.token {
            req.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if !payload.is_empty() || method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                payload.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&payload);
        sock.write_all(req.as_bytes())
            .map_err(|e| unreachable(e.to_string()))?;
        let mut raw = Vec::new();
        sock.read_to_end(&mut raw)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&raw) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(unreachable("the answer is not HTTP".into())),
        };
        let status = resp.code.unwrap_or(0);
        let body = raw[head_len..].to_vec();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(api_error(status, &body))
        }
    }
}

fn decode<T: for<'de> serde::Deserialize<'de>>(body: &[u8]) -> Result<T, CtlError> {
    serde_json::from_slice(body).map_err(|e| CtlError {
        message: format!("unexpected answer from the admin API: {e}"),
        exit_code: 1,
    })
}

/// Lays out rows as columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn state_of(b: &BackendView) -> &'static str {
    if b.draining {
        "draining"
    } else if !b.enabled {
        "disabled"
    } else if b.ejected {
        "ejected"
    } else if !b.healthy {
        "down"
    } else {
        "up"
    }
}

/// A backend given by name: its lookups' state, or the usual state once it resolves.
fn name_state(b: &BackendView) -> String {
    match (b.lookup.as_deref(), &b.lookup_error) {
        (Some("pending"), _) => "resolving".into(),
        (Some("failing"), Some(e)) => format!("{} (lookup failing: {e})", state_of(b)),
        _ => state_of(b).into(),
    }
}

/// One row per backend; a backend given by name is followed by its members, indented.
fn backends_table(list: &[BackendView]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for b in list {
        let state = match &b.addresses {
            Some(_) => name_state(b),
            None => state_of(b).to_string(),
        };
        rows.push(vec![b.address.clone(), b.weight.to_string(), state]);
        for m in b.members.iter().flatten() {
            rows.push(vec![
                format!("  {}", m.address),
                m.weight.to_string(),
                state_of(m).to_string(),
            ]);
        }
    }
    table(&["ADDRESS", "WEIGHT", "STATE"], &rows)
}

fn strategy_text(s: &StrategyView) -> String {
    let mut out = format!("configured: {}\nactive:     {}\n", s.configured, s.active);
    if let Some(reason) = &s.reason {
        out.push_str(&format!("reason:     {reason}\n"));
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

/// The status table of `sluice ctl status` (also used by `top`). Rates have one decimal and
/// are averaged over the same window as the error shares beside them; TCP mode counts
/// connections where HTTP mode counts requests.
pub fn status_text(s: &StatusView) -> String {
    let applied = if s.installed_version >= s.version {
        "applied by every worker".to_string()
    } else {
        format!("workers still on {}", s.installed_version)
    };
    let tcp = s.mode == "tcp";
    let traffic = if tcp {
        format!(
            "{:.1} conn/s  {} open connections",
            s.connections_per_s, s.active_connections
        )
    } else {
        format!(
            "{:.1} req/s  {} client connections",
            s.requests_per_s, s.active_connections
        )
    };
    let window = match s.rate_window_s {
        0 => String::new(),
        n => format!("  (rates and errors over the last {n} s)"),
    };
    let mut out = format!(
        "table version {} ({applied})  revision {}  mode {}  strategy {} (active {})\n{traffic}{window}\n\n",
        s.version, s.revision, s.mode, s.strategy.configured, s.strategy.active
    );
    let rows: Vec<Vec<String>> = s
        .backends
        .iter()
        .map(|b| {
            let rate = if tcp {
                b.connections_per_s
            } else {
                b.requests_per_s
            };
            let address = match &b.backend.name {
                Some(name) => format!("{} ({name})", b.backend.address),
                None => b.backend.address.clone(),
            };
            vec![
                address,
                state_of(&b.backend).to_string(),
                b.backend.weight.to_string(),
                b.in_flight.to_string(),
                b.queued.to_string(),
                b.active_connections.to_string(),
                format!("{rate:.1}"),
                format!("{:.1}%", b.error_rate * 100.0),
                ms(b.p50_ms),
                ms(b.p99_ms),
            ]
        })
        .collect();
    let (open, rate) = if tcp {
        ("TUNNELS", "CONN/S")
    } else {
        ("IN-FLIGHT", "REQ/S")
    };
    out.push_str(&table(
        &[
            "BACKEND", "STATE", "WEIGHT", open, "QUEUED", "CONNS", rate, "ERRORS", "P50 MS",
            "P99 MS",
        ],
        &rows,
    ));
    if s.backends.iter().any(|b| b.learned.is_some()) {
        out.push_str(
            "\nwhat bandit believes (success estimate, learned limit per window, pacing)\n\n",
        );
        out.push_str(&learned_table(s));
    }
    out
}

/// Per backend, what `bandit` has learned: why traffic goes where it goes.
fn learned_table(s: &StatusView) -> String {
    let rows: Vec<Vec<String>> = s
        .backends
        .iter()
        .filter_map(|b| b.learned.as_ref().map(|l| (b, l)))
        .map(|(b, l)| {
            let pacing = if l.backoff_ms > 0 {
                format!("{} {} ms", l.pacing, l.backoff_ms)
            } else {
                l.pacing.clone()
            };
            vec![
                b.backend.address.clone(),
                format!("{:.1}%", l.success_estimate * 100.0),
                format!("{:.0}", l.evidence),
                l.limit
                    .map_or("-".to_string(), |n| format!("{n}/{} ms", l.window_ms)),
                pacing,
                l.refused_in_a_row.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "BACKEND",
            "SUCCESS",
            "EVIDENCE",
            "LIMIT",
            "PACING",
            "429S IN A ROW",
        ],
        &rows,
    )
}

/// The member table of `sluice ctl cluster`.
pub fn cluster_text(c: &ClusterView) -> String {
    let store = if c.store_up { "up" } else { "UNREACHABLE" };
    let mut out = format!(
        "cluster {}  this instance {} at revision {}  store {store}\n\n",
        c.name, c.instance, c.revision
    );
    let rows: Vec<Vec<String>> = c
        .members
        .iter()
        .map(|m| {
            let lag = if m.revision >= c.revision {
                String::new()
            } else {
                format!(" ({} behind)", c.revision - m.revision)
            };
            vec![
                m.id.clone(),
                m.proxy.clone(),
                m.admin.clone().unwrap_or_else(|| "off".into()),
                m.version.clone(),
                format!("{}{lag}", m.revision),
            ]
        })
        .collect();
    out.push_str(&table(
        &["INSTANCE", "PROXY", "ADMIN", "VERSION", "REVISION"],
        &rows,
    ));
    out
}

/// Runs one ctl command; returns what to print.
pub fn run(args: &CtlArgs) -> Result<String, CtlError> {
    let client = Client {
        admin: admin_address(&args.admin)?,
        token: args.token.clone(),
    };
    let backend_path =
        |a: &str, suffix: &str| format!("/api/backends/{}{suffix}", encode_segment(a));
    match &args.command {
        CtlCommand::Backends(cmd) => {
            let body = match cmd {
                BackendsCommand::List => client.call("GET", "/api/backends", None)?,
                BackendsCommand::Add {
                    address,
                    weight,
                    allow_unresolved,
                } => {
                    let mut body = serde_json::json!({ "address": address, "weight": weight });
                    if *allow_unresolved {
                        body["allow_unresolved"] = true.into();
                    }
                    client.call("POST", "/api/backends", Some(body))?
                }
                BackendsCommand::Remove { address } => {
                    client.call("DELETE", &backend_path(address, ""), None)?;
                    return Ok(format!(
                        "removing {address}: it takes no new work and leaves once drained\n"
                    ));
                }
                BackendsCommand::Enable { address } => {
                    client.call("POST", &backend_path(address, "/enable"), None)?
                }
                BackendsCommand::Disable { address } => {
                    client.call("POST", &backend_path(address, "/disable"), None)?
                }
                BackendsCommand::Weight { address, weight } => client.call(
                    "PUT",
                    &backend_path(address, ""),
                    Some(serde_json::json!({ "weight": weight })),
                )?,
            };
            match cmd {
                BackendsCommand::List => Ok(backends_table(&decode::<Vec<BackendView>>(&body)?)),
                _ => Ok(backends_table(&[decode::<BackendView>(&body)?])),
            }
        }
        CtlCommand::Strategy(StrategyCommand::Get) => Ok(strategy_text(&decode(&client.call(
            "GET",
            "/api/strategy",
            None,
        )?)?)),
        CtlCommand::Strategy(StrategyCommand::Set { name }) => {
            Ok(strategy_text(&decode(&client.call(
                "PUT",
                "/api/strategy",
                Some(serde_json::json!({ "strategy": name })),
            )?)?))
        }
        CtlCommand::Status => Ok(status_text(&decode(&client.call(
            "GET",
            "/api/status",
            None,
        )?)?)),
        CtlCommand::Cluster => Ok(cluster_text(&decode(&client.call(
            "GET",
            "/api/cluster",
            None,
        )?)?)),
        CtlCommand::Tls { command } => {
            let body = match command {
                None | Some(TlsCommand::List) => client.call("GET", "/api/tls", None)?,
                Some(TlsCommand::Reload) => client.call("POST", "/api/tls/reload", None)?,
            };
            let text = tls::tls_text(&decode(&body)?);
            Ok(match command {
                Some(TlsCommand::Reload) => format!("reloaded: new handshakes use these\n{text}"),
                _ => text,
            })
        }
        CtlCommand::Log(LogCommand::Status) => json_text(&client.call("GET", "/api/log", None)?),
        CtlCommand::Log(LogCommand::Reopen) => {
            client.call("POST", "/api/log/reopen", None)?;
            Ok("access log reopen requested\n".into())
        }
        CtlCommand::Clients => json_text(&client.call("GET", "/api/clients", None)?),
        CtlCommand::Top { count } => top(&client, *count),
    }
}

/// An API answer as it came (pretty JSON).
fn json_text(body: &[u8]) -> Result<String, CtlError> {
    let v: Value = decode(body)?;
    Ok(format!("{v:#}\n"))
}

/// Redraws the status table every second; a terminal gets a cleared screen each time.
fn top(client: &Client, count: u64) -> Result<String, CtlError> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut shown = 0;
    loop {
        let status: StatusView = decode(&client.call("GET", "/api/status", None)?)?;
        let mut frame = String::new();
        if tty {
            frame.push_str("\x1b[2J\x1b[H");
        }
        frame.push_str(&status_text(&status));
        frame.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
        shown += 1;
        if count != 0 && shown >= count {
            return Ok(String::new());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::schema::{BackendStatusView, LearnedView};

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            &[vec!["xxxxx".into(), "1".into(), "z".into()]],
        );
        assert_eq!(t, "A      LONG HEADER  C\nxxxxx  1            z\n");
    }

    fn status(mode: &str) -> StatusView {
        let backend = BackendStatusView {
            backend: BackendView {
                address: "unix:/run/app.sock".into(),
                weight: 1,
                enabled: true,
                healthy: true,
                ejected: false,
                draining: false,
                revision: 1,
                ..BackendView::default()
            },
            in_flight: 3,
            queued: 0,
            active_connections: 3,
            requests_per_s: 0.4,
            connections_per_s: 2.26,
            error_rate: 0.0,
            p50_ms: None,
            learned: None,
            p99_ms: None,
        };
        StatusView {
            version: 1,
            installed_version: 1,
            revision: 1,
            cluster: None,
            mode: mode.into(),
            strategy: StrategyView {
                configured: "round-robin".into(),
                active: "round-robin".into(),
                reason: None,
                switches: 0,
                available: Vec::new(),
                revision: 1,
            },
            requests_per_s: 0.4,
            connections_per_s: 2.26,
            active_connections: 3,
            rate_window_s: 5,
            backends: vec![backend],
        }
    }

    #[test]
    fn status_shows_what_bandit_believes_when_it_is_there() {
        let mut s = status("http");
        assert!(!status_text(&s).contains("bandit believes"));
        s.backends[0].learned = Some(LearnedView {
            success_estimate: 0.912,
            evidence: 40.0,
            limit: Some(5),
            window_ms: 1000,
            pacing: "backing-off".into(),
            backoff_ms: 1050,
            refused_in_a_row: 2,
        });
        let text = status_text(&s);
        assert!(text.contains("bandit believes"), "{text}");
        assert!(
            text.contains("91.2%") && text.contains("5/1000 ms"),
            "{text}"
        );
        assert!(text.contains("backing-off 1050 ms"), "{text}");
    }

    #[test]
    fn status_shows_rates_with_a_decimal_and_connections_in_tcp_mode() {
        let http = status_text(&status("http"));
        assert!(http.contains("0.4 req/s  3 client connections"), "{http}");
        assert!(http.contains("over the last 5 s"), "{http}");
        assert!(http.contains("REQ/S"), "{http}");
        let tcp = status_text(&status("tcp"));
        assert!(tcp.contains("2.3 conn/s  3 open connections"), "{tcp}");
        assert!(tcp.contains("CONN/S") && tcp.contains("TUNNELS"), "{tcp}");
        let row = tcp
            .lines()
            .find(|l| l.starts_with("unix:/run/app.sock"))
            .unwrap();
        assert!(row.contains(" 2.3 "), "{row}");
    }

    #[test]
    fn addresses_are_encoded_for_paths() {
        assert_eq!(encode_segment("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(encode_segment("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(encode_segment("a/b"), "a%2Fb");
    }

    #[test]
    fn api_errors_show_the_message_and_status() {
        let e = api_error(404, br#"{"error": "no backend 1.2.3.4:5"}"#);
        assert_eq!(e.message, "no backend 1.2.3.4:5 (HTTP 404)");
        assert_eq!(e.exit_code, 1);
    }

    #[test]
    fn a_backend_given_by_name_lists_its_members_under_it() {
        let member = |a: &str, draining: bool| BackendView {
            address: a.into(),
            weight: 2,
            enabled: true,
            healthy: true,
            draining,
            name: Some("app.internal:80".into()),
            ..BackendView::default()
        };
        let name = BackendView {
            address: "app.internal:80".into(),
            weight: 2,
            enabled: true,
            healthy: true,
            addresses: Some(vec!["10.0.0.2:80".into()]),
            lookup: Some("failing".into()),
            lookup_error: Some("timed out".into()),
            members: Some(vec![
                member("10.0.0.2:80", false),
                member("10.0.0.1:80", true),
            ]),
            ..BackendView::default()
        };
        let t = backends_table(&[name]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("app.internal:80"), "{t}");
        assert!(lines[1].ends_with("up (lookup failing: timed out)"), "{t}");
        assert!(
            lines[2].starts_with("  10.0.0.2:80") && lines[2].ends_with("up"),
            "{t}"
        );
        assert!(lines[3].ends_with("draining"), "{t}");
    }
}
