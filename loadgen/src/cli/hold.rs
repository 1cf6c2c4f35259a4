//! `loadgen hold TARGET`.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;
use loadgen::hold::procs::{self, ChildLine};
use loadgen::hold::{self, HoldConfig, DEFAULT_CONNECTIONS, DEFAULT_CONNECT_RATE};
use loadgen::http::HttpConfig;

use super::{parse_addr, parse_duration, parse_ip_list, print_report, CliError, CliResult, IpList};

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Target host:port, or http://host:port/path for the pings' path, or https://... to hold
    /// TLS connections
    pub target: String,
    #[command(flatten)]
    pub tls: super::http::TlsArgs,
    /// Connections to hold (across all processes)
    #[arg(long, short = 'c', default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,
    /// Time between pings (GET, keep-alive) on each connection
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub ping_interval: Duration,
    #[arg(long, short = 'd', default_value = "30", value_parser = parse_duration)]
    pub duration: Duration,
    /// Source addresses to bind round-robin, inclusive range: 127.0.0.2-127.0.0.40
    #[arg(long, value_parser = parse_ip_list)]
    pub source_ips: Option<IpList>,
    /// Processes to split the connections over (each may hold at most its open-file limit)
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// New connections per second, per process
    #[arg(long, default_value_t = DEFAULT_CONNECT_RATE)]
    pub connect_rate: u32,
    /// Connect and ping timeout
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Leave pings of the first part of the run out of the summary's latencies (the trickle is
    /// then measured with every connection open)
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Print the summary as one JSON object on the last line too
    #[arg(long)]
    pub json: bool,
    /// Internal: run as a child of --procs, printing JSON lines
    #[arg(long, hide = true)]
    pub child_json: bool,
}

pub fn run(args: HoldArgs) -> CliResult {
    if args.connections == 0 || args.procs == 0 {
        return Err(CliError::usage(
            "--connections and --procs must be at least 1",
        ));
    }
    if args.procs > args.connections {
        return Err(CliError::usage("--procs cannot exceed --connections"));
    }
    if args.ping_interval.is_zero() || args.connect_rate == 0 {
        return Err(CliError::usage(
            "--ping-interval and --connect-rate must be positive",
        ));
    }
    let mut cfg = if args.target.contains("://") {
        let http =
            HttpConfig::with_tls(&args.target, &args.tls.options()).map_err(CliError::usage)?;
        let mut cfg = HoldConfig::new(http.target);
        cfg.host = http.host;
        cfg.path = http.path;
        cfg.tls = http.tls;
        cfg
    } else {
        HoldConfig::new(parse_addr(&args.target).map_err(CliError::usage)?)
    };
    cfg.connections = args.connections;
    cfg.ping_interval = args.ping_interval;
    cfg.duration = args.duration;
    cfg.source_ips = args.source_ips.clone().map(|l| l.0).unwrap_or_default();
    cfg.connect_rate = args.connect_rate;
    cfg.timeout = args.timeout;
    cfg.warmup = args.warmup;

    let per_process = args.connections.div_ceil(args.procs);
    hold::check_fd_limit(per_process, args.procs).map_err(CliError::usage)?;

    let summary = if args.procs > 1 && !args.child_json {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failure(format!("finding loadgen's own executable: {e}")))?;
        let children = child_args(&args, &cfg.source_ips);
        procs::run_children(&exe, &children, |tick| println!("{}", tick.to_text()))?
    } else if args.child_json {
        let summary = hold::run(&cfg, |tick| {
            println!("{}", ChildLine::Tick(tick.clone()).to_json())
        })?;
        println!("{}", ChildLine::Summary(summary).to_json());
        return Ok(());
    } else {
        hold::run(&cfg, |tick| println!("{}", tick.to_text()))?
    };
    let mut public = summary.clone();
    public.hist.clear();
    print_report(&summary.to_text(), args.json.then(|| public.to_json()));
    Ok(())
}

/// The TLS flags again, for a child.
fn tls_args(tls: &super::http::TlsArgs) -> Vec<String> {
    let mut a = Vec::new();
    if tls.insecure {
        a.push("--insecure".to_string());
    }
    if let Some(path) = &tls.cacert {
        a.extend(["--cacert".to_string(), path.display().to_string()]);
    }
    if let Some(name) = &tls.sni {
        a.extend(["--sni".to_string(), name.clone()]);
    }
    let resume = if tls.tls_resume { "on" } else { "off" };
    a.extend(["--tls-resume".to_string(), resume.to_string()]);
    a
}

/// Arguments of each child: its share of the connections and, when there are enough, its own
/// contiguous slice of the source addresses.
fn child_args(args: &HoldArgs, ips: &[IpAddr]) -> Vec<Vec<String>> {
    let k = args.procs;
    (0..k)
        .map(|i| {
            let share = args.connections / k + usize::from(i < args.connections % k);
            let mut a = vec![
                "hold".to_string(),
                args.target.clone(),
                "--child-json".into(),
                "--connections".into(),
                share.to_string(),
                "--ping-interval".into(),
                format!("{}ms", args.ping_interval.as_millis()),
                "--duration".into(),
                format!("{}ms", args.duration.as_millis()),
                "--connect-rate".into(),
                args.connect_rate.to_string(),
                "--timeout".into(),
                format!("{}ms", args.timeout.as_millis()),
                "--warmup".into(),
                format!("{}ms", args.warmup.as_millis()),
            ];
            let slice = if ips.len() >= k {
                &ips[i * ips.len() / k..(i + 1) * ips.len() / k]
            } else {
                ips
            };
            a.extend(tls_args(&args.tls));
            if let (Some(first), Some(last)) = (slice.first(), slice.last()) {
                a.push("--source-ips".into());
                a.push(format!("{first}-{last}"));
            }
            a
        })
        .collect()
}
