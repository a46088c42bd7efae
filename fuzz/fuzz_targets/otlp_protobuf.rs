//! An OTLP protobuf request through the zero-copy walk and prost: they agree, and the index says what prost decoded.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::otlp_protobuf(data));
