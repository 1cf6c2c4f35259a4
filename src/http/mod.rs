//! HTTP/1.1: head parsing and rewriting, body framing, and the proxy session that uses them.

pub mod check;
pub mod chunked;
pub mod head;
pub mod session;
