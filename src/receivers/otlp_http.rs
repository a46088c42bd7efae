//! OTLP/HTTP receiver: `POST /v1/traces`, protobuf or JSON, optionally gzip, answers per the OTLP spec.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;

use crate::model::RequestOutcome;
use crate::model::{Protocol, SPAN_METRICS_HEADER};
use crate::pipeline::memory::ReadTicket;
use crate::pipeline::{Pipeline, RETRY_AFTER, Refusal};
use crate::proto::{
    ExportTracePartialSuccess, ExportTraceServiceResponse, ProtoAny, ProtoDuration, RetryInfo,
    RpcStatus, code,
};
use crate::receivers::connections::Connections;
use crate::receivers::decode::decode_request;
use crate::receivers::otlp_json::json_to_protobuf;
use crate::receivers::{InflateError, Metered, gunzip_capped};

/// OTLP spec: the default URL path for traces.
pub const TRACES_PATH: &str = "/v1/traces";

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Debug, Clone)]
struct HttpState {
    pipeline: Arc<Pipeline>,
    max_request_bytes: usize,
}

/// hyper's read buffer per HTTP/1.1 connection. Its default (~400 KB) sits outside the read
/// budget: a flood over a few dozen connections took the agent 13 MB past a 48 MiB memory limit
/// (with 64 KiB: 3 MB past; 16 KiB: within it but for one 20 ms check). Closed-loop throughput
/// was within noise of the default (BENCHMARKS.md, "Memory").
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// How long a client may take to send a request's headers, counted from when the connection
/// waits for a request: a slowloris, or a keep-alive connection left idle, is closed after it
/// (hyper's own default, which it applies only once a timer is given).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most header fields in an HTTP/1.1 request (431 beyond; hyper's default, made explicit). Their
/// bytes are capped by [`READ_BUFFER_BYTES`].
pub const MAX_HEADERS: usize = 100;

/// Serves OTLP/HTTP on `listener` until `stop` resolves.
pub fn start(
    listener: tokio::net::TcpListener,
    pipeline: Arc<Pipeline>,
    max_request_bytes: usize,
    connections: Arc<Connections>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(serve(
        listener,
        router(pipeline, max_request_bytes),
        connections,
        stop,
    ))
}

/// Serves the OTLP/HTTP routes on `listener` until `stop` resolves, then lets open connections
/// finish their requests. `axum::serve` with hyper's per-connection settings exposed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    connections: Arc<Connections>,
    stop: impl std::future::Future<Output = ()>,
) {
    serve_with(listener, app, connections, stop, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with a given header read timeout (tests use a short one).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    connections: Arc<Connections>,
    stop: impl std::future::Future<Output = ()>,
    header_read_timeout: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    // Each connection task holds a receiver: `true` asks it to drain, and `closed()` resolves
    // once the last one has ended.
    let (draining, _) = tokio::sync::watch::channel(false);
    let mut sweep_stop = draining.subscribe();
    tokio::spawn(connections.clone().sweep_until(async move {
        let _ = sweep_stop.wait_for(|d| *d).await;
    }));
    tokio::pin!(stop);
    loop {
        let io = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((io, _)) => io,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(listener = "otlp_http", error = %e, "Accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Refused at the cap: dropping the stream closes it.
        let Some(io) = connections.admit(io) else {
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut drain = draining.subscribe();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .max_buf_size(READ_BUFFER_BYTES)
                .max_headers(MAX_HEADERS)
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            builder
                .http2()
                .max_header_list_size(crate::receivers::MAX_HEADER_LIST_BYTES);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = drain.wait_for(|d| *d), if !shutting_down => {
                        shutting_down = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    let _ = draining.send(true);
    draining.closed().await;
}

/// The OTLP/HTTP routes, testable without a socket.
pub fn router(pipeline: Arc<Pipeline>, max_request_bytes: usize) -> Router {
    Router::new()
        .route(TRACES_PATH, any(export))
        .with_state(HttpState {
            pipeline,
            max_request_bytes,
        })
}

/// The encoding of a request, which its answer uses too (OTLP spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn protocol(self) -> Protocol {
        match self {
            Encoding::Protobuf => Protocol::HttpProtobuf,
            Encoding::Json => Protocol::HttpJson,
        }
    }
}

/// An error answer: HTTP status, gRPC code and message, in the request's encoding.
fn status_response(
    enc: Encoding,
    http: StatusCode,
    grpc_code: i32,
    message: &str,
    retry: bool,
) -> Response {
    let mut resp = match enc {
        Encoding::Protobuf => {
            let details = if retry {
                vec![ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                    value: RetryInfo {
                        retry_delay: Some(ProtoDuration {
                            seconds: RETRY_AFTER.as_secs() as i64,
                            nanos: 0,
                        }),
                    }
                    .encode_to_vec(),
                }]
            } else {
                vec![]
            };
            let body = RpcStatus {
                code: grpc_code,
                message: message.into(),
                details,
            }
            .encode_to_vec();
            (http, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
        }
        Encoding::Json => {
            let mut status = serde_json::json!({"code": grpc_code, "message": message});
            if retry {
                status["details"] = serde_json::json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{}s", RETRY_AFTER.as_secs()),
                }]);
            }
            (http, [(header::CONTENT_TYPE, JSON)], status.to_string()).into_response()
        }
    };
    if retry {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
    }
    resp
}

fn success_response(enc: Encoding, rejected: u64, message: Option<String>) -> Response {
    match enc {
        Encoding::Protobuf => {
            let body = ExportTraceServiceResponse {
                partial_success: message.map(|error_message| ExportTracePartialSuccess {
                    rejected_spans: rejected as i64,
                    error_message,
                }),
            }
            .encode_to_vec();
            (StatusCode::OK, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
        }
        Encoding::Json => {
            // proto3 JSON: int64 as a string, lowerCamelCase, partialSuccess omitted on full success.
            let body = match message {
                Some(m) => {
                    serde_json::json!({"partialSuccess": {"rejectedSpans": rejected.to_string(), "errorMessage": m}})
                }
                None => serde_json::json!({}),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, JSON)],
                body.to_string(),
            )
                .into_response()
        }
    }
}

fn media_type(headers: &HeaderMap) -> Option<Encoding> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

async fn export(
    State(s): State<HttpState>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = &s.pipeline.stats;
    let enc_or_default = media_type(&headers).unwrap_or(Encoding::Protobuf);
    if method != Method::POST {
        let mut r = status_response(
            enc_or_default,
            StatusCode::METHOD_NOT_ALLOWED,
            code::UNIMPLEMENTED,
            "only POST is allowed on /v1/traces",
            false,
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Some(enc) = media_type(&headers) else {
        metrics.request(Protocol::HttpProtobuf, RequestOutcome::UnsupportedMediaType);
        return status_response(
            Encoding::Protobuf,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_ARGUMENT,
            "Content-Type must be application/x-protobuf or application/json",
            false,
        );
    };
    let protocol = enc.protocol();
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" || e == "none" => false,
        Some(e) if e == "gzip" => true,
        Some(e) => {
            metrics.request(protocol, RequestOutcome::UnsupportedMediaType);
            return status_response(
                enc,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code::INVALID_ARGUMENT,
                &format!("unsupported Content-Encoding {e:?}; use gzip or none"),
                false,
            );
        }
    };

    let too_large = |what: &str| {
        metrics.request(protocol, RequestOutcome::TooLarge);
        closing(status_response(
            enc,
            StatusCode::PAYLOAD_TOO_LARGE,
            code::RESOURCE_EXHAUSTED,
            &format!("{what} exceeds the {}-byte limit", s.max_request_bytes),
            false,
        ))
    };
    // A declared length over the cap is refused before any body is read (gzip's is the
    // compressed size, which a body within the cap never exceeds by more than gzip's framing).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_request_bytes as u64) {
        return too_large("declared Content-Length");
    }
    // Refused before a byte of the body is read: under a flood this is what keeps memory flat.
    if s.pipeline.memory.refusing() {
        metrics.request(protocol, RequestOutcome::MemoryLimit);
        return closing(refusal_response(enc, Refusal::MemoryLimit));
    }
    // Counts this request's bytes against the read budget until the answer is sent.
    let ticket = Arc::new(ReadTicket::new(s.pipeline.memory.clone()));
    let metered = Metered::new(body, ticket.clone());
    let raw: Bytes = match Limited::new(metered, s.max_request_bytes).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) if ticket.refused() => {
            metrics.request(protocol, RequestOutcome::MemoryLimit);
            return closing(refusal_response(enc, Refusal::MemoryLimit));
        }
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large("request body");
        }
        Err(e) => {
            metrics.request(protocol, RequestOutcome::Malformed);
            return status_response(
                enc,
                StatusCode::BAD_REQUEST,
                code::INVALID_ARGUMENT,
                &format!("could not read the request body: {e}"),
                false,
            );
        }
    };
    let body: Bytes = if gzip {
        match gunzip_capped(&raw, s.max_request_bytes) {
            Ok(v) => v.into(),
            Err(InflateError::TooLarge(_)) => return too_large("decompressed body"),
            Err(e @ InflateError::Corrupt(_)) => {
                metrics.request(protocol, RequestOutcome::Malformed);
                return status_response(
                    enc,
                    StatusCode::BAD_REQUEST,
                    code::INVALID_ARGUMENT,
                    &e.to_string(),
                    false,
                );
            }
        }
    } else {
        raw
    };
    let body: Bytes = match enc {
        Encoding::Protobuf => body,
        Encoding::Json => match json_to_protobuf(&body) {
            Ok(b) => b.into(),
            Err(msg) => {
                metrics.request(protocol, RequestOutcome::Malformed);
                return status_response(
                    enc,
                    StatusCode::BAD_REQUEST,
                    code::INVALID_ARGUMENT,
                    &msg,
                    false,
                );
            }
        },
    };
    if let Err(r) = s.pipeline.precheck(protocol, body.len()) {
        return refusal_response(enc, r);
    }
    let decoded = match decode_request(body, protocol) {
        Ok(mut d) => {
            d.metrics_recorded = headers
                .get(SPAN_METRICS_HEADER)
                .is_some_and(|v| v == "recorded");
            d
        }
        Err(e) => {
            metrics.request(protocol, RequestOutcome::Malformed);
            return status_response(
                enc,
                StatusCode::BAD_REQUEST,
                code::INVALID_ARGUMENT,
                &format!("malformed ExportTraceServiceRequest: {e}"),
                false,
            );
        }
    };
    match s.pipeline.admit_durable(protocol, decoded).await {
        Ok(a) => success_response(enc, a.rejected_spans, a.message),
        Err(r) => refusal_response(enc, r),
    }
}

/// OTLP spec: 503 with Retry-After is the retryable "not now" answer.
/// An answer sent with the body (partly) unread: hyper closes such a connection, and
/// `Connection: close` tells the client first, so its next request goes on a new one (without
/// it, a pooled client saw about one refusal in four as a connection error instead of the 503).
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn refusal_response(enc: Encoding, r: Refusal) -> Response {
    let message = match r {
        Refusal::QueueFull => "sidetrace queue is full; retry later",
        Refusal::ShuttingDown => "sidetrace is shutting down; retry later",
        Refusal::MemoryLimit => "sidetrace is over its memory limit; retry later",
    };
    status_response(
        enc,
        StatusCode::SERVICE_UNAVAILABLE,
        code::UNAVAILABLE,
        message,
        true,
    )
}
