//! The OTLP messages that are checked but not indexed, and the check that walks them as prost
//! would (wire types, UTF-8, nesting depth).

use std::ops::Range;

use super::wire::{Reader, check_utf8, expect};
use super::{DecodeError, MAX_NESTING_DEPTH};

/// The nested OTLP messages that are checked but not indexed.
#[derive(Clone, Copy)]
pub(super) enum Msg {
    Resource,
    EntityRef,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    Event,
    Link,
    Status,
}

#[derive(Clone, Copy)]
pub(super) enum Field {
    Str,
    Bytes,
    Varint,
    Fixed64,
    Fixed32,
    Sub(Msg),
    Unknown,
}

impl Msg {
    pub(super) fn name(self) -> &'static str {
        match self {
            Msg::Resource => "Resource",
            Msg::EntityRef => "EntityRef",
            Msg::Scope => "InstrumentationScope",
            Msg::KeyValue => "KeyValue",
            Msg::AnyValue => "AnyValue",
            Msg::ArrayValue => "ArrayValue",
            Msg::KeyValueList => "KeyValueList",
            Msg::Event => "Span.Event",
            Msg::Link => "Span.Link",
            Msg::Status => "Status",
        }
    }

    /// Field types from the vendored .proto files (common.proto, resource.proto, trace.proto).
    pub(super) fn field(self, n: u32) -> Field {
        match (self, n) {
            (Msg::Resource, 1) => Field::Sub(Msg::KeyValue),
            (Msg::Resource, 2) => Field::Varint,
            (Msg::Resource, 3) => Field::Sub(Msg::EntityRef),
            (Msg::EntityRef, 1..=4) => Field::Str,
            (Msg::Scope, 1 | 2) => Field::Str,
            (Msg::Scope, 3) => Field::Sub(Msg::KeyValue),
            (Msg::Scope, 4) => Field::Varint,
            (Msg::KeyValue, 1) => Field::Str,
            (Msg::KeyValue, 2) => Field::Sub(Msg::AnyValue),
            (Msg::KeyValue, 3) => Field::Varint,
            (Msg::AnyValue, 1) => Field::Str,
            (Msg::AnyValue, 2 | 3 | 8) => Field::Varint,
            (Msg::AnyValue, 4) => Field::Fixed64,
            (Msg::AnyValue, 5) => Field::Sub(Msg::ArrayValue),
            (Msg::AnyValue, 6) => Field::Sub(Msg::KeyValueList),
            (Msg::AnyValue, 7) => Field::Bytes,
            (Msg::ArrayValue, 1) => Field::Sub(Msg::AnyValue),
            (Msg::KeyValueList, 1) => Field::Sub(Msg::KeyValue),
            (Msg::Event, 1) => Field::Fixed64,
            (Msg::Event, 2) => Field::Str,
            (Msg::Event, 3) => Field::Sub(Msg::KeyValue),
            (Msg::Event, 4) => Field::Varint,
            (Msg::Link, 1 | 2) => Field::Bytes,
            (Msg::Link, 3) => Field::Str,
            (Msg::Link, 4) => Field::Sub(Msg::KeyValue),
            (Msg::Link, 5) => Field::Varint,
            (Msg::Link, 6) => Field::Fixed32,
            (Msg::Status, 2) => Field::Str,
            (Msg::Status, 3) => Field::Varint,
            _ => Field::Unknown,
        }
    }
}

/// Checks one nested message against the schema, recursing into sub-messages.
pub(super) fn check(
    buf: &[u8],
    range: Range<usize>,
    msg: Msg,
    depth: u32,
) -> Result<(), DecodeError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let name = msg.name();
    let mut r = Reader::new(buf, range);
    while !r.done() {
        let (field, wt) = r.key()?;
        match msg.field(field) {
            Field::Str => {
                expect(name, field, wt, 2)?;
                let s = r.bytes()?;
                check_utf8(buf, &s, name, field)?;
            }
            Field::Bytes => {
                expect(name, field, wt, 2)?;
                r.bytes()?;
            }
            Field::Varint => {
                expect(name, field, wt, 0)?;
                r.varint()?;
            }
            Field::Fixed64 => {
                expect(name, field, wt, 1)?;
                r.fixed::<8>()?;
            }
            Field::Fixed32 => {
                expect(name, field, wt, 5)?;
                r.fixed::<4>()?;
            }
            Field::Sub(sub) => {
                expect(name, field, wt, 2)?;
                let s = r.bytes()?;
                check(buf, s, sub, depth + 1)?;
            }
            Field::Unknown => r.skip(name, field, wt)?,
        }
    }
    Ok(())
}
