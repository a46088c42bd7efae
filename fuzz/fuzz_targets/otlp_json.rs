//! An OTLP/JSON request: never a panic; what it accepts becomes protobuf both decoders take.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::otlp_json(data));
