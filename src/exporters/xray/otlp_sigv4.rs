//! The second way into X-Ray: OTLP/HTTP protobuf signed with SigV4 to
//! `https://xray.<region>.amazonaws.com/v1/traces` (accounts with Transaction Search).
//!
//! Spans are not re-encoded: each request is spliced from the received bytes (resource, scope
//! and span messages copied as they came), within the endpoint's limits: 10,000 spans and 5 MB
//! per request, 200 KB per span (CloudWatch OTLP endpoint documentation).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tokio::time::Instant;

use crate::exporters::retry::{self, Backoff, ExportError, RetryPolicy, Sends};
use crate::exporters::{Export, ExporterStats};
use crate::model::Batch;
use crate::proto::ExportTraceServiceResponse;

/// Endpoint limits (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch-OTLPEndpoint.html).
pub const MAX_SPANS_PER_REQUEST: usize = 10_000;
pub const MAX_REQUEST_BYTES: usize = 5_000_000;
pub const MAX_SPAN_BYTES: usize = 200_000;
/// The SigV4 service name of the X-Ray OTLP endpoint.
pub const SIGNING_SERVICE: &str = "xray";

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// Full URL of the traces endpoint.
    pub url: String,
    pub region: String,
    pub idle_flush: Duration,
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

/// The traces URL: `AWS_ENDPOINT_URL_XRAY` / `AWS_ENDPOINT_URL` (base URLs, as the SDKs read
/// them) with `/v1/traces` appended, else the regional endpoint.
pub fn traces_url(region: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let base = ["AWS_ENDPOINT_URL_XRAY", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| env(v).filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("https://xray.{region}.amazonaws.com"));
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// Accumulates spliced `ResourceSpans` until a limit or the idle timer says send.
#[derive(Debug, Default)]
struct Pending {
    body: Vec<u8>,
    spans: usize,
    oldest: Option<Instant>,
}

/// The OTLP+SigV4 X-Ray exporter.
#[derive(Debug)]
pub struct OtlpSigv4Exporter {
    settings: OtlpSettings,
    credentials: SharedCredentialsProvider,
    client: HttpsClient,
    stats: Arc<ExporterStats>,
    pending: Pending,
    sends: Sends,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes a length-delimited field of `len` bytes takes with its tag (fields 1–15: one tag byte).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl OtlpSigv4Exporter {
    pub fn new(
        settings: OtlpSettings,
        credentials: SharedCredentialsProvider,
        stats: Arc<ExporterStats>,
    ) -> Result<Self, std::io::Error> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(
                Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            )?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(OtlpSigv4Exporter {
            sends: Sends::new(settings.concurrency),
            settings,
            credentials,
            client,
            stats,
            pending: Pending::default(),
        })
    }

    async fn add_group(
        &mut self,
        resource: &[u8],
        scope: &[u8],
        mut spans: &[&[u8]],
        now: Instant,
    ) {
        let header = field_len(resource.len()) + field_len(scope.len());
        while !spans.is_empty() {
            // Take as many spans as fit in the current request (4 bytes of slack per nesting level).
            let (mut take, mut scope_body) = (0, field_len(scope.len()));
            for s in spans {
                let next = scope_body + field_len(s.len());
                let total = self.pending.body.len()
                    + field_len(field_len(resource.len()) + field_len(next))
                    + 8;
                if self.pending.spans + take >= MAX_SPANS_PER_REQUEST || total > MAX_REQUEST_BYTES {
                    break;
                }
                scope_body = next;
                take += 1;
            }
            if take == 0 {
                if self.pending.spans == 0 {
                    // Cannot happen with spans ≤ 200 KB, but never loop forever.
                    self.stats.rejected("span_too_large", spans.len() as u64);
                    return;
                }
                self.flush().await;
                continue;
            }
            let mut scope_spans = Vec::with_capacity(scope_body);
            if !scope.is_empty() {
                put_field(&mut scope_spans, 1, scope);
            }
            for s in &spans[..take] {
                put_field(&mut scope_spans, 2, s);
            }
            let mut rs = Vec::with_capacity(header + field_len(scope_spans.len()));
            if !resource.is_empty() {
                put_field(&mut rs, 1, resource);
            }
            put_field(&mut rs, 2, &scope_spans);
            put_field(&mut self.pending.body, 1, &rs);
            self.pending.spans += take;
            self.pending.oldest.get_or_insert(now);
            self.stats.pending_add(take as i64);
            spans = &spans[take..];
        }
    }

    async fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.spans == 0 {
            return;
        }
        let call = Call {
            client: self.client.clone(),
            credentials: self.credentials.clone(),
            settings: self.settings.clone(),
            stats: self.stats.clone(),
        };
        let (body, spans) = (Bytes::from(pending.body), pending.spans as u64);
        self.sends.spawn(|seed| call.send(body, spans, seed)).await;
    }
}

impl Export for OtlpSigv4Exporter {
    /// Splices the batch's spans into requests, flushing whenever a limit would be passed.
    async fn export(&mut self, batch: &Batch, now: Instant) {
        let buf = &batch.buf[..];
        let slice = |r: &std::ops::Range<u32>| &buf[r.start as usize..r.end as usize];
        let mut i = 0;
        while i < batch.spans.len() {
            // Spans of one (resource, scope) pair are contiguous in a batch.
            let (res, scope) = (batch.spans[i].resource, batch.spans[i].scope);
            let mut j = i;
            while j < batch.spans.len()
                && batch.spans[j].resource == res
                && batch.spans[j].scope == scope
            {
                j += 1;
            }
            let resource = batch
                .resources
                .get(res as usize)
                .map_or(&[][..], |r| slice(&r.resource));
            let scope_bytes = batch
                .scopes
                .get(scope as usize)
                .map_or(&[][..], |s| slice(&s.scope));
            let mut group: Vec<&[u8]> = Vec::with_capacity(j - i);
            for info in &batch.spans[i..j] {
                let span = slice(&info.bytes);
                if span.len() > MAX_SPAN_BYTES {
                    self.stats.rejected("span_too_large", 1);
                    continue;
                }
                group.push(span);
            }
            self.add_group(resource, scope_bytes, &group, now).await;
            i = j;
        }
    }

    async fn tick(&mut self, now: Instant) {
        if self
            .pending
            .oldest
            .is_some_and(|t| now.duration_since(t) >= self.settings.idle_flush)
        {
            self.flush().await;
        }
    }

    async fn shutdown(&mut self) {
        self.flush().await;
        self.sends.wait_all().await;
    }
}

struct Call {
    client: HttpsClient,
    credentials: SharedCredentialsProvider,
    settings: OtlpSettings,
    stats: Arc<ExporterStats>,
}

impl Call {
    async fn send(self, body: Bytes, spans: u64, seed: u64) {
        let this = &self;
        let mut backoff = Backoff::new(self.settings.retry.clone(), seed);
        let result =
            retry::deliver(&mut backoff, "xray", spans, || this.attempt(body.clone())).await;
        let m = &self.stats;
        m.pending_add(-(spans as i64));
        match result {
            Ok(rejected) => {
                let rejected = rejected.min(spans);
                m.rejected("otlp_partial_success", rejected);
                m.sent(spans - rejected);
            }
            Err(reason) => m.dropped(reason, spans),
        }
    }

    /// One signed POST; `Ok` carries the partial-success rejected count.
    async fn attempt(&self, body: Bytes) -> Result<u64, ExportError> {
        let retry = |reason, message: String, after| ExportError::Retryable {
            reason,
            message,
            after,
        };
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| retry("credentials", e.to_string(), None))?;
        let mut req = http::Request::post(&self.settings.url)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(body.clone()))
            .map_err(|e| ExportError::Permanent {
                code: "bad_url".into(),
                message: e.to_string(),
            })?;
        sign_request(
            &mut req,
            &body,
            &creds,
            &self.settings.region,
            SystemTime::now(),
        )
        .map_err(|e| ExportError::Permanent {
            code: "signing".into(),
            message: e,
        })?;
        let resp =
            match tokio::time::timeout(self.settings.request_timeout, self.client.request(req))
                .await
            {
                Err(_) => return Err(retry("timeout", "request timed out".into(), None)),
                Ok(Err(e)) => return Err(retry("connection", e.to_string(), None)),
                Ok(Ok(r)) => r,
            };
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let bytes =
            match tokio::time::timeout(self.settings.request_timeout, resp.into_body().collect())
                .await
            {
                Ok(Ok(b)) => b.to_bytes(),
                _ => return Err(retry("connection", "response body not read".into(), None)),
            };
        match status {
            200..=299 => Ok(ExportTraceServiceResponse::decode(bytes)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_spans.max(0) as u64)),
            429 => Err(retry("throttled", format!("HTTP {status}"), after)),
            408 | 500..=599 => Err(retry("server_error", format!("HTTP {status}"), after)),
            _ => Err(ExportError::Permanent {
                code: format!("http_{status}"),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }
}

/// Signs a request with SigV4 for the X-Ray OTLP endpoint (adds `x-amz-date`, the
/// `x-amz-security-token` when present, and `authorization`).
pub fn sign_request<B>(
    req: &mut http::Request<B>,
    body: &[u8],
    creds: &aws_credential_types::Credentials,
    region: &str,
    time: SystemTime,
) -> Result<(), String> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let uri = req.uri().to_string();
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DropReason;
    use crate::model::Protocol;
    use crate::proto::ExportTraceServiceRequest;
    use crate::receivers::decode::decode_request;
    use crate::workload::{Rng, Shape, request};

    #[test]
    fn urls_follow_the_sdk_variables() {
        assert_eq!(
            traces_url("eu-west-1", &|_| None),
            "https://xray.eu-west-1.amazonaws.com/v1/traces"
        );
        let env = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:5000/".to_string());
        assert_eq!(
            traces_url("eu-west-1", &env),
            "http://127.0.0.1:5000/v1/traces"
        );
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    #[tokio::test]
    async fn spliced_requests_decode_to_the_same_spans_within_limits() {
        let req = request(
            &mut Rng::new(3),
            &Shape {
                spans: 512,
                ..Shape::default()
            },
        );
        let batch = decode_request(req.encode_to_vec().into(), Protocol::Grpc)
            .unwrap()
            .batch;
        let metrics = ExporterStats::new("xray");
        let settings = OtlpSettings {
            url: "http://127.0.0.1:9/v1/traces".into(),
            region: "us-east-1".into(),
            idle_flush: Duration::from_secs(60),
            concurrency: 1,
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
        };
        let creds = SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
            "a", "b", None, None, "t",
        ));
        let mut x = OtlpSigv4Exporter::new(settings, creds, metrics).unwrap();
        x.export(&batch, Instant::now()).await;
        assert_eq!(x.pending.spans, 512);
        let spliced = ExportTraceServiceRequest::decode(&x.pending.body[..]).unwrap();
        let mut got: Vec<_> = spliced
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .cloned()
            .collect();
        let mut want: Vec<_> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .cloned()
            .collect();
        got.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        want.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        assert_eq!(got, want);
        for rs in &spliced.resource_spans {
            assert!(rs.resource.as_ref().unwrap().attributes.len() > 20);
            assert_eq!(
                rs.scope_spans[0].scope.as_ref().unwrap().name,
                "opentelemetry.instrumentation.flask"
            );
        }
    }

    #[tokio::test]
    async fn requests_never_pass_the_span_limit() {
        let req = request(
            &mut Rng::new(4),
            &Shape {
                spans: 25_000,
                extra_attributes: 0,
                ..Shape::default()
            },
        );
        let batch = decode_request(req.encode_to_vec().into(), Protocol::Grpc)
            .unwrap()
            .batch;
        let metrics = ExporterStats::new("xray");
        let settings = OtlpSettings {
            url: "http://127.0.0.1:9/v1/traces".into(),
            region: "us-east-1".into(),
            idle_flush: Duration::from_secs(60),
            concurrency: 4,
            request_timeout: Duration::from_millis(100),
            retry: RetryPolicy {
                max_elapsed: Duration::ZERO,
                ..RetryPolicy::default()
            },
        };
        let creds = SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
            "a", "b", None, None, "t",
        ));
        let mut x = OtlpSigv4Exporter::new(settings, creds, metrics.clone()).unwrap();
        x.export(&batch, Instant::now()).await;
        // Two full requests went out; the remainder waits for more spans or the idle timer.
        assert_eq!(x.pending.spans, 5_000);
        assert!(x.pending.body.len() <= MAX_REQUEST_BYTES);
        x.shutdown().await;
        // Nothing listens on port 9 and the retry budget is zero: all 25,000 are counted as dropped.
        assert_eq!(metrics.dropped_spans(DropReason::RetryExhausted), 25_000);
        assert_eq!(metrics.pending(), 0);
    }
}
