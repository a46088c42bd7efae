//! Raw-protocol tests: what OTLP clients get back for bad, oversized, partially invalid and
//! refused requests, over real loopback sockets (HTTP and gRPC).

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use sidetrace::model::Protocol;
use sidetrace::model::RequestOutcome;
use sidetrace::pipeline::{MemoryGuard, Pipeline, Queue, ReceiverStats};
use sidetrace::proto::*;
use sidetrace::receivers::connections::Connections;
use sidetrace::receivers::{otlp_grpc, otlp_http};
use sidetrace::telemetry::span_metrics::SpanMetrics;
use sidetrace::telemetry::span_metrics::SpanMetricsConfig;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};

fn span(trace: Vec<u8>, id: Vec<u8>, parent: Vec<u8>, start: u64, end: u64) -> Span {
    Span {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_span_id: parent.into(),
        name: "op".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

fn good_span(n: u8) -> Span {
    span(vec![9; 16], vec![n; 8], vec![], 10, 20)
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// One valid span and one of each kind of invalid span.
fn mixed_request() -> Vec<u8> {
    request(vec![
        good_span(1),
        span(vec![0; 16], vec![2; 8], vec![], 10, 20),
        span(vec![9; 15], vec![3; 8], vec![], 10, 20),
        span(vec![9; 16], vec![0; 8], vec![], 10, 20),
        span(vec![9; 16], vec![5; 8], vec![1; 4], 10, 20),
        span(vec![9; 16], vec![6; 8], vec![], 30, 20),
    ])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(
    addr: SocketAddr,
    content_type: &str,
    gzip_body: bool,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", content_type);
    if gzip_body {
        req = req.header("content-encoding", "gzip");
    }
    req.body(body).send().await.unwrap()
}

async fn rpc_status(r: reqwest::Response) -> RpcStatus {
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    RpcStatus::decode(r.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn http_bad_requests_get_spec_answers() {
    let agent = common::start_local(|c| c.receivers.max_request_bytes = 64 * 1024).await;
    let addr = agent.addrs.otlp_http;

    let r = post(
        addr,
        "application/x-protobuf",
        false,
        vec![0x0a, 0x05, 0x01],
    )
    .await;
    assert_eq!(r.status(), 400);
    let st = rpc_status(r).await;
    assert_eq!(st.code, code::INVALID_ARGUMENT);
    assert!(st.message.contains("truncated"), "{}", st.message);

    let r = post(
        addr,
        "application/json",
        false,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid OTLP/JSON")
    );

    let r = post(addr, "text/plain", false, b"hello".to_vec()).await;
    assert_eq!(r.status(), 415);
    assert_eq!(rpc_status(r).await.code, code::INVALID_ARGUMENT);

    let r = reqwest::get(format!("http://{addr}/v1/traces"))
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");

    let r = post(addr, "application/x-protobuf", false, vec![0u8; 100 * 1024]).await;
    assert_eq!(r.status(), 413);
    assert_eq!(rpc_status(r).await.code, code::RESOURCE_EXHAUSTED);

    // A gzip bomb: 40 KiB on the wire, 40 MiB inflated; refused at the 64 KiB cap.
    let bomb = gzip(&vec![0u8; 40 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let r = post(addr, "application/x-protobuf", true, bomb).await;
    assert_eq!(r.status(), 413);
    assert!(rpc_status(r).await.message.contains("decompressed"));

    let r = post(
        addr,
        "application/x-protobuf",
        true,
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);

    let r = post(addr, "application/x-protobuf", false, vec![]).await;
    assert_eq!(r.status(), 200);
    let ok = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        ok.partial_success, None,
        "full success leaves partial_success unset"
    );

    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"too_large\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"malformed\"}"
        )
        .await,
        2.0
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn http_invalid_spans_get_partial_success_in_both_encodings() {
    let agent = common::start_local(|_| {}).await;
    let addr = agent.addrs.otlp_http;

    let r = post(addr, "application/x-protobuf", false, mixed_request()).await;
    assert_eq!(r.status(), 200);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let ps = resp.partial_success.expect("partial success");
    assert_eq!(ps.rejected_spans, 5);
    assert!(
        ps.error_message.contains("trace_id must be 16 bytes"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message.contains("end_time_unix_nano is before"),
        "{}",
        ps.error_message
    );

    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"ok","startTimeUnixNano":"1","endTimeUnixNano":"2"},
        {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b71","name":"short id","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let r = post(addr, "application/json", false, json.as_bytes().to_vec()).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "1");
    assert!(
        body["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("span_id must be 8 bytes")
    );

    // Only the valid spans were forwarded.
    common::wait_for_trace(&agent, "0af7651916cd43dd8448eb211c80319c", 1).await;
    let (_, t) = common::get_json(&agent, "/api/traces/09090909090909090909090909090909").await;
    assert_eq!(t["spans"].as_array().unwrap().len(), 1);
    assert_eq!(common::metric(&agent, "sidetrace_receiver_spans_rejected_total{protocol=\"http_protobuf\",reason=\"invalid_trace_id\"}").await, 2.0);
    agent.shutdown().await;
}

/// A pass-through codec so tests can send arbitrary bytes as a gRPC request.
#[derive(Clone, Copy, Default)]
struct RawClientCodec;
struct RawEnc;
struct RespDec;
impl Codec for RawClientCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEnc;
    type Decoder = RespDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RespDec {
        RespDec
    }
}
impl Encoder for RawEnc {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}
impl Decoder for RespDec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let b = buf.copy_to_bytes(buf.remaining());
        ExportTraceServiceResponse::decode(b)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn grpc_call(
    addr: SocketAddr,
    path: &'static str,
    body: Vec<u8>,
    compress: bool,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    if compress {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(Bytes::from(body)),
        http::uri::PathAndQuery::from_static(path),
        RawClientCodec,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn grpc_bad_requests_get_spec_codes() {
    let agent = common::start_local(|c| c.receivers.max_request_bytes = 64 * 1024).await;
    let addr = agent.addrs.otlp_grpc;
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    let e = grpc_call(addr, path, vec![0x0a, 0x05, 0x01], false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Over the cap: RESOURCE_EXHAUSTED (not tonic's retryable OUT_OF_RANGE).
    let e = grpc_call(addr, path, vec![0u8; 100 * 1024], false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");

    let e = grpc_call(addr, path, vec![0u8; 8 << 20], true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "gzip bomb: {e:?}");

    let e = grpc_call(
        addr,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
        vec![],
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);

    let ok = grpc_call(addr, path, mixed_request(), true).await.unwrap();
    let ps = ok.partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 5);
    assert!(
        ps.error_message
            .contains("parent_span_id must be empty or 8 bytes")
    );

    let ok = grpc_call(addr, path, request(vec![good_span(7)]), false)
        .await
        .unwrap();
    assert_eq!(ok.partial_success, None);
    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_requests_total{protocol=\"grpc\",outcome=\"too_large\"}"
        )
        .await,
        2.0
    );
    agent.shutdown().await;
}

/// Receivers over a queue nobody drains, so it fills up.
async fn stalled_receivers(
    max_spans: usize,
    max_bytes: usize,
) -> (Arc<Pipeline>, SocketAddr, SocketAddr) {
    receivers_with_memory(max_spans, max_bytes, MemoryGuard::new(0)).await
}

async fn receivers_with_memory(
    max_spans: usize,
    max_bytes: usize,
    memory: MemoryGuard,
) -> (Arc<Pipeline>, SocketAddr, SocketAddr) {
    let pipeline = Arc::new(Pipeline::new(
        Arc::new(Queue::new(max_spans, max_bytes)),
        Arc::new(ReceiverStats::default()),
        SpanMetrics::new(SpanMetricsConfig::default()),
        Arc::new(memory),
    ));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let app = otlp_http::router(pipeline.clone(), 4 << 20);
    tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
    let svc = otlp_grpc::TraceService::new(pipeline.clone(), 4 << 20);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .serve_with_incoming(svc, tonic::transport::server::TcpIncoming::from(grpc))
            .await
            .unwrap()
    });
    (pipeline, http_addr, grpc_addr)
}

#[tokio::test]
async fn full_queue_refuses_with_retryable_answers_and_stays_bounded() {
    let (pipeline, http, grpc) = stalled_receivers(1_000, 256 * 1024).await;
    let body = request((0..100).map(|i| good_span(i as u8 + 1)).collect());
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..50 {
        let r = post(http, "application/x-protobuf", false, body.clone()).await;
        match r.status().as_u16() {
            200 => accepted += 1,
            503 => {
                refused += 1;
                assert_eq!(r.headers()["retry-after"], "1");
                let st = rpc_status(r).await;
                assert_eq!(st.code, code::UNAVAILABLE);
                let retry = st
                    .details
                    .iter()
                    .find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))
                    .expect("RetryInfo detail");
                assert_eq!(
                    RetryInfo::decode(&retry.value[..])
                        .unwrap()
                        .retry_delay
                        .unwrap()
                        .seconds,
                    1
                );
            }
            s => panic!("unexpected status {s}"),
        }
        assert!(pipeline.queue.queued_spans() <= 1_000);
        assert!(pipeline.queue.queued_bytes() <= 256 * 1024);
    }
    assert_eq!(accepted, 10, "exactly the span budget was admitted");
    assert_eq!(refused, 40);

    let e = grpc_call(grpc, path, body.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt;
    let delay = e
        .get_details_retry_info()
        .expect("RetryInfo")
        .retry_delay
        .unwrap();
    assert_eq!(delay.as_secs(), 1);

    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let r = post(http, "application/json", false, json.as_bytes().to_vec()).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], 14);
    assert_eq!(body["details"][0]["retryDelay"], "1s");

    // Draining frees room: the next request is admitted again.
    while pipeline.queue.try_pop().is_some() {}
    let r = post(
        http,
        "application/x-protobuf",
        false,
        request(vec![good_span(1)]),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn refuses_while_shutting_down() {
    let (pipeline, http, grpc) = stalled_receivers(1_000, 1 << 20).await;
    pipeline.queue.close();
    let (r, e) = one_span_both_ways(http, grpc).await;
    assert_eq!(r.status(), 503);
    assert!(rpc_status(r).await.message.contains("shutting down"));
    assert_eq!(e.unwrap_err().code(), tonic::Code::Unavailable);
}

/// One single-span request over OTLP/HTTP protobuf and one over gRPC.
async fn one_span_both_ways(
    http: SocketAddr,
    grpc: SocketAddr,
) -> (reqwest::Response, Result<(), tonic::Status>) {
    let r = post(
        http,
        "application/x-protobuf",
        false,
        request(vec![good_span(1)]),
    )
    .await;
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let g = grpc_call(grpc, path, request(vec![good_span(1)]), false).await;
    (r, g.map(drop))
}

#[tokio::test]
async fn over_the_memory_limit_refuses_with_retryable_answers_until_memory_falls() {
    let memory = MemoryGuard::new(100 << 20);
    memory.observe(90 << 20); // above the soft limit (80 %)
    let (pipeline, http, grpc) = receivers_with_memory(1_000, 1 << 20, memory).await;
    let (r, e) = one_span_both_ways(http, grpc).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    // The body was not read, so the connection goes: the client is told not to reuse it.
    assert_eq!(r.headers()["connection"], "close");
    let st = rpc_status(r).await;
    assert_eq!(st.code, code::UNAVAILABLE);
    assert!(st.message.contains("memory limit"), "{}", st.message);
    let e = e.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt;
    let retry = e.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay.unwrap().as_secs(), 1);
    assert_eq!(pipeline.queue.queued_spans(), 0, "nothing was admitted");
    let m = &pipeline.stats;
    assert_eq!(m.requests(Protocol::Grpc, RequestOutcome::MemoryLimit), 1);
    assert_eq!(
        m.requests(Protocol::HttpProtobuf, RequestOutcome::MemoryLimit),
        1
    );

    pipeline.memory.observe(50 << 20);
    let r = post(
        http,
        "application/x-protobuf",
        false,
        request(vec![good_span(1)]),
    )
    .await;
    assert_eq!(r.status(), 200, "accepted again once memory falls");
}

#[tokio::test]
async fn request_bodies_past_the_read_budget_are_refused_and_the_budget_is_given_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pipeline, http, grpc) = receivers_with_memory(
        100_000,
        64 << 20,
        MemoryGuard::with_read_budget(0, 64 * 1024),
    )
    .await;
    // A slow client: 70 KB of a ~300 KB body sent, the rest held back.
    let big = request((0..6000).map(|i| good_span((i % 250) as u8 + 1)).collect());
    assert!(big.len() > 100_000, "{}", big.len());
    let mut slow = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let half = 70 * 1024;
    slow.write_all(&big[..half]).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pipeline.memory.reading() < 64 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow body was not read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // Meanwhile other requests, on either protocol (the budget is shared), find it spent: a
    // retryable refusal, nothing admitted.
    let (r, e) = one_span_both_ways(http, grpc).await;
    assert_eq!(r.status(), 503);
    assert!(rpc_status(r).await.message.contains("memory limit"));
    let e = e.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("memory limit"), "{}", e.message());
    let m = &pipeline.stats;
    assert_eq!(
        m.requests(Protocol::HttpProtobuf, RequestOutcome::MemoryLimit),
        1
    );
    assert_eq!(m.requests(Protocol::Grpc, RequestOutcome::MemoryLimit), 1);
    assert_eq!(pipeline.queue.queued_spans(), 0);

    // The slow request was alone when it went past the budget, so it completes.
    slow.write_all(&big[half..]).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(pipeline.queue.queued_spans(), 6000);
    assert_eq!(pipeline.memory.reading(), 0, "every byte given back");
}

#[tokio::test]
async fn a_declared_length_over_the_cap_gets_413_before_any_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let agent = common::start_local(|c| c.receivers.max_request_bytes = 64 * 1024).await;
    let mut s = tokio::net::TcpStream::connect(agent.addrs.otlp_http)
        .await
        .unwrap();
    // 1 TB declared, not a byte of it sent: the answer must come at once, not after a read.
    s.write_all(
        b"POST /v1/traces HTTP/1.1\r\nHost: agent\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"too_large\"}"
        )
        .await,
        1.0
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn grpc_with_a_content_type_that_is_not_grpc_gets_http_415() {
    use http_body_util::{BodyExt, Full};
    let agent = common::start_local(|_| {}).await;
    let tcp = tokio::net::TcpStream::connect(agent.addrs.otlp_grpc)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    for content_type in ["application/json", "text/plain", "application/grp"] {
        let req = http::Request::post(format!("http://agent{path}"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 415, "{content_type}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("application/grpc"));
    }
    // The same bytes as application/grpc+proto are an (empty) export: OK.
    let req = http::Request::post(format!("http://agent{path}"))
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        common::metric(
            &agent,
            "sidetrace_receiver_requests_total{protocol=\"grpc\",outcome=\"unsupported_media_type\"}"
        )
        .await,
        3.0
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn slow_idle_and_header_heavy_http_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let (pipeline, _, _) = stalled_receivers(1000, 1 << 20).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = otlp_http::router(pipeline, 4 << 20);
    let timeout = std::time::Duration::from_millis(300);
    tokio::spawn(otlp_http::serve_with(
        listener,
        app,
        Connections::new("otlp_http", 100, std::time::Duration::from_secs(60)),
        std::future::pending(),
        timeout,
    ));
    // Reads until the server closes the connection (or 5 s pass): what it sent, and when.
    async fn until_closed(s: &mut TcpStream) -> (String, std::time::Duration) {
        let start = std::time::Instant::now();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await
        {
            if n == 0 {
                return (String::from_utf8_lossy(&all).into_owned(), start.elapsed());
            }
            all.extend_from_slice(&buf[..n]);
        }
        panic!("still open after 5 s: {}", String::from_utf8_lossy(&all));
    }

    // Slowloris: half a request's headers, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: agent\r\n")
        .await
        .unwrap();
    let (_, after) = until_closed(&mut slow).await;
    assert!(after < std::time::Duration::from_secs(3), "{after:?}");

    // An idle keep-alive connection is closed after its request was answered.
    let body = request(vec![good_span(1)]);
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(
        format!(
            "POST /v1/traces HTTP/1.1\r\nHost: agent\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    idle.write_all(&body).await.unwrap();
    let (answer, after) = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(after < std::time::Duration::from_secs(3), "{after:?}");

    // Too many header fields: 431.
    let mut heavy = TcpStream::connect(addr).await.unwrap();
    let mut head = String::from("POST /v1/traces HTTP/1.1\r\nHost: agent\r\n");
    for i in 0..150 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    heavy.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = until_closed(&mut heavy).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // None of them stopped a new client.
    let r = post(
        addr,
        "application/x-protobuf",
        false,
        request(vec![good_span(2)]),
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// Reads until the peer closes (`Some(elapsed)`) or `within` passes (`None`).
async fn closed_within(
    s: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn at_max_connections_the_idlest_makes_room_and_silent_ones_are_refused_or_timed_out() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let agent = common::start_local(|c| {
        c.receivers.max_connections = 3;
        c.receivers.connection_idle_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let http = agent.addrs.otlp_http;
    let short = std::time::Duration::from_millis(300);
    // Three clients that connect and say nothing take every slot.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(http).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // None has been idle a second yet: a fourth is refused (closed at once, no answer).
    let mut fourth = TcpStream::connect(http).await.unwrap();
    let _ = fourth
        .write_all(b"GET /v1/traces HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut fourth, std::time::Duration::from_secs(3))
            .await
            .is_some(),
        "refused"
    );
    for s in &mut silent {
        assert!(
            closed_within(s, short).await.is_none(),
            "the first three stay open"
        );
    }
    // Once they are idle, a real client gets in and one silent connection goes.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r = post(
        http,
        "application/x-protobuf",
        false,
        request(vec![good_span(7)]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut closed = 0;
    for s in &mut silent {
        closed += usize::from(
            closed_within(s, std::time::Duration::from_secs(2))
                .await
                .is_some(),
        );
    }
    assert_eq!(closed, 1, "exactly the idlest one made room");
    let m = |reason: &str| {
        format!(
            "sidetrace_receiver_connections_closed_total{{receiver=\"otlp_http\",reason=\"{reason}\"}}"
        )
    };
    assert_eq!(common::metric(&agent, &m("refused")).await, 1.0);
    assert_eq!(common::metric(&agent, &m("evicted")).await, 1.0);
    agent.shutdown().await;
}

#[tokio::test]
async fn grpc_connections_that_send_nothing_are_closed_after_the_idle_timeout() {
    let agent = common::start_local(|c| {
        c.receivers.connection_idle_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    // A slowloris on the gRPC port: not even the HTTP/2 preface.
    let mut silent = tokio::net::TcpStream::connect(agent.addrs.otlp_grpc)
        .await
        .unwrap();
    let after = closed_within(&mut silent, std::time::Duration::from_secs(5)).await;
    assert!(
        after.is_some_and(|d| d >= std::time::Duration::from_millis(400)),
        "{after:?}"
    );
    // A real client still gets its export through.
    let answer = grpc_call(
        agent.addrs.otlp_grpc,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request(vec![good_span(3)]),
        false,
    )
    .await;
    assert!(answer.is_ok(), "{answer:?}");
    assert!(
        common::metric(
            &agent,
            "sidetrace_receiver_connections_closed_total{receiver=\"otlp_grpc\",reason=\"idle\"}"
        )
        .await
            >= 1.0
    );
    agent.shutdown().await;
}
