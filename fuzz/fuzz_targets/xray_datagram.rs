//! An X-Ray daemon datagram through the parser and the span view: relayed byte for byte, views decode.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::xray_datagram(data));
