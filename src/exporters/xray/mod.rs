//! The AWS X-Ray exporter: spans → segment documents → PutTraceSegments, 50 per call, retried
//! with jittered backoff; every span ends as sent, rejected (by X-Ray's code) or dropped (by reason).

pub mod client;
pub mod config;
pub mod otlp_mode;
pub mod rules;
pub mod translate;
#[cfg(any(test, feature = "test-support"))]
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::exporters::batching::{BatchLimits, Batcher};
use crate::exporters::retry::{self, Backoff, RetryPolicy, Sends};
use crate::exporters::{Export, ExporterStats, Running, Shared};
use crate::model::{Batch, DropReason, RawDocument, hex};
use crate::telemetry::{Counters, Stats, family};
pub use client::{MAX_DOCUMENTS_PER_CALL, RequestBody, XrayClient};
pub use config::{XrayConfig, XrayMode};
pub use translate::{TranslateOptions, to_segment};

/// X-Ray's own counters beside the shared exporter ones.
#[derive(Debug, Default)]
pub struct XrayStats {
    /// Documents trimmed to fit 64 KB, and indexed attributes moved to metadata by the cap.
    trimmed_documents: Counters<1>,
    annotations_over_cap: Counters<1>,
}

impl XrayStats {
    pub fn trimmed(&self, annotations_over_cap: u64, trimmed: bool) {
        self.annotations_over_cap.add(0, annotations_over_cap);
        self.trimmed_documents.add(0, u64::from(trimmed));
    }
}

impl Stats for XrayStats {
    fn render(&self, o: &mut String) {
        family(
            o,
            "sidetrace_xray_trimmed_documents_total",
            "counter",
            "X-Ray documents trimmed (metadata first) to stay under 64 KB.",
            [(String::new(), self.trimmed_documents.get(0))],
        );
        family(
            o,
            "sidetrace_xray_annotations_over_cap_total",
            "counter",
            "Indexed attributes written as metadata because a document reached 50 annotations.",
            [(String::new(), self.annotations_over_cap.get(0))],
        );
    }
}

/// Why the X-Ray exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the X-Ray exporter needs an AWS region (AWS_REGION)")]
    NoRegion,
    #[error("the X-Ray exporter found no AWS credentials provider")]
    NoCredentials,
    #[error("cannot set up TLS for X-Ray: {0}")]
    Tls(std::io::Error),
}

/// Starts the X-Ray exporter: PutTraceSegments (`xray.mode=segments`), or OTLP + SigV4.
pub fn start(
    x: &XrayConfig,
    sdk: &aws_config::SdkConfig,
    shared: &Shared,
) -> Result<Running, BuildError> {
    let env = |v: &str| std::env::var(v).ok();
    let retry = RetryPolicy {
        max_elapsed: x.retry_max_elapsed,
        ..RetryPolicy::default()
    };
    let stats = ExporterStats::new("xray");
    if x.mode == XrayMode::Otlp {
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or(BuildError::NoRegion)?;
        let credentials = sdk
            .credentials_provider()
            .ok_or(BuildError::NoCredentials)?;
        let url = otlp_mode::traces_url(&region, &env);
        info!(exporter = "xray", mode = "otlp", url = %url, "X-Ray exporter ready (OTLP + SigV4).");
        let signer = crate::exporters::otlp::Signer {
            credentials: crate::exporters::aws::CachedCredentials::new(credentials.clone()),
            region,
            service: otlp_mode::SIGNING_SERVICE,
        };
        let sender = crate::exporters::otlp::HttpSender::new(url, x.request_timeout, Some(signer))
            .map_err(BuildError::Tls)?;
        let exporter = otlp_mode::OtlpModeExporter::new(
            sender,
            x.idle_flush,
            x.concurrency,
            retry,
            stats.clone(),
        );
        return Ok(crate::exporters::spawn(exporter, stats, shared.input_bytes));
    }
    info!(
        exporter = "xray",
        mode = "segments",
        region = sdk.region().map_or("(from the SDK chain)", |r| r.as_ref()),
        concurrency = x.concurrency,
        "X-Ray exporter ready (PutTraceSegments)."
    );
    let translate = TranslateOptions {
        indexed_attributes: translate::IndexedKeys::new(x.indexed_attributes.clone()),
        index_all_attributes: x.index_all_attributes,
        trace_id_policy: if x.require_epoch_trace_ids {
            translate::TraceIdPolicy::RequireRecentEpoch
        } else {
            translate::TraceIdPolicy::PassThrough
        },
        ..TranslateOptions::default()
    };
    let settings = XraySettings {
        batch_size: MAX_DOCUMENTS_PER_CALL,
        idle_flush: x.idle_flush,
        concurrency: x.concurrency,
        retry,
        translate,
    };
    let xray = Arc::new(XrayStats::default());
    shared.registry.register(xray.clone());
    let client = XrayClient::new(sdk, x.request_timeout)?;
    info!(
        exporter = "xray",
        url = client.url(),
        "PutTraceSegments endpoint."
    );
    let exporter = XrayExporter::new(client, settings, stats.clone(), xray);
    let mut running = crate::exporters::spawn(exporter, stats, shared.input_bytes);
    // X-Ray SDK documents (UDP :2000) are sent as they came, not translated from their views.
    running.input = running.input.relaying_xray_documents();
    Ok(running)
}

/// How the exporter batches and sends.
#[derive(Debug, Clone)]
pub struct XraySettings {
    /// Documents per PutTraceSegments call (at most 50).
    pub batch_size: usize,
    /// Send a partial batch once its oldest document waited this long (the X-Ray daemon's 1 s).
    pub idle_flush: Duration,
    /// Calls in flight at once (the daemon's default is 8).
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub translate: TranslateOptions,
}

/// A document waiting to be sent, and whether it stands for one span in the counters (a
/// LOCAL_ROOT dependency span makes two documents; the synthesised service segment has weight 0).
#[derive(Debug)]
struct PendingDoc {
    /// The document JSON-escaped, ready to go into the request body.
    escaped: Vec<u8>,
    span_id: Option<String>,
}

/// The X-Ray exporter's state on its own task; sends run on tasks of their own.
#[derive(Debug)]
pub struct XrayExporter {
    client: XrayClient,
    settings: XraySettings,
    stats: Arc<ExporterStats>,
    xray: Arc<XrayStats>,
    buf: Vec<u8>,
    batch: Batcher<PendingDoc>,
    sends: Sends,
}

impl XrayExporter {
    pub fn new(
        client: XrayClient,
        settings: XraySettings,
        stats: Arc<ExporterStats>,
        xray: Arc<XrayStats>,
    ) -> Self {
        // Documents per call are the batch's weight; PutTraceSegments caps them, not bytes.
        let batch = Batcher::new(BatchLimits {
            max_weight: settings.batch_size.clamp(1, MAX_DOCUMENTS_PER_CALL),
            max_bytes: usize::MAX,
            idle: settings.idle_flush,
        });
        XrayExporter {
            sends: Sends::new(settings.concurrency),
            client,
            settings,
            stats,
            xray,
            buf: Vec::with_capacity(16 * 1024),
            batch,
        }
    }

    async fn push(&mut self, doc: PendingDoc, now: Instant) {
        if doc.span_id.is_some() {
            self.stats.pending_add(1);
        }
        let bytes = doc.escaped.len();
        if self.batch.push(doc, 1, bytes, now) {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        let Some(taken) = self.batch.take() else {
            return;
        };
        let docs = taken.items;
        let (client, stats, retry) = (
            self.client.clone(),
            self.stats.clone(),
            self.settings.retry.clone(),
        );
        self.sends
            .spawn(|seed| {
                Sender {
                    client,
                    stats,
                    backoff: Backoff::new(retry, seed),
                }
                .send(docs)
            })
            .await;
    }
}

impl Export for XrayExporter {
    /// Translates a batch into documents and sends every full batch; waits (backpressure) only
    /// when all `concurrency` calls are busy.
    async fn export(&mut self, batch: &Batch, now: Instant) {
        let (spans, undecodable) = batch.decode_all();
        self.stats.dropped(DropReason::Undecodable, undecodable);
        self.settings.translate.now_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for d in spans {
            self.buf.clear();
            match to_segment(
                &d.span,
                &d.resource,
                &d.scope,
                &self.settings.translate,
                &mut self.buf,
            ) {
                Ok(t) => {
                    self.xray
                        .trimmed(u64::from(t.annotations_over_cap), t.trim.is_some());
                    for (n, range) in t.documents().iter().enumerate() {
                        // The translator writes UTF-8 (its inputs were validated on receipt):
                        // one validation pass, not the lossy decoder's chunk walk (~1 % of (b)).
                        let doc = &self.buf[range.clone()];
                        let json = match std::str::from_utf8(doc) {
                            Ok(s) => std::borrow::Cow::Borrowed(s),
                            Err(_) => String::from_utf8_lossy(doc),
                        };
                        // Escaped here, once, instead of copied now and escaped at send.
                        let escaped = RequestBody::escape(&json);
                        // With two documents the first is the dependency subsegment carrying the span's own ID.
                        let span_id = (n == 0).then(|| hex(&d.span.span_id));
                        self.push(PendingDoc { escaped, span_id }, now).await;
                    }
                }
                Err(e) => {
                    debug!(exporter = "xray", reason = e.reason(), error = %e, "Span not translatable; rejected.");
                    self.stats.rejected(e.reason(), 1);
                }
            }
        }
    }

    /// Documents from X-Ray SDKs, relayed as they came: batched, sent and counted like ours.
    async fn export_documents(&mut self, docs: Vec<RawDocument>, now: Instant) {
        for d in docs {
            self.push(
                PendingDoc {
                    escaped: d.escaped,
                    span_id: Some(d.id),
                },
                now,
            )
            .await;
        }
    }

    /// Sends a partial batch whose oldest document has waited `idle_flush`.
    async fn tick(&mut self, now: Instant) {
        if self.batch.is_due(now) {
            self.flush().await;
        }
    }

    /// Sends what is batched and waits for every call in flight (the agent bounds this wait
    /// with its drain deadline).
    async fn shutdown(&mut self) {
        self.flush().await;
        self.sends.wait_all().await;
    }
}

/// One batch's journey: call, retry what is retryable, account for every span.
struct Sender {
    client: XrayClient,
    stats: Arc<ExporterStats>,
    backoff: Backoff,
}

impl Sender {
    async fn send(mut self, docs: Vec<PendingDoc>) {
        let spans = docs.iter().filter(|d| d.span_id.is_some()).count() as u64;
        // Written once; a retry sends the same bytes (a cheap clone), re-signed.
        let mut body = RequestBody::with_capacity(docs.iter().map(|d| d.escaped.len() + 3).sum());
        for d in &docs {
            body.push_escaped(&d.escaped);
        }
        let body = body.finish();
        let (client, stats) = (&self.client, &self.stats);
        let result = retry::deliver(
            &mut self.backoff,
            "xray",
            spans,
            || client.put(body.clone()),
            |reason| stats.retried(reason),
        )
        .await;
        let m = &self.stats;
        // Pending first, so "sent" never runs ahead of what is still held.
        m.pending_add(-(spans as i64));
        match result {
            Ok(unprocessed) => {
                let mut rejected = 0;
                for u in &unprocessed {
                    // Only documents that stand for a span count; X-Ray does not take them again.
                    if docs
                        .iter()
                        .any(|d| d.span_id.as_deref() == Some(u.id.as_str()))
                    {
                        rejected += 1;
                        m.rejected(&u.error_code, 1);
                    }
                    warn!(exporter = "xray", id = %u.id, code = %u.error_code, message = %u.message, "X-Ray rejected a segment document.");
                }
                m.sent(spans - rejected);
            }
            Err(reason) => m.dropped(reason, spans),
        }
    }
}
