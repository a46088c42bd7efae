//! The walk against prost: what it accepts, indexes, captures and rejects.

use super::*;
use crate::proto::{
    AnyValue, ArrayValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, Status, any_value,
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

#[test]
fn parts_laid_end_to_end_read_as_one_batch_and_a_bad_part_leaves_nothing_behind() {
    let mut backwards = span(3, 9, None);
    backwards.end_time_unix_nano = 10;
    let a = request(vec![span(1, 1, None), span(1, 2, Some(1))]);
    let b = request(vec![span(2, 3, None), backwards]);
    // Cut inside its second span: the first span's resource and scope were already indexed.
    let c = request(vec![span(4, 4, None), span(4, 5, None)]);
    let c = c.slice(..c.len() - 7);
    let mut buf = Vec::new();
    let mut parts = Vec::new();
    for p in [&a, &c, &b] {
        parts.push(buf.len()..buf.len() + p.len());
        buf.extend_from_slice(p);
    }
    let (d, results) = decode_parts(buf.into(), &parts, Protocol::Kafka);
    assert_eq!(results[0], Ok(()));
    assert!(results[1].is_err(), "the cut part is an error");
    assert_eq!(results[2], Ok(()));
    let ids: Vec<u8> = d.batch.spans.iter().map(|s| s.span_id[0]).collect();
    assert_eq!(ids, [1, 2, 3], "nothing of the cut part is left");
    assert_eq!(
        d.rejected.total(),
        1,
        "the rejected span of the last part counts"
    );
    assert_eq!(d.batch.resources.len(), 2);
    assert_eq!(d.batch.scopes.len(), 2);
    // Indexes of the last part point at its own resource and scope, and its spans decode back.
    let last = &d.batch.spans[2];
    assert_eq!((last.resource, last.scope), (1, 1));
    assert_eq!(d.batch.decode_span(last).unwrap(), span(2, 3, None));
    assert_eq!(d.batch.service_name(last), "checkout");
    // The same bytes without the bad part decode, as one request, to the same index.
    let mut good = a.to_vec();
    good.extend_from_slice(&b);
    let whole = decode_request(good.into(), Protocol::Kafka).unwrap();
    assert_eq!(format!("{:?}", whole.batch.spans), {
        let shift = c.len() as u32;
        let mut s = d.batch.spans.clone();
        for x in &mut s[2..] {
            for r in [
                &mut x.name,
                &mut x.trace_state,
                &mut x.bytes,
                &mut x.http.route,
                &mut x.http.method,
                &mut x.http.path,
            ] {
                // Absent attributes are 0..0 and stay so.
                if r.start >= shift {
                    r.start -= shift;
                    r.end -= shift;
                }
            }
        }
        format!("{s:?}")
    });
}
