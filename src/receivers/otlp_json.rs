//! OTLP/JSON decoding (OTLP spec "JSON Protobuf Encoding"): hex IDs, lowerCamelCase keys,
//! 64-bit integers as strings or numbers, enums as integers (names accepted too), unknown fields
//! ignored, `null` meaning the default. The result is re-encoded as protobuf so that every
//! request, whatever its encoding, goes through the one validating walk in `decode.rs`.

use std::fmt;

use prost::Message;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::proto::{
    AnyValue, ArrayValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, KeyValueList,
    Resource, ResourceSpans, ScopeSpans, Span, Status, any_value, span,
};

/// Parses an OTLP/JSON `ExportTraceServiceRequest` and returns its protobuf encoding.
pub fn json_to_protobuf(body: &[u8]) -> Result<Vec<u8>, String> {
    let req: JRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid OTLP/JSON: {e}"))?;
    Ok(req.into_proto().encode_to_vec())
}

/// A number that may arrive as a JSON number or a decimal string (proto3 JSON int64 rule).
macro_rules! flexible_int {
    ($name:ident, $t:ty) => {
        #[derive(Debug, Default, Clone, Copy)]
        struct $name($t);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str(concat!(
                            "an integer (",
                            stringify!($t),
                            ") as a number or string"
                        ))
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        <$t>::try_from(v)
                            .map($name)
                            .map_err(|_| E::custom("integer out of range"))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        <$t>::try_from(v)
                            .map($name)
                            .map_err(|_| E::custom("integer out of range"))
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$name, E> {
                        if v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64 {
                            Ok($name(v as $t))
                        } else {
                            Err(E::custom("not an integer"))
                        }
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.trim()
                            .parse()
                            .map($name)
                            .map_err(|_| E::custom(format!("{v:?} is not an integer")))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
flexible_int!(U64, u64);
flexible_int!(I64, i64);
flexible_int!(U32, u32);

/// A double as a number or as "NaN" / "Infinity" / "-Infinity" / a numeric string.
#[derive(Debug, Default, Clone, Copy)]
struct F64(f64);
impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = F64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a double")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F64, E> {
                Ok(F64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F64, E> {
                match v {
                    "NaN" => Ok(F64(f64::NAN)),
                    "Infinity" => Ok(F64(f64::INFINITY)),
                    "-Infinity" => Ok(F64(f64::NEG_INFINITY)),
                    _ => v
                        .parse()
                        .map(F64)
                        .map_err(|_| E::custom(format!("{v:?} is not a double"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An enum as its integer (the OTLP rule) or, leniently, its proto name.
#[derive(Debug, Default, Clone, Copy)]
struct Enum(i32);
impl<'de> Deserialize<'de> for Enum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Enum;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an enum value as an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Enum, E> {
                i32::try_from(v)
                    .map(Enum)
                    .map_err(|_| E::custom("enum out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Enum, E> {
                i32::try_from(v)
                    .map(Enum)
                    .map_err(|_| E::custom("enum out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Enum, E> {
                span::SpanKind::from_str_name(v)
                    .map(|k| k as i32)
                    .or_else(|| {
                        crate::proto::status::StatusCode::from_str_name(v).map(|c| c as i32)
                    })
                    .map(Enum)
                    .ok_or_else(|| E::custom(format!("unknown enum value {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An ID as hex (OTLP's deviation from proto3 JSON, which would use base64).
#[derive(Debug, Default, Clone)]
struct Hex(Vec<u8>);
impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::model::parse_hex(&s)
            .map(Hex)
            .ok_or_else(|| de::Error::custom(format!("ID {s:?} is not hex")))
    }
}

/// `bytesValue`: base64, standard or URL-safe alphabet, padding optional (proto3 JSON).
#[derive(Debug, Default, Clone)]
struct Base64(Vec<u8>);
impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        decode_base64(&s)
            .map(Base64)
            .ok_or_else(|| de::Error::custom("bytesValue is not base64"))
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JRequest {
    resource_spans: Option<Vec<JResourceSpans>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JResourceSpans {
    resource: Option<JResource>,
    scope_spans: Option<Vec<JScopeSpans>>,
    schema_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JResource {
    attributes: Option<Vec<JKeyValue>>,
    dropped_attributes_count: Option<U32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JScopeSpans {
    scope: Option<JScope>,
    spans: Option<Vec<JSpan>>,
    schema_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JScope {
    name: Option<String>,
    version: Option<String>,
    attributes: Option<Vec<JKeyValue>>,
    dropped_attributes_count: Option<U32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JSpan {
    trace_id: Option<Hex>,
    span_id: Option<Hex>,
    trace_state: Option<String>,
    parent_span_id: Option<Hex>,
    flags: Option<U32>,
    name: Option<String>,
    kind: Option<Enum>,
    start_time_unix_nano: Option<U64>,
    end_time_unix_nano: Option<U64>,
    attributes: Option<Vec<JKeyValue>>,
    dropped_attributes_count: Option<U32>,
    events: Option<Vec<JEvent>>,
    dropped_events_count: Option<U32>,
    links: Option<Vec<JLink>>,
    dropped_links_count: Option<U32>,
    status: Option<JStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JEvent {
    time_unix_nano: Option<U64>,
    name: Option<String>,
    attributes: Option<Vec<JKeyValue>>,
    dropped_attributes_count: Option<U32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JLink {
    trace_id: Option<Hex>,
    span_id: Option<Hex>,
    trace_state: Option<String>,
    attributes: Option<Vec<JKeyValue>>,
    dropped_attributes_count: Option<U32>,
    flags: Option<U32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JStatus {
    message: Option<String>,
    code: Option<Enum>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JKeyValue {
    key: Option<String>,
    value: Option<JAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JAnyValue {
    string_value: Option<String>,
    bool_value: Option<bool>,
    int_value: Option<I64>,
    double_value: Option<F64>,
    array_value: Option<JArrayValue>,
    kvlist_value: Option<JKeyValueList>,
    bytes_value: Option<Base64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JArrayValue {
    values: Option<Vec<JAnyValue>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JKeyValueList {
    values: Option<Vec<JKeyValue>>,
}

fn attrs(list: Option<Vec<JKeyValue>>) -> Vec<KeyValue> {
    list.unwrap_or_default()
        .into_iter()
        .map(JKeyValue::into_proto)
        .collect()
}

fn n32(v: Option<U32>) -> u32 {
    v.unwrap_or_default().0
}

fn id(v: Option<Hex>) -> bytes::Bytes {
    v.unwrap_or_default().0.into()
}

impl JRequest {
    fn into_proto(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self
                .resource_spans
                .unwrap_or_default()
                .into_iter()
                .map(JResourceSpans::into_proto)
                .collect(),
        }
    }
}

impl JResourceSpans {
    fn into_proto(self) -> ResourceSpans {
        ResourceSpans {
            resource: self.resource.map(|r| Resource {
                attributes: attrs(r.attributes),
                dropped_attributes_count: n32(r.dropped_attributes_count),
                entity_refs: Vec::new(),
            }),
            scope_spans: self
                .scope_spans
                .unwrap_or_default()
                .into_iter()
                .map(JScopeSpans::into_proto)
                .collect(),
            schema_url: self.schema_url.unwrap_or_default(),
        }
    }
}

impl JScopeSpans {
    fn into_proto(self) -> ScopeSpans {
        ScopeSpans {
            scope: self.scope.map(|s| InstrumentationScope {
                name: s.name.unwrap_or_default(),
                version: s.version.unwrap_or_default(),
                attributes: attrs(s.attributes),
                dropped_attributes_count: n32(s.dropped_attributes_count),
            }),
            spans: self
                .spans
                .unwrap_or_default()
                .into_iter()
                .map(JSpan::into_proto)
                .collect(),
            schema_url: self.schema_url.unwrap_or_default(),
        }
    }
}

impl JSpan {
    fn into_proto(self) -> Span {
        Span {
            trace_id: id(self.trace_id),
            span_id: id(self.span_id),
            trace_state: self.trace_state.unwrap_or_default(),
            parent_span_id: id(self.parent_span_id),
            flags: n32(self.flags),
            name: self.name.unwrap_or_default(),
            kind: self.kind.unwrap_or_default().0,
            start_time_unix_nano: self.start_time_unix_nano.unwrap_or_default().0,
            end_time_unix_nano: self.end_time_unix_nano.unwrap_or_default().0,
            attributes: attrs(self.attributes),
            dropped_attributes_count: n32(self.dropped_attributes_count),
            events: self
                .events
                .unwrap_or_default()
                .into_iter()
                .map(|e| span::Event {
                    time_unix_nano: e.time_unix_nano.unwrap_or_default().0,
                    name: e.name.unwrap_or_default(),
                    attributes: attrs(e.attributes),
                    dropped_attributes_count: n32(e.dropped_attributes_count),
                })
                .collect(),
            dropped_events_count: n32(self.dropped_events_count),
            links: self
                .links
                .unwrap_or_default()
                .into_iter()
                .map(|l| span::Link {
                    trace_id: id(l.trace_id),
                    span_id: id(l.span_id),
                    trace_state: l.trace_state.unwrap_or_default(),
                    attributes: attrs(l.attributes),
                    dropped_attributes_count: n32(l.dropped_attributes_count),
                    flags: n32(l.flags),
                })
                .collect(),
            dropped_links_count: n32(self.dropped_links_count),
            status: self.status.map(|s| Status {
                message: s.message.unwrap_or_default(),
                code: s.code.unwrap_or_default().0,
            }),
        }
    }
}

impl JKeyValue {
    fn into_proto(self) -> KeyValue {
        KeyValue {
            key: self.key.unwrap_or_default(),
            value: self.value.map(JAnyValue::into_proto),
            ..Default::default()
        }
    }
}

impl JAnyValue {
    fn into_proto(self) -> AnyValue {
        use any_value::Value;
        // An empty `{}` is a valid AnyValue with no value (opentelemetry-rust once rejected it).
        let value = if let Some(s) = self.string_value {
            Some(Value::StringValue(s))
        } else if let Some(b) = self.bool_value {
            Some(Value::BoolValue(b))
        } else if let Some(i) = self.int_value {
            Some(Value::IntValue(i.0))
        } else if let Some(d) = self.double_value {
            Some(Value::DoubleValue(d.0))
        } else if let Some(a) = self.array_value {
            Some(Value::ArrayValue(ArrayValue {
                values: a
                    .values
                    .unwrap_or_default()
                    .into_iter()
                    .map(JAnyValue::into_proto)
                    .collect(),
            }))
        } else if let Some(kv) = self.kvlist_value {
            Some(Value::KvlistValue(KeyValueList {
                values: attrs(kv.values),
            }))
        } else {
            self.bytes_value.map(|b| Value::BytesValue(b.0.into()))
        };
        AnyValue { value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<ExportTraceServiceRequest, String> {
        json_to_protobuf(json.as_bytes())
            .map(|b| ExportTraceServiceRequest::decode(&b[..]).unwrap())
    }

    #[test]
    fn upstream_example_decodes() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proto/example-trace.json"
        ))
        .unwrap();
        let req = decode(&text).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            crate::model::hex(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.kind, 2);
        assert!(span.start_time_unix_nano > 1_500_000_000_000_000_000);
        assert!(!span.attributes.is_empty());
    }

    #[test]
    fn quirks_numbers_strings_names_nulls_and_empty_values() {
        let req = decode(
            r#"{"resourceSpans":[{"resource":null,"scopeSpans":[{"spans":[{
                "traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
                "name":"n","kind":"SPAN_KIND_CLIENT","startTimeUnixNano":1000,"endTimeUnixNano":"2000",
                "unknownField":{"deep":[1,2]},
                "attributes":[
                  {"key":"i","value":{"intValue":5}},{"key":"s","value":{"intValue":"-7"}},
                  {"key":"d","value":{"doubleValue":"NaN"}},{"key":"e","value":{}},
                  {"key":"b","value":{"bytesValue":"aGk="}},
                  {"key":"a","value":{"arrayValue":{"values":[{"boolValue":true}]}}}],
                "status":{"code":2,"message":null}}]}]}]}"#,
        )
        .unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.kind, 3);
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (1000, 2000));
        use any_value::Value;
        let v = |i: usize| s.attributes[i].value.clone().unwrap().value;
        assert_eq!(v(0), Some(Value::IntValue(5)));
        assert_eq!(v(1), Some(Value::IntValue(-7)));
        assert!(matches!(v(2), Some(Value::DoubleValue(d)) if d.is_nan()));
        assert_eq!(v(3), None);
        assert_eq!(v(4), Some(Value::BytesValue(b"hi".to_vec().into())));
        assert_eq!(s.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn bad_json_is_an_error_with_a_reason() {
        assert!(decode("{").unwrap_err().contains("invalid OTLP/JSON"));
        assert!(
            decode(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#)
                .unwrap_err()
                .contains("not hex")
        );
        assert!(
            decode(
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#
            )
            .is_err()
        );
    }
}
