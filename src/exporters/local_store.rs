//! Local mode's store: recent traces in memory, bounded by trace count and bytes (oldest evicted).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::config::{Key, Section};
use crate::exporters::{Export, ExporterStats, Running, Shared};
use crate::model::{Batch, DropReason, TraceId};
use crate::proto::{InstrumentationScope, Resource, Span};
use crate::telemetry::{Counters, Stats, family};

/// One span as the store keeps it, with its resource and scope shared among its batch's spans.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub span: Span,
    pub service: Arc<str>,
    pub resource: Arc<Resource>,
    pub scope: Arc<InstrumentationScope>,
}

#[derive(Debug, Default)]
struct StoredTrace {
    spans: Vec<StoredSpan>,
    bytes: usize,
}

/// A one-line view of a trace, as `/api/traces` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub service: String,
    pub root_name: String,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub span_count: usize,
    pub error: bool,
}

/// Filters of `/api/traces`.
#[derive(Debug, Default, Clone)]
pub struct TraceFilter {
    pub service: Option<String>,
    pub min_duration_nanos: Option<u64>,
    pub errors_only: bool,
    pub limit: usize,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<TraceId, StoredTrace>,
    /// First-seen order, for evicting the oldest trace first.
    order: VecDeque<TraceId>,
    bytes: usize,
}

/// Bounded in-memory trace store shared by the local exporter and the admin API.
#[derive(Debug)]
pub struct LocalStore {
    inner: Mutex<Inner>,
    stats: Arc<ExporterStats>,
    evicted: Counters<1>,
    max_traces: usize,
    max_bytes: usize,
    max_spans_per_trace: usize,
}

/// Local store caps (local mode is for a developer's machine, so generous but bounded).
pub const DEFAULT_LOCAL_MAX_TRACES: usize = 10_000;
pub const DEFAULT_LOCAL_MAX_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_LOCAL_MAX_SPANS_PER_TRACE: usize = 10_000;

/// The `local.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    pub max_traces: usize,
    pub max_bytes: usize,
    pub max_spans_per_trace: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            max_traces: DEFAULT_LOCAL_MAX_TRACES,
            max_bytes: DEFAULT_LOCAL_MAX_BYTES,
            max_spans_per_trace: DEFAULT_LOCAL_MAX_SPANS_PER_TRACE,
        }
    }
}

impl Section for LocalConfig {
    const KEYS: &'static [Key<Self>] = &[
        Key::<Self>::count(
            "local.max_traces",
            "Local store: most traces kept (oldest evicted first).",
            |c| &mut c.max_traces,
        ),
        Key::<Self>::count(
            "local.max_bytes",
            "Local store: approximate memory cap in bytes.",
            |c| &mut c.max_bytes,
        ),
        Key::<Self>::count(
            "local.max_spans_per_trace",
            "Local store: most spans kept for one trace.",
            |c| &mut c.max_spans_per_trace,
        ),
    ];
}

/// Fixed per-span overhead added to the encoded size when accounting memory.
const SPAN_OVERHEAD_BYTES: usize = 256;
/// A decoded span takes about this many times its wire size in memory (a String and an
/// AnyValue per attribute); measured: a 64 MiB cap held ~240 MB of RSS when counted 1:1.
const DECODED_SIZE_FACTOR: usize = 4;

impl LocalStore {
    pub fn new(max_traces: usize, max_bytes: usize, max_spans_per_trace: usize) -> Self {
        LocalStore {
            inner: Mutex::new(Inner::default()),
            stats: ExporterStats::new("local"),
            evicted: Counters::default(),
            max_traces,
            max_bytes,
            max_spans_per_trace,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent enough to matter here.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores every span of a batch (decoded off the hot path, here behind the queue).
    pub fn insert(&self, batch: &Batch) {
        let (spans, undecodable) = batch.decode_all();
        let decoded = spans.into_iter().map(|d| {
            let stored = StoredSpan {
                span: d.span,
                service: d.service,
                resource: d.resource,
                scope: d.scope,
            };
            (
                d.trace_id,
                d.encoded_bytes * DECODED_SIZE_FACTOR + SPAN_OVERHEAD_BYTES,
                stored,
            )
        });
        self.stats.dropped(DropReason::Undecodable, undecodable);

        let (mut stored, mut capped, mut evicted) = (0u64, 0u64, 0u64);
        let mut inner = self.lock();
        for (trace_id, bytes, span) in decoded {
            let inner = &mut *inner;
            let trace = inner.traces.entry(trace_id).or_insert_with(|| {
                inner.order.push_back(trace_id);
                StoredTrace::default()
            });
            if trace.spans.len() >= self.max_spans_per_trace {
                capped += 1;
                continue;
            }
            trace.spans.push(span);
            trace.bytes += bytes;
            inner.bytes += bytes;
            stored += 1;
        }
        evicted += Self::evict(&mut inner, self.max_traces, self.max_bytes);
        drop(inner);
        self.stats.sent(stored);
        self.stats.dropped(DropReason::TraceSpanCap, capped);
        self.evicted.add(0, evicted);
    }

    /// The span accounting of the `local` exporter.
    pub fn exporter_stats(&self) -> Arc<ExporterStats> {
        self.stats.clone()
    }

    /// Evicts the oldest traces until at most `max_traces` and `max_bytes` are held.
    fn evict(inner: &mut Inner, max_traces: usize, max_bytes: usize) -> u64 {
        let mut evicted = 0;
        while inner.traces.len() > max_traces || inner.bytes > max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(t) = inner.traces.remove(&oldest) {
                inner.bytes -= t.bytes;
                evicted += 1;
            }
        }
        evicted
    }

    /// Under memory pressure (the agent refusing spans), gives back half of what the store holds,
    /// oldest first: it is a cache, and the one budget that stays full after a burst. Returns the
    /// traces evicted.
    pub fn shed_half(&self) -> u64 {
        let mut inner = self.lock();
        let (traces, bytes) = (inner.traces.len(), inner.bytes);
        let evicted = Self::evict(&mut inner, traces / 2, bytes / 2);
        inner.traces.shrink_to_fit();
        inner.order.shrink_to_fit();
        drop(inner);
        self.evicted.add(0, evicted);
        evicted
    }

    /// (traces, approximate bytes) held now.
    pub fn stats(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.traces.len(), inner.bytes)
    }

    /// Summaries of the stored traces matching `filter`, newest first.
    pub fn list(&self, filter: &TraceFilter) -> Vec<TraceSummary> {
        let inner = self.lock();
        let mut out: Vec<TraceSummary> = inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.traces.get(id).map(|t| summarize(id, &t.spans)))
            .filter(|s| {
                filter
                    .service
                    .as_ref()
                    .is_none_or(|want| &s.service == want)
            })
            .filter(|s| {
                filter
                    .min_duration_nanos
                    .is_none_or(|min| s.duration_nanos >= min)
            })
            .filter(|s| !filter.errors_only || s.error)
            .take(filter.limit)
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.start_unix_nano));
        out
    }

    /// One trace's spans, ordered by start time.
    pub fn get(&self, trace_id: &TraceId) -> Option<Vec<StoredSpan>> {
        let inner = self.lock();
        let mut spans = inner.traces.get(trace_id)?.spans.clone();
        spans.sort_by_key(|s| s.span.start_time_unix_nano);
        Some(spans)
    }
}

impl Stats for LocalStore {
    fn render(&self, o: &mut String) {
        let (traces, bytes) = self.stats();
        family(
            o,
            "sidetrace_local_store_traces",
            "gauge",
            "Traces held by the local store.",
            [(String::new(), traces as u64)],
        );
        family(
            o,
            "sidetrace_local_store_bytes",
            "gauge",
            "Approximate bytes held by the local store.",
            [(String::new(), bytes as u64)],
        );
        family(
            o,
            "sidetrace_local_store_evicted_traces_total",
            "counter",
            "Traces evicted (oldest first) to stay within the store's caps, or shed under memory pressure.",
            [(String::new(), self.evicted.get(0))],
        );
    }
}

/// Starts the `local` exporter; the store it fills is what the admin API and UI read.
pub fn start(c: &LocalConfig, shared: &Shared) -> (Arc<LocalStore>, Running) {
    let store = Arc::new(LocalStore::new(
        c.max_traces,
        c.max_bytes,
        c.max_spans_per_trace,
    ));
    shared.registry.register(store.clone());
    let stats = store.exporter_stats();
    let running = crate::exporters::spawn(LocalExporter(store.clone()), stats, shared.input_bytes);
    (store, running)
}

/// The `local` exporter: every kept batch goes into the store that the admin API reads.
#[derive(Debug)]
pub struct LocalExporter(pub Arc<LocalStore>);

impl Export for LocalExporter {
    async fn export(&mut self, batch: &Batch, _now: Instant) {
        self.0.insert(batch);
    }
}

/// The trace's root: the span without a parent, else the one whose parent is not here (local root).
pub fn root_of(spans: &[StoredSpan]) -> Option<&StoredSpan> {
    spans
        .iter()
        .find(|s| s.span.parent_span_id.is_empty() || s.span.parent_span_id.iter().all(|b| *b == 0))
        .or_else(|| {
            spans.iter().find(|s| {
                !spans
                    .iter()
                    .any(|p| p.span.span_id == s.span.parent_span_id)
            })
        })
        .or_else(|| spans.iter().min_by_key(|s| s.span.start_time_unix_nano))
}

fn summarize(trace_id: &TraceId, spans: &[StoredSpan]) -> TraceSummary {
    let start = spans
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.span.end_time_unix_nano)
        .max()
        .unwrap_or(0);
    let root = root_of(spans);
    TraceSummary {
        trace_id: crate::model::hex(trace_id),
        service: root.map(|r| r.service.to_string()).unwrap_or_default(),
        root_name: root.map(|r| r.span.name.clone()).unwrap_or_default(),
        start_unix_nano: start,
        duration_nanos: end.saturating_sub(start),
        span_count: spans.len(),
        error: spans
            .iter()
            .any(|s| s.span.status.as_ref().is_some_and(|st| st.code == 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Rng, Shape, request};
    use prost::Message as _;

    #[test]
    fn under_memory_pressure_the_store_sheds_its_oldest_half() {
        let store = LocalStore::new(10_000, 64 << 20, 10_000);
        let req = request(&mut Rng::new(1), &Shape::default());
        let d = crate::receivers::decode::decode_request(
            req.encode_to_vec().into(),
            crate::model::Protocol::Grpc,
        )
        .unwrap();
        store.insert(&d.batch);
        let (traces, bytes) = store.stats();
        assert_eq!(traces, 64, "512 spans in traces of 8");
        let newest = store.list(&TraceFilter {
            limit: 1,
            ..Default::default()
        });

        assert_eq!(store.shed_half(), 32);
        let (left, left_bytes) = store.stats();
        assert_eq!(left, 32);
        assert!(left_bytes <= bytes / 2, "{left_bytes} of {bytes}");
        let kept = store.list(&TraceFilter {
            limit: 1,
            ..Default::default()
        });
        assert_eq!(
            kept[0].trace_id, newest[0].trace_id,
            "the newest traces stay"
        );
        assert_eq!(store.evicted.get(0), 32);
    }
}
