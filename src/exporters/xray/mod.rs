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

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::exporters::retry::{self, Backoff, RetryPolicy, Sends};
use crate::exporters::{Export, ExporterStats, Running, Shared};
use crate::model::{Batch, DropReason, RawDocument, Ticket, hex, hold};
use crate::telemetry::{Counters, Stats, family};
pub use client::{MAX_DOCUMENTS_PER_CALL, RequestBody, XrayClient};
pub use config::{XrayConfig, XrayMode};
pub use translate::{TranslateOptions, to_segment, to_segment_escaped};

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
        let exporter = crate::exporters::otlp::OtlpExporter::new(
            crate::exporters::otlp::Sender::Http(sender),
            otlp_mode::settings(x.idle_flush, x.concurrency, retry),
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

/// The PutTraceSegments call being filled: its body, written as spans are translated, and for
/// each document the span it stands for (a LOCAL_ROOT dependency span makes two documents; the
/// synthesised service segment stands for none and is not counted).
#[derive(Debug)]
struct OpenCall {
    body: RequestBody,
    span_ids: Vec<Option<String>>,
    oldest: Option<Instant>,
    /// The persistent queue's requests whose spans are in this call: done once it is answered.
    tickets: Vec<Ticket>,
}

impl OpenCall {
    fn new() -> Self {
        OpenCall {
            body: RequestBody::with_capacity(BODY_CAPACITY_BYTES),
            span_ids: Vec::with_capacity(MAX_DOCUMENTS_PER_CALL),
            oldest: None,
            tickets: Vec::new(),
        }
    }
}

/// What a body of 50 typical documents (~1 KB each, escaped) needs; it grows past this when it must.
const BODY_CAPACITY_BYTES: usize = 64 * 1024;

/// The X-Ray exporter's state on its own task; sends run on tasks of their own.
#[derive(Debug)]
pub struct XrayExporter {
    client: XrayClient,
    settings: XraySettings,
    stats: Arc<ExporterStats>,
    xray: Arc<XrayStats>,
    /// Where a document that must be trimmed is written before it is escaped into the body.
    scratch: Vec<u8>,
    call: OpenCall,
    sends: Sends,
}

impl XrayExporter {
    pub fn new(
        client: XrayClient,
        mut settings: XraySettings,
        stats: Arc<ExporterStats>,
        xray: Arc<XrayStats>,
    ) -> Self {
        // Documents per call: PutTraceSegments caps them, not bytes.
        settings.batch_size = settings.batch_size.clamp(1, MAX_DOCUMENTS_PER_CALL);
        XrayExporter {
            sends: Sends::new(settings.concurrency),
            client,
            settings,
            stats,
            xray,
            scratch: Vec::new(),
            call: OpenCall::new(),
        }
    }

    /// Notes the documents just written into the open call, and sends it when full.
    async fn added(&mut self, span_ids: &[Option<String>], now: Instant) {
        self.call.oldest.get_or_insert(now);
        self.stats
            .pending_add(span_ids.iter().filter(|id| id.is_some()).count() as i64);
        self.call.span_ids.extend_from_slice(span_ids);
        if self.call.span_ids.len() >= self.settings.batch_size {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.call.span_ids.is_empty() {
            return;
        }
        let OpenCall {
            body,
            span_ids,
            tickets,
            ..
        } = std::mem::replace(&mut self.call, OpenCall::new());
        let body = body.finish();
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
                .send(body, span_ids, tickets)
            })
            .await;
    }
}

impl Export for XrayExporter {
    /// Translates a batch straight into the open call's body and sends every full call; waits
    /// (backpressure) only when all `concurrency` calls are busy.
    async fn export(&mut self, batch: &Batch, now: Instant) {
        let (spans, undecodable) = batch.decode_all();
        self.stats.dropped(DropReason::Undecodable, undecodable);
        self.settings.translate.now_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for d in spans {
            let (opts, scratch) = (&self.settings.translate, &mut self.scratch);
            let written = self.call.body.write_with(|out| {
                to_segment_escaped(&d.span, &d.resource, &d.scope, opts, out, scratch)
            });
            match written {
                Ok(t) => {
                    self.xray
                        .trimmed(u64::from(t.annotations_over_cap), t.trim.is_some());
                    // With two documents the first is the dependency subsegment carrying the span's own ID.
                    let ids = [Some(hex(&d.span.span_id)), None];
                    let docs = t.documents();
                    hold(&mut self.call.tickets, &batch.ticket);
                    if docs.len() == 2 && self.call.span_ids.len() + 2 > self.settings.batch_size {
                        // A pair that would pass the call's limit: its second goes into the next call.
                        let second = self.call.body.take_last(docs[1].clone());
                        self.added(&ids[..1], now).await;
                        self.call.body.push_escaped(&second);
                        hold(&mut self.call.tickets, &batch.ticket);
                        self.added(&ids[1..], now).await;
                    } else {
                        self.added(&ids[..docs.len()], now).await;
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
            self.call.body.push_escaped(&d.escaped);
            self.added(&[Some(d.id)], now).await;
        }
    }

    /// Sends a partial call whose oldest document has waited `idle_flush`.
    async fn tick(&mut self, now: Instant) {
        if self
            .call
            .oldest
            .is_some_and(|t| now.duration_since(t) >= self.settings.idle_flush)
        {
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
    /// `tickets` are held until the call is answered (or given up): then the persistent queue
    /// may forget those requests.
    async fn send(mut self, body: Bytes, span_ids: Vec<Option<String>>, tickets: Vec<Ticket>) {
        let spans = span_ids.iter().filter(|id| id.is_some()).count() as u64;
        // Written once; a retry sends the same bytes (a cheap clone), re-signed.
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
                    if span_ids
                        .iter()
                        .any(|id| id.as_deref() == Some(u.id.as_str()))
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
        drop(tickets);
    }
}
