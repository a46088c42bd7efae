//! Zero-copy OTLP protobuf walk: validates a whole `ExportTraceServiceRequest` and indexes its spans.
//!
//! Why not prost on the hot path: a full prost decode allocates per attribute and costs ~2–4 µs a
//! span; this walk reads the same bytes in a few hundred ns (reference/performance.md). It checks
//! everything prost would (wire types, UTF-8, nesting), so exporters can later prost-decode any
//! span it accepted without a failure.

use std::ops::Range;

use bytes::Bytes;

use crate::model::{
    Batch, Decoded, HttpInfo, Protocol, RejectReason, Rejected, ResourceInfo, ScopeInfo, SpanInfo,
};

/// Deepest nesting of `AnyValue` arrays/maps accepted (prost's own recursion limit is 100).
pub const MAX_NESTING_DEPTH: u32 = 64;

/// Why a request could not be read at all (answered with 400 / `INVALID_ARGUMENT`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated protobuf message")]
    Truncated,
    #[error("malformed varint")]
    Varint,
    #[error("field number 0 is invalid")]
    FieldZero,
    #[error("wire type {wire_type} is invalid for field {field} of {message}")]
    WireType {
        message: &'static str,
        field: u32,
        wire_type: u8,
    },
    #[error("field {field} of {message} is not valid UTF-8")]
    Utf8 { message: &'static str, field: u32 },
    #[error("attribute values nested deeper than {MAX_NESTING_DEPTH} levels")]
    TooDeep,
    #[error("more than {} spans or resources in one request", u32::MAX)]
    TooMany,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Reader {
            buf,
            pos: range.start,
            end: range.end,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// Most varints in OTLP are field keys, lengths and enums of one or two bytes: those take
    /// a branch or two, inlined; longer ones (timestamps, IDs of ints) the loop below.
    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        match self.buf.get(self.pos..self.end).unwrap_or_default() {
            [b0, ..] if *b0 < 0x80 => {
                self.pos += 1;
                Ok(u64::from(*b0))
            }
            [b0, b1, ..] if *b1 < 0x80 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | u64::from(*b1) << 7)
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf[..self.end].get(self.pos) else {
                return Err(DecodeError::Truncated);
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Varint)
    }

    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| DecodeError::Varint)?;
        if field == 0 {
            return Err(DecodeError::FieldZero);
        }
        Ok((field, (key & 7) as u8))
    }

    fn bytes(&mut self) -> Result<Range<usize>, DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
        let start = self.pos;
        let end = start.checked_add(len).ok_or(DecodeError::Truncated)?;
        if end > self.end {
            return Err(DecodeError::Truncated);
        }
        self.pos = end;
        Ok(start..end)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos + N;
        if end > self.end {
            return Err(DecodeError::Truncated);
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    /// Skips a field this schema does not know (proto3 keeps going past unknown fields).
    fn skip(
        &mut self,
        message: &'static str,
        field: u32,
        wire_type: u8,
    ) -> Result<(), DecodeError> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.fixed::<8>().map(drop),
            2 => self.bytes().map(drop),
            5 => self.fixed::<4>().map(drop),
            _ => Err(DecodeError::WireType {
                message,
                field,
                wire_type,
            }),
        }
    }
}

/// The nested OTLP messages that are checked but not indexed.
#[derive(Clone, Copy)]
enum Msg {
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
enum Field {
    Str,
    Bytes,
    Varint,
    Fixed64,
    Fixed32,
    Sub(Msg),
    Unknown,
}

impl Msg {
    fn name(self) -> &'static str {
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
    fn field(self, n: u32) -> Field {
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

fn expect(message: &'static str, field: u32, wire_type: u8, want: u8) -> Result<(), DecodeError> {
    if wire_type == want {
        Ok(())
    } else {
        Err(DecodeError::WireType {
            message,
            field,
            wire_type,
        })
    }
}

fn check_utf8(
    buf: &[u8],
    r: &Range<usize>,
    message: &'static str,
    field: u32,
) -> Result<(), DecodeError> {
    let b = &buf[r.clone()];
    // Nearly every OTLP string is ASCII: the word-at-a-time check inlines, where the full UTF-8
    // validator is a call per (mostly short) string.
    if b.is_ascii() || std::str::from_utf8(b).is_ok() {
        Ok(())
    } else {
        Err(DecodeError::Utf8 { message, field })
    }
}

/// Checks one nested message against the schema, recursing into sub-messages.
fn check(buf: &[u8], range: Range<usize>, msg: Msg, depth: u32) -> Result<(), DecodeError> {
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

fn to_u32(r: Range<usize>) -> Range<u32> {
    // Requests are capped far below 4 GiB (max_request_bytes), so offsets fit in u32.
    r.start as u32..r.end as u32
}

fn index_u32(len: usize) -> Result<u32, DecodeError> {
    u32::try_from(len).map_err(|_| DecodeError::TooMany)
}

/// The key and value of one (checked) `KeyValue` message: `None` when it has no key.
fn key_value(buf: &[u8], kv: Range<usize>) -> Option<(Range<usize>, Option<Range<usize>>)> {
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
enum Scalar {
    Str(Range<usize>),
    Int(i64),
}

fn scalar(buf: &[u8], any: Range<usize>) -> Option<Scalar> {
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
fn find_service_attrs(buf: &[u8], resource: Range<usize>) -> (Range<usize>, Range<usize>) {
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
fn span_attribute(
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
                check(buf, s.clone(), Msg::AnyValue, 1)?;
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

/// Records one span attribute into `http` when it is one span metrics needs. `stable` remembers
/// which fields came from the stable semantic-convention names, which win over the old ones.
fn capture_http(
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

struct Walk<'a> {
    buf: &'a [u8],
    resources: Vec<ResourceInfo>,
    scopes: Vec<ScopeInfo>,
    spans: Vec<SpanInfo>,
    rejected: Rejected,
}

/// Reads and validates one OTLP `ExportTraceServiceRequest`, indexing its valid spans.
pub fn decode_request(buf: Bytes, protocol: Protocol) -> Result<Decoded, DecodeError> {
    let mut walk = Walk {
        buf: &buf,
        resources: Vec::new(),
        scopes: Vec::new(),
        // A span is rarely under 64 bytes on the wire; this avoids most regrowth.
        spans: Vec::with_capacity(buf.len() / 160),
        rejected: Rejected::default(),
    };
    let mut r = Reader::new(&buf, 0..buf.len());
    while !r.done() {
        let (field, wt) = r.key()?;
        if field == 1 {
            expect("ExportTraceServiceRequest", field, wt, 2)?;
            let rs = r.bytes()?;
            walk.resource_spans(rs)?;
        } else {
            r.skip("ExportTraceServiceRequest", field, wt)?;
        }
    }
    let Walk {
        resources,
        scopes,
        spans,
        rejected,
        ..
    } = walk;
    Ok(Decoded {
        batch: Batch {
            protocol,
            buf,
            resources,
            scopes,
            spans,
        },
        rejected,
    })
}

impl Walk<'_> {
    fn resource_spans(&mut self, range: Range<usize>) -> Result<(), DecodeError> {
        const NAME: &str = "ResourceSpans";
        let resource_index = index_u32(self.resources.len())?;
        self.resources.push(ResourceInfo {
            resource: 0..0,
            service: 0..0,
            version: 0..0,
        });
        let mut r = Reader::new(self.buf, range);
        while !r.done() {
            let (field, wt) = r.key()?;
            match field {
                1 => {
                    expect(NAME, field, wt, 2)?;
                    let res = r.bytes()?;
                    check(self.buf, res.clone(), Msg::Resource, 0)?;
                    let (service, version) = find_service_attrs(self.buf, res.clone());
                    let info = &mut self.resources[resource_index as usize];
                    info.resource = to_u32(res);
                    info.service = to_u32(service);
                    info.version = to_u32(version);
                }
                2 => {
                    expect(NAME, field, wt, 2)?;
                    let ss = r.bytes()?;
                    self.scope_spans(ss, resource_index)?;
                }
                3 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    check_utf8(self.buf, &s, NAME, field)?;
                }
                _ => r.skip(NAME, field, wt)?,
            }
        }
        Ok(())
    }

    fn scope_spans(&mut self, range: Range<usize>, resource: u32) -> Result<(), DecodeError> {
        const NAME: &str = "ScopeSpans";
        let scope_index = index_u32(self.scopes.len())?;
        self.scopes.push(ScopeInfo { scope: 0..0 });
        let mut r = Reader::new(self.buf, range);
        while !r.done() {
            let (field, wt) = r.key()?;
            match field {
                1 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    check(self.buf, s.clone(), Msg::Scope, 0)?;
                    self.scopes[scope_index as usize].scope = to_u32(s);
                }
                2 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    self.span(s, resource, scope_index)?;
                }
                3 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    check_utf8(self.buf, &s, NAME, field)?;
                }
                _ => r.skip(NAME, field, wt)?,
            }
        }
        Ok(())
    }

    fn span(&mut self, range: Range<usize>, resource: u32, scope: u32) -> Result<(), DecodeError> {
        const NAME: &str = "Span";
        let buf = self.buf;
        let (mut trace_id, mut span_id, mut parent) = (0..0, 0..0, 0..0);
        let mut info = SpanInfo {
            trace_id: [0; 16],
            span_id: [0; 8],
            parent_span_id: [0; 8],
            kind: 0,
            start_unix_nano: 0,
            end_unix_nano: 0,
            status_code: 0,
            name: 0..0,
            trace_state: 0..0,
            bytes: to_u32(range.clone()),
            resource,
            scope,
            http: HttpInfo::default(),
        };
        let mut stable_http = 0u8;
        let mut r = Reader::new(buf, range);
        while !r.done() {
            let (field, wt) = r.key()?;
            match field {
                1 | 2 | 4 => {
                    expect(NAME, field, wt, 2)?;
                    let b = r.bytes()?;
                    match field {
                        1 => trace_id = b,
                        2 => span_id = b,
                        _ => parent = b,
                    }
                }
                3 | 5 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    check_utf8(buf, &s, NAME, field)?;
                    if field == 5 {
                        info.name = to_u32(s);
                    } else {
                        info.trace_state = to_u32(s);
                    }
                }
                6 => {
                    expect(NAME, field, wt, 0)?;
                    info.kind = r.varint()? as i32;
                }
                7 | 8 => {
                    expect(NAME, field, wt, 1)?;
                    let t = u64::from_le_bytes(r.fixed::<8>()?);
                    if field == 7 {
                        info.start_unix_nano = t;
                    } else {
                        info.end_unix_nano = t;
                    }
                }
                9 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    span_attribute(buf, s, &mut info.http, &mut stable_http)?;
                }
                10 | 12 | 14 => {
                    expect(NAME, field, wt, 0)?;
                    r.varint()?;
                }
                11 | 13 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    let msg = if field == 11 { Msg::Event } else { Msg::Link };
                    check(buf, s, msg, 0)?;
                }
                15 => {
                    expect(NAME, field, wt, 2)?;
                    let s = r.bytes()?;
                    check(buf, s.clone(), Msg::Status, 0)?;
                    info.status_code = status_code(buf, s);
                }
                16 => {
                    expect(NAME, field, wt, 5)?;
                    r.fixed::<4>()?;
                }
                _ => r.skip(NAME, field, wt)?,
            }
        }

        let reason = if trace_id.len() != 16 || buf[trace_id.clone()].iter().all(|b| *b == 0) {
            Some(RejectReason::InvalidTraceId)
        } else if span_id.len() != 8 || buf[span_id.clone()].iter().all(|b| *b == 0) {
            Some(RejectReason::InvalidSpanId)
        } else if !(parent.is_empty() || parent.len() == 8) {
            Some(RejectReason::InvalidParentSpanId)
        } else if info.end_unix_nano < info.start_unix_nano {
            Some(RejectReason::EndBeforeStart)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.rejected.add(reason);
            return Ok(());
        }
        info.trace_id.copy_from_slice(&buf[trace_id]);
        info.span_id.copy_from_slice(&buf[span_id]);
        if parent.len() == 8 {
            info.parent_span_id.copy_from_slice(&buf[parent]);
        }
        index_u32(self.spans.len())?;
        self.spans.push(info);
        Ok(())
    }
}

/// `Status.code` of an already-checked `Status` message.
fn status_code(buf: &[u8], range: Range<usize>) -> i32 {
    let mut code = 0;
    let mut r = Reader::new(buf, range);
    while !r.done() {
        let Ok((field, wt)) = r.key() else { break };
        if (field, wt) == (3, 0) {
            code = r.varint().unwrap_or(0) as i32;
        } else if r.skip("Status", field, wt).is_err() {
            break;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        AnyValue, ArrayValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans,
        ScopeSpans, Span, Status, any_value,
    };
    use prost::Message;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn span(trace: u8, id: u8, parent: Option<u8>) -> Span {
        Span {
            trace_id: vec![trace; 16].into(),
            span_id: vec![id; 8].into(),
            parent_span_id: parent.map(|p| vec![p; 8].into()).unwrap_or_default(),
            name: format!("span-{id}"),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes: vec![kv("http.route", "/cart")],
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> Bytes {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("host.name", "h"), kv("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn indexes_spans_and_they_decode_back() {
        let spans = vec![span(1, 1, None), span(1, 2, Some(1))];
        let d = decode_request(request(spans.clone()), Protocol::Grpc).unwrap();
        assert_eq!(d.rejected.total(), 0);
        let b = &d.batch;
        assert_eq!(b.spans.len(), 2);
        assert_eq!(b.service_name(&b.spans[0]), "checkout");
        assert_eq!(b.span_name(&b.spans[1]), "span-2");
        assert!(!b.spans[0].has_parent());
        assert_eq!(b.spans[1].parent_span_id, [1; 8]);
        assert_eq!(b.spans[0].status_code, 2);
        assert_eq!(b.spans[0].duration_nanos(), 1_000);
        assert_eq!(b.decode_span(&b.spans[1]).unwrap(), spans[1]);
        let res = b.decode_resource(0).unwrap();
        assert_eq!(res.attributes.len(), 2);
    }

    #[test]
    fn http_attributes_and_service_version_are_captured_stable_names_first() {
        let int = |key: &str, v: i64| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            }),
            ..Default::default()
        };
        let mut old_then_new = span(1, 1, None);
        old_then_new.attributes = vec![
            kv("http.method", "POST"),
            kv("http.target", "/old?q=1"),
            int("http.status_code", 200),
            kv("http.request.method", "GET"),
            kv("url.path", "/users/42"),
            int("http.response.status_code", 503),
        ];
        let mut new_then_old = span(1, 2, None);
        new_then_old.attributes = vec![
            kv("http.request.method", "GET"),
            int("http.response.status_code", 429),
            kv("http.method", "POST"),
            int("http.status_code", 200),
            kv("http.target", "/legacy"),
        ];
        let mut req =
            ExportTraceServiceRequest::decode(request(vec![old_then_new, new_then_old])).unwrap();
        let res = req.resource_spans[0].resource.as_mut().unwrap();
        res.attributes.push(kv("service.version", "2.1.0"));
        let d = decode_request(req.encode_to_vec().into(), Protocol::Grpc).unwrap();
        let b = &d.batch;
        let (a, c) = (&b.spans[0].http, &b.spans[1].http);
        assert_eq!(b.text(&a.method), "GET");
        assert_eq!(b.text(&a.path), "/users/42");
        assert_eq!(a.status_code, 503);
        assert!(a.route.is_empty());
        assert_eq!(b.text(&c.method), "GET");
        assert_eq!(c.status_code, 429);
        assert_eq!(b.text(&c.path), "/legacy");
        assert_eq!(b.service_version(&b.spans[0]), "2.1.0");
        assert_eq!(b.service_name(&b.spans[0]), "checkout");
        // The fixture's route.
        let d = decode_request(request(vec![span(1, 1, None)]), Protocol::Grpc).unwrap();
        assert_eq!(d.batch.text(&d.batch.spans[0].http.route), "/cart");
    }

    #[test]
    fn invalid_spans_are_rejected_with_reasons() {
        let mut bad_trace = span(0, 1, None);
        bad_trace.trace_id = vec![0; 16].into();
        let mut short_span = span(1, 2, None);
        short_span.span_id = vec![1; 4].into();
        let mut bad_parent = span(1, 3, None);
        bad_parent.parent_span_id = vec![1; 3].into();
        let mut backwards = span(1, 4, None);
        backwards.end_time_unix_nano = 10;
        let good = span(1, 5, None);
        let d = decode_request(
            request(vec![bad_trace, short_span, bad_parent, backwards, good]),
            Protocol::Grpc,
        )
        .unwrap();
        assert_eq!(d.batch.spans.len(), 1);
        assert_eq!(d.rejected.by_reason, [1, 1, 1, 1]);
        let msg = d.rejected.message();
        assert!(msg.starts_with("rejected 4 invalid span(s)"), "{msg}");
        assert!(msg.contains("trace_id must be 16 bytes"), "{msg}");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = request(vec![span(1, 1, None)]);
        for cut in 1..good.len() {
            let _ = decode_request(good.slice(..cut), Protocol::Grpc);
        }
        assert_eq!(
            decode_request(Bytes::from_static(&[0x0a, 0x05, 0x01]), Protocol::Grpc).unwrap_err(),
            DecodeError::Truncated
        );
        // Field 1 with wire type 0 (varint) where a message is expected.
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x08, 0x01]), Protocol::Grpc),
            Err(DecodeError::WireType { .. })
        ));
    }

    #[test]
    fn span_attributes_are_checked_as_strictly_as_any_key_value() {
        // A non-UTF-8 key, and a value whose nested string is not UTF-8.
        for (key, value) in [("KEYX", "v"), ("k", "VALX")] {
            let mut s = span(1, 1, None);
            s.attributes.push(kv(key, value));
            let mut raw = request(vec![s]).to_vec();
            let at = raw
                .windows(3)
                .position(|w| w == b"KEY" || w == b"VAL")
                .unwrap();
            raw[at] = 0xc0;
            assert!(
                matches!(
                    decode_request(raw.into(), Protocol::Grpc),
                    Err(DecodeError::Utf8 {
                        message: "KeyValue" | "AnyValue",
                        ..
                    })
                ),
                "{key} {value}"
            );
        }
        // The value field sent as a varint: the wire type is refused, naming KeyValue field 2.
        let mut s = span(1, 1, None);
        s.attributes.push(kv("k", "MARK"));
        let mut raw = request(vec![s]).to_vec();
        let at = raw.windows(4).position(|w| w == b"MARK").unwrap();
        // KeyValue.value's tag (field 2, wire type 2) sits just before the AnyValue's length,
        // its tag (0x0a) and the string's length: 0x12 len 0x0a 4 "MARK".
        assert_eq!(raw[at - 4], 0x12);
        raw[at - 4] = 0x10;
        assert!(
            matches!(
                decode_request(raw.into(), Protocol::Grpc),
                Err(DecodeError::WireType {
                    message: "KeyValue",
                    field: 2,
                    ..
                })
            ),
            "wire type"
        );
    }

    #[test]
    fn invalid_utf8_anywhere_is_refused() {
        let mut s = span(1, 1, None);
        s.attributes.push(kv("k", "MARK"));
        let mut raw = request(vec![s]).to_vec();
        let at = raw.windows(4).position(|w| w == b"MARK").unwrap();
        raw[at] = 0xff;
        assert!(matches!(
            decode_request(raw.into(), Protocol::Grpc),
            Err(DecodeError::Utf8 { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = AnyValue {
            value: Some(any_value::Value::StringValue("x".into())),
        };
        for _ in 0..80 {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let mut s = span(1, 1, None);
        s.attributes.push(KeyValue {
            key: "deep".into(),
            value: Some(v),
            ..Default::default()
        });
        assert_eq!(
            decode_request(request(vec![s]), Protocol::Grpc).unwrap_err(),
            DecodeError::TooDeep
        );
    }

    #[test]
    fn varints_of_every_length_read_as_prost_writes_them() {
        let mut values: Vec<u64> = vec![0, 1, 127, 128, 255, 300, 16_383, 16_384, u64::MAX];
        values.extend((0..64).map(|b| 1u64 << b));
        values.extend((1..64).map(|b| (1u64 << b) - 1));
        for v in values {
            let mut buf = Vec::new();
            prost::encoding::encode_varint(v, &mut buf);
            buf.push(0xAA);
            let len = buf.len() - 1;
            let mut r = Reader::new(&buf, 0..len);
            assert_eq!(r.varint().unwrap(), v, "{v}");
            assert!(r.done(), "{v}: read {len} bytes");
            // Cut anywhere inside: truncated, not a wrong value (the byte after the end is not read).
            for cut in 0..len {
                let mut r = Reader::new(&buf, 0..cut);
                assert!(r.varint().is_err(), "{v} cut at {cut}");
            }
        }
        let eleven = [0xFFu8; 11];
        assert!(Reader::new(&eleven, 0..11).varint().is_err());
    }

    #[test]
    fn empty_request_is_fine() {
        let d = decode_request(Bytes::new(), Protocol::HttpProtobuf).unwrap();
        assert!(d.batch.spans.is_empty());
    }
}
