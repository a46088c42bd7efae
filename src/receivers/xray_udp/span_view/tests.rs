use prost::Message;

use super::*;
use crate::proto::{ExportTraceServiceRequest, KeyValue, any_value};
use crate::receivers::xray_udp::datagram;

const HEADER: &str = "{\"format\": \"json\", \"version\": 1}\n";

fn view(body: &str) -> ExportTraceServiceRequest {
    let d = format!("{HEADER}{body}");
    let doc = datagram::parse(d.as_bytes()).unwrap();
    let mut v = SpanViews::default();
    v.add(&doc.segment, None);
    ExportTraceServiceRequest::decode(v.take_encoded().as_slice()).unwrap()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_owned())
}

/// A server segment as the Python SDK writes one, with an SQL and an AWS subsegment.
const SERVER: &str = r#"{
  "trace_id": "1-5f84c7a8-0123456789abcdef01234567", "id": "70de5b6f19ff9a0a",
  "name": "checkout", "start_time": 1602537384.1234567, "end_time": 1602537384.5,
  "origin": "AWS::ECS::Container", "fault": true, "user": "alice",
  "service": {"version": "1.2.3"},
  "aws": {"account_id": "123456789012", "ecs": {"container": "web"},
          "xray": {"sdk": "X-Ray for Python", "sdk_version": "2.14.0"}},
  "http": {"request": {"method": "POST", "url": "http://shop/cart", "client_ip": "10.0.0.1"},
           "response": {"status": 500, "content_length": "42"}},
  "annotations": {"tenant": "ünï", "n": 7, "ok": true, "ratio": 0.5},
  "metadata": {"default": {"note": "日本語"}},
  "cause": {"exceptions": [{"id": "70de5b6f19ff9a0c", "type": "ValueError", "message": "boom",
            "stack": [{"path": "app.py", "line": 12, "label": "pay"}]}]},
  "subsegments": [
    {"id": "70de5b6f19ff9a0b", "name": "db", "start_time": 1602537384.2, "end_time": 1602537384.3,
     "namespace": "remote", "sql": {"url": "db:5432", "sanitized_query": "SELECT 1",
     "database_type": "PostgreSQL", "user": "app"},
     "subsegments": [{"id": "70de5b6f19ff9a0d", "name": "parse", "start_time": 1602537384.21,
                      "end_time": 1602537384.22}]},
    {"id": "70de5b6f19ff9a0e", "name": "DynamoDB", "start_time": 1602537384.3, "end_time": 1602537384.4,
     "namespace": "aws", "aws": {"operation": "GetItem", "region": "eu-west-1", "table_name": "carts"}},
    {"id": "70de5b6f19ff9a0f", "name": "slow", "start_time": 1602537384.3, "in_progress": true}
  ]
}"#;

#[test]
fn a_segment_becomes_a_server_span_and_its_subsegments_children() {
    let req = view(SERVER);
    assert_eq!(req.resource_spans.len(), 1);
    let rs = &req.resource_spans[0];
    let res = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(res, "service.name"), Some(&s("checkout")));
    assert_eq!(attr(res, "service.version"), Some(&s("1.2.3")));
    assert_eq!(attr(res, "cloud.platform"), Some(&s("aws_ecs")));
    assert_eq!(attr(res, "cloud.account.id"), Some(&s("123456789012")));
    assert_eq!(
        attr(res, "telemetry.sdk.name"),
        Some(&s("X-Ray for Python"))
    );
    let spans = &rs.scope_spans[0].spans;
    // The in-progress subsegment has no view; nested ones are flattened.
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["parse", "db", "DynamoDB", "checkout"]);
    let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap();

    let root = by("checkout");
    assert_eq!(
        root.trace_id.as_ref(),
        [
            0x5f, 0x84, 0xc7, 0xa8, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23,
            0x45, 0x67
        ]
    );
    assert_eq!(
        root.span_id.as_ref(),
        [0x70, 0xde, 0x5b, 0x6f, 0x19, 0xff, 0x9a, 0x0a]
    );
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.kind, KIND_SERVER);
    assert_eq!(root.start_time_unix_nano, 1_602_537_384_123_457_000);
    assert_eq!(root.end_time_unix_nano, 1_602_537_384_500_000_000);
    let st = root.status.as_ref().unwrap();
    assert_eq!((st.code, st.message.as_str()), (2, "boom"));
    let a = &root.attributes;
    assert_eq!(attr(a, "http.method"), Some(&s("POST")));
    assert_eq!(attr(a, "http.url"), Some(&s("http://shop/cart")));
    assert_eq!(attr(a, "http.client_ip"), Some(&s("10.0.0.1")));
    assert_eq!(
        attr(a, "http.status_code"),
        Some(&any_value::Value::IntValue(500))
    );
    assert_eq!(
        attr(a, "http.response_content_length"),
        Some(&any_value::Value::IntValue(42))
    );
    assert_eq!(attr(a, "enduser.id"), Some(&s("alice")));
    assert_eq!(attr(a, "tenant"), Some(&s("ünï")));
    assert_eq!(attr(a, "n"), Some(&any_value::Value::IntValue(7)));
    assert_eq!(attr(a, "ok"), Some(&any_value::Value::BoolValue(true)));
    assert_eq!(attr(a, "ratio"), Some(&any_value::Value::DoubleValue(0.5)));
    let Some(any_value::Value::ArrayValue(keys)) = attr(a, "aws.xray.annotations") else {
        panic!("annotation keys listed");
    };
    assert_eq!(keys.values.len(), 4);
    assert_eq!(
        attr(a, "aws.xray.metadata.default"),
        Some(&s(r#"{"note": "日本語"}"#)),
        "the namespace's JSON text as sent"
    );
    let ev = &root.events[0];
    assert_eq!(ev.name, "exception");
    assert_eq!(
        attr(&ev.attributes, "exception.type"),
        Some(&s("ValueError"))
    );
    assert_eq!(
        attr(&ev.attributes, "exception.stacktrace"),
        Some(&s("at pay (app.py:12)"))
    );

    let db = by("db");
    assert_eq!(db.kind, KIND_CLIENT);
    assert_eq!(db.parent_span_id, root.span_id);
    assert!(db.status.is_none());
    assert_eq!(attr(&db.attributes, "db.statement"), Some(&s("SELECT 1")));
    assert_eq!(attr(&db.attributes, "db.system"), Some(&s("PostgreSQL")));
    assert_eq!(by("parse").kind, KIND_INTERNAL);
    assert_eq!(by("parse").parent_span_id, db.span_id);
    let ddb = by("DynamoDB");
    assert_eq!(ddb.kind, KIND_CLIENT);
    assert_eq!(attr(&ddb.attributes, "aws.operation"), Some(&s("GetItem")));
    assert_eq!(attr(&ddb.attributes, "rpc.method"), Some(&s("GetItem")));
    assert_eq!(attr(&ddb.attributes, "aws.table_name"), Some(&s("carts")));
}

#[test]
fn an_independent_subsegment_keeps_its_parent_and_names_no_service() {
    let req = view(
        r#"{"type":"subsegment","trace_id":"1-5f84c7a8-0123456789abcdef01234567",
            "id":"70de5b6f19ff9a01","parent_id":"70de5b6f19ff9a0a","name":"api.example.com",
            "namespace":"remote","start_time":1.0,"end_time":2.0,"error":true,
            "http":{"response":{"status":404}}}"#,
    );
    let rs = &req.resource_spans[0];
    assert_eq!(
        attr(&rs.resource.as_ref().unwrap().attributes, "service.name"),
        Some(&s("unknown_service"))
    );
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(span.kind, KIND_CLIENT);
    assert_eq!(
        span.parent_span_id.as_ref(),
        [0x70, 0xde, 0x5b, 0x6f, 0x19, 0xff, 0x9a, 0x0a]
    );
    assert!(
        span.status.is_none(),
        "a 4xx error is the caller's, not a fault"
    );
}

#[test]
fn in_progress_documents_make_no_spans() {
    let d = format!(
        "{HEADER}{}",
        r#"{"trace_id":"1-5f84c7a8-0123456789abcdef01234567","id":"70de5b6f19ff9a0a","name":"x","start_time":1.0,"in_progress":true}"#
    );
    let doc = datagram::parse(d.as_bytes()).unwrap();
    let mut v = SpanViews::default();
    assert_eq!(v.add(&doc.segment, None), 0);
    assert!(v.is_empty());
}

/// The span view goes through the same validating decoder as any OTLP request.
#[test]
fn the_view_decodes_as_an_otlp_request() {
    let d = format!("{HEADER}{SERVER}");
    let doc = datagram::parse(d.as_bytes()).unwrap();
    let mut v = SpanViews::default();
    v.add(&doc.segment, None);
    let decoded = crate::receivers::decode::decode_request(
        v.take_encoded().into(),
        crate::model::Protocol::XrayUdp,
    )
    .unwrap();
    assert_eq!(decoded.batch.spans.len(), 4);
    assert_eq!(decoded.rejected.total(), 0);
}

#[test]
fn documents_of_one_service_share_one_resource() {
    let doc = |id: &str, name: &str| {
        format!(
            r#"{{"trace_id":"1-5f84c7a8-0123456789abcdef01234567","id":"{id}","name":"{name}","start_time":1.0,"end_time":2.0}}"#
        )
    };
    let mut v = SpanViews::default();
    for (id, name) in [
        ("70de5b6f19ff9a01", "shop"),
        ("70de5b6f19ff9a02", "shop"),
        ("70de5b6f19ff9a03", "cart"),
    ] {
        let d = format!("{HEADER}{}", doc(id, name));
        v.add(&datagram::parse(d.as_bytes()).unwrap().segment, None);
    }
    let req = ExportTraceServiceRequest::decode(v.take_encoded().as_slice()).unwrap();
    let shape: Vec<usize> = req
        .resource_spans
        .iter()
        .map(|r| r.scope_spans[0].spans.len())
        .collect();
    assert_eq!(shape, [2, 1]);
}
