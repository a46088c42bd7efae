//! The OTLP exporter's task: spliced requests sent with bounded concurrency and retried as the
//! OTLP spec says; every span ends as sent, rejected (partial success) or dropped. The generic
//! `otlp` exporter and `xray.mode=otlp` are this one with different limits and senders.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::exporters::otlp::{Limits, Request, Sender, Splicer};
use crate::exporters::retry::{self, Backoff, RetryPolicy, Sends};
use crate::exporters::{Export, ExporterStats};
use crate::model::Batch;

/// How an OTLP exporter batches and sends.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The exporter's name in logs and metric labels.
    pub name: &'static str,
    pub limits: Limits,
    /// Calls in flight at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

/// Sends spliced OTLP requests to one destination.
#[derive(Debug)]
pub struct OtlpExporter {
    name: &'static str,
    sender: Arc<Sender>,
    splicer: Splicer,
    retry: RetryPolicy,
    stats: Arc<ExporterStats>,
    sends: Sends,
    full: Vec<Request>,
}

impl OtlpExporter {
    pub fn new(sender: Sender, settings: OtlpSettings, stats: Arc<ExporterStats>) -> Self {
        OtlpExporter {
            name: settings.name,
            sender: Arc::new(sender),
            splicer: Splicer::new(settings.limits),
            retry: settings.retry,
            stats,
            sends: Sends::new(settings.concurrency),
            full: Vec::new(),
        }
    }

    /// Spans spliced but not yet in a request that went out.
    pub fn pending_spans(&self) -> usize {
        self.splicer.pending_spans()
    }

    /// Sends every request that filled up, waiting (backpressure) only for a free call slot.
    async fn send_full(&mut self) {
        for request in std::mem::take(&mut self.full) {
            self.send(request).await;
        }
    }

    async fn send(
        &mut self,
        Request {
            body,
            spans,
            tickets,
        }: Request,
    ) {
        let (sender, stats, policy, name) = (
            self.sender.clone(),
            self.stats.clone(),
            self.retry.clone(),
            self.name,
        );
        self.sends
            .spawn(move |seed| async move {
                let mut backoff = Backoff::new(policy, seed);
                // Compressed once, on the send's own task; retries send the same bytes.
                let body = sender.encode(body);
                let result = retry::deliver(
                    &mut backoff,
                    name,
                    spans,
                    || sender.attempt(body.clone()),
                    |reason| stats.retried(reason),
                )
                .await;
                stats.pending_add(-(spans as i64));
                match result {
                    Ok(partial) => {
                        let rejected = partial.rejected.min(spans);
                        if rejected > 0 || !partial.message.is_empty() {
                            tracing::warn!(exporter = name, rejected, message = %partial.message, "Destination accepted the request in part.");
                        }
                        stats.rejected("otlp_partial_success", rejected);
                        stats.sent(spans - rejected);
                    }
                    Err(reason) => stats.dropped(reason, spans),
                }
                // Answered or given up: the persistent queue may forget these requests.
                drop(tickets);
            })
            .await;
    }
}

impl Export for OtlpExporter {
    async fn export(&mut self, batch: &Batch, now: Instant) {
        let added = self.splicer.add(batch, now, &mut self.full);
        self.stats.rejected("span_too_large", added.too_large);
        self.stats.pending_add(added.spans as i64);
        self.send_full().await;
    }

    async fn tick(&mut self, now: Instant) {
        if self.splicer.is_due(now)
            && let Some(r) = self.splicer.take()
        {
            self.send(r).await;
        }
    }

    async fn shutdown(&mut self) {
        if let Some(r) = self.splicer.take() {
            self.send(r).await;
        }
        self.sends.wait_all().await;
    }
}

/// The Collector's batch processor defaults: 8,192 spans, 200 ms.
pub const DEFAULT_MAX_SPANS_PER_REQUEST: usize = 8_192;
pub const DEFAULT_IDLE_FLUSH: Duration = Duration::from_millis(200);
/// Bytes per request: ~1,000–2,000 spans, far under every receiver's cap (4 MiB in the Collector
/// and here; 2 MB in some HTTP servers, and a 413 cannot be retried). Each call in flight holds
/// one, and a body this size stays in cache as it is written and sent: measured against 2 MiB and
/// 1 MiB, a forwarding sidecar peaked ~6 MB lower and spent no more CPU (BENCHMARKS.md).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 512 * 1024;
