//! The `sluice` binary: run the proxy (the default), or `sluice ctl ...` to control a running one.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use log::info;

use sluice::config::RunArgs;
use sluice::ctl::CtlArgs;

/// sluice: a per-core load balancer for TCP and HTTP/1.1 in front of unreliable backends.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Control a running sluice through its admin API.
    Ctl(CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Ctl(args)) => match sluice::ctl::run(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluice ctl: {}", e.message);
                ExitCode::from(e.exit_code)
            }
        },
        None => run(&cli.run),
    }
}

/// Signals that stop the proxy; the main thread waits for them with `sigwait`.
fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

fn run(args: &RunArgs) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    // Block the signals before any thread starts: every thread inherits the mask, and only this
    // thread's sigwait receives them.
    let signals = shutdown_signals();
    // SAFETY: the set is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };

    let mode = settings.proxy.mode;
    let workers = settings.proxy.workers;
    let running = match sluice::control::start(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin = running
        .admin_addr
        .map_or("off".to_string(), |a| a.to_string());
    info!(
        "sluice listening on {} ({mode:?} mode, {workers} workers), admin API on {admin}",
        running.proxy_addr
    );
    // One machine-readable line on stdout, for scripts and tests that bind port 0.
    println!(
        "sluice ready proxy={} admin={admin} pid={}",
        running.proxy_addr,
        std::process::id()
    );
    let _ = std::io::stdout().flush();

    let mut signal = 0;
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::sigwait(&signals, &mut signal) };
    info!("signal {signal}: shutting down");
    running.stop();
    info!("stopped");
    ExitCode::SUCCESS
}
