//! See sluice::http::check::response_head for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::http::check::response_head(data));
