//! End to end against an independent AWS emulator (moto's server): OpenTelemetry SDK → agent
//! binary → PutTraceSegments → read back with BatchGetTraces, every document validated; and the
//! same through a fault-injecting proxy that throttles, fails, stalls or is down for a while.

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{Running, aws_env, env_refs, moto, spawn_agent, xray_client};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanExporter as _};
use prost::Message;
use serde_json::Value;
use sidetrace::exporters::xray::translate::xray_trace_id;
use sidetrace::exporters::xray::validate::validate_document;

/// Reads a trace's documents back from the endpoint until `want` arrived (or 30 s passed).
async fn read_back(endpoint: &str, trace_ids: &[String], want: usize) -> Vec<Value> {
    let client = xray_client(endpoint);
    let t = Instant::now();
    loop {
        let mut docs = Vec::new();
        for chunk in trace_ids.chunks(5) {
            let out = client
                .batch_get_traces()
                .set_trace_ids(Some(chunk.to_vec()))
                .send()
                .await
                .unwrap();
            for trace in out.traces() {
                for seg in trace.segments() {
                    docs.push(serde_json::from_str(seg.document().unwrap()).unwrap());
                }
            }
        }
        if docs.len() >= want || t.elapsed() > Duration::from_secs(30) {
            return docs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_valid(docs: &[Value]) {
    for d in docs {
        let v = validate_document(d.to_string().as_bytes());
        assert!(v.is_empty(), "invalid document {d}: {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_sdk_spans_arrive_in_xray_as_valid_segments() {
    let endpoint = moto();
    let env = aws_env(endpoint);
    let agent = spawn_agent(
        &[
            "--sampling-ratio",
            "1",
            "--set",
            "xray.idle_flush=200ms",
            "--set",
            "xray.indexed_attributes=tenant",
        ],
        &env_refs(&env),
    );
    assert!(
        agent.log.contains("sending traces to X-Ray"),
        "{}",
        agent.log
    );

    let memory = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let tracer = provider.tracer("e2e");
    let root = tracer
        .span_builder("GET /orders/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", "/orders/7"),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("server.address", "shop.local"),
            KeyValue::new("http.response.status_code", 503),
            KeyValue::new("tenant", "acme"),
        ])
        .start(&tracer);
    let trace_id: [u8; 16] = root.span_context().trace_id().to_bytes();
    let cx = Context::current_with_span(root);
    let mut db = tracer
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    db.set_attribute(KeyValue::new("db.system", "postgresql"));
    db.set_attribute(KeyValue::new("db.name", "shop"));
    db.set_attribute(KeyValue::new(
        "db.statement",
        "SELECT * FROM orders WHERE id = $1",
    ));
    db.end();
    let mut call = tracer
        .span_builder("GET")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    call.set_attribute(KeyValue::new("http.request.method", "GET"));
    call.set_attribute(KeyValue::new("url.full", "http://payments.local/charge"));
    call.set_attribute(KeyValue::new("http.response.status_code", 429));
    call.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", "Throttled"),
            KeyValue::new("exception.message", "slow down"),
        ],
    );
    call.set_status(Status::error("throttled"));
    call.end();
    cx.span().end();
    let spans = memory.get_finished_spans().unwrap();

    let mut exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", agent.grpc))
        .build()
        .unwrap();
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name("orders")
            .with_attributes([
                KeyValue::new("cloud.provider", "aws"),
                KeyValue::new("cloud.platform", "aws_ecs"),
                KeyValue::new("aws.ecs.launchtype", "fargate"),
                KeyValue::new("service.version", "2.1.0"),
            ])
            .build(),
    );
    exporter.export(spans).await.unwrap();

    let xid = xray_trace_id(&trace_id);
    let docs = read_back(endpoint, std::slice::from_ref(&xid), 3).await;
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert_valid(&docs);
    let root = docs
        .iter()
        .find(|d| d.get("type").is_none())
        .expect("one segment");
    assert_eq!(root["trace_id"], xid.as_str());
    assert_eq!(root["name"], "orders");
    assert_eq!(root["origin"], "AWS::ECS::Fargate");
    assert_eq!(root["http"]["request"]["method"], "GET");
    assert_eq!(root["http"]["response"]["status"], 503);
    assert_eq!(root["fault"], true);
    assert_eq!(root["annotations"]["tenant"], "acme");
    assert_eq!(root["service"]["version"], "2.1.0");
    let subs: Vec<&Value> = docs.iter().filter(|d| d["type"] == "subsegment").collect();
    assert_eq!(subs.len(), 2);
    for s in &subs {
        assert_eq!(s["parent_id"], root["id"]);
        assert_eq!(s["trace_id"], xid.as_str());
    }
    let sql = subs
        .iter()
        .find(|s| s.get("sql").is_some())
        .expect("database subsegment");
    assert_eq!(sql["sql"]["database_type"], "postgresql");
    let call = subs.iter().find(|s| s.get("sql").is_none()).unwrap();
    assert_eq!(call["namespace"], "remote");
    assert_eq!(call["throttle"], true);
    assert_eq!(call["error"], true);
    assert_eq!(call["cause"]["exceptions"][0]["type"], "Throttled");

    // The counter moves when the PutTraceSegments answer is back, just after moto stored them.
    let t = Instant::now();
    while agent.metric("sidetrace_exporter_sent_spans_total{exporter=\"xray\"}") < 3.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            agent.metrics_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        agent.metric("sidetrace_exporter_sent_spans_total{exporter=\"xray\"}"),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn random_w3c_ids_pass_by_default_and_are_rejected_when_epoch_is_required() {
    let endpoint = moto();
    let env = aws_env(endpoint);
    let mut trace_id = [0u8; 16];
    trace_id[..4].copy_from_slice(&0x0102_0304u32.to_be_bytes()); // 1970: no plausible epoch
    trace_id[4..].copy_from_slice(&[0xab; 12]);
    let body = request_with(trace_id, 2);

    let agent = spawn_agent(
        &["--sampling-ratio", "1", "--set", "xray.idle_flush=200ms"],
        &env_refs(&env),
    );
    post(&agent, body.clone()).await;
    let docs = read_back(endpoint, &[xray_trace_id(&trace_id)], 2).await;
    assert_eq!(docs.len(), 2);
    assert_valid(&docs);

    let mut other = trace_id;
    other[15] = 0xcd;
    let strict = spawn_agent(
        &[
            "--sampling-ratio",
            "1",
            "--set",
            "xray.idle_flush=200ms",
            "--set",
            "xray.require_epoch_trace_ids=true",
        ],
        &env_refs(&env),
    );
    post(&strict, request_with(other, 2)).await;
    let t = Instant::now();
    while strict.metric("sidetrace_exporter_rejected_spans_total{exporter=\"xray\",code=\"trace_id_epoch_out_of_range\"}") < 2.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", strict.metrics_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        strict.metric("sidetrace_exporter_sent_spans_total{exporter=\"xray\"}"),
        0.0
    );
}

/// An OTLP request of `n` spans of one trace (a root and its children).
fn request_with(trace_id: [u8; 16], n: u8) -> Vec<u8> {
    use sidetrace::proto::*;
    let spans = (1..=n)
        .map(|i| Span {
            trace_id: trace_id.to_vec().into(),
            span_id: vec![i; 8].into(),
            parent_span_id: if i == 1 {
                Default::default()
            } else {
                vec![1; 8].into()
            },
            name: format!("op-{i}"),
            kind: if i == 1 { 2 } else { 3 },
            start_time_unix_nano: 1_764_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_764_000_000_100_000_000,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(sidetrace::workload::resource("faulty")),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn post(agent: &Running, body: Vec<u8>) {
    common::process::post_protobuf(&agent.http, body).await;
}

/// How the fault proxy misbehaves for its first `failures` requests before forwarding to moto.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Throttle,
    ServerError,
    Stall,
}

#[derive(Clone)]
struct Proxy {
    fault: Fault,
    failures: usize,
    seen: Arc<AtomicUsize>,
    /// The most documents one PutTraceSegments call carried.
    max_documents: Arc<AtomicUsize>,
    upstream: String,
}

async fn proxy_handler(
    axum::extract::State(p): axum::extract::State<Proxy>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let n = p.seen.fetch_add(1, Ordering::SeqCst);
    if n < p.failures {
        match p.fault {
            Fault::Throttle => {
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [
                        ("x-amzn-errortype", "ThrottledException"),
                        ("content-type", "application/json"),
                    ],
                    r#"{"message":"Rate exceeded"}"#,
                )
                    .into_response();
            }
            Fault::ServerError => {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "application/json")],
                    "{}",
                )
                    .into_response();
            }
            Fault::Stall => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        let n = v["TraceSegmentDocuments"].as_array().map_or(0, Vec::len);
        p.max_documents.fetch_max(n, Ordering::SeqCst);
    }
    let mut fwd = reqwest::Client::new()
        .request(parts.method.clone(), format!("{}{}", p.upstream, parts.uri));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            fwd = fwd.header(k, v);
        }
    }
    let resp = fwd.body(body).send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let mut out = (status, bytes).into_response();
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

async fn start_proxy(
    listener: tokio::net::TcpListener,
    fault: Fault,
    failures: usize,
) -> Arc<AtomicUsize> {
    start_counting_proxy(listener, fault, failures).await.0
}

/// The proxy, and the most documents it saw in one call.
async fn start_counting_proxy(
    listener: tokio::net::TcpListener,
    fault: Fault,
    failures: usize,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let max_documents = Arc::new(AtomicUsize::new(0));
    let state = Proxy {
        fault,
        failures,
        seen: seen.clone(),
        max_documents: max_documents.clone(),
        upstream: moto().to_string(),
    };
    let app = axum::Router::new()
        .fallback(proxy_handler)
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, max_documents)
}

/// Client spans marked LOCAL_ROOT become two documents each: a call of 50 is never
/// passed when a pair straddles two calls, and every document of every pair arrives.
#[tokio::test(flavor = "multi_thread")]
async fn span_pairs_never_overfill_a_call() {
    use sidetrace::proto::*;
    let port = common::process::free_port();
    let env = aws_env(&format!("http://127.0.0.1:{port}"));
    let agent = spawn_agent(
        &["--sampling-ratio", "1", "--set", "xray.idle_flush=100ms"],
        &env_refs(&env),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (_, max_documents) = start_counting_proxy(listener, Fault::Throttle, 0).await;
    let id = fresh_id(u64::from(port));
    let spans = (1..=75u8)
        .map(|i| Span {
            trace_id: id.to_vec().into(),
            span_id: vec![i; 8].into(),
            name: format!("call-{i}"),
            kind: 3,
            // The first is a plain span (one document), so that a pair lands on 49 + 2.
            attributes: (i > 1)
                .then(|| KeyValue {
                    key: "aws.span.kind".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("LOCAL_ROOT".into())),
                    }),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            start_time_unix_nano: 1_764_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_764_000_000_100_000_000,
            ..Default::default()
        })
        .collect();
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(sidetrace::workload::resource("pairs")),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    post(&agent, body).await;
    let docs = read_back(moto(), &[xray_trace_id(&id)], 149).await;
    assert_eq!(
        docs.len(),
        149,
        "one document, then both of each of 74 pairs"
    );
    assert_valid(&docs);
    assert_eq!(
        max_documents.load(Ordering::SeqCst),
        50,
        "calls are filled to X-Ray's limit and never past it"
    );
    let t = Instant::now();
    while agent.metric("sidetrace_exporter_sent_spans_total{exporter=\"xray\"}") < 75.0 {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        agent.metric("sidetrace_exporter_sent_spans_total{exporter=\"xray\"}"),
        75.0
    );
}

/// Sends 6 traces × 20 spans through an agent whose X-Ray endpoint misbehaves, then checks that
/// every span arrived, nothing was dropped, and the counters add up.
async fn survives(fault: Option<Fault>, failures: usize, down_for: Option<Duration>) {
    let port = common::process::free_port();
    let proxy_url = format!("http://127.0.0.1:{port}");
    let env = aws_env(&proxy_url);
    let agent = spawn_agent(
        &[
            "--sampling-ratio",
            "1",
            "--set",
            "xray.idle_flush=100ms",
            "--set",
            "xray.request_timeout=500ms",
            "--set",
            "xray.concurrency=2",
        ],
        &env_refs(&env),
    );
    let early = match (fault, down_for) {
        (Some(f), None) => Some(
            start_proxy(
                tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap(),
                f,
                failures,
            )
            .await,
        ),
        _ => None,
    };
    let mut ids = HashSet::new();
    let mut rng = sidetrace::workload::Rng::new(port as u64);
    for _ in 0..6 {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(
            &(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as u32)
                .to_be_bytes(),
        );
        id[4..12].copy_from_slice(&rng.next_u64().to_be_bytes());
        id[12..].copy_from_slice(&(rng.next_u64() as u32).to_be_bytes());
        post(&agent, request_with(id, 20)).await;
        ids.insert(xray_trace_id(&id));
    }
    let seen = match down_for {
        Some(d) => {
            tokio::time::sleep(d).await;
            start_proxy(
                tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap(),
                Fault::Throttle,
                0,
            )
            .await
        }
        None => early.unwrap(),
    };
    let ids: Vec<String> = ids.into_iter().collect();
    let docs = read_back(moto(), &ids, 120).await;
    assert_eq!(
        docs.len(),
        120,
        "every span arrived despite {fault:?} / down {down_for:?}"
    );
    assert_valid(&docs);
    assert!(
        seen.load(Ordering::SeqCst) > failures,
        "the proxy saw the failing calls and the retries"
    );
    let t = Instant::now();
    while agent.metric("sidetrace_exporter_sent_spans_total{exporter=\"xray\"}") < 120.0 {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = agent.metrics_text();
    assert!(
        !m.lines().any(|l| l
            .starts_with("sidetrace_exporter_dropped_spans_total{exporter=\"xray\"")
            && !l.ends_with(" 0")),
        "{m}"
    );
    assert_eq!(
        agent.metric("sidetrace_exporter_pending_spans{exporter=\"xray\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_and_nothing_is_lost() {
    survives(Some(Fault::Throttle), 4, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_and_nothing_is_lost() {
    survives(Some(Fault::ServerError), 4, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stalls_past_the_timeout_are_retried_and_nothing_is_lost() {
    survives(Some(Fault::Stall), 2, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_is_down_for_a_while_loses_nothing() {
    survives(None, 0, Some(Duration::from_secs(3))).await;
}

/// A trace ID with a current epoch in its first 32 bits, unique per `n`.
fn fresh_id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    id[..4].copy_from_slice(&now.to_be_bytes());
    id[4..12].copy_from_slice(&(n | 1 << 40).to_be_bytes());
    id[12..].copy_from_slice(&(std::process::id()).to_be_bytes());
    id
}

/// Exporters run on their own tasks: with every X-Ray call hanging (the exporter itself blocked
/// waiting for a free call slot), the local store, the console and CloudWatch still get theirs.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_xray_endpoint_does_not_delay_the_other_exporters() {
    // X-Ray: accepts connections and never answers.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stall_url = format!("http://{}", stall.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in stall.incoming().flatten() {
            held.push(s);
        }
    });
    let mut env = aws_env(moto());
    env.push(("AWS_ENDPOINT_URL_XRAY", stall_url));
    let mut agent = spawn_agent(
        &[
            "--exporters",
            "xray,local,console,cloudwatch",
            "--sampling-ratio",
            "1",
            "--set",
            "xray.concurrency=2",
            "--set",
            "xray.request_timeout=60s",
            "--set",
            "cloudwatch.interval=1s",
            "--set",
            "console.grace=100ms",
            "--set",
            "drain_timeout=2s",
        ],
        &env_refs(&env),
    );
    // 8 × 50 spans: two calls hang, and the exporter waits for a free slot with more batched.
    for n in 0..8 {
        post(&agent, request_with(fresh_id(n), 50)).await;
    }
    let marker = fresh_id(99);
    post(&agent, request_with(marker, 3)).await;
    let hex_id: String = marker.iter().map(|b| format!("{b:02x}")).collect();
    let t = Instant::now();
    loop {
        let body = common::process::http_get(&agent.admin, &format!("/api/traces/{hex_id}"));
        if body.contains("op-3") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the local store did not get the trace while X-Ray was stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = |e: &str| {
        agent.metric(&format!(
            "sidetrace_exporter_sent_spans_total{{exporter=\"{e}\"}}"
        ))
    };
    assert_eq!(sent("local"), 403.0);
    assert_eq!(sent("console"), 403.0);
    // CloudWatch publishes the span metrics of all 403 spans (moto answers it) within ~1 s.
    while sent("cloudwatch") < 403.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "CloudWatch did not publish while X-Ray was stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent("xray"), 0.0, "every X-Ray call hangs");
    assert!(agent.metric("sidetrace_exporter_pending_spans{exporter=\"xray\"}") > 0.0);

    // The drain deadline passes with X-Ray still stalled: its spans are counted, not lost silently.
    assert_eq!(agent.terminate(Duration::from_secs(10)).code(), Some(0));
    let mut stdout = String::new();
    use std::io::Read as _;
    agent
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        stdout.contains(&format!("{hex_id}  faulty  op-1")),
        "the console printed the trace: {stdout}"
    );
}
