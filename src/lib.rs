//! sluice: a per-core mio load balancer for TCP and HTTP/1.1.

pub mod buffer;
pub mod http;
pub mod timer;
