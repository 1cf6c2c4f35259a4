//! See sluice::proxy_protocol::check for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::proxy_protocol::check(data));
