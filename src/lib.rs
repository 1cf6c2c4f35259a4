//! sluice: a per-core mio load balancer for TCP and HTTP/1.1 in front of unreliable backends.
//!
//! Data flow: [`run::start`] binds the [`listeners`] and starts one worker per core (`worker`, the
//! data-plane thread: an event loop that proxies HTTP/1.1 or TCP, choosing backends with a
//! [`strategy`] over the current [`backend::BackendTable`]) and the control thread (`control`: the
//! authoritative state, the admin API, health checks, metrics, the cluster store), which publishes
//! a new table version for each change. What crosses between the threads is in `link`.
//!
//! What is public here is what the binary, the tests and the fuzz targets use: flags and settings
//! ([`config`]), starting and stopping ([`run`], [`listeners`], [`upgrade`]), `sluice ctl`
//! ([`ctl`]), and the strategy API with the backends it picks among.

#![warn(unreachable_pub)]

pub(crate) mod admin;
pub mod backend;
pub(crate) mod clock;
pub mod config;
pub(crate) mod control;
pub mod ctl;
pub mod http;
pub(crate) mod link;
pub mod listeners;
pub(crate) mod metrics;
pub mod proxy_protocol;
pub mod retry;
pub(crate) mod rng;
pub mod run;
pub mod strategy;
pub mod tls;
pub mod upgrade;
pub(crate) mod worker;
