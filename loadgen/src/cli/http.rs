//! `loadgen http URL`.

use std::time::Duration;

use clap::Args;
use loadgen::http::{
    self, Body, HttpConfig, DEFAULT_CONNECTIONS, DEFAULT_RATE_RPS, DEFAULT_SEND_AHEAD,
    DEFAULT_THREADS,
};

use loadgen::tls::TlsOptions;

use super::{parse_duration, parse_ip_list, print_report, CliError, CliResult, IpList};

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Target, e.g. http://127.0.0.1:8080/work or https://localhost:8443/
    pub url: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Requests per second across all connections (open loop); 0 = closed loop, as fast as
    /// possible
    #[arg(long, default_value_t = DEFAULT_RATE_RPS)]
    pub rate: f64,
    /// Keep-alive connections
    #[arg(long, short = 'c', default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,
    /// Event-loop threads (connections are split between them)
    #[arg(long, short = 't', default_value_t = DEFAULT_THREADS)]
    pub threads: usize,
    /// Measured duration: 10, 2.5s, 500ms, 2m
    #[arg(long, short = 'd', default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before the measured duration
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub warmup: Duration,
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// Extra header 'Name: value' (repeatable)
    #[arg(long, short = 'H')]
    pub header: Vec<String>,
    /// Request body
    #[arg(long, conflicts_with = "body_id24")]
    pub body: Option<String>,
    /// A fresh random 24-character alphanumeric id as each request's body
    #[arg(long)]
    pub body_id24: bool,
    /// A new connection per request
    #[arg(long)]
    pub close: bool,
    /// Source addresses to bind round-robin, inclusive range: 127.0.0.2-127.0.0.40
    #[arg(long, value_parser = parse_ip_list)]
    pub source_ips: Option<IpList>,
    /// Open loop: send requests up to this many microseconds before they are due, batching
    /// wake-ups (latency still counts from the earlier of due time and send)
    #[arg(long, default_value_t = DEFAULT_SEND_AHEAD.as_micros() as u64)]
    pub send_ahead_us: u64,
    /// Per-request timeout
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Seed for --body-id24 ids (random if absent)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as one JSON object on the last line too
    #[arg(long)]
    pub json: bool,
}

/// How to speak TLS to an `https://` target (shared with `loadgen hold`).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// https: accept any certificate (test certificates); signatures are still checked
    #[arg(long, short = 'k', conflicts_with = "cacert")]
    pub insecure: bool,
    /// https: trust the PEM certificates in FILE instead of the system's roots
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// https: server name to send (SNI) and verify, instead of the URL's host
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// https: `on` offers each new connection a session ticket from an earlier one (resumed
    /// handshakes), `off` makes every handshake full
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub tls_resume: bool,
}

impl TlsArgs {
    pub fn options(&self) -> TlsOptions {
        TlsOptions {
            insecure: self.insecure,
            cacert: self.cacert.clone(),
            sni: self.sni.clone(),
            resume: self.tls_resume,
        }
    }
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got {text:?}")),
    }
}

pub fn run(args: HttpArgs) -> CliResult {
    let mut cfg = HttpConfig::with_tls(&args.url, &args.tls.options()).map_err(CliError::usage)?;
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(CliError::usage(format!(
            "--rate must be 0 or positive, got {}",
            args.rate
        )));
    }
    if args.connections == 0 || args.threads == 0 {
        return Err(CliError::usage(
            "--connections and --threads must be at least 1",
        ));
    }
    if args.duration.is_zero() {
        return Err(CliError::usage("--duration must be positive"));
    }
    for h in &args.header {
        let (name, value) = h
            .split_once(':')
            .filter(|(n, _)| !n.trim().is_empty())
            .ok_or_else(|| {
                CliError::usage(format!("invalid --header {h:?}: expected 'Name: value'"))
            })?;
        cfg.headers
            .push((name.trim().to_string(), value.trim().to_string()));
    }
    cfg.rate_rps = args.rate;
    cfg.connections = args.connections;
    cfg.threads = args.threads;
    cfg.duration = args.duration;
    cfg.warmup = args.warmup;
    cfg.method = args.method.to_ascii_uppercase();
    cfg.body = match (args.body, args.body_id24) {
        (_, true) => Body::Id24,
        (Some(b), false) => Body::Fixed(b.into_bytes()),
        (None, false) => Body::None,
    };
    cfg.close = args.close;
    cfg.send_ahead = Duration::from_micros(args.send_ahead_us);
    cfg.source_ips = args.source_ips.map(|l| l.0).unwrap_or_default();
    cfg.timeout = args.timeout;
    cfg.seed = args.seed;
    cfg.progress = loadgen::net::stdout_is_tty();
    let report = http::run(&cfg)?;
    print_report(&report.to_text(), args.json.then(|| report.to_json()));
    Ok(())
}
