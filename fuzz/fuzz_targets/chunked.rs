//! See sluice::http::check::chunked for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::http::check::chunked(data));
