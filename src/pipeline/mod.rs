//! The pipeline between receivers and exporters: admission (hot path) and the dispatcher (behind the queue).

pub mod memory;
pub mod queue;
pub mod sampler;
pub mod span_metrics;
pub mod xray_rules;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::exporters::Exporter;
use crate::model::Protocol;
use crate::receivers::decode::Decoded;
use crate::telemetry::{DropReason, Metrics, RequestOutcome};
pub use memory::MemoryGuard;
pub use queue::{PushError, Queue};
pub use sampler::Sampler;
pub use span_metrics::SpanMetrics;

/// How long clients are told to wait after a refusal (RetryInfo / Retry-After).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often the sampler decides traces whose hold ended and exporters get their periodic tick
/// (console grace, batch flushes). Short, so each tick decides few traces: at 250 ms the
/// decisions came in bursts that showed in request latency (p99.9 15 → 10 ms at half load).
pub const TICK: Duration = Duration::from_millis(50);

/// What the receiver tells the client about an admitted request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Spans not forwarded because they were invalid (OTLP partial success).
    pub rejected_spans: u64,
    /// The partial-success message, when some were rejected.
    pub message: Option<String>,
}

/// Why a request was refused as a whole (nothing from it is kept).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is over budget: retry after [`RETRY_AFTER`].
    QueueFull,
    /// The agent is draining: retry (elsewhere, or after restart).
    ShuttingDown,
    /// Resident memory is above the soft memory limit, or the read budget for request bodies is
    /// spent: retry after [`RETRY_AFTER`].
    MemoryLimit,
}

/// The hot-path side of the pipeline, shared by every receiver.
#[derive(Debug)]
pub struct Pipeline {
    pub queue: Arc<Queue>,
    pub metrics: Arc<Metrics>,
    /// Sees 100% of admitted spans, before any sampling.
    pub span_metrics: SpanMetrics,
    pub memory: Arc<MemoryGuard>,
}

impl Pipeline {
    pub fn new(
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
        span_metrics: SpanMetrics,
        memory: Arc<MemoryGuard>,
    ) -> Self {
        Pipeline {
            queue,
            metrics,
            span_metrics,
            memory,
        }
    }

    /// Refuses, before any decoding, a request the queue cannot take or that arrives while
    /// memory is over the soft limit: under overload the receivers answer in microseconds
    /// instead of walking bytes they will drop.
    pub fn precheck(&self, protocol: Protocol, body_bytes: usize) -> Result<(), Refusal> {
        let refusal = if self.queue.is_closed() {
            Refusal::ShuttingDown
        } else if !self.queue.might_fit(body_bytes) {
            Refusal::QueueFull
        } else if self.memory.refusing() {
            Refusal::MemoryLimit
        } else {
            return Ok(());
        };
        let outcome = match refusal {
            Refusal::QueueFull => RequestOutcome::QueueFull,
            Refusal::ShuttingDown => RequestOutcome::ShuttingDown,
            Refusal::MemoryLimit => RequestOutcome::MemoryLimit,
        };
        self.metrics.request(protocol, outcome);
        Err(refusal)
    }

    /// Admits a decoded request: count, then one non-blocking push of the whole batch. Span
    /// metrics record the batch once the queue has reserved room for it, so a refused request
    /// (which the client sends again) is not counted twice.
    pub fn admit(&self, protocol: Protocol, decoded: Decoded) -> Result<Admitted, Refusal> {
        let Decoded { batch, rejected } = decoded;
        let spans = batch.spans.len() as u64;
        let m = &self.metrics;
        m.spans_received(protocol, spans + rejected.total());
        m.spans_rejected(protocol, &rejected.by_reason);
        if spans > 0 {
            let span_metrics = &self.span_metrics;
            if let Err(e) = self.queue.try_push_with(batch, |b| span_metrics.record(b)) {
                let full = matches!(e, PushError::Full(_));
                m.spans_refused(protocol, full, spans);
                m.request(
                    protocol,
                    if full {
                        RequestOutcome::QueueFull
                    } else {
                        RequestOutcome::ShuttingDown
                    },
                );
                return Err(if full {
                    Refusal::QueueFull
                } else {
                    Refusal::ShuttingDown
                });
            }
        } else if self.queue.is_closed() {
            m.request(protocol, RequestOutcome::ShuttingDown);
            return Err(Refusal::ShuttingDown);
        }
        m.spans_accepted(protocol, spans);
        if rejected.total() == 0 {
            m.request(protocol, RequestOutcome::Ok);
            Ok(Admitted::default())
        } else {
            m.request(protocol, RequestOutcome::Partial);
            Ok(Admitted {
                rejected_spans: rejected.total(),
                message: Some(rejected.message()),
            })
        }
    }
}

/// Spans the dispatcher has taken from the queue but not yet handed to every exporter.
#[derive(Debug, Default)]
pub struct InFlight(AtomicU64);

impl InFlight {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Moves batches from the queue to every exporter until the queue is closed and empty.
pub async fn run_dispatcher(
    queue: Arc<Queue>,
    mut sampler: Sampler,
    mut exporters: Vec<Exporter>,
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
) {
    async fn deliver(
        exporters: &mut [Exporter],
        batches: Vec<crate::model::Batch>,
        metrics: &Metrics,
        now: Instant,
    ) {
        for batch in &batches {
            for e in exporters.iter_mut() {
                e.export(batch, metrics, now).await;
            }
        }
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = queue.pop() => {
                let Some(batch) = batch else { break };
                in_flight.0.store(batch.spans.len() as u64, Ordering::Relaxed);
                let now = Instant::now();
                let kept = sampler.admit(batch, now);
                deliver(&mut exporters, kept, &metrics, now).await;
                in_flight.0.store(0, Ordering::Relaxed);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let kept = sampler.tick(now);
                deliver(&mut exporters, kept, &metrics, now).await;
                for e in &mut exporters {
                    e.tick(now).await;
                }
            }
        }
    }
    // Draining: traces still held are decided with what arrived.
    let now = Instant::now();
    let kept = sampler.flush_all();
    deliver(&mut exporters, kept, &metrics, now).await;
    for e in &mut exporters {
        e.shutdown().await;
    }
}

/// Counts what is left when the drain deadline passes: queued, in-flight and exporter-held spans.
pub fn count_undelivered(queue: &Queue, in_flight: &InFlight, metrics: &Metrics) -> u64 {
    let mut lost = in_flight.get() + metrics.exporters_pending();
    while let Some(b) = queue.try_pop() {
        lost += b.spans.len() as u64;
    }
    metrics.pipeline_dropped(DropReason::DrainDeadline, lost);
    lost
}
