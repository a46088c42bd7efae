//! The PutTraceSegments call, written and signed here: the request body is built once, each
//! document JSON-escaped straight into it (the SDK escaped a copy of every document again and
//! re-serialised it on every retry), signed with aws-sigv4 and sent over the shared HTTP client.
//! The wire format is X-Ray's REST-JSON API as botocore's service model describes it:
//! `POST /TraceSegments`, `{"TraceSegmentDocuments": [...]}`, errors named by the
//! `x-amzn-ErrorType` header or the body's `__type`.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use crate::exporters::aws::signed::{self, Signer};
use crate::exporters::aws::{CachedCredentials, xray_base_url};
use crate::exporters::retry::{ExportError, THROTTLING_CODES};
use crate::exporters::xray::BuildError;
use crate::exporters::xray::translate::Translated;
use crate::exporters::xray::translate::json::escape_into;

/// PutTraceSegments API limit: documents per call ("Exceeding maximum segment count: 50").
pub const MAX_DOCUMENTS_PER_CALL: usize = 50;
/// X-Ray's answers are small (the unprocessed list); more than this is not read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// One document X-Ray refused (`UnprocessedTraceSegments`): rejected, never re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    pub id: String,
    pub error_code: String,
    pub message: String,
}

/// A PutTraceSegments request body being written.
#[derive(Debug)]
pub struct RequestBody {
    buf: Vec<u8>,
    documents: usize,
}

impl RequestBody {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 32);
        buf.extend_from_slice(b"{\"TraceSegmentDocuments\":[");
        RequestBody { buf, documents: 0 }
    }

    /// A document as the body carries it: the contents of a JSON string. Done once, when the
    /// document is made or received, so a batch is assembled by copying.
    pub fn escape(document: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(document.len() + document.len() / 4);
        escape_into(&mut out, document);
        out
    }

    /// Appends one document escaped by [`RequestBody::escape`].
    pub fn push_escaped(&mut self, escaped: &[u8]) {
        if self.documents > 0 {
            self.buf.push(b',');
        }
        self.buf.push(b'"');
        self.buf.extend_from_slice(escaped);
        self.buf.push(b'"');
        self.documents += 1;
    }

    /// Lets `write` append whole documents as JSON strings (`"…"`, separated by `,`, as
    /// [`crate::exporters::xray::to_segment_escaped`] writes them); on `Err` the body is left as it was.
    pub fn write_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<Translated, E>,
    ) -> Result<Translated, E> {
        let mark = self.buf.len();
        if self.documents > 0 {
            self.buf.push(b',');
        }
        match write(&mut self.buf) {
            Ok(t) => {
                self.documents += t.documents().len();
                Ok(t)
            }
            Err(e) => {
                self.buf.truncate(mark);
                Err(e)
            }
        }
    }

    /// Takes the last document back out, given where its escaped text is (as a write reported
    /// it), and returns that text.
    pub fn take_last(&mut self, text: Range<usize>) -> Vec<u8> {
        let doc = self.buf[text.clone()].to_vec();
        // The document's opening quote, and the comma before it unless it was the first.
        let mut cut = text.start.saturating_sub(1);
        if self.documents > 1 && cut > 0 && self.buf[cut - 1] == b',' {
            cut -= 1;
        }
        self.buf.truncate(cut);
        self.documents = self.documents.saturating_sub(1);
        doc
    }

    pub fn finish(mut self) -> Bytes {
        self.buf.extend_from_slice(b"]}");
        self.buf.into()
    }
}

/// A cheap-to-clone PutTraceSegments client; sidetrace owns retries.
#[derive(Debug, Clone)]
pub struct XrayClient {
    url: String,
    signer: Signer,
    timeout: Duration,
}

impl XrayClient {
    /// Region, credentials and endpoint (`AWS_ENDPOINT_URL[_XRAY]`) as the SDK resolves them.
    pub fn new(sdk: &aws_config::SdkConfig, timeout: Duration) -> Result<Self, BuildError> {
        let region = sdk.region().ok_or(BuildError::NoRegion)?.to_string();
        let credentials = sdk
            .credentials_provider()
            .ok_or(BuildError::NoCredentials)?;
        let env = |v: &str| std::env::var(v).ok();
        Ok(XrayClient {
            url: format!("{}/TraceSegments", xray_base_url(&region, &env)),
            signer: Signer {
                credentials: CachedCredentials::new(credentials),
                region,
                service: "xray",
            },
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One signed call with a body from [`RequestBody`]; `Ok` lists the documents X-Ray refused.
    pub async fn put(&self, body: Bytes) -> Result<Vec<Unprocessed>, ExportError> {
        let answer = signed::post(
            &self.url,
            "application/json",
            body,
            Some(&self.signer),
            self.timeout,
            MAX_RESPONSE_BYTES,
        )
        .await?;
        let status = answer.status;
        if (200..300).contains(&status) {
            return Ok(unprocessed(&answer.body));
        }
        let (code, message) = error_of(answer.header("x-amzn-errortype"), &answer.body);
        let message = format!("HTTP {status} {code}: {message}");
        let after = answer.retry_after();
        if status == 429 || THROTTLING_CODES.contains(&code.as_str()) {
            Err(ExportError::Retryable {
                reason: "throttled",
                message,
                after,
            })
        } else if status >= 500 || status == 408 {
            Err(ExportError::Retryable {
                reason: "server_error",
                message,
                after,
            })
        } else {
            Err(ExportError::Permanent { code, message })
        }
    }
}

#[derive(serde::Deserialize)]
struct Output {
    #[serde(rename = "UnprocessedTraceSegments", default)]
    unprocessed: Vec<UnprocessedJson>,
}

#[derive(serde::Deserialize)]
struct UnprocessedJson {
    #[serde(rename = "Id", default)]
    id: Option<String>,
    #[serde(rename = "ErrorCode", default)]
    error_code: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

/// The refused documents of a 2xx answer (an empty or unreadable body refuses none).
fn unprocessed(body: &[u8]) -> Vec<Unprocessed> {
    serde_json::from_slice::<Output>(body)
        .map(|o| {
            o.unprocessed
                .into_iter()
                .map(|u| Unprocessed {
                    id: u.id.unwrap_or_default(),
                    error_code: u.error_code.unwrap_or_else(|| "Unknown".into()),
                    message: u.message.unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An error's code and message: `x-amzn-ErrorType` (`Code:uri`), else the body's `__type`
/// (`namespace#Code`), as the AWS REST-JSON protocol names them.
fn error_of(header: Option<&str>, body: &[u8]) -> (String, String) {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| json.get(k).and_then(|v| v.as_str());
    let raw = header
        .or_else(|| field("__type"))
        .or_else(|| field("code"))
        .unwrap_or("Unknown");
    let code = raw.split(':').next().unwrap_or(raw);
    let code = code.rsplit('#').next().unwrap_or(code).trim().to_owned();
    let message = field("message")
        .or_else(|| field("Message"))
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_holds_each_document_as_one_json_string() {
        let mut b = RequestBody::with_capacity(64);
        b.push_escaped(&RequestBody::escape(r#"{"id":"a","name":"q\"uote ✓"}"#));
        b.push_escaped(&RequestBody::escape("{}"));
        let body = b.finish();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"TraceSegmentDocuments": [r#"{"id":"a","name":"q\"uote ✓"}"#, "{}"]})
        );
    }

    #[test]
    fn errors_are_named_as_rest_json_does() {
        assert_eq!(
            error_of(
                Some("ThrottledException:http://internal.amazon.com/"),
                b"{}"
            )
            .0,
            "ThrottledException"
        );
        let (code, message) = error_of(
            None,
            br#"{"__type":"com.amazonaws.xray#InvalidRequestException","message":"bad"}"#,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("InvalidRequestException", "bad")
        );
        assert_eq!(error_of(None, b"<html>").0, "Unknown");
    }

    #[test]
    fn unprocessed_documents_are_read_from_a_success() {
        let u = unprocessed(
            br#"{"UnprocessedTraceSegments":[{"Id":"70de5b6f19ff9a0a","ErrorCode":"InvalidTraceId","Message":"m"}]}"#,
        );
        assert_eq!(
            u,
            vec![Unprocessed {
                id: "70de5b6f19ff9a0a".into(),
                error_code: "InvalidTraceId".into(),
                message: "m".into()
            }]
        );
        assert!(unprocessed(b"{}").is_empty());
    }
}
