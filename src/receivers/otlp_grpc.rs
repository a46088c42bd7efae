//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The request arrives as raw bytes (a pass-through codec) so that the zero-copy walk in
//! `decode.rs` reads it, rather than prost materialising every span on the hot path.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::Message;
use tokio::net::TcpStream;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::model::RequestOutcome;
use crate::model::{Protocol, SPAN_METRICS_HEADER};
use crate::pipeline::memory::ReadTicket;
use crate::pipeline::{Pipeline, RETRY_AFTER, Refusal};
use crate::proto::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use crate::receivers::Metered;
use crate::receivers::connections::{Connections, Tracked};
use crate::receivers::decode::decode_request;

/// The gRPC method path of OTLP trace export.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Decodes requests to raw bytes and encodes the prost response.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawDecoder;

#[derive(Debug)]
struct ResponseEncoder;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Decode + admit for one request, on the request's own task; it waits only for the persistent
/// queue's fsync, when there is one.
pub async fn export(
    pipeline: &Pipeline,
    body: Bytes,
    metrics_recorded: bool,
) -> Result<ExportTraceServiceResponse, Status> {
    if let Err(r) = pipeline.precheck(Protocol::Grpc, body.len()) {
        return Err(refusal_status(r));
    }
    let mut decoded = decode_request(body, Protocol::Grpc).map_err(|e| {
        pipeline
            .stats
            .request(Protocol::Grpc, RequestOutcome::Malformed);
        Status::invalid_argument(format!("malformed ExportTraceServiceRequest: {e}"))
    })?;
    decoded.metrics_recorded = metrics_recorded;
    match pipeline.admit_durable(Protocol::Grpc, decoded).await {
        Ok(a) => Ok(ExportTraceServiceResponse {
            partial_success: a.message.map(|error_message| ExportTracePartialSuccess {
                rejected_spans: a.rejected_spans as i64,
                error_message,
            }),
        }),
        Err(r) => Err(refusal_status(r)),
    }
}

/// OTLP spec: UNAVAILABLE with RetryInfo tells the client to retry after the delay.
fn refusal_status(r: Refusal) -> Status {
    Status::with_error_details(
        Code::Unavailable,
        match r {
            Refusal::QueueFull => "sidetrace queue is full; retry later",
            Refusal::ShuttingDown => "sidetrace is shutting down; retry later",
            Refusal::MemoryLimit => "sidetrace is over its memory limit; retry later",
        },
        ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
    )
}

#[derive(Debug, Clone)]
struct ExportMethod(Arc<Pipeline>);

impl UnaryService<Bytes> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Self::Response>, Status>> + Send>,
    >;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let pipeline = self.0.clone();
        let recorded = request
            .metadata()
            .get(SPAN_METRICS_HEADER)
            .is_some_and(|v| v == "recorded");
        Box::pin(async move {
            export(&pipeline, request.into_inner(), recorded)
                .await
                .map(Response::new)
        })
    }
}

/// The tower service tonic serves: routes the Export method, answers UNIMPLEMENTED otherwise.
#[derive(Debug, Clone)]
pub struct TraceService {
    pipeline: Arc<Pipeline>,
    max_request_bytes: usize,
}

impl TraceService {
    pub fn new(pipeline: Arc<Pipeline>, max_request_bytes: usize) -> Self {
        TraceService {
            pipeline,
            max_request_bytes,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for TraceService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            let status = Status::unimplemented(format!("unknown method {}", req.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let pipeline = self.pipeline.clone();
        // gRPC over HTTP/2: a content-type not starting "application/grpc" gets HTTP 415.
        let grpc_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/grpc"));
        if !grpc_type {
            pipeline
                .stats
                .request(Protocol::Grpc, RequestOutcome::UnsupportedMediaType);
            let mut resp = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
                Bytes::from_static(b"Content-Type must be application/grpc\n"),
            )));
            *resp.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            return Box::pin(async move { Ok(resp) });
        }
        // Refused before a byte of the body is read: under a flood this is what keeps memory flat.
        if pipeline.memory.refusing() {
            pipeline
                .stats
                .request(Protocol::Grpc, RequestOutcome::MemoryLimit);
            let status = refusal_status(Refusal::MemoryLimit);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let ticket = Arc::new(ReadTicket::new(pipeline.memory.clone()));
        let req = req.map(|b| tonic::body::Body::new(Metered::grpc(b, ticket.clone())));
        let mut grpc = Grpc::new(RawCodec)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .apply_max_message_size_config(Some(self.max_request_bytes), None);
        Box::pin(async move {
            let metrics = pipeline.stats.clone();
            let mut resp = grpc.unary(ExportMethod(pipeline), req).await;
            if ticket.refused() {
                metrics.request(Protocol::Grpc, RequestOutcome::MemoryLimit);
                return Ok(refusal_status(Refusal::MemoryLimit).into_http());
            }
            // The request's bytes stop counting once it is answered (they are queued or gone).
            drop(ticket);
            // tonic answers an over-limit message with OUT_OF_RANGE, which OTLP clients retry
            // forever; the OTLP spec says RESOURCE_EXHAUSTED (not retryable without RetryInfo).
            if resp.headers().get("grpc-status").is_some_and(|v| v == "11") {
                resp.headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("8"));
            }
            if resp.headers().get("grpc-status").is_some_and(|v| v == "8") {
                metrics.request(Protocol::Grpc, RequestOutcome::TooLarge);
            }
            Ok(resp)
        })
    }
}

/// HTTP/2 streams (requests) one OTLP/gRPC connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 32;

/// Serves OTLP/gRPC on `listener` until `stop` resolves.
pub fn start(
    listener: tokio::net::TcpListener,
    pipeline: Arc<Pipeline>,
    max_request_bytes: usize,
    connections: Arc<Connections>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let svc = TraceService::new(pipeline, max_request_bytes);
    tokio::spawn(async move {
        // Our own accept loop, so each connection is counted and can be closed when idle; tonic
        // takes them as a stream. The loop ends when tonic drops the stream.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Tracked<TcpStream>>>(16);
        let sweep = tokio::spawn(connections.clone().sweep_until({
            let tx = tx.clone();
            async move { tx.closed().await }
        }));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = tx.closed() => return,
                };
                match accepted {
                    Ok((io, _)) => {
                        let _ = io.set_nodelay(true);
                        if let Some(io) = connections.admit(io)
                            && tx.send(Ok(io)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(listener = "otlp_grpc", error = %e, "Accept failed.");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
        // Each open stream costs a task and tonic's buffers before the read budget sees a
        // byte (hyper allows 200 a connection: ~20 MB over four connections under a flood);
        // OTLP exporters send one to ten requests at a time.
        if let Err(e) = tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_max_header_list_size(crate::receivers::MAX_HEADER_LIST_BYTES)
            .serve_with_incoming_shutdown(svc, incoming, stop)
            .await
        {
            tracing::warn!(listener = "otlp_grpc", error = %e, "OTLP/gRPC server stopped with an error.");
        }
        sweep.abort();
    })
}
