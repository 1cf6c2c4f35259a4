//! loadgen: how sluice is measured, tested and shown.
//!
//! - [`http`]: an open-loop HTTP/1.1 load generator (no coordinated omission).
//! - [`hold`]: opens and holds many connections, pinging each periodically.
//! - [`sim`]: the flaky downstream simulator of brief 000 and the uniform / heavy-tailed
//!   backends of briefs 004 and 002, with a JSON control API and the challenge ledger.
//! - [`challenge`]: brief 000's client: ids at a fixed rate through a balancer, scored against
//!   the simulator's ledger.
//!
//! Everything runs on mio, one event loop per thread, with non-blocking sockets.

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
