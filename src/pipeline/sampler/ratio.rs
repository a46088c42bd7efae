//! Consistent probability sampling (OpenTelemetry): a ratio becomes a 56-bit threshold that the
//! trace's randomness must clear, so every agent makes the same decision for a trace; an
//! incoming `ot=th:` that is stricter is honoured, and `ot=rv:` replaces the trace ID's bits.

use crate::model::TraceId;

/// OpenTelemetry consistent probability sampling: 56 bits of randomness.
const RANDOM_BITS: u32 = 56;
pub(super) const MAX_THRESHOLD: u64 = 1 << RANDOM_BITS;

/// Consistent-probability threshold for a ratio: keep iff randomness ≥ threshold.
pub fn threshold(ratio: f64) -> u64 {
    let p = ratio.clamp(0.0, 1.0);
    ((1.0 - p) * MAX_THRESHOLD as f64).round() as u64
}

/// The trace's 56 bits of randomness: the low 7 bytes of the W3C trace ID (random in both W3C
/// and X-Ray IDs), unless `tracestate` carries an explicit `ot=rv:`.
pub fn randomness(trace_id: &TraceId, trace_state: &str) -> u64 {
    if let Some(rv) = ot_field(trace_state, "rv").and_then(|v| parse_hex56(v, false)) {
        return rv;
    }
    let mut b = [0u8; 8];
    b[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(b)
}

/// An incoming `ot=th:` threshold (hex, trailing zeros dropped) from W3C tracestate.
pub fn incoming_threshold(trace_state: &str) -> Option<u64> {
    ot_field(trace_state, "th").and_then(|v| parse_hex56(v, true))
}

fn ot_field<'a>(trace_state: &'a str, key: &str) -> Option<&'a str> {
    let ot = trace_state
        .split(',')
        .find_map(|e| e.trim().strip_prefix("ot="))?;
    ot.split(';')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix(':'))
}

/// 1–14 hex digits; thresholds are right-padded with zeros to 14 digits (OTel tracestate spec).
fn parse_hex56(v: &str, pad: bool) -> Option<u64> {
    if v.is_empty() || v.len() > 14 || (!pad && v.len() != 14) {
        return None;
    }
    let n = u64::from_str_radix(v, 16).ok()?;
    Some(n << (4 * (14 - v.len())))
}

/// The consistent ratio decision, honouring a stricter incoming threshold.
pub fn ratio_keeps(trace_id: &TraceId, trace_state: &str, ratio_threshold: u64) -> bool {
    let t = incoming_threshold(trace_state).map_or(ratio_threshold, |th| th.max(ratio_threshold));
    t < MAX_THRESHOLD && randomness(trace_id, trace_state) >= t
}
