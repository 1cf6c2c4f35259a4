//! sluice: a per-core mio load balancer for TCP and HTTP/1.1 in front of unreliable backends.
//!
//! Data flow: [`control::start`] starts the control thread and [`server::DataPlane`], one
//! [`worker::Worker`] per core; each worker accepts on its own SO_REUSEPORT listener and proxies with
//! [`http::session`] (HTTP/1.1) or [`tunnel`] (TCP), choosing backends through [`upstream`] and a
//! [`strategy`] over the current [`backend::BackendTable`]. The control thread owns the
//! authoritative state, serves the [`admin`] API, checks health, merges [`metrics`], and publishes a
//! new table version for each change.

pub mod admin;
pub mod backend;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod http;
pub mod link;
pub mod listeners;
pub mod metrics;
pub mod proxy_protocol;
pub mod retry;
pub mod rng;
pub mod run;
pub mod strategy;
pub mod upgrade;
pub mod worker;
