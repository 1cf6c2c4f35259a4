//! sluice: a per-core mio load balancer for TCP and HTTP/1.1 in front of unreliable backends.
//!
//! Data flow: [`server::DataPlane`] starts one [`worker::Worker`] per core; each accepts on its own
//! SO_REUSEPORT listener and proxies with [`http::session`] (HTTP/1.1) or [`tunnel`] (TCP), choosing
//! backends through [`upstream`] and a [`strategy`] over the current [`backend::BackendTable`]. The
//! control side owns the authoritative backend list and publishes a new table version for each change.

pub mod backend;
pub mod buffer;
pub mod clock;
pub mod config;
pub mod conn;
pub mod control;
pub mod http;
pub mod rng;
pub mod server;
pub mod strategy;
pub mod timer;
pub mod tunnel;
pub mod upstream;
pub mod worker;
