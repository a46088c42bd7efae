//! Admission, the hot path every receiver calls: refuse early when the queue or memory is full,
//! count, record span metrics, and push the whole batch into the queue without waiting.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{Batch, Decoded, Protocol, RejectReason, RequestOutcome};
use crate::pipeline::memory::MemoryGuard;
use crate::pipeline::queue::{PushError, Queue};
use crate::pipeline::spool::Spool;
use crate::telemetry::span_metrics::SpanMetrics;
use crate::telemetry::{Counters, Stats, family};

/// How long clients are told to wait after a refusal (RetryInfo / Retry-After).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

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
    /// The `sidetrace_receiver_*` counters, by protocol.
    pub stats: Arc<ReceiverStats>,
    /// Sees 100% of admitted spans, before any sampling.
    pub span_metrics: SpanMetrics,
    pub memory: Arc<MemoryGuard>,
    /// The persistent queue, when `queue.dir` is set.
    pub spool: Option<Arc<Spool>>,
}

impl Pipeline {
    pub fn new(
        queue: Arc<Queue>,
        stats: Arc<ReceiverStats>,
        span_metrics: SpanMetrics,
        memory: Arc<MemoryGuard>,
    ) -> Self {
        Pipeline {
            queue,
            stats,
            span_metrics,
            memory,
            spool: None,
        }
    }

    /// [`Pipeline::admit`], with the request first written to the persistent queue (when there
    /// is one) and the answer waiting for its fsync: what the client sees acknowledged survives
    /// a crash. Without a persistent queue this is `admit`, and does not wait.
    pub async fn admit_durable(
        &self,
        protocol: Protocol,
        mut decoded: Decoded,
    ) -> Result<Admitted, Refusal> {
        let Some(spool) = self
            .spool
            .as_ref()
            .filter(|_| !decoded.batch.spans.is_empty())
        else {
            return self.admit(protocol, decoded);
        };
        match spool.append(protocol, decoded.batch.buf.clone()).await {
            // Refused by the queue after this, the ticket drops and the record is done at once.
            Ok(ticket) => {
                decoded.batch.ticket = ticket;
                self.admit(protocol, decoded)
            }
            Err(_) => {
                let m = &self.stats;
                let spans = decoded.batch.spans.len() as u64;
                m.spans_received(protocol, spans + decoded.rejected.total());
                m.spans_refused(protocol, true, spans);
                m.request(protocol, RequestOutcome::QueueFull);
                Err(Refusal::QueueFull)
            }
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
        self.stats.request(protocol, outcome);
        Err(refusal)
    }

    /// Queues a request replayed from the persistent queue (counted as accepted again, since
    /// this process has not seen it). The batch comes back while the queue is full; `None` when
    /// the queue is closed (draining).
    pub fn requeue(&self, protocol: Protocol, batch: Batch) -> Result<(), Option<Batch>> {
        let spans = batch.spans.len() as u64;
        let span_metrics = &self.span_metrics;
        match self.queue.try_push_with(batch, |b| span_metrics.record(b)) {
            Ok(()) => {
                self.stats.spans_accepted(protocol, spans);
                Ok(())
            }
            Err(PushError::Full(b)) => Err(Some(b)),
            Err(PushError::Closed(b)) => {
                // Left in the persistent queue for the next start: its ticket must not mark it done.
                std::mem::forget(b);
                Err(None)
            }
        }
    }

    /// Admits a decoded request: count, then one non-blocking push of the whole batch. Span
    /// metrics record the batch once the queue has reserved room for it, so a refused request
    /// (which the client sends again) is not counted twice.
    pub fn admit(&self, protocol: Protocol, decoded: Decoded) -> Result<Admitted, Refusal> {
        let Decoded {
            batch,
            rejected,
            metrics_recorded,
        } = decoded;
        let spans = batch.spans.len() as u64;
        let m = &self.stats;
        m.spans_received(protocol, spans + rejected.total());
        m.spans_rejected(protocol, &rejected.by_reason);
        if spans > 0 {
            let span_metrics = &self.span_metrics;
            // Recorded once, where spans first arrive: not again for a forwarding sidetrace's.
            let record = !metrics_recorded || span_metrics.config().record_forwarded;
            let pushed = self.queue.try_push_with(batch, |b| {
                if record {
                    span_metrics.record(b);
                } else {
                    m.spans_forwarded(protocol, spans);
                }
            });
            if let Err(e) = pushed {
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

const PROTOCOLS: usize = Protocol::ALL.len();
const OUTCOMES: usize = RequestOutcome::ALL.len();
const REJECTS: usize = RejectReason::ALL.len();

/// What the receivers were sent and what became of it: `sidetrace_receiver_*`, by protocol.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    requests: [Counters<OUTCOMES>; PROTOCOLS],
    received_spans: Counters<PROTOCOLS>,
    accepted_spans: Counters<PROTOCOLS>,
    forwarded_spans: Counters<PROTOCOLS>,
    rejected_spans: [Counters<REJECTS>; PROTOCOLS],
    /// Spans of decoded requests refused as a whole: [queue full, shutting down].
    refused_spans: [Counters<2>; PROTOCOLS],
}

impl ReceiverStats {
    pub fn request(&self, protocol: Protocol, outcome: RequestOutcome) {
        self.requests[protocol as usize].add(outcome as usize, 1);
    }

    pub fn requests(&self, protocol: Protocol, outcome: RequestOutcome) -> u64 {
        self.requests[protocol as usize].get(outcome as usize)
    }

    pub fn spans_received(&self, protocol: Protocol, n: u64) {
        self.received_spans.add(protocol as usize, n);
    }

    pub fn spans_accepted(&self, protocol: Protocol, n: u64) {
        self.accepted_spans.add(protocol as usize, n);
    }

    pub fn spans_rejected(&self, protocol: Protocol, by_reason: &[u64; REJECTS]) {
        for (i, n) in by_reason.iter().enumerate() {
            self.rejected_spans[protocol as usize].add(i, *n);
        }
    }

    /// Spans refused with a retryable answer: `queue_full` false means shutting down.
    pub fn spans_forwarded(&self, protocol: Protocol, n: u64) {
        self.forwarded_spans.add(protocol as usize, n);
    }

    pub fn spans_refused(&self, protocol: Protocol, queue_full: bool, n: u64) {
        self.refused_spans[protocol as usize].add(usize::from(!queue_full), n);
    }

    pub fn accepted(&self, protocol: Protocol) -> u64 {
        self.accepted_spans.get(protocol as usize)
    }
}

impl Stats for ReceiverStats {
    fn render(&self, o: &mut String) {
        let p = |p: Protocol| format!("protocol=\"{}\"", p.label());
        family(
            o,
            "sidetrace_receiver_requests_total",
            "counter",
            "OTLP export requests by protocol and outcome.",
            Protocol::ALL.iter().flat_map(|pr| {
                RequestOutcome::ALL.iter().map(move |r| {
                    (
                        format!("{},outcome=\"{}\"", p(*pr), r.label()),
                        self.requests(*pr, *r),
                    )
                })
            }),
        );
        for (name, help, c) in [
            (
                "sidetrace_receiver_spans_received_total",
                "Spans in requests that decoded.",
                &self.received_spans,
            ),
            (
                "sidetrace_receiver_spans_accepted_total",
                "Spans admitted to the pipeline queue.",
                &self.accepted_spans,
            ),
            (
                "sidetrace_receiver_spans_forwarded_total",
                "Spans admitted from a sidetrace that had recorded their span metrics (not recorded again).",
                &self.forwarded_spans,
            ),
        ] {
            family(
                o,
                name,
                "counter",
                help,
                Protocol::ALL.iter().map(|pr| (p(*pr), c.get(*pr as usize))),
            );
        }
        family(
            o,
            "sidetrace_receiver_spans_rejected_total",
            "counter",
            "Invalid spans answered with partial success.",
            Protocol::ALL.iter().flat_map(|pr| {
                RejectReason::ALL.iter().map(move |r| {
                    (
                        format!("{},reason=\"{}\"", p(*pr), r.label()),
                        self.rejected_spans[*pr as usize].get(*r as usize),
                    )
                })
            }),
        );
        family(
            o,
            "sidetrace_receiver_spans_refused_total",
            "counter",
            "Spans refused with a retryable status.",
            Protocol::ALL.iter().flat_map(|pr| {
                ["queue_full", "shutting_down"]
                    .iter()
                    .enumerate()
                    .map(move |(i, reason)| {
                        (
                            format!("{},reason=\"{reason}\"", p(*pr)),
                            self.refused_spans[*pr as usize].get(i),
                        )
                    })
            }),
        );
    }
}
