//! See sluice::http::check::request_head for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::http::check::request_head(data));
