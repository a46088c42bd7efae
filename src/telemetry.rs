//! sidetrace's own logs and self-metrics (`/metrics`), with fixed, bounded label sets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::model::Protocol;
use crate::receivers::decode::RejectReason;

/// Counters indexed by a small enum; one atomic per label value, no lock, no allocation.
#[derive(Debug)]
pub struct Counters<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Counters<N> {
    pub fn add(&self, index: usize, n: u64) {
        if n > 0 {
            self.0[index].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, index: usize) -> u64 {
        self.0[index].load(Ordering::Relaxed)
    }
}

/// What became of one OTLP request (a label of `sidetrace_receiver_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok,
    Partial,
    Malformed,
    TooLarge,
    UnsupportedMediaType,
    QueueFull,
    ShuttingDown,
    MemoryLimit,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 8] = [
        RequestOutcome::Ok,
        RequestOutcome::Partial,
        RequestOutcome::Malformed,
        RequestOutcome::TooLarge,
        RequestOutcome::UnsupportedMediaType,
        RequestOutcome::QueueFull,
        RequestOutcome::ShuttingDown,
        RequestOutcome::MemoryLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Partial => "partial",
            RequestOutcome::Malformed => "malformed",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::UnsupportedMediaType => "unsupported_media_type",
            RequestOutcome::QueueFull => "queue_full",
            RequestOutcome::ShuttingDown => "shutting_down",
            RequestOutcome::MemoryLimit => "memory_limit",
        }
    }
}

/// Why spans that were accepted did not reach an exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The drain deadline passed at shutdown with the spans still queued.
    DrainDeadline,
    /// A span could not be decoded by an exporter (should not happen: the receiver checked it).
    Undecodable,
    /// A trace in the local store reached its span cap.
    TraceSpanCap,
    /// The destination refused the request in a way retrying cannot fix.
    PermanentError,
    /// Retries ran out of their time budget.
    RetryExhausted,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::DrainDeadline,
        DropReason::Undecodable,
        DropReason::TraceSpanCap,
        DropReason::PermanentError,
        DropReason::RetryExhausted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::DrainDeadline => "drain_deadline",
            DropReason::Undecodable => "undecodable",
            DropReason::TraceSpanCap => "trace_span_cap",
            DropReason::PermanentError => "permanent_error",
            DropReason::RetryExhausted => "retry_exhausted",
        }
    }
}

/// What became of one PutMetricData attempt (a label of `sidetrace_cloudwatch_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Ok,
    /// A retryable failure; the request is tried again.
    Retried,
    /// Refused in a way retrying cannot fix; its data is dropped.
    PermanentError,
    /// Still failing when the retry budget ran out; its data goes out with the next publish.
    RetryExhausted,
}

impl PublishOutcome {
    pub const ALL: [PublishOutcome; 4] = [
        PublishOutcome::Ok,
        PublishOutcome::Retried,
        PublishOutcome::PermanentError,
        PublishOutcome::RetryExhausted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PublishOutcome::Ok => "ok",
            PublishOutcome::Retried => "retried",
            PublishOutcome::PermanentError => "permanent_error",
            PublishOutcome::RetryExhausted => "retry_exhausted",
        }
    }
}

const PROTOCOLS: usize = Protocol::ALL.len();
const OUTCOMES: usize = RequestOutcome::ALL.len();
const REJECTS: usize = RejectReason::ALL.len();
const DROPS: usize = DropReason::ALL.len();
/// Exporter slots in the counters (see `ExporterKind::ALL`).
pub const EXPORTERS: usize = crate::exporters::ExporterKind::ALL.len();

/// Every self-metric counter of the agent.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [Counters<OUTCOMES>; PROTOCOLS],
    received_spans: Counters<PROTOCOLS>,
    accepted_spans: Counters<PROTOCOLS>,
    rejected_spans: [Counters<REJECTS>; PROTOCOLS],
    /// Spans of decoded requests refused as a whole: [queue full, shutting down].
    refused_spans: [Counters<2>; PROTOCOLS],
    exported_spans: Counters<EXPORTERS>,
    dropped_spans: [Counters<DROPS>; EXPORTERS],
    pipeline_dropped_spans: Counters<DROPS>,
    local_evicted_traces: Counters<1>,
    /// Spans a destination refused, by exporter and the destination's own error code.
    rejected_by_code: Mutex<BTreeMap<(usize, String), u64>>,
    /// Spans an exporter holds (batched or being sent): counted as lost if the drain deadline passes.
    exporter_pending: [AtomicI64; EXPORTERS],
    /// X-Ray documents trimmed to fit 64 KB, and indexed attributes moved to metadata by the cap.
    xray_trimmed_documents: Counters<1>,
    xray_annotations_over_cap: Counters<1>,
    cloudwatch_requests: Counters<{ PublishOutcome::ALL.len() }>,
    cloudwatch_datums: Counters<1>,
    /// The sampler's decisions (it runs behind the queue and owns the counting).
    pub sampling: std::sync::Arc<crate::pipeline::sampler::SamplingStats>,
    /// Resident memory and the memory limit (the guard the receivers consult).
    pub memory: std::sync::Arc<crate::pipeline::MemoryGuard>,
}

/// Distinct rejection codes kept per exporter before further ones count as `other`
/// (codes come from outside, so the label set must stay bounded).
pub const MAX_REJECTION_CODES: usize = 32;

/// Point-in-time values read from their owners when `/metrics` is rendered.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub ready: bool,
    pub queue_spans: usize,
    pub queue_bytes: usize,
    pub queue_capacity_spans: usize,
    pub queue_capacity_bytes: usize,
    pub local_traces: Option<(usize, usize)>,
}

impl Metrics {
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
    pub fn spans_refused(&self, protocol: Protocol, queue_full: bool, n: u64) {
        self.refused_spans[protocol as usize].add(usize::from(!queue_full), n);
    }

    pub fn spans_exported(&self, exporter: usize, n: u64) {
        self.exported_spans.add(exporter, n);
    }

    pub fn spans_dropped(&self, exporter: usize, reason: DropReason, n: u64) {
        self.dropped_spans[exporter].add(reason as usize, n);
    }

    pub fn pipeline_dropped(&self, reason: DropReason, n: u64) {
        self.pipeline_dropped_spans.add(reason as usize, n);
    }

    pub fn local_evicted(&self, n: u64) {
        self.local_evicted_traces.add(0, n);
    }

    /// Spans the destination refused (e.g. X-Ray `UnprocessedTraceSegments`), by its error code.
    pub fn spans_rejected_by(&self, exporter: usize, code: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut map = self
            .rejected_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let known = map.keys().filter(|(e, _)| *e == exporter).count();
        let key = if known < MAX_REJECTION_CODES || map.contains_key(&(exporter, code.to_owned())) {
            code.to_owned()
        } else {
            "other".to_owned()
        };
        *map.entry((exporter, key)).or_default() += n;
    }

    pub fn rejected_by(&self, exporter: usize, code: &str) -> u64 {
        let map = self
            .rejected_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&(exporter, code.to_owned())).copied().unwrap_or(0)
    }

    pub fn exporter_pending_add(&self, exporter: usize, n: i64) {
        self.exporter_pending[exporter].fetch_add(n, Ordering::Relaxed);
    }

    /// Spans all exporters still hold.
    pub fn exporters_pending(&self) -> u64 {
        self.exporter_pending
            .iter()
            .map(|a| a.load(Ordering::Relaxed).max(0) as u64)
            .sum()
    }

    pub fn xray_trimmed(&self, annotations_over_cap: u64, trimmed: bool) {
        self.xray_annotations_over_cap.add(0, annotations_over_cap);
        self.xray_trimmed_documents.add(0, u64::from(trimmed));
    }

    pub fn cloudwatch_request(&self, outcome: PublishOutcome) {
        self.cloudwatch_requests.add(outcome as usize, 1);
    }

    pub fn cloudwatch_requests(&self, outcome: PublishOutcome) -> u64 {
        self.cloudwatch_requests.get(outcome as usize)
    }

    pub fn cloudwatch_datums_sent(&self, n: u64) {
        self.cloudwatch_datums.add(0, n);
    }

    pub fn cloudwatch_datums(&self) -> u64 {
        self.cloudwatch_datums.get(0)
    }

    pub fn dropped(&self, exporter: usize, reason: DropReason) -> u64 {
        self.dropped_spans[exporter].get(reason as usize)
    }

    pub fn exported(&self, exporter: usize) -> u64 {
        self.exported_spans.get(exporter)
    }

    pub fn accepted(&self, protocol: Protocol) -> u64 {
        self.accepted_spans.get(protocol as usize)
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        use crate::exporters::ExporterKind;
        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;
        header(o, "sidetrace_build_info", "gauge", "Build information.");
        let _ = writeln!(
            o,
            "sidetrace_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            o,
            "sidetrace_ready",
            "gauge",
            "1 when every listener is bound and the agent is not draining.",
        );
        let _ = writeln!(o, "sidetrace_ready {}", u8::from(g.ready));

        header(
            o,
            "sidetrace_receiver_requests_total",
            "counter",
            "OTLP export requests by protocol and outcome.",
        );
        for p in Protocol::ALL {
            for r in RequestOutcome::ALL {
                let v = self.requests[p as usize].get(r as usize);
                let _ = writeln!(
                    o,
                    "sidetrace_receiver_requests_total{{protocol=\"{}\",outcome=\"{}\"}} {v}",
                    p.label(),
                    r.label()
                );
            }
        }
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
        ] {
            header(o, name, "counter", help);
            for p in Protocol::ALL {
                let _ = writeln!(
                    o,
                    "{name}{{protocol=\"{}\"}} {}",
                    p.label(),
                    c.get(p as usize)
                );
            }
        }
        header(
            o,
            "sidetrace_receiver_spans_rejected_total",
            "counter",
            "Invalid spans answered with partial success.",
        );
        for p in Protocol::ALL {
            for r in RejectReason::ALL {
                let v = self.rejected_spans[p as usize].get(r as usize);
                let _ = writeln!(
                    o,
                    "sidetrace_receiver_spans_rejected_total{{protocol=\"{}\",reason=\"{}\"}} {v}",
                    p.label(),
                    r.label()
                );
            }
        }
        header(
            o,
            "sidetrace_receiver_spans_refused_total",
            "counter",
            "Spans refused with a retryable status.",
        );
        for p in Protocol::ALL {
            for (i, reason) in ["queue_full", "shutting_down"].iter().enumerate() {
                let v = self.refused_spans[p as usize].get(i);
                let _ = writeln!(
                    o,
                    "sidetrace_receiver_spans_refused_total{{protocol=\"{}\",reason=\"{reason}\"}} {v}",
                    p.label()
                );
            }
        }

        for (name, help, v) in [
            (
                "sidetrace_queue_spans",
                "Spans waiting in the pipeline queue.",
                g.queue_spans,
            ),
            (
                "sidetrace_queue_bytes",
                "Bytes waiting in the pipeline queue.",
                g.queue_bytes,
            ),
            (
                "sidetrace_queue_capacity_spans",
                "Span budget of the pipeline queue.",
                g.queue_capacity_spans,
            ),
            (
                "sidetrace_queue_capacity_bytes",
                "Byte budget of the pipeline queue.",
                g.queue_capacity_bytes,
            ),
        ] {
            header(o, name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        }

        header(
            o,
            "sidetrace_exporter_sent_spans_total",
            "counter",
            "Spans delivered by each exporter.",
        );
        for e in ExporterKind::ALL {
            let _ = writeln!(
                o,
                "sidetrace_exporter_sent_spans_total{{exporter=\"{}\"}} {}",
                e.label(),
                self.exported_spans.get(e as usize)
            );
        }
        header(
            o,
            "sidetrace_exporter_dropped_spans_total",
            "counter",
            "Spans an exporter could not deliver, by reason.",
        );
        for e in ExporterKind::ALL {
            for r in DropReason::ALL {
                let v = self.dropped_spans[e as usize].get(r as usize);
                let _ = writeln!(
                    o,
                    "sidetrace_exporter_dropped_spans_total{{exporter=\"{}\",reason=\"{}\"}} {v}",
                    e.label(),
                    r.label()
                );
            }
        }
        header(
            o,
            "sidetrace_exporter_rejected_spans_total",
            "counter",
            "Spans the destination refused, by its error code.",
        );
        {
            let map = self
                .rejected_by_code
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for ((e, code), v) in map.iter() {
                let label = ExporterKind::ALL[*e].label();
                let _ = writeln!(
                    o,
                    "sidetrace_exporter_rejected_spans_total{{exporter=\"{label}\",code=\"{}\"}} {v}",
                    escape_label(code)
                );
            }
        }
        header(
            o,
            "sidetrace_exporter_pending_spans",
            "gauge",
            "Spans an exporter holds in its batches or in flight.",
        );
        for e in ExporterKind::ALL {
            let v = self.exporter_pending[e as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "sidetrace_exporter_pending_spans{{exporter=\"{}\"}} {v}",
                e.label()
            );
        }
        header(
            o,
            "sidetrace_xray_trimmed_documents_total",
            "counter",
            "X-Ray documents trimmed (metadata first) to stay under 64 KB.",
        );
        let _ = writeln!(
            o,
            "sidetrace_xray_trimmed_documents_total {}",
            self.xray_trimmed_documents.get(0)
        );
        header(
            o,
            "sidetrace_xray_annotations_over_cap_total",
            "counter",
            "Indexed attributes written as metadata because a document reached 50 annotations.",
        );
        let _ = writeln!(
            o,
            "sidetrace_xray_annotations_over_cap_total {}",
            self.xray_annotations_over_cap.get(0)
        );
        header(
            o,
            "sidetrace_cloudwatch_requests_total",
            "counter",
            "PutMetricData attempts by outcome.",
        );
        for r in PublishOutcome::ALL {
            let _ = writeln!(
                o,
                "sidetrace_cloudwatch_requests_total{{outcome=\"{}\"}} {}",
                r.label(),
                self.cloudwatch_requests.get(r as usize)
            );
        }
        header(
            o,
            "sidetrace_cloudwatch_sent_datums_total",
            "counter",
            "Metric datums CloudWatch accepted.",
        );
        let _ = writeln!(
            o,
            "sidetrace_cloudwatch_sent_datums_total {}",
            self.cloudwatch_datums.get(0)
        );
        header(
            o,
            "sidetrace_pipeline_dropped_spans_total",
            "counter",
            "Accepted spans that never reached the exporters, by reason.",
        );
        for r in DropReason::ALL {
            let _ = writeln!(
                o,
                "sidetrace_pipeline_dropped_spans_total{{reason=\"{}\"}} {}",
                r.label(),
                self.pipeline_dropped_spans.get(r as usize)
            );
        }
        self.sampling.render(o);
        self.memory.render(o);
        if let Some((traces, bytes)) = g.local_traces {
            header(
                o,
                "sidetrace_local_store_traces",
                "gauge",
                "Traces held by the local store.",
            );
            let _ = writeln!(o, "sidetrace_local_store_traces {traces}");
            header(
                o,
                "sidetrace_local_store_bytes",
                "gauge",
                "Approximate bytes held by the local store.",
            );
            let _ = writeln!(o, "sidetrace_local_store_bytes {bytes}");
            header(
                o,
                "sidetrace_local_store_evicted_traces_total",
                "counter",
                "Traces evicted (oldest first) to stay within the store's caps.",
            );
            let _ = writeln!(
                o,
                "sidetrace_local_store_evicted_traces_total {}",
                self.local_evicted_traces.get(0)
            );
        }
        out
    }
}

/// Prometheus label-value escaping: backslash, quote and newline.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Log output format: human text (default) or one JSON object per line (for containers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber: `RUST_LOG`, else `OTEL_LOG_LEVEL`, else `info`; logs go to stderr
/// so that stdout carries only the console exporter's trace lines.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::env::var("OTEL_LOG_LEVEL")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
