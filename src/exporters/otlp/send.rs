//! Sends OTLP/HTTP protobuf requests, signed with SigV4 when the destination is AWS: one attempt
//! at a time, its failure classified as the OTLP spec says.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use prost::Message;

use crate::exporters::aws::signed;
pub use crate::exporters::aws::signed::Signer;
use crate::exporters::retry::ExportError;
use crate::proto::ExportTraceServiceResponse;

/// OTLP answers are small (a partial-success message at most); more than this is not read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Which HTTP statuses are worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// OTLP/HTTP spec "Failures": 429, 502, 503 and 504, and no others.
    OtlpSpec,
    /// AWS endpoints: 429, 408 and every 5xx, as the AWS SDKs retry them.
    Aws,
}

/// What a 2xx answer said: spans the destination refused, and its message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialSuccess {
    pub rejected: u64,
    pub message: String,
}

/// One OTLP/HTTP destination.
#[derive(Debug, Clone)]
pub struct HttpSender {
    url: String,
    timeout: Duration,
    signer: Option<Signer>,
    headers: Vec<(HeaderName, HeaderValue)>,
    gzip: bool,
    retry_on: RetryOn,
    /// Its own client when TLS is configured (a CA, a client certificate); else the shared one.
    /// (Boxed: a client is ~400 bytes, and senders are kept per backend.)
    client: Option<Box<crate::exporters::aws::HttpsClient>>,
}

impl HttpSender {
    /// An HTTPS (or plain HTTP) client for `url` with the system's root certificates.
    pub fn new(url: String, timeout: Duration, signer: Option<Signer>) -> std::io::Result<Self> {
        // Fails here, at start, when the system's TLS roots cannot be loaded.
        crate::exporters::aws::https_client()?;
        Ok(HttpSender::over(url, timeout, signer, None))
    }

    /// Sends over `client` (built from the exporter's TLS settings) instead of the shared one.
    pub fn with_client(
        url: String,
        timeout: Duration,
        client: crate::exporters::aws::HttpsClient,
    ) -> Self {
        HttpSender::over(url, timeout, None, Some(Box::new(client)))
    }

    fn over(
        url: String,
        timeout: Duration,
        signer: Option<Signer>,
        client: Option<Box<crate::exporters::aws::HttpsClient>>,
    ) -> Self {
        HttpSender {
            url,
            timeout,
            signer,
            headers: Vec::new(),
            gzip: false,
            retry_on: RetryOn::Aws,
            client,
        }
    }

    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`), gzip bodies, and the spec's retries.
    pub fn otlp(mut self, headers: Vec<(HeaderName, HeaderValue)>, gzip: bool) -> Self {
        self.headers = headers;
        self.gzip = gzip;
        self.retry_on = RetryOn::OtlpSpec;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The body as it goes on the wire (gzip-compressed when configured).
    pub fn encode(&self, body: Bytes) -> Bytes {
        if !self.gzip {
            return body;
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        match gz.write_all(&body).and_then(|()| gz.finish()) {
            Ok(v) => v.into(),
            // Writing into memory does not fail; if it ever did, the plain body still works.
            Err(_) => body,
        }
    }

    /// One POST of a body from [`HttpSender::encode`] (signed when a signer is set).
    pub async fn attempt(&self, body: Bytes) -> Result<PartialSuccess, ExportError> {
        let mut headers = self.headers.clone();
        if self.gzip {
            headers.push((
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            ));
        }
        let answer = signed::post_with(
            self.client.as_deref(),
            &self.url,
            "application/x-protobuf",
            &headers,
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
        let retryable = match self.retry_on {
            RetryOn::OtlpSpec => matches!(status, 429 | 502 | 503 | 504),
            RetryOn::Aws => status == 429 || status == 408 || status >= 500,
        };
        match status {
            200..=299 => Ok(ExportTraceServiceResponse::decode(answer.body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or_else(PartialSuccess::default, |p| PartialSuccess {
                    rejected: p.rejected_spans.max(0) as u64,
                    message: p.error_message,
                })),
            429 => Err(retry("throttled")),
            _ if retryable => Err(retry("server_error")),
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
