//! A gzip body through the capped inflater: never past the cap, and what fits round-trips.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::gzip(data));
