//! `loadgen challenge`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use loadgen::challenge::{self, ChallengeConfig, DEFAULT_CONNECTIONS, DEFAULT_RPS};

use super::{parse_addr, parse_duration, print_report, CliError, CliResult};

#[derive(Debug, Args)]
pub struct ChallengeArgs {
    /// The balancer under test: http://host:port[/path] or host:port
    #[arg(long)]
    pub target: String,
    /// The simulator's control API (flaky1's in `sim --challenge`)
    #[arg(long, default_value = "127.0.0.1:4100", value_parser = parse_addr)]
    pub sim_control: SocketAddr,
    /// Ids per second, on a fixed schedule (concurrent requests allowed)
    #[arg(long, default_value_t = DEFAULT_RPS)]
    pub rps: f64,
    #[arg(long, short = 'd', default_value = "30", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed for the ids (random if absent)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep-alive connections to the target
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,
    /// Per-request timeout
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Keep the simulator's ledger instead of clearing it first
    #[arg(long)]
    pub no_reset: bool,
    /// Print the report as one JSON object on the last line too
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ChallengeArgs) -> CliResult {
    if !args.rps.is_finite() || args.rps <= 0.0 {
        return Err(CliError::usage(format!(
            "--rps must be positive, got {}",
            args.rps
        )));
    }
    if args.duration.is_zero() || args.connections == 0 {
        return Err(CliError::usage(
            "--duration and --connections must be positive",
        ));
    }
    let mut cfg = ChallengeConfig::new(args.target, args.sim_control);
    cfg.rps = args.rps;
    cfg.duration = args.duration;
    cfg.seed = args.seed;
    cfg.connections = args.connections;
    cfg.timeout = args.timeout;
    cfg.reset = !args.no_reset;
    let report = challenge::run(&cfg)?;
    print_report(&report.to_text(), args.json.then(|| report.to_json()));
    Ok(())
}
