//! The AWS X-Ray exporter: spans → segment documents → PutTraceSegments, 50 per call, retried
//! with jittered backoff; every span ends as sent, rejected (by X-Ray's code) or dropped (by reason).

pub mod client;
pub mod otlp_sigv4;
pub mod translate;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::exporters::ExporterKind;
use crate::exporters::retry::{self, Backoff, RetryPolicy, Sends};
use crate::model::{Batch, hex};
use crate::telemetry::{DropReason, Metrics};
pub use client::{MAX_DOCUMENTS_PER_CALL, XrayClient};
pub use translate::{TranslateOptions, to_segment};

const KIND: usize = ExporterKind::Xray as usize;

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
    json: String,
    span_id: Option<String>,
}

/// The X-Ray exporter's state on the dispatcher task; sends run on their own tasks.
#[derive(Debug)]
pub struct XrayExporter {
    client: XrayClient,
    settings: XraySettings,
    metrics: Arc<Metrics>,
    buf: Vec<u8>,
    pending: Vec<PendingDoc>,
    oldest: Option<Instant>,
    sends: Sends,
}

impl XrayExporter {
    pub fn new(client: XrayClient, settings: XraySettings, metrics: Arc<Metrics>) -> Self {
        XrayExporter {
            sends: Sends::new(settings.concurrency),
            client,
            settings,
            metrics,
            buf: Vec::with_capacity(16 * 1024),
            pending: Vec::with_capacity(MAX_DOCUMENTS_PER_CALL),
            oldest: None,
        }
    }

    /// Translates a batch into documents and sends every full batch; waits (backpressure) only
    /// when all `concurrency` calls are busy.
    pub async fn export(&mut self, batch: &Batch, now: Instant) {
        let (spans, undecodable) = batch.decode_all();
        self.metrics
            .spans_dropped(KIND, DropReason::Undecodable, undecodable);
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
                    self.metrics
                        .xray_trimmed(u64::from(t.annotations_over_cap), t.trim.is_some());
                    for (n, range) in t.documents().iter().enumerate() {
                        // The translator writes UTF-8 (its inputs were validated on receipt):
                        // one validation pass, not the lossy decoder's chunk walk (~1 % of (b)).
                        let doc = &self.buf[range.clone()];
                        let json = match std::str::from_utf8(doc) {
                            Ok(s) => s.to_owned(),
                            Err(_) => String::from_utf8_lossy(doc).into_owned(),
                        };
                        // With two documents the first is the dependency subsegment carrying the span's own ID.
                        let span_id = (n == 0).then(|| hex(&d.span.span_id));
                        self.push(PendingDoc { json, span_id }, now).await;
                    }
                }
                Err(e) => {
                    debug!(exporter = "xray", reason = e.reason(), error = %e, "Span not translatable; rejected.");
                    self.metrics.spans_rejected_by(KIND, e.reason(), 1);
                }
            }
        }
    }

    async fn push(&mut self, doc: PendingDoc, now: Instant) {
        if doc.span_id.is_some() {
            self.metrics.exporter_pending_add(KIND, 1);
        }
        self.pending.push(doc);
        self.oldest.get_or_insert(now);
        if self.pending.len() >= self.settings.batch_size.clamp(1, MAX_DOCUMENTS_PER_CALL) {
            self.flush().await;
        }
    }

    /// Sends a partial batch whose oldest document has waited `idle_flush`.
    pub async fn tick(&mut self, now: Instant) {
        if self
            .oldest
            .is_some_and(|t| now.duration_since(t) >= self.settings.idle_flush)
        {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let docs = std::mem::take(&mut self.pending);
        self.oldest = None;
        let (client, metrics, retry) = (
            self.client.clone(),
            self.metrics.clone(),
            self.settings.retry.clone(),
        );
        self.sends
            .spawn(|seed| {
                Sender {
                    client,
                    metrics,
                    backoff: Backoff::new(retry, seed),
                }
                .send(docs)
            })
            .await;
    }

    /// Sends what is batched and waits for every call in flight (the agent bounds this wait
    /// with its drain deadline).
    pub async fn shutdown(&mut self) {
        self.flush().await;
        self.sends.wait_all().await;
    }
}

/// One batch's journey: call, retry what is retryable, account for every span.
struct Sender {
    client: XrayClient,
    metrics: Arc<Metrics>,
    backoff: Backoff,
}

impl Sender {
    async fn send(mut self, docs: Vec<PendingDoc>) {
        let spans = docs.iter().filter(|d| d.span_id.is_some()).count() as u64;
        let jsons: Vec<String> = docs.iter().map(|d| d.json.clone()).collect();
        let client = &self.client;
        let result = retry::deliver(&mut self.backoff, "xray", spans, || {
            client.put(jsons.clone())
        })
        .await;
        let m = &self.metrics;
        // Pending first, so "sent" never runs ahead of what is still held.
        m.exporter_pending_add(KIND, -(spans as i64));
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
                        m.spans_rejected_by(KIND, &u.error_code, 1);
                    }
                    warn!(exporter = "xray", id = %u.id, code = %u.error_code, message = %u.message, "X-Ray rejected a segment document.");
                }
                m.spans_exported(KIND, spans - rejected);
            }
            Err(reason) => m.spans_dropped(KIND, reason, spans),
        }
    }
}
