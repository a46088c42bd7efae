//! Real OpenTelemetry SDK clients (Rust `opentelemetry-otlp`) export to a running agent over
//! gRPC, HTTP/protobuf and HTTP/JSON, gzip or not; `/api/traces` must return what they sent.

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Compression, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter as _,
};

/// Records a small trace with the real SDK: a server span with a client child and an internal
/// grandchild that errors and carries an exception event.
fn record_trace() -> (Vec<SpanData>, String) {
    let memory = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let tracer = provider.tracer("sidetrace-test");
    let root = tracer
        .span_builder("GET /cart/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/cart/{id}"),
            KeyValue::new("http.response.status_code", 500),
        ])
        .start(&tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let cx = Context::current_with_span(root);
    {
        let mut client = tracer
            .span_builder("SELECT carts")
            .with_kind(SpanKind::Client)
            .start_with_context(&tracer, &cx);
        client.set_attribute(KeyValue::new("db.system", "postgresql"));
        client.set_attribute(KeyValue::new("db.rows", 3_i64));
        client.set_attribute(KeyValue::new("cache.hit", false));
        client.set_attribute(KeyValue::new("ratio", 0.25));
        let ccx = cx.with_span(client);
        let mut inner = tracer
            .span_builder("render")
            .start_with_context(&tracer, &ccx);
        inner.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", "KeyError"),
                KeyValue::new("exception.message", "no cart"),
            ],
        );
        inner.set_status(Status::error("render failed"));
        inner.end();
        ccx.span().end();
    }
    cx.span().set_status(Status::error("boom"));
    cx.span().end();
    let spans = memory.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 3);
    (spans, trace_id)
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("checkout")
        .with_attribute(KeyValue::new("deployment.environment.name", "test"))
        .build()
}

async fn export_and_check(mut exporter: SpanExporter, agent: &sidetrace::agent::Agent) {
    exporter.set_resource(&resource());
    let (spans, trace_id) = record_trace();
    exporter
        .export(spans.clone())
        .await
        .expect("export succeeds");
    let body = common::wait_for_trace(agent, &trace_id, 3).await;
    let got = body["spans"].as_array().unwrap();
    for sent in &spans {
        let id = sent.span_context.span_id().to_string();
        let s = got
            .iter()
            .find(|s| s["span_id"] == id.as_str())
            .unwrap_or_else(|| panic!("span {id} missing"));
        assert_eq!(s["trace_id"], trace_id.as_str());
        assert_eq!(s["name"], sent.name.as_ref());
        assert_eq!(s["service"], "checkout");
        assert_eq!(s["resource"]["deployment.environment.name"], "test");
        assert_eq!(s["scope"]["name"], "sidetrace-test");
        let parent = sent.parent_span_id.to_string();
        if sent.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            assert!(s["parent_span_id"].is_null());
        } else {
            assert_eq!(s["parent_span_id"], parent.as_str());
        }
        let start = sent
            .start_time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let end = sent
            .end_time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert_eq!(s["start_time_unix_nano"].as_u64(), Some(start));
        assert_eq!(s["end_time_unix_nano"].as_u64(), Some(end));
        for kv in &sent.attributes {
            let v = &s["attributes"][kv.key.as_str()];
            match &kv.value {
                opentelemetry::Value::I64(i) => assert_eq!(v.as_i64(), Some(*i)),
                opentelemetry::Value::F64(f) => assert_eq!(v.as_f64(), Some(*f)),
                opentelemetry::Value::Bool(b) => assert_eq!(v.as_bool(), Some(*b)),
                other => assert_eq!(v.as_str(), Some(other.as_str().as_ref())),
            }
        }
    }
    let by_name = |n: &str| got.iter().find(|s| s["name"] == n).unwrap();
    assert_eq!(by_name("GET /cart/{id}")["kind"], "server");
    assert_eq!(by_name("SELECT carts")["kind"], "client");
    assert_eq!(by_name("render")["status"]["code"], "error");
    assert_eq!(by_name("render")["status"]["message"], "render failed");
    assert_eq!(by_name("render")["events"][0]["name"], "exception");
    assert_eq!(
        by_name("render")["events"][0]["attributes"]["exception.type"],
        "KeyError"
    );

    let (_, list) = common::get_json(agent, "/api/traces?service=checkout&errors=true").await;
    let summary = list["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == trace_id.as_str())
        .expect("listed");
    assert_eq!(summary["root_name"], "GET /cart/{id}");
    assert_eq!(summary["span_count"], 3);
    assert_eq!(summary["error"], true);
    let (_, none) = common::get_json(agent, "/api/traces?service=nobody").await;
    assert!(none["traces"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn grpc_exporter_round_trips() {
    let agent = common::start_local(|_| {}).await;
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", agent.addrs.otlp_grpc))
        .build()
        .unwrap();
    export_and_check(exporter, &agent).await;
    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_spans_accepted_total{protocol=\"grpc\"}"
        )
        .await,
        3.0
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn grpc_gzip_exporter_round_trips() {
    let agent = common::start_local(|_| {}).await;
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_compression(Compression::Gzip)
        .with_endpoint(format!("http://{}", agent.addrs.otlp_grpc))
        .build()
        .unwrap();
    export_and_check(exporter, &agent).await;
    agent.shutdown().await;
}

#[tokio::test]
async fn http_protobuf_exporter_round_trips() {
    let agent = common::start_local(|_| {}).await;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{}/v1/traces", agent.addrs.otlp_http))
        .build()
        .unwrap();
    export_and_check(exporter, &agent).await;
    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_spans_accepted_total{protocol=\"http_protobuf\"}"
        )
        .await,
        3.0
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn http_json_gzip_exporter_round_trips() {
    let agent = common::start_local(|_| {}).await;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_compression(Compression::Gzip)
        .with_endpoint(format!("http://{}/v1/traces", agent.addrs.otlp_http))
        .build()
        .unwrap();
    export_and_check(exporter, &agent).await;
    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_spans_accepted_total{protocol=\"http_json\"}"
        )
        .await,
        3.0
    );
    agent.shutdown().await;
}
