//! The PutTraceSegments call through aws-sdk-xray, with errors classified where they are born.

use aws_sdk_xray::config::http::HttpResponse;
use aws_sdk_xray::error::SdkError;
use aws_sdk_xray::operation::put_trace_segments::PutTraceSegmentsError;

use crate::exporters::retry::ExportError;

/// PutTraceSegments API limit: documents per call ("Exceeding maximum segment count: 50").
pub const MAX_DOCUMENTS_PER_CALL: usize = 50;

/// One document X-Ray refused (`UnprocessedTraceSegments`): rejected, never re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    pub id: String,
    pub error_code: String,
    pub message: String,
}

/// A cheap-to-clone X-Ray client with the SDK's own retries off (sidetrace owns retries).
#[derive(Debug, Clone)]
pub struct XrayClient {
    client: aws_sdk_xray::Client,
}

impl XrayClient {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        XrayClient {
            client: aws_sdk_xray::Client::new(config),
        }
    }

    /// Sends up to [`MAX_DOCUMENTS_PER_CALL`] documents; `Ok` lists the ones X-Ray refused.
    pub async fn put(&self, documents: Vec<String>) -> Result<Vec<Unprocessed>, ExportError> {
        match self
            .client
            .put_trace_segments()
            .set_trace_segment_documents(Some(documents))
            .send()
            .await
        {
            Ok(out) => Ok(out
                .unprocessed_trace_segments()
                .iter()
                .map(|u| Unprocessed {
                    id: u.id().unwrap_or_default().to_owned(),
                    error_code: u.error_code().unwrap_or("Unknown").to_owned(),
                    message: u.message().unwrap_or_default().to_owned(),
                })
                .collect()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// Throttling, 5xx, 408, timeouts and connection failures are retryable; the rest is permanent.
pub fn classify(err: SdkError<PutTraceSegmentsError, HttpResponse>) -> ExportError {
    crate::exporters::retry::classify_sdk_error(err)
}
