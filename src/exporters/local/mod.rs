//! The `local` exporter: kept batches go into a bounded in-memory store that the admin API and
//! the local UI read (local mode, on a developer's machine or with no AWS account).

mod query;
mod store;

use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{Key, Section};
use crate::exporters::{Export, Running, Shared};
use crate::model::Batch;
use crate::telemetry::{Stats, family};

pub use query::{Edge, Exemplars, Sort, StoreStatus, TraceFilter, TraceList, TraceSummary};
pub use store::{LocalStore, StoredSpan};

/// Local store caps: generous for a developer's machine, bounded. Memory is the real cap; the
/// trace count only bounds the index when traces are tiny (minutes of history at 2,000 spans/s
/// is ~100k traces of 6 spans).
pub const DEFAULT_LOCAL_MAX_TRACES: usize = 250_000;
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
            "Local store: approximate memory cap in bytes (spans are kept compressed).",
            |c| &mut c.max_bytes,
        ),
        Key::<Self>::count(
            "local.max_spans_per_trace",
            "Local store: most spans kept for one trace.",
            |c| &mut c.max_spans_per_trace,
        ),
    ];
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
        family(
            o,
            "sidetrace_local_store_duplicate_spans_total",
            "counter",
            "Spans not stored again because their trace already held that span ID (retried exports).",
            [(String::new(), self.duplicates.get(0))],
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
