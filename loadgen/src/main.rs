//! loadgen: the load generator, connection holder, downstream simulator and challenge client
//! bundled with sluice. See `loadgen --help` and loadgen/README.md.
//!
//! Exit status: 0 on success, 1 when the run fails, 2 for invalid arguments.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator, connection holder and flaky backend simulator for sluice"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open-loop HTTP/1.1 load generator (latency from the scheduled send time)
    Http(cli::http::HttpArgs),
    /// Open and hold many connections, pinging each periodically
    Hold(cli::hold::HoldArgs),
    /// Downstream simulator: flaky, uniform and heavy-tailed HTTP backends with a control API
    Sim(cli::sim::SimArgs),
    /// Client of the flaky-servers challenge: POST fresh ids through a balancer, score by the ledger
    Challenge(cli::challenge::ChallengeArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Http(args) => cli::http::run(args),
        Command::Hold(args) => cli::hold::run(args),
        Command::Sim(args) => cli::sim::run(args),
        Command::Challenge(args) => cli::challenge::run(args),
    };
    if let Err(e) = result {
        eprintln!("loadgen: error: {}", e.message);
        std::process::exit(e.exit_code);
    }
}
