//! Sends OTLP/HTTP protobuf requests, signed with SigV4 when the destination is AWS: one attempt
//! at a time, its failure classified as the OTLP spec says (429, 408 and 5xx are retryable).

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use crate::exporters::aws::signed;
pub use crate::exporters::aws::signed::Signer;
use crate::exporters::retry::ExportError;
use crate::proto::ExportTraceServiceResponse;

/// OTLP answers are small (a partial-success message at most); more than this is not read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// One OTLP/HTTP destination.
#[derive(Debug, Clone)]
pub struct HttpSender {
    url: String,
    timeout: Duration,
    signer: Option<Signer>,
}

impl HttpSender {
    /// An HTTPS (or plain HTTP) client for `url` with the system's root certificates.
    pub fn new(url: String, timeout: Duration, signer: Option<Signer>) -> std::io::Result<Self> {
        // Fails here, at start, when the system's TLS roots cannot be loaded.
        crate::exporters::aws::https_client()?;
        Ok(HttpSender {
            url,
            timeout,
            signer,
        })
    }

    /// One POST (signed when a signer is set); `Ok` carries the partial-success rejected count.
    pub async fn attempt(&self, body: Bytes) -> Result<u64, ExportError> {
        let answer = signed::post(
            &self.url,
            "application/x-protobuf",
            body,
            self.signer.as_ref(),
            self.timeout,
            MAX_RESPONSE_BYTES,
        )
        .await?;
        let status = answer.status;
        let retry = |reason| ExportError::Retryable {
            reason,
            message: format!("HTTP {status}"),
            after: answer.retry_after(),
        };
        match status {
            200..=299 => Ok(ExportTraceServiceResponse::decode(answer.body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_spans.max(0) as u64)),
            429 => Err(retry("throttled")),
            408 | 500..=599 => Err(retry("server_error")),
            _ => Err(ExportError::Permanent {
                code: format!("http_{status}"),
                message: String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect(),
            }),
        }
    }
}
