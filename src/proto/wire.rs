//! A small protobuf writer for messages written field by field on hot paths, without building
//! the generated structs first: fields are appended in order, and a nested message's length is
//! filled in when it ends.

/// Wire types (protobuf encoding guide).
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from(field << 3 | wire));
}

/// Bytes a length-delimited field of `len` bytes takes, key and length included.
pub fn field_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field << 3)) + varint_len(len as u64) + len
}

/// The key and length of a length-delimited field whose `len` bytes the caller writes next.
pub fn len_prefix(out: &mut Vec<u8>, field: u32, len: usize) {
    key(out, field, LEN);
    put_varint(out, len as u64);
}

/// A `bytes`, `string` or already-encoded message field.
pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    len_prefix(out, field, b.len());
    out.extend_from_slice(b);
}

/// A `string` field given in parts (`aws.xray.metadata.` + a namespace, say).
pub fn string_parts(out: &mut Vec<u8>, field: u32, parts: &[&str]) {
    len_prefix(out, field, parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

/// An `int64`, `uint64`, `bool` or enum field (negative numbers take ten bytes, as in protobuf).
pub fn varint(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, VARINT);
    put_varint(out, v);
}

/// A `fixed64` or `double` field, given its bits.
pub fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A nested message being written: where its fields start, and the length bytes reserved.
#[derive(Debug)]
#[must_use = "a message begun must be ended"]
pub struct Open {
    start: usize,
    reserved: usize,
}

/// Starts a nested message; pass the result to [`end`] when its fields are written. One length
/// byte is reserved; a longer message is moved up when it ends.
pub fn begin(out: &mut Vec<u8>, field: u32) -> Open {
    begin_reserving(out, field, 1)
}

/// [`begin`] for a message usually 128 bytes to 16 kB long (a span): two length bytes.
pub fn begin_large(out: &mut Vec<u8>, field: u32) -> Open {
    begin_reserving(out, field, 2)
}

fn begin_reserving(out: &mut Vec<u8>, field: u32, reserved: usize) -> Open {
    key(out, field, LEN);
    out.resize(out.len() + reserved, 0);
    Open {
        start: out.len(),
        reserved,
    }
}

/// Ends a message, writing its (minimal) length where [`begin`] reserved room.
pub fn end(out: &mut Vec<u8>, open: Open) {
    let Open { start, reserved } = open;
    let len = out.len() - start;
    let n = varint_len(len as u64);
    if n > reserved {
        out.resize(out.len() + n - reserved, 0);
        out.copy_within(start..start + len, start + n - reserved);
    } else if n < reserved {
        out.copy_within(start..start + len, start - (reserved - n));
        out.truncate(out.len() - (reserved - n));
    }
    let mut at = start - reserved;
    let mut v = len as u64;
    while v >= 0x80 {
        out[at] = (v as u8) | 0x80;
        v >>= 7;
        at += 1;
    }
    out[at] = v as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AnyValue, ArrayValue, KeyValue, any_value};

    #[test]
    fn varints_have_prosts_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v), "{v}");
        }
    }

    #[test]
    fn nested_messages_of_any_length_decode_as_prost_writes_them() {
        // begin_large: 1 byte shrinks its length, 20,000 bytes grows it.
        for n in [1usize, 40, 200, 20_000] {
            let key = "k".repeat(n);
            let mut out = Vec::new();
            let kv = begin_large(&mut out, 1);
            bytes(&mut out, 1, key.as_bytes());
            let value = begin(&mut out, 2);
            let array = begin(&mut out, 5);
            let item = begin(&mut out, 1);
            varint(&mut out, 3, (-7i64) as u64);
            end(&mut out, item);
            let item = begin(&mut out, 1);
            fixed64(&mut out, 4, 0.5f64.to_bits());
            end(&mut out, item);
            end(&mut out, array);
            end(&mut out, value);
            end(&mut out, kv);
            let want = KeyValue {
                key,
                value: Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(any_value::Value::IntValue(-7)),
                            },
                            AnyValue {
                                value: Some(any_value::Value::DoubleValue(0.5)),
                            },
                        ],
                    })),
                }),
                ..Default::default()
            };
            // Field 1 of a message holding one KeyValue: the same bytes prost writes.
            let mut expect = Vec::new();
            prost::encoding::message::encode(1, &want, &mut expect);
            assert_eq!(out, expect, "key of {n} bytes");
        }
    }
}
