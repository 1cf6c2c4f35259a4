//! The `sluice` binary: run the proxy (the default), or `sluice ctl ...` to control a running one.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use log::info;

use sluice::config::RunArgs;
use sluice::ctl::CtlArgs;
use sluice::upgrade;

/// The version and the git commit this binary was built from (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SLUICE_GIT_COMMIT"),
    ")"
);

/// sluice: a per-core load balancer for TCP and HTTP/1.1 in front of unreliable backends.
#[derive(Parser, Debug)]
#[command(name = "sluice", version = VERSION, about, long_about = None, args_conflicts_with_subcommands = true)]
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

/// Signals the main thread waits for with `sigwait`: INT and TERM stop the proxy (draining),
/// USR2 starts a live upgrade, HUP reloads the TLS certificates (as nginx reloads on HUP).
fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
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
    let pid_file = args.pid_file.clone();
    let started = match sluice::listeners::inherited() {
        Ok(Some(listeners)) => {
            info!(
                "live upgrade: taking over {} listening sockets",
                listeners.proxy.len()
            );
            sluice::run::start_with(settings, listeners)
        }
        Ok(None) => sluice::run::start(settings),
        Err(e) => Err(e),
    };
    let running = match started {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &pid_file {
        if let Err(e) = upgrade::write_pid_file(path, std::process::id()) {
            eprintln!("sluice: cannot write pid file {}: {e}", path.display());
            running.stop();
            return ExitCode::FAILURE;
        }
    }
    let admin = running
        .admin_addr
        .map_or("off".to_string(), |a| a.to_string());
    info!(
        "sluice listening on {} ({mode:?} mode, {workers} workers), admin API on {admin}",
        running.proxy_addr
    );
    // One machine-readable line on stdout, for scripts and tests that bind port 0. Nobody may be
    // reading it (a live upgrade's successor inherits the stdout of its predecessor): ignore errors.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "sluice ready proxy={} admin={admin} pid={}",
        running.proxy_addr,
        std::process::id()
    );
    let _ = out.flush();

    upgrade::notify_ready();

    loop {
        let mut signal = 0;
        // SAFETY: both pointers are valid for the call.
        unsafe { libc::sigwait(&signals, &mut signal) };
        if signal == libc::SIGHUP {
            info!("SIGHUP: reloading the TLS certificates");
            running.reload_tls();
            continue;
        }
        if signal == libc::SIGUSR1 {
            // logrotate's postrotate: nginx and HAProxy reopen their logs on USR1 too.
            if running.reopen_access_log() {
                info!("SIGUSR1: reopening the access log");
            }
            continue;
        }
        if signal != libc::SIGUSR2 {
            info!("signal {signal}: shutting down");
            break;
        }
        info!("SIGUSR2: starting a new process and handing it the listening sockets");
        match upgrade::spawn_successor(&running.handover) {
            Ok(child) => {
                info!(
                    "new process {} is ready; this one stops accepting and drains",
                    child.id()
                );
                break;
            }
            Err(e) => log::error!("live upgrade failed, still serving: {e}"),
        }
    }
    running.stop();
    info!("stopped");
    ExitCode::SUCCESS
}
