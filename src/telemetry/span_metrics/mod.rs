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

pub use crate::model::SpanKind;
use crate::model::{Batch, SpanInfo};
pub use hdr::{Cell, Histogram};
pub use operation::StatusClass;

/// Series kept per service before further label sets share its overflow series.
pub const DEFAULT_MAX_SERIES_PER_SERVICE: usize = 500;
/// Services tracked before further ones share the `_overflow` service (service names come from
/// outside, so they are capped too).
pub const DEFAULT_MAX_SERVICES: usize = 100;
/// Prometheus bucket bounds, seconds: 1 ms … 60 s.
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
    /// Record spans a forwarding sidetrace already recorded (a gateway's choice; off: once).
    pub record_forwarded: bool,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            enabled: true,
            max_series_per_service: DEFAULT_MAX_SERIES_PER_SERVICE,
            max_services: DEFAULT_MAX_SERVICES,
            service_version: false,
            buckets_seconds: DEFAULT_BUCKETS_SECONDS.to_vec(),
            record_forwarded: false,
        }
    }
}

/// Bucket bounds in seconds: positive, finite, strictly ascending, at most 200.
pub fn parse_buckets(text: &str) -> Result<Vec<f64>, String> {
    let mut out: Vec<f64> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let b: f64 = part
            .parse()
            .map_err(|_| format!("{part:?} is not a number of seconds"))?;
        if !(b.is_finite() && b > 0.0) {
            return Err(format!("{part:?}: bounds must be positive seconds"));
        }
        if out.last().is_some_and(|last| *last >= b) {
            return Err("bounds must be strictly ascending".into());
        }
        out.push(b);
    }
    if out.is_empty() || out.len() > render::MAX_BUCKETS {
        return Err("needs 1 to 200 bounds".into());
    }
    Ok(out)
}

type K = crate::config::Key<SpanMetricsConfig>;

impl crate::config::Section for SpanMetricsConfig {
    const KEYS: &'static [K] = &[
        K::bool(
            "span_metrics.enabled",
            "Span metrics: latency histograms and counters from every span, before sampling (/metrics, /api/metrics, CloudWatch).",
            |c| &mut c.enabled,
        ),
        K::count(
            "span_metrics.max_series_per_service",
            "Span metrics: series kept per service; further label sets share the service's _overflow series.",
            |c| &mut c.max_series_per_service,
        ),
        K::count(
            "span_metrics.max_services",
            "Span metrics: services tracked; further services share the _overflow service.",
            |c| &mut c.max_services,
        ),
        K::bool(
            "span_metrics.record_forwarded",
            "Span metrics: also record spans forwarded by a sidetrace that recorded them already (off: each span is counted once, where it first arrived).",
            |c| &mut c.record_forwarded,
        ),
        K::bool(
            "span_metrics.service_version",
            "Span metrics: add the resource's service.version as a label and CloudWatch dimension (compare a canary with the stable version).",
            |c| &mut c.service_version,
        ),
        K::custom(
            "span_metrics.buckets",
            "Span metrics: Prometheus histogram bucket bounds (le), in seconds, ascending.",
            |c, v| {
                c.buckets_seconds = parse_buckets(v)?;
                Ok(())
            },
            |c| {
                let b: Vec<String> = c.buckets_seconds.iter().map(|b| b.to_string()).collect();
                crate::config::parse::toml_string(&b.join(","))
            },
        ),
    ];
}

/// The labels of one series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesLabels {
    pub service: Box<str>,
    /// Empty unless `service_version` is on.
    pub version: Box<str>,
    pub operation: Box<str>,
    pub kind: SpanKind,
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
    /// The labels as Prometheus text, status excluded (written once, not per scrape).
    text: Arc<str>,
    /// One cell per worker that has recorded into this series.
    cells: Vec<Arc<Cell>>,
}

#[derive(Debug, Default)]
struct ServiceEntry {
    /// Series created for this service (overflow series not included).
    series: usize,
    /// Overflow series by (kind, status), created on first need.
    overflow: HashMap<(SpanKind, StatusClass), u32>,
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
    kind: SpanKind,
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
        kind: SpanKind::ALL[tail[0] as usize],
        status: StatusClass::ALL[tail[1] as usize],
    }
}

impl Registry {
    fn add_series(&mut self, labels: SeriesLabels, config: &SpanMetricsConfig) -> u32 {
        let id = self.series.len() as u32;
        let mut text = String::new();
        render::push_labels(&mut text, &labels, config.service_version);
        self.series.push(SeriesEntry {
            labels: Arc::new(labels),
            text: text.into(),
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
            let id = self.add_series(
                SeriesLabels {
                    service: p.service.into(),
                    version: p.version.into(),
                    operation: p.operation.into(),
                    kind: p.kind,
                    status: p.status,
                },
                config,
            );
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
        let id = self.add_series(labels, config);
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
    /// Series ids in label order, and how many ids it covers: snapshots sort only the series
    /// added since the last one (series are never removed), off the registry's lock.
    order: Mutex<(Vec<u32>, usize)>,
}

/// Span metrics of one agent: recorded on the hot path, read by snapshots.
#[derive(Debug, Clone)]
pub struct SpanMetrics {
    shared: Arc<Shared>,
}

/// Operation bytes kept inside a table entry (longer ones are boxed).
const INLINE_OP: usize = 46;
/// Services a worker numbers before it forgets its numbering and its table (service names come
/// from outside; forgotten label sets are looked up again).
const LOCAL_SERVICES: usize = 4_096;
/// [`Known::header`] form of an operation written out in full (not a method + `http.route`).
const BUILT: u64 = 0xFF;

/// Operation bytes as a worker stores them: inline when short, so the comparison that confirms
/// a lookup reads the entry's own cache line instead of chasing a pointer.
enum StoredOp {
    Inline(u8, [u8; INLINE_OP]),
    Boxed(Box<[u8]>),
}

impl StoredOp {
    fn new(op: &[u8]) -> Self {
        if op.len() <= INLINE_OP {
            let mut bytes = [0; INLINE_OP];
            bytes[..op.len()].copy_from_slice(op);
            StoredOp::Inline(op.len() as u8, bytes)
        } else {
            StoredOp::Boxed(op.into())
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            StoredOp::Inline(len, bytes) => &bytes[..*len as usize],
            StoredOp::Boxed(b) => b,
        }
    }
}

/// A label set a worker has met, in one cache line. The worker's key is not the registry's
/// text key: `header` packs the worker's number for the (service, version), the kind, the
/// status class and the operation's form (the method's code when the operation is
/// method + `http.route`, [`BUILT`] otherwise); `op` is the route, or the operation text. So
/// the common case is keyed straight from the request bytes, with nothing copied per span.
#[repr(align(64))]
struct Known {
    header: u64,
    op: StoredOp,
    /// Index into [`Table::cells`].
    slot: u32,
    overflow: bool,
}

const _: () = assert!(std::mem::size_of::<Known>() == 64);

/// A worker's label sets and cells.
struct Table {
    hasher: RandomState,
    by_key: hashbrown::HashTable<Known>,
    overflow_entries: usize,
    /// This worker's cells; `slot_of[series id]` indexes them.
    cells: Vec<Arc<Cell>>,
    slot_of: Vec<u32>,
}

impl Table {
    #[inline]
    fn find(&self, header: u64, op: &[u8]) -> Result<u32, u64> {
        let hash = self.hasher.hash_one((header, op));
        match self
            .by_key
            .find(hash, |k| k.header == header && k.op.as_slice() == op)
        {
            Some(k) => Ok(k.slot),
            None => Err(hash),
        }
    }

    /// Slow path: ask the registry for the series of `full_key` (the registry's text key), make
    /// this worker's cell for it if needed, and remember the worker's key.
    fn miss(&mut self, shared: &Shared, full_key: &[u8], hash: u64, header: u64, op: &[u8]) -> u32 {
        let mut reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
        let (id, overflow) = reg.resolve(full_key, &shared.config);
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
            header,
            op: StoredOp::new(op),
            slot,
            overflow,
        };
        let hasher = &self.hasher;
        self.by_key.insert_unique(hash, known, |k| {
            hasher.hash_one((k.header, k.op.as_slice()))
        });
        slot
    }
}

/// Where the previous span's operation bytes are, for the same-series shortcut.
enum LastOp {
    /// A range of the batch's buffer (a route).
    Route(std::ops::Range<usize>),
    /// [`LocalShard::last_op`].
    Built,
}

/// One worker thread's shard for one [`SpanMetrics`].
struct LocalShard {
    owner: Weak<Shared>,
    table: Table,
    /// (service, version) as sent → this worker's number for it; `next_service` numbers the
    /// next one (wrapping: the table is cleared every [`LOCAL_SERVICES`] numbers, so live
    /// numbers never meet their wrapped twins).
    services: HashMap<Box<[u8]>, u32, RandomState>,
    next_service: u32,
    /// The batch's resources' service numbers.
    resource_service: Vec<u32>,
    /// An operation written out in full, the previous one, and the registry key of a miss.
    op: Vec<u8>,
    last_op: Vec<u8>,
    full_key: Vec<u8>,
    /// (cell slot, duration µs) of the batch being recorded; reused, so it stops allocating
    /// once it has held the largest batch.
    staged: Vec<(u32, u32)>,
}

thread_local! {
    static SHARDS: RefCell<Vec<LocalShard>> = const { RefCell::new(Vec::new()) };
}

fn range_bytes<'a>(batch: &'a Batch, r: &std::ops::Range<u32>) -> &'a [u8] {
    batch
        .buf
        .get(r.start as usize..r.end as usize)
        .unwrap_or_default()
}

impl LocalShard {
    fn new(owner: &Arc<Shared>) -> Self {
        LocalShard {
            owner: Arc::downgrade(owner),
            table: Table {
                hasher: RandomState::default(),
                by_key: hashbrown::HashTable::new(),
                overflow_entries: 0,
                cells: Vec::new(),
                slot_of: Vec::new(),
            },
            services: HashMap::default(),
            next_service: 0,
            resource_service: Vec::new(),
            op: Vec::with_capacity(256),
            last_op: Vec::with_capacity(256),
            full_key: Vec::with_capacity(512),
            staged: Vec::new(),
        }
    }

    /// Numbers the batch's resources by (service, version), once per resource.
    fn number_services(&mut self, batch: &Batch, with_version: bool) {
        self.resource_service.clear();
        for r in &batch.resources {
            self.full_key.clear();
            self.full_key
                .extend_from_slice(range_bytes(batch, &r.service));
            if with_version {
                self.full_key.push(SEP);
                self.full_key
                    .extend_from_slice(range_bytes(batch, &r.version));
            }
            let n = match self.services.get(self.full_key.as_slice()) {
                Some(&n) => n,
                None => {
                    if self.services.len() >= LOCAL_SERVICES {
                        self.services.clear();
                        self.table.by_key.clear();
                        self.table.overflow_entries = 0;
                    }
                    let n = self.next_service;
                    self.next_service = n.wrapping_add(1);
                    self.services.insert(self.full_key.as_slice().into(), n);
                    n
                }
            };
            self.resource_service.push(n);
        }
    }

    fn record(&mut self, shared: &Shared, batch: &Batch) {
        let version = shared.config.service_version;
        self.number_services(batch, version);
        let mut last: Option<(u64, LastOp, u32)> = None;
        for span in &batch.spans {
            let service = self
                .resource_service
                .get(span.resource as usize)
                .copied()
                .unwrap_or(u32::MAX);
            let header = u64::from(service)
                | (SpanKind::from_otlp(span.kind) as u64) << 32
                | (StatusClass::of(span) as u64) << 40;
            let route = &span.http.route;
            let (header, built) = if route.is_empty() {
                self.op.clear();
                operation::write_operation(batch, span, &mut self.op);
                (header | BUILT << 48, true)
            } else {
                let method = operation::method_code(range_bytes(batch, &span.http.method));
                (header | u64::from(method) << 48, false)
            };
            let op = if built {
                self.op.as_slice()
            } else {
                range_bytes(batch, route)
            };
            let same = match &last {
                Some((h, LastOp::Route(r), _)) => {
                    *h == header && batch.buf.get(r.clone()) == Some(op)
                }
                Some((h, LastOp::Built, _)) => *h == header && self.last_op == op,
                None => false,
            };
            let slot = if same {
                last.as_ref().map_or(0, |l| l.2)
            } else {
                let slot = match self.table.find(header, op) {
                    Ok(slot) => slot,
                    Err(hash) => {
                        write_key(batch, span, version, &mut self.full_key);
                        self.table.miss(shared, &self.full_key, hash, header, op)
                    }
                };
                let where_ = if built {
                    // Swap rather than copy: `op` is rewritten from scratch for the next span.
                    std::mem::swap(&mut self.op, &mut self.last_op);
                    LastOp::Built
                } else {
                    LastOp::Route(route.start as usize..route.end as usize)
                };
                last = Some((header, where_, slot));
                slot
            };
            let us = (span.duration_nanos() / 1_000).min(hdr::MAX_VALUE_US);
            self.staged.push((slot, us as u32));
        }
        // Counting in a second, tight loop lets the CPU overlap the cache misses of many
        // counters (they are spread over megabytes with many series), which the lookups
        // between them would otherwise serialise: about twice as fast with 1,000 series.
        let splits = &shared.buckets.splits;
        for &(slot, us) in &self.staged {
            self.table.cells[slot as usize].record(u64::from(us), splits);
        }
        self.staged.clear();
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
    key.push(SpanKind::from_otlp(span.kind) as u8);
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
    /// The labels as Prometheus text, status excluded.
    pub text: Arc<str>,
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
                order: Mutex::default(),
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
        let (all, mut services) = {
            let reg = self
                .shared
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let all: Vec<SeriesRef> = reg
                .series
                .iter()
                .map(|s| SeriesRef {
                    labels: s.labels.clone(),
                    text: s.text.clone(),
                    cells: s.cells.clone(),
                })
                .collect();
            let services: Vec<(Box<str>, usize)> = reg
                .services
                .iter()
                .map(|(name, e)| (name.clone(), e.series))
                .collect();
            (all, services)
        };
        let order = {
            let mut order = self.shared.order.lock().unwrap_or_else(|e| e.into_inner());
            let (sorted, covered) = &mut *order;
            if *covered < all.len() {
                let by_labels =
                    |a: &u32, b: &u32| all[*a as usize].labels.cmp(&all[*b as usize].labels);
                let mut new: Vec<u32> = (*covered as u32..all.len() as u32).collect();
                new.sort_unstable_by(by_labels);
                let old = std::mem::take(sorted);
                let mut merged = Vec::with_capacity(all.len());
                let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
                while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
                    if by_labels(x, y).is_le() {
                        merged.extend(a.next());
                    } else {
                        merged.extend(b.next());
                    }
                }
                merged.extend(a);
                merged.extend(b);
                *sorted = merged;
                *covered = all.len();
            }
            sorted.clone()
        };
        let mut all: Vec<Option<SeriesRef>> = all.into_iter().map(Some).collect();
        let series = order
            .iter()
            .filter_map(|&id| all[id as usize].take())
            .filter(|s| !s.cells.is_empty())
            .collect();
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
