//! loadgen: how sluice is measured, tested and shown.
//!
//! - [`http`]: an open-loop HTTP/1.1 load generator (no coordinated omission).
//! - [`hold`]: opens and holds many connections, pinging each periodically.
//! - [`sim`]: the flaky servers of the flaky-servers challenge (see the top-level README), and
//!   uniform and heavy-tailed backends, with a JSON control API and the challenge's ledger.
//! - [`tls`]: the client side of TLS for the generator and the holder (`https://` targets).
//! - [`challenge`]: the challenge's client: ids at a fixed rate through a balancer, scored
//!   against the simulator's ledger.
//!
//! Everything runs on mio, one event loop per thread, with non-blocking sockets. Tests start
//! everything in-process on port 0:
//!
//! ```no_run
//! use loadgen::sim::{Profile, ServerPatch, Sim, SimConfig};
//! use loadgen::{challenge, hold, http};
//!
//! let sim = Sim::start(SimConfig::new(Profile::Flaky1).with_servers(10).with_seed(1))?;
//! let backends: Vec<std::net::SocketAddr> = sim.server_addrs();
//! sim.patch(3, ServerPatch { down: Some(true), ..Default::default() })?;
//! let score = sim.score(); // as GET /score
//! let servers = sim.servers(); // as GET /servers
//!
//! let mut cfg = http::HttpConfig::new("http://127.0.0.1:8080/")?;
//! cfg.rate_rps = 500.0;
//! cfg.duration = std::time::Duration::from_secs(2);
//! let report: http::Report = http::run(&cfg)?;
//!
//! let target = "127.0.0.1:8080";
//! let scored = challenge::run(&challenge::ChallengeConfig::new(target, sim.control_addr()))?;
//! let held = hold::run(&hold::HoldConfig::new(target.parse()?), |tick| {
//!     println!("{}", tick.to_text())
//! })?;
//! sim.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(unreachable_pub)]

pub mod buf;
pub mod challenge;
pub mod client;
pub mod h1;
pub mod hold;
pub mod http;
pub mod id;
pub mod latency;
pub mod net;
pub mod rng;
pub mod schedule;
pub mod sim;
pub mod timer;
pub mod tls;
