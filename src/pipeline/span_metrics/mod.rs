//! Span metrics (RED): every admitted span, before sampling, into an HDR latency histogram per
//! (service, operation, span kind, status class), recorded in per-worker shards.
//!
//! Hot path: each worker thread owns a shard (thread-local): a map from a span's label bytes to
//! its own [`Cell`] per series. A known series costs one hash lookup (none when consecutive spans
//! share labels) and two single-writer atomic stores: no shared lock, no allocation. The global
//! registry (a mutex) is touched only when a worker meets labels it has not seen: it applies the
//! per-service cardinality cap and keeps every worker's cells per series, which snapshots merge.

pub mod hdr;
pub mod operation;
pub mod render;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};

use foldhash::fast::RandomState;

use crate::model::{Batch, SpanInfo};
pub use hdr::{Cell, Histogram};
pub use operation::{Kind, StatusClass};

/// Issue 5: series kept per service before further label sets share its overflow series.
pub const DEFAULT_MAX_SERIES_PER_SERVICE: usize = 500;
/// Services tracked before further ones share the `_overflow` service (service names come from
/// outside, so they are capped too).
pub const DEFAULT_MAX_SERVICES: usize = 100;
/// Issue 5: Prometheus bucket bounds, seconds: 1 ms … 60 s.
pub const DEFAULT_BUCKETS_SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// The operation of overflow series, and the service of services past the cap.
pub const OVERFLOW: &str = "_overflow";
/// The service of spans whose resource has no `service.name` (the OTel SDKs' default prefix).
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// The operation of spans with an empty name and no HTTP attributes.
pub const UNKNOWN_OPERATION: &str = "unknown_operation";
/// Label sets a worker remembers as overflowing before it forgets them (bounds its memory
/// when a service sends unbounded names; forgotten ones are looked up again).
const LOCAL_OVERFLOW_ENTRIES: usize = 16_384;
/// Separates the parts of a series key (0xFF never occurs in UTF-8).
const SEP: u8 = 0xFF;

/// Settings of span metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanMetricsConfig {
    pub enabled: bool,
    pub max_series_per_service: usize,
    pub max_services: usize,
    /// Add the resource's `service.version` as a label (a canary next to the stable version).
    pub service_version: bool,
    /// Prometheus `le` bounds in seconds, ascending.
    pub buckets_seconds: Vec<f64>,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            enabled: true,
            max_series_per_service: DEFAULT_MAX_SERIES_PER_SERVICE,
            max_services: DEFAULT_MAX_SERVICES,
            service_version: false,
            buckets_seconds: DEFAULT_BUCKETS_SECONDS.to_vec(),
        }
    }
}

/// The labels of one series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesLabels {
    pub service: Box<str>,
    /// Empty unless `service_version` is on.
    pub version: Box<str>,
    pub operation: Box<str>,
    pub kind: Kind,
    pub status: StatusClass,
}

impl SeriesLabels {
    pub fn is_overflow(&self) -> bool {
        &*self.operation == OVERFLOW
    }
}

#[derive(Debug)]
struct SeriesEntry {
    labels: Arc<SeriesLabels>,
    /// One cell per worker that has recorded into this series.
    cells: Vec<Arc<Cell>>,
}

#[derive(Debug, Default)]
struct ServiceEntry {
    /// Series created for this service (overflow series not included).
    series: usize,
    /// Overflow series by (kind, status), created on first need.
    overflow: HashMap<(Kind, StatusClass), u32>,
}

#[derive(Debug, Default)]
struct Registry {
    by_key: HashMap<Box<[u8]>, u32, RandomState>,
    series: Vec<SeriesEntry>,
    services: HashMap<Box<str>, ServiceEntry, RandomState>,
}

/// A series key split into its parts (all borrowed from the key bytes).
struct Parts<'a> {
    service: &'a str,
    version: &'a str,
    operation: &'a str,
    kind: Kind,
    status: StatusClass,
}

fn split_key(key: &[u8]) -> Parts<'_> {
    let mut it = key.split(|b| *b == SEP);
    let mut text = || std::str::from_utf8(it.next().unwrap_or_default()).unwrap_or_default();
    let (service, version, operation) = (text(), text(), text());
    let tail = &key[key.len().saturating_sub(2)..];
    Parts {
        service,
        version,
        operation,
        kind: Kind::ALL[tail[0] as usize],
        status: StatusClass::ALL[tail[1] as usize],
    }
}

impl Registry {
    fn add_series(&mut self, labels: SeriesLabels) -> u32 {
        let id = self.series.len() as u32;
        self.series.push(SeriesEntry {
            labels: Arc::new(labels),
            cells: Vec::new(),
        });
        id
    }

    /// The series for a key seen for the first time by some worker: existing, new (within the
    /// caps) or the service's overflow series. Returns (series id, is overflow).
    fn resolve(&mut self, key: &[u8], config: &SpanMetricsConfig) -> (u32, bool) {
        if let Some(&id) = self.by_key.get(key) {
            return (id, false);
        }
        let p = split_key(key);
        let service =
            if self.services.contains_key(p.service) || self.services.len() < config.max_services {
                p.service
            } else {
                OVERFLOW
            };
        let entry = self.services.entry(service.into()).or_default();
        if service == p.service && entry.series < config.max_series_per_service {
            entry.series += 1;
            let id = self.add_series(SeriesLabels {
                service: p.service.into(),
                version: p.version.into(),
                operation: p.operation.into(),
                kind: p.kind,
                status: p.status,
            });
            self.by_key.insert(key.into(), id);
            return (id, false);
        }
        let slot = (p.kind, p.status);
        if let Some(&id) = entry.overflow.get(&slot) {
            return (id, true);
        }
        let labels = SeriesLabels {
            service: service.into(),
            version: "".into(),
            operation: OVERFLOW.into(),
            kind: p.kind,
            status: p.status,
        };
        let id = self.add_series(labels);
        self.services
            .get_mut(service)
            .expect("entry just made")
            .overflow
            .insert(slot, id);
        (id, true)
    }
}

#[derive(Debug)]
struct Shared {
    config: SpanMetricsConfig,
    buckets: render::Buckets,
    registry: Mutex<Registry>,
}

/// Span metrics of one agent: recorded on the hot path, read by snapshots.
#[derive(Debug, Clone)]
pub struct SpanMetrics {
    shared: Arc<Shared>,
}

/// A label set a worker has met: its key, the key's hash, and its cell.
struct Known {
    hash: u64,
    key: Box<[u8]>,
    /// Index into [`LocalShard::cells`].
    slot: u32,
    overflow: bool,
}

/// One worker thread's shard for one [`SpanMetrics`].
struct LocalShard {
    owner: Weak<Shared>,
    hasher: RandomState,
    /// Label sets met so far (the hash is stored so lookups compare bytes only on a hash match).
    by_key: hashbrown::HashTable<Known>,
    overflow_entries: usize,
    /// This worker's cells; `slot_of[series id]` indexes them.
    cells: Vec<Arc<Cell>>,
    slot_of: Vec<u32>,
    key: Vec<u8>,
    /// The previous span's key, hash and slot: consecutive spans of one series skip the lookup.
    last_key: Vec<u8>,
    last: Option<(u64, u32)>,
    /// (cell slot, duration µs) of the batch being recorded; reused, so it stops allocating
    /// once it has held the largest batch.
    staged: Vec<(u32, u32)>,
}

thread_local! {
    static SHARDS: RefCell<Vec<LocalShard>> = const { RefCell::new(Vec::new()) };
}

impl LocalShard {
    fn new(owner: &Arc<Shared>) -> Self {
        LocalShard {
            owner: Arc::downgrade(owner),
            hasher: RandomState::default(),
            by_key: hashbrown::HashTable::new(),
            overflow_entries: 0,
            cells: Vec::new(),
            slot_of: Vec::new(),
            key: Vec::with_capacity(256),
            last_key: Vec::with_capacity(256),
            last: None,
            staged: Vec::new(),
        }
    }

    fn record(&mut self, shared: &Shared, batch: &Batch) {
        let version = shared.config.service_version;
        for span in &batch.spans {
            write_key(batch, span, version, &mut self.key);
            let hash = self.hasher.hash_one(self.key.as_slice());
            let slot = match self.last {
                Some((h, slot)) if h == hash && self.key == self.last_key => slot,
                _ => {
                    let key = self.key.as_slice();
                    let slot = match self.by_key.find(hash, |k| k.hash == hash && *k.key == *key) {
                        Some(k) => k.slot,
                        None => self.miss(shared, hash),
                    };
                    self.last = Some((hash, slot));
                    self.last_key.clone_from(&self.key);
                    slot
                }
            };
            let us = (span.duration_nanos() / 1_000).min(hdr::MAX_VALUE_US);
            self.staged.push((slot, us as u32));
        }
        // Counting in a second, tight loop lets the CPU overlap the cache misses of many
        // counters (they are spread over megabytes with many series), which the lookups
        // between them would otherwise serialise: about twice as fast with 1,000 series.
        for &(slot, us) in &self.staged {
            self.cells[slot as usize].record(u64::from(us));
        }
        self.staged.clear();
    }

    /// Slow path: ask the registry, and make this worker's cell for the series if needed.
    fn miss(&mut self, shared: &Shared, hash: u64) -> u32 {
        let mut reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
        let (id, overflow) = reg.resolve(&self.key, &shared.config);
        let id = id as usize;
        if self.slot_of.len() <= id {
            self.slot_of.resize(id + 1, u32::MAX);
        }
        if self.slot_of[id] == u32::MAX {
            let cell = Arc::new(Cell::default());
            reg.series[id].cells.push(cell.clone());
            self.slot_of[id] = self.cells.len() as u32;
            self.cells.push(cell);
        }
        drop(reg);
        let slot = self.slot_of[id];
        if overflow {
            if self.overflow_entries >= LOCAL_OVERFLOW_ENTRIES {
                self.by_key.retain(|k| !k.overflow);
                self.overflow_entries = 0;
            }
            self.overflow_entries += 1;
        }
        let known = Known {
            hash,
            key: self.key.as_slice().into(),
            slot,
            overflow,
        };
        self.by_key.insert_unique(hash, known, |k| k.hash);
        slot
    }
}

/// Writes a span's series key: service, version, operation (separated by 0xFF), kind, status.
fn write_key(batch: &Batch, span: &SpanInfo, with_version: bool, key: &mut Vec<u8>) {
    key.clear();
    let resource = batch.resources.get(span.resource as usize);
    let text = |r: Option<&std::ops::Range<u32>>| {
        r.and_then(|r| batch.buf.get(r.start as usize..r.end as usize))
            .unwrap_or_default()
    };
    let service = text(resource.map(|r| &r.service));
    if service.is_empty() {
        key.extend_from_slice(UNKNOWN_SERVICE.as_bytes());
    } else {
        key.extend_from_slice(service);
        operation::truncate_utf8(key, operation::MAX_OPERATION_BYTES);
    }
    if key == OVERFLOW.as_bytes() {
        key.push(b'_');
    }
    key.push(SEP);
    if with_version {
        let start = key.len();
        key.extend_from_slice(text(resource.map(|r| &r.version)));
        operation::truncate_utf8(key, start + operation::MAX_OPERATION_BYTES);
    }
    key.push(SEP);
    let start = key.len();
    operation::write_operation(batch, span, key);
    if key.len() == start {
        key.extend_from_slice(UNKNOWN_OPERATION.as_bytes());
    } else if &key[start..] == OVERFLOW.as_bytes() {
        key.push(b'_');
    }
    key.push(SEP);
    key.push(Kind::from_otlp(span.kind) as u8);
    key.push(StatusClass::of(span) as u8);
}

/// Series and limits at one moment; cheap to take (Arc clones), read without any lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Sorted by labels.
    pub series: Vec<SeriesRef>,
    /// Series per service (overflow series not counted), sorted by service.
    pub services: Vec<(Box<str>, usize)>,
    pub max_series_per_service: usize,
    pub service_version: bool,
}

/// One series in a snapshot: its labels and every worker's cell.
#[derive(Debug, Clone)]
pub struct SeriesRef {
    pub labels: Arc<SeriesLabels>,
    pub cells: Vec<Arc<Cell>>,
}

impl SeriesRef {
    pub fn histogram(&self) -> Histogram {
        Histogram::merge(&self.cells)
    }
}

impl SpanMetrics {
    pub fn new(config: SpanMetricsConfig) -> Self {
        SpanMetrics {
            shared: Arc::new(Shared {
                buckets: render::Buckets::new(&config.buckets_seconds),
                config,
                registry: Mutex::default(),
            }),
        }
    }

    pub fn config(&self) -> &SpanMetricsConfig {
        &self.shared.config
    }

    /// Records every span of a batch into this thread's shard (the hot path).
    pub fn record(&self, batch: &Batch) {
        if !self.shared.config.enabled || batch.spans.is_empty() {
            return;
        }
        SHARDS.with_borrow_mut(|shards| {
            let i = match shards
                .iter()
                .position(|s| std::ptr::eq(s.owner.as_ptr(), Arc::as_ptr(&self.shared)))
            {
                Some(i) => i,
                None => {
                    // First batch of this thread for this instance; drop shards of dead ones.
                    shards.retain(|s| s.owner.strong_count() > 0);
                    shards.push(LocalShard::new(&self.shared));
                    shards.len() - 1
                }
            };
            shards[i].record(&self.shared, batch);
        });
    }

    /// Appends the span-metrics families to a `/metrics` page.
    pub fn render_prometheus(&self, out: &mut String) {
        if self.shared.config.enabled {
            render::prometheus(&self.snapshot(), &self.shared.buckets, out);
        }
    }

    /// The `/api/metrics` document.
    pub fn summary(&self, service: Option<&str>) -> serde_json::Value {
        render::summary(&self.snapshot(), service)
    }

    /// The current series (sorted by labels) and per-service counts.
    pub fn snapshot(&self) -> Snapshot {
        let (mut series, mut services) = {
            let reg = self
                .shared
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let series: Vec<SeriesRef> = reg
                .series
                .iter()
                .filter(|s| !s.cells.is_empty())
                .map(|s| SeriesRef {
                    labels: s.labels.clone(),
                    cells: s.cells.clone(),
                })
                .collect();
            let services: Vec<(Box<str>, usize)> = reg
                .services
                .iter()
                .map(|(name, e)| (name.clone(), e.series))
                .collect();
            (series, services)
        };
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        services.sort_unstable();
        Snapshot {
            series,
            services,
            max_series_per_service: self.shared.config.max_series_per_service,
            service_version: self.shared.config.service_version,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
