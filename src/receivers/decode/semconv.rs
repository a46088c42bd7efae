//! Semantic-convention capture during the walk: `service.name` and `service.version` of a
//! resource, and the HTTP attributes span metrics name operations and classify status with.

use std::ops::Range;

use crate::model::HttpInfo;

use super::DecodeError;
use super::schema::{Msg, check};
use super::wire::{Reader, check_utf8, expect, to_u32};

/// The key and value of one (checked) `KeyValue` message: `None` when it has no key.
pub(super) fn key_value(
    buf: &[u8],
    kv: Range<usize>,
) -> Option<(Range<usize>, Option<Range<usize>>)> {
    let (mut key, mut value) = (None, None);
    let mut r = Reader::new(buf, kv);
    while !r.done() {
        let (f, w) = r.key().ok()?;
        match (f, w) {
            (1, 2) => key = Some(r.bytes().ok()?),
            (2, 2) => value = Some(r.bytes().ok()?),
            _ => r.skip("KeyValue", f, w).ok()?,
        }
    }
    Some((key?, value))
}

/// A string or integer `AnyValue` (the last one wins, as in protobuf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scalar {
    Str(Range<usize>),
    Int(i64),
}

pub(super) fn scalar(buf: &[u8], any: Range<usize>) -> Option<Scalar> {
    let mut found = None;
    let mut r = Reader::new(buf, any);
    while !r.done() {
        let (f, w) = r.key().ok()?;
        match (f, w) {
            (1, 2) => found = Some(Scalar::Str(r.bytes().ok()?)),
            (3, 0) => found = Some(Scalar::Int(r.varint().ok()? as i64)),
            _ => r.skip("AnyValue", f, w).ok()?,
        }
    }
    found
}

/// Finds the `service.name` and `service.version` string attributes of a (checked) `Resource`.
pub(super) fn find_service_attrs(
    buf: &[u8],
    resource: Range<usize>,
) -> (Range<usize>, Range<usize>) {
    let (mut service, mut version) = (0..0, 0..0);
    let mut r = Reader::new(buf, resource);
    while !r.done() {
        let Ok((field, wt)) = r.key() else { break };
        if field != 1 || wt != 2 {
            if r.skip("Resource", field, wt).is_err() {
                break;
            }
            continue;
        }
        let Ok(kv) = r.bytes() else { break };
        let Some((key, Some(value))) = key_value(buf, kv) else {
            continue;
        };
        let slot = match &buf[key] {
            b"service.name" => &mut service,
            b"service.version" => &mut version,
            _ => continue,
        };
        if let Some(Scalar::Str(v)) = scalar(buf, value) {
            *slot = v;
        }
    }
    (service, version)
}

/// Checks one span attribute (a `KeyValue`, as `check` would) and captures it into `http`:
/// one walk, where checking and then finding the key again took two (~8 % of the agent's CPU in BENCHMARKS.md, "Decode").
pub(super) fn span_attribute(
    buf: &[u8],
    kv: Range<usize>,
    http: &mut HttpInfo,
    stable: &mut u8,
) -> Result<(), DecodeError> {
    const NAME: &str = "KeyValue";
    let (mut key, mut value) = (None, None);
    let mut r = Reader::new(buf, kv);
    while !r.done() {
        let (field, wt) = r.key()?;
        match field {
            1 => {
                expect(NAME, field, wt, 2)?;
                let s = r.bytes()?;
                check_utf8(buf, &s, NAME, field)?;
                key = Some(s);
            }
            2 => {
                expect(NAME, field, wt, 2)?;
                let s = r.bytes()?;
                if !plain_any_value(&buf[s.clone()]) {
                    check(buf, s.clone(), Msg::AnyValue, 1)?;
                }
                value = Some(s);
            }
            3 => {
                expect(NAME, field, wt, 0)?;
                r.varint()?;
            }
            _ => r.skip(NAME, field, wt)?,
        }
    }
    if let (Some(key), Some(value)) = (key, value) {
        capture_http(buf, key, value, http, stable);
    }
    Ok(())
}

/// True for the `AnyValue`s most attributes are, each exactly one field: a string under 128
/// bytes of ASCII, a bool or int of up to 9 varint bytes, a double (or no field at all). Those
/// are valid by their shape, so the general `check` (a call and a loop per value) is skipped;
/// any other value, valid or not, still goes through it.
#[inline]
fn plain_any_value(b: &[u8]) -> bool {
    match b {
        [] => true,
        [0x0a, len, text @ ..] => usize::from(*len) == text.len() && *len < 0x80 && text.is_ascii(),
        [0x10 | 0x18, v @ ..] => {
            matches!(v, [.., last] if *last < 0x80)
                && v.len() <= 9
                && v[..v.len() - 1].iter().all(|b| *b >= 0x80)
        }
        [0x21, v @ ..] => v.len() == 8,
        _ => false,
    }
}

/// Records one span attribute into `http` when it is one span metrics needs. `stable` remembers
/// which fields came from the stable semantic-convention names, which win over the old ones.
pub(super) fn capture_http(
    buf: &[u8],
    key: Range<usize>,
    value: Range<usize>,
    http: &mut HttpInfo,
    stable: &mut u8,
) {
    const METHOD: u8 = 1;
    const PATH: u8 = 2;
    const STATUS: u8 = 4;
    let (field, is_stable) = match &buf[key] {
        b"http.route" => (0, true),
        b"http.request.method" => (METHOD, true),
        b"http.method" => (METHOD, false),
        b"url.path" => (PATH, true),
        b"http.target" => (PATH, false),
        b"http.response.status_code" => (STATUS, true),
        b"http.status_code" => (STATUS, false),
        _ => return,
    };
    if !is_stable && *stable & field != 0 {
        return;
    }
    let Some(v) = scalar(buf, value) else { return };
    match (field, v) {
        (0, Scalar::Str(s)) => http.route = to_u32(s),
        (METHOD, Scalar::Str(s)) => http.method = to_u32(s),
        (PATH, Scalar::Str(s)) => http.path = to_u32(s),
        (STATUS, Scalar::Int(code)) => http.status_code = u16::try_from(code).unwrap_or(0),
        (STATUS, Scalar::Str(s)) => {
            http.status_code = std::str::from_utf8(&buf[s])
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        }
        _ => return,
    }
    if is_stable {
        *stable |= field;
    }
}

/// True when a (checked) message holds, in its repeated `KeyValue` field `field` (9 in a `Span`,
/// 1 in a `Resource`), the attribute `key` whose scalar value reads as `value` ("GET", "500",
/// "true", "0.5"). The local store's attribute search: a walk, no decoding into structs.
pub fn has_attribute(message: &[u8], field: u32, key: &str, value: &str) -> bool {
    let mut r = Reader::new(message, 0..message.len());
    while !r.done() {
        let Ok((f, w)) = r.key() else { return false };
        if f != field || w != 2 {
            if r.skip("Span", f, w).is_err() {
                return false;
            }
            continue;
        }
        let Ok(kv) = r.bytes() else { return false };
        let Some((k, Some(v))) = key_value(message, kv) else {
            continue;
        };
        if &message[k] == key.as_bytes() && scalar_reads_as(message, v, value) {
            return true;
        }
    }
    false
}

/// Whether an `AnyValue` (string, bool, int or double; the last one set wins) reads as `text`.
fn scalar_reads_as(buf: &[u8], any: Range<usize>, text: &str) -> bool {
    let mut found = false;
    let mut r = Reader::new(buf, any);
    while !r.done() {
        let Ok((f, w)) = r.key() else { return false };
        found = match (f, w) {
            (1, 2) => r.bytes().is_ok_and(|s| &buf[s] == text.as_bytes()),
            (2, 0) => r
                .varint()
                .is_ok_and(|b| text == if b != 0 { "true" } else { "false" }),
            (3, 0) => r
                .varint()
                .is_ok_and(|i| text.parse::<i64>() == Ok(i as i64)),
            (4, 1) => r
                .fixed::<8>()
                .is_ok_and(|d| text.parse::<f64>() == Ok(f64::from_le_bytes(d))),
            _ => {
                if r.skip("AnyValue", f, w).is_err() {
                    return false;
                }
                false
            }
        };
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Rng;

    /// The shortcut only ever says yes to what the general check accepts, and it says yes to the
    /// usual attribute values.
    #[test]
    fn a_plain_any_value_is_one_the_general_check_accepts() {
        let agrees =
            |b: &[u8]| !plain_any_value(b) || check(b, 0..b.len(), Msg::AnyValue, 1).is_ok();
        for b in [
            &b"\x0a\x03GET"[..],
            b"\x18\xc8\x01",
            b"\x10\x01",
            b"\x21\0\0\0\0\0\0\xe0\x3f",
            b"",
        ] {
            assert!(plain_any_value(b), "{b:?}");
            assert!(agrees(b));
        }
        // Valid, but not plain: the general check decides.
        for b in [
            &b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"[..],
            b"\x0a\x02\xc3\xa9",
        ] {
            assert!(!plain_any_value(b) && agrees(b));
        }
        // Every string of up to two bytes, then random ones from the bytes that matter.
        for n in 0..=0xffffu32 {
            let [a, b, ..] = n.to_le_bytes();
            assert!(agrees(&[a]) && agrees(&[a, b]), "{a:#x} {b:#x}");
        }
        let alphabet = [
            0x00, 0x01, 0x02, 0x03, 0x08, 0x0a, 0x10, 0x18, 0x21, 0x61, 0x7f, 0x80, 0xc3, 0xff,
        ];
        let mut rng = Rng::new(7);
        for _ in 0..300_000 {
            let len = rng.below(12) as usize;
            let b: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            assert!(agrees(&b), "{b:?}");
        }
    }
}
