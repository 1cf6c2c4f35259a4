//! The `sluice` binary: parse flags, start the proxy.

use std::process::ExitCode;

use clap::Parser;

use sluice::config::RunArgs;

/// sluice: a per-core load balancer for TCP and HTTP/1.1 in front of unreliable backends.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let settings = match cli.run.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sluice::control::run(settings) {
        eprintln!("sluice: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
