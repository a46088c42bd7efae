//! Sends OTLP/gRPC: the spliced request bytes as the `Export` call's message (nothing is
//! re-encoded), gzip when configured, and the answer's status classified as the OTLP spec's
//! "Failures" section says: which codes are retryable, and RetryInfo's delay honoured.

use std::time::Duration;

use bytes::{BufMut, Bytes};
use http::{HeaderName, HeaderValue};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::exporters::otlp::PartialSuccess;
use crate::exporters::retry::ExportError;
use crate::proto::ExportTraceServiceResponse;

/// What a TLS gRPC channel connects with (see `tls::Tls::grpc_connector`).
pub type TlsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// An answer larger than this is not read (a partial-success message at most).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Writes the request's bytes as they are; reads the prost answer.
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

#[derive(Debug)]
struct BytesEncoder;

#[derive(Debug)]
struct AnswerDecoder;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = BytesEncoder;
    type Decoder = AnswerDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AnswerDecoder
    }
}

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for AnswerDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// One OTLP/gRPC destination: plaintext HTTP/2 for `http://`, TLS (rustls, `h2` by ALPN) for
/// `https://`.
#[derive(Debug, Clone)]
pub struct GrpcSender {
    url: String,
    channel: tonic::transport::Channel,
    timeout: Duration,
    headers: Vec<(
        MetadataKey<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
    gzip: bool,
}

impl GrpcSender {
    /// A lazily connected channel to `url` (`http://host:port`, or `https://host:port` over the
    /// given TLS connector).
    pub fn new(
        url: String,
        timeout: Duration,
        headers: &[(HeaderName, HeaderValue)],
        gzip: bool,
        tls: Option<TlsConnector>,
    ) -> Result<Self, String> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| format!("{url:?}: {e}"))?
            .connect_timeout(timeout);
        let channel = match tls {
            Some(connector) => endpoint.connect_with_connector_lazy(connector),
            None if url.starts_with("https://") => {
                return Err(format!("{url:?}: https without TLS settings"));
            }
            // Plaintext keeps tonic's own connector.
            None => endpoint.connect_lazy(),
        };
        let headers = headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    MetadataKey::from_bytes(k.as_str().as_bytes()).ok()?,
                    MetadataValue::try_from(v.as_bytes()).ok()?,
                ))
            })
            .collect();
        Ok(GrpcSender {
            url,
            channel,
            timeout,
            headers,
            gzip,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One `Export` call.
    pub async fn attempt(&self, body: Bytes) -> Result<PartialSuccess, ExportError> {
        let mut client = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        if self.gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        let mut req = tonic::Request::new(body);
        req.set_timeout(self.timeout);
        for (k, v) in &self.headers {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        let call = async {
            client
                .ready()
                .await
                .map_err(|e| Status::unavailable(crate::exporters::retry::with_causes(&e)))?;
            client
                .unary(
                    req,
                    http::uri::PathAndQuery::from_static(EXPORT_PATH),
                    BytesCodec,
                )
                .await
        };
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => {
                return Err(ExportError::Retryable {
                    reason: "timeout",
                    message: "request timed out".into(),
                    after: None,
                });
            }
            Ok(a) => a,
        };
        match answer {
            Ok(r) => Ok(r
                .into_inner()
                .partial_success
                .map_or_else(PartialSuccess::default, |p| PartialSuccess {
                    rejected: p.rejected_spans.max(0) as u64,
                    message: p.error_message,
                })),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// OTLP spec "Failures" (gRPC): CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE
/// and DATA_LOSS are retryable; RESOURCE_EXHAUSTED only when the server sent RetryInfo; the
/// rest are not. RetryInfo's delay, when present, is when to retry.
pub fn classify(status: &Status) -> ExportError {
    let after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let mut message = format!("{:?}: {}", status.code(), status.message());
    if let Some(cause) = std::error::Error::source(status) {
        message = format!("{message}: {}", crate::exporters::retry::with_causes(cause));
    }
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => after.is_some(),
        _ => false,
    };
    if !retryable {
        return ExportError::Permanent {
            code: format!("grpc_{}", i32::from(status.code())),
            message,
        };
    }
    ExportError::Retryable {
        reason: if status.code() == Code::ResourceExhausted {
            "throttled"
        } else if status.code() == Code::Unavailable && status.message().contains("connect") {
            "connection"
        } else {
            "server_error"
        },
        message,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn statuses_are_classified_as_the_spec_says() {
        let retry_in = |s: u64| ErrorDetails::with_retry_info(Some(Duration::from_secs(s)));
        let r = classify(&Status::with_error_details(
            Code::Unavailable,
            "busy",
            retry_in(3),
        ));
        assert!(
            matches!(r, ExportError::Retryable { after: Some(d), .. } if d == Duration::from_secs(3))
        );
        assert!(matches!(
            classify(&Status::resource_exhausted("quota")),
            ExportError::Permanent { .. }
        ));
        let r = classify(&Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            retry_in(1),
        ));
        assert!(matches!(
            r,
            ExportError::Retryable {
                reason: "throttled",
                ..
            }
        ));
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
        ] {
            assert!(
                matches!(
                    classify(&Status::new(code, "x")),
                    ExportError::Permanent { .. }
                ),
                "{code:?}"
            );
        }
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(
                matches!(
                    classify(&Status::new(code, "x")),
                    ExportError::Retryable { .. }
                ),
                "{code:?}"
            );
        }
    }
}
