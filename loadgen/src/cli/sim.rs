//! `loadgen sim`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Args;
use loadgen::sim::{
    self, Profile, Sim, SimConfig, SimHandle, CHALLENGE, DEFAULT_SEED, DEFAULT_SERVICE_TIME_MS,
    DEFAULT_THREADS, DEFAULT_WORKERS_PER_SERVER,
};

use super::{parse_duration, CliError, CliResult};

/// The control port defaults to the first server port plus this.
const CONTROL_PORT_OFFSET: u16 = 100;
/// How often the foreground process checks that the event loops are alive.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Server ports, half-open like the challenge's ranges: 4000-4010 is the ten ports 4000..=4009
    #[arg(long, default_value = "4000-4010", conflicts_with = "challenge")]
    pub ports: String,
    /// Control API port [default: first server port + 100]
    #[arg(long, conflicts_with = "challenge")]
    pub control_port: Option<u16>,
    /// flaky1, flaky2, flaky3, flaky4, uniform or heavytail
    #[arg(long, default_value = "flaky1", conflicts_with = "challenge")]
    pub profile: Profile,
    /// Seeds every server's parameters and answers
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub listen_ip: IpAddr,
    /// Service time of every answer (heavytail: of the 95% fast ones)
    #[arg(long, default_value_t = DEFAULT_SERVICE_TIME_MS)]
    pub service_time_ms: u64,
    /// Concurrent requests per heavytail server; the rest queue
    #[arg(long, default_value_t = DEFAULT_WORKERS_PER_SERVER)]
    pub workers_per_server: u32,
    /// Event-loop threads (servers are split between them)
    #[arg(long, default_value_t = DEFAULT_THREADS)]
    pub threads: usize,
    /// The flaky-servers challenge's three configurations: flaky1 on 4000-4010 (control 4100),
    /// flaky2 on 5000-5010 (control 5100), flaky3 on 6000-6010 (control 6100); seeds S, S+1, S+2
    #[arg(long)]
    pub challenge: bool,
    /// Stop after this long and print the scores [default: run until interrupted]
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print addresses (and final scores) as JSON lines
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SimArgs) -> CliResult {
    let sims = if args.challenge {
        sim::start_challenge(args.listen_ip, args.seed, args.service_time_ms)?
    } else {
        let ports = loadgen::net::parse_port_range(&args.ports).map_err(CliError::usage)?;
        let first = ports[0];
        let control_port = match args.control_port {
            Some(p) => p,
            None => first.checked_add(CONTROL_PORT_OFFSET).ok_or_else(|| {
                CliError::usage("no default control port above 65435; pass --control-port")
            })?,
        };
        if ports.contains(&control_port) {
            return Err(CliError::usage(format!(
                "--control-port {control_port} is one of the server ports"
            )));
        }
        let mut cfg = SimConfig::new(args.profile).with_seed(args.seed);
        cfg.servers = ports
            .iter()
            .map(|&p| SocketAddr::new(args.listen_ip, p))
            .collect();
        cfg.control = SocketAddr::new(args.listen_ip, control_port);
        cfg.service_time_ms = args.service_time_ms;
        cfg.workers_per_server = args.workers_per_server.max(1);
        cfg.threads = args.threads.max(1);
        vec![Sim::start(cfg)?]
    };
    for (k, s) in sims.iter().enumerate() {
        announce(
            s,
            args.seed + if args.challenge { k as u64 } else { 0 },
            args.json,
        );
    }
    if args.challenge {
        let ports: Vec<String> = CHALLENGE
            .iter()
            .map(|(p, first, control)| format!("{p} [{first},{}) control {control}", first + 10))
            .collect();
        log::info!("challenge: {}", ports.join("; "));
    }
    let deadline = args.duration.map(|d| Instant::now() + d);
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(dead) = sims.iter().find(|s| !s.is_running()) {
            return Err(CliError::failure(format!(
                "the {} simulator stopped unexpectedly (see the log above)",
                dead.profile()
            )));
        }
        std::thread::sleep(SUPERVISE_EVERY);
    }
    for s in &sims {
        let score = s.score();
        if args.json {
            println!("{}", serde_json::to_string(&score).unwrap_or_default());
        } else {
            println!(
                "{}: {} ids, {} accepted, {} penalty attempts, score {}, oracle bound {:.1}",
                score.profile,
                score.ids,
                score.accepted,
                score.penalty_attempts,
                score.score,
                score.oracle_bound
            );
        }
    }
    Ok(())
}

fn announce(s: &SimHandle, seed: u64, json: bool) {
    let servers = s.server_addrs();
    if json {
        let line = serde_json::json!({
            "profile": s.profile().name(),
            "seed": seed,
            "servers": servers.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "control": s.control_addr().to_string(),
        });
        println!("{line}");
        return;
    }
    let (first, last) = (servers[0], servers[servers.len() - 1]);
    println!(
        "sim {}: {} servers {first} .. {last}, control http://{} (seed {seed})",
        s.profile(),
        servers.len(),
        s.control_addr()
    );
}
