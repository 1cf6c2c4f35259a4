//! The HTTP/1.1 codec: head parsing and rewriting, chunked body framing. No I/O here; the proxy
//! session that uses it is [`crate::worker`]'s.

#[cfg(any(test, fuzzing))]
pub mod check;
pub(crate) mod chunked;
pub(crate) mod head;
