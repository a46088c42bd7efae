//! The local store's memory layout: each batch becomes one deflate-compressed chunk of its spans'
//! protobuf bytes as received, plus a small uncompressed index entry per span. A trace is a list
//! of entries across chunks; evicting the oldest chunk drops the traces first seen in it.

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message as _;

use crate::exporters::ExporterStats;
use crate::model::{Batch, DropReason, SpanId, TraceId};
use crate::proto::{InstrumentationScope, Resource, Span};
use crate::telemetry::Counters;
use crate::telemetry::span_metrics::operation::write_operation;

/// One span as the API reads it: decoded from its chunk, with its resource and scope.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub span: Span,
    pub service: Arc<str>,
    pub resource: Arc<Resource>,
    pub scope: Arc<InstrumentationScope>,
}

/// A resource and scope pair of a chunk: byte ranges into the raw chunk, and the service name.
#[derive(Debug)]
pub(super) struct Origin {
    resource: Range<u32>,
    scope: Range<u32>,
    /// Index into [`Chunk::strings`].
    pub service: u32,
}

/// Per (service, operation) of a chunk: its slowest span's trace and its newest failed trace,
/// so the metrics table can link to them without scanning every span.
#[derive(Debug)]
pub(super) struct Exemplar {
    pub service: u32,
    pub operation: u32,
    pub slowest_nanos: u64,
    pub slowest: TraceId,
    pub failed: Option<TraceId>,
}

impl Origin {
    /// The `Resource` message's bytes inside the chunk's [`Chunk::raw`].
    pub fn resource<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        raw.get(self.resource.start as usize..self.resource.end as usize)
            .unwrap_or(&[])
    }
}

/// One exported batch, compressed.
#[derive(Debug)]
pub(super) struct Chunk {
    pub seq: u64,
    compressed: Box<[u8]>,
    raw_len: usize,
    pub origins: Box<[Origin]>,
    /// Service names, span names and span-metrics operations, each once.
    pub strings: Box<[Box<str>]>,
    /// Traces whose first span arrived in this chunk (they go when it goes).
    pub new_traces: Vec<TraceId>,
    pub exemplars: Box<[Exemplar]>,
    /// What this chunk and its index entries are charged against `max_bytes`.
    bytes: usize,
}

impl Chunk {
    pub fn text(&self, index: u32) -> &str {
        self.strings.get(index as usize).map_or("", |s| s)
    }

    pub fn service(&self, origin: u32) -> &str {
        self.origins
            .get(origin as usize)
            .map_or("", |o| self.text(o.service))
    }

    /// The chunk inflated: resources, scopes and spans as they came on the wire.
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw_len);
        // Written by this process from a Vec, so it inflates; a short read only loses spans.
        let _ = flate2::read::DeflateDecoder::new(&self.compressed[..])
            .take(self.raw_len as u64)
            .read_to_end(&mut out);
        out
    }
}

/// The index entry of one stored span (what search reads without inflating anything).
#[derive(Debug, Clone)]
pub(super) struct SpanEntry {
    pub chunk: u64,
    offset: u32,
    len: u32,
    pub origin: u32,
    pub name: u32,
    pub operation: u32,
    pub span_id: SpanId,
    pub parent: SpanId,
    pub start: u64,
    pub end: u64,
    pub status: u8,
}

impl SpanEntry {
    /// This span's protobuf bytes inside its chunk's [`Chunk::raw`].
    pub fn bytes<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        raw.get(self.offset as usize..(self.offset + self.len) as usize)
            .unwrap_or(&[])
    }

    pub fn is_error(&self) -> bool {
        self.status == 2
    }

    pub fn has_parent(&self) -> bool {
        self.parent != [0; 8]
    }
}

#[derive(Debug, Default)]
pub(super) struct StoredTrace {
    pub spans: Vec<SpanEntry>,
    pub start: u64,
    pub end: u64,
    pub errors: u32,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub traces: HashMap<TraceId, StoredTrace, foldhash::fast::RandomState>,
    /// Oldest first; sequence numbers are consecutive, so `seq - front.seq` indexes it.
    pub chunks: VecDeque<Arc<Chunk>>,
    next_seq: u64,
    pub bytes: usize,
    pub spans: usize,
    pub received_traces: u64,
}

impl Inner {
    pub fn chunk(&self, seq: u64) -> Option<&Arc<Chunk>> {
        let front = self.chunks.front()?.seq;
        self.chunks.get(seq.checked_sub(front)? as usize)
    }
}

/// Bounded in-memory trace store shared by the local exporter and the admin API.
#[derive(Debug)]
pub struct LocalStore {
    inner: Mutex<Inner>,
    stats: Arc<ExporterStats>,
    pub(super) evicted: Counters<1>,
    /// Spans not stored again because their trace already held that span ID.
    pub(super) duplicates: Counters<1>,
    pub(super) max_traces: usize,
    pub(super) max_bytes: usize,
    max_spans_per_trace: usize,
}

/// Charged per stored trace beside its entries: the map slot, the struct, its Vec's header.
const TRACE_OVERHEAD_BYTES: usize = 96;
/// Largest trace (in spans) in which a span arriving again is recognised and dropped.
const DEDUP_SPANS: usize = 1024;
/// Charged per chunk beside its compressed bytes and tables.
const CHUNK_OVERHEAD_BYTES: usize = 256;
/// Fast deflate: spans of one batch repeat their attribute keys and values, so even level 1
/// shrinks them about 5x, at a small share of what decoding them costs.
const COMPRESSION: flate2::Compression = flate2::Compression::new(1);

/// Strings of a chunk being built, each kept once.
#[derive(Default)]
struct Strings {
    index: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    list: Vec<Box<str>>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s.into());
        self.index.insert(s.into(), i);
        i
    }
}

/// A chunk built from a batch outside the store's lock, with its spans' entries.
struct Built {
    chunk: Chunk,
    entries: Vec<(TraceId, SpanEntry)>,
}

fn build(batch: &Batch) -> Built {
    let mut raw = Vec::with_capacity(batch.buf.len());
    let mut strings = Strings::default();
    let mut origins: Vec<Origin> = Vec::new();
    // (resource, scope) of the batch -> index into `origins`; batches hold few of them.
    let mut origin_of: Vec<((u32, u32), u32)> = Vec::new();
    let mut exemplars: HashMap<(u32, u32), Exemplar, foldhash::fast::RandomState> =
        HashMap::default();
    let mut op = Vec::new();
    let mut entries = Vec::with_capacity(batch.spans.len());
    let append = |raw: &mut Vec<u8>, r: &Range<u32>| {
        let start = raw.len() as u32;
        raw.extend_from_slice(&batch.buf[r.start as usize..r.end as usize]);
        start..raw.len() as u32
    };
    for info in &batch.spans {
        let key = (info.resource, info.scope);
        let origin = match origin_of.iter().find(|(k, _)| *k == key) {
            Some((_, i)) => *i,
            None => {
                let resource = batch
                    .resources
                    .get(info.resource as usize)
                    .map_or(0..0, |r| append(&mut raw, &r.resource));
                let scope = batch
                    .scopes
                    .get(info.scope as usize)
                    .map_or(0..0, |s| append(&mut raw, &s.scope));
                let service = strings.intern(batch.service_name(info));
                origins.push(Origin {
                    resource,
                    scope,
                    service,
                });
                origin_of.push((key, origins.len() as u32 - 1));
                origins.len() as u32 - 1
            }
        };
        let bytes = append(&mut raw, &info.bytes);
        op.clear();
        write_operation(batch, info, &mut op);
        let operation = strings.intern(std::str::from_utf8(&op).unwrap_or(""));
        let entry = SpanEntry {
            chunk: 0,
            offset: bytes.start,
            len: bytes.end - bytes.start,
            origin,
            name: strings.intern(batch.span_name(info)),
            operation,
            span_id: info.span_id,
            parent: info.parent_span_id,
            start: info.start_unix_nano,
            end: info.end_unix_nano,
            status: info.status_code.clamp(0, 2) as u8,
        };
        let service = origins[origin as usize].service;
        let e = exemplars
            .entry((service, operation))
            .or_insert_with(|| Exemplar {
                service,
                operation,
                slowest_nanos: 0,
                slowest: info.trace_id,
                failed: None,
            });
        let nanos = info.duration_nanos();
        if nanos >= e.slowest_nanos {
            (e.slowest_nanos, e.slowest) = (nanos, info.trace_id);
        }
        if info.is_error() {
            e.failed = Some(info.trace_id);
        }
        entries.push((info.trace_id, entry));
    }
    let mut enc =
        flate2::write::DeflateEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), COMPRESSION);
    // Writing into a Vec cannot fail.
    let compressed = enc
        .write_all(&raw)
        .and_then(|()| enc.finish())
        .unwrap_or_default();
    let strings = strings.list.into_boxed_slice();
    let bytes = CHUNK_OVERHEAD_BYTES
        + compressed.len()
        + strings.iter().map(|s| s.len() + 16).sum::<usize>()
        + origins.len() * std::mem::size_of::<Origin>()
        + exemplars.len() * std::mem::size_of::<Exemplar>();
    Built {
        chunk: Chunk {
            seq: 0,
            compressed: compressed.into_boxed_slice(),
            raw_len: raw.len(),
            origins: origins.into_boxed_slice(),
            strings,
            new_traces: Vec::new(),
            exemplars: exemplars.into_values().collect(),
            bytes,
        },
        entries,
    }
}

impl LocalStore {
    pub fn new(max_traces: usize, max_bytes: usize, max_spans_per_trace: usize) -> Self {
        LocalStore {
            inner: Mutex::new(Inner::default()),
            stats: ExporterStats::new("local"),
            evicted: Counters::default(),
            duplicates: Counters::default(),
            max_traces,
            max_bytes,
            max_spans_per_trace,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent enough to matter here.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores every span of a batch (copied and compressed behind the queue, off the hot path).
    pub fn insert(&self, batch: &Batch) {
        if batch.spans.is_empty() {
            return;
        }
        let Built {
            mut chunk,
            mut entries,
        } = build(batch);
        let (mut stored, mut capped, mut duplicates) = (0u64, 0u64, 0u64);
        let mut inner = self.lock();
        let inner = &mut *inner;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        chunk.seq = seq;
        let (mut new_trace_bytes, mut grown) = (0, 0);
        for (trace_id, mut entry) in entries.drain(..) {
            let trace = inner.traces.entry(trace_id).or_insert_with(|| {
                chunk.new_traces.push(trace_id);
                new_trace_bytes += TRACE_OVERHEAD_BYTES;
                StoredTrace {
                    start: u64::MAX,
                    ..Default::default()
                }
            });
            if trace.spans.len() >= self.max_spans_per_trace {
                capped += 1;
                continue;
            }
            // A retried export sends the same spans again: keep the first copy. Checked in
            // traces of up to DEDUP_SPANS spans, where a scan costs less than an index would.
            if trace.spans.len() <= DEDUP_SPANS
                && trace.spans.iter().any(|e| e.span_id == entry.span_id)
            {
                duplicates += 1;
                continue;
            }
            entry.chunk = seq;
            trace.start = trace.start.min(entry.start);
            trace.end = trace.end.max(entry.end);
            trace.errors += u32::from(entry.is_error());
            let capacity = trace.spans.capacity();
            trace.spans.push(entry);
            // Charged as the Vec grows (to this chunk, which never outlives the trace's first).
            grown += trace.spans.capacity() - capacity;
            stored += 1;
        }
        chunk.bytes += new_trace_bytes
            + chunk.new_traces.len() * std::mem::size_of::<TraceId>()
            + grown * std::mem::size_of::<SpanEntry>();
        inner.received_traces += chunk.new_traces.len() as u64;
        inner.bytes += chunk.bytes;
        inner.spans += stored as usize;
        inner.chunks.push_back(Arc::new(chunk));
        let evicted = Self::evict(inner, self.max_traces, self.max_bytes);
        self.stats.sent(stored);
        self.stats.dropped(DropReason::TraceSpanCap, capped);
        self.evicted.add(0, evicted);
        self.duplicates.add(0, duplicates);
    }

    /// The span accounting of the `local` exporter.
    pub fn exporter_stats(&self) -> Arc<ExporterStats> {
        self.stats.clone()
    }

    /// Evicts the oldest chunks (and the traces first seen in them) until at most `max_traces`
    /// and `max_bytes` are held, keeping the newest chunk. Returns the traces evicted.
    fn evict(inner: &mut Inner, max_traces: usize, max_bytes: usize) -> u64 {
        let mut evicted = 0;
        while (inner.traces.len() > max_traces || inner.bytes > max_bytes) && inner.chunks.len() > 1
        {
            let Some(oldest) = inner.chunks.pop_front() else {
                break;
            };
            inner.bytes -= oldest.bytes;
            for id in &oldest.new_traces {
                if let Some(t) = inner.traces.remove(id) {
                    inner.spans -= t.spans.len();
                    evicted += 1;
                }
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
        inner.chunks.shrink_to_fit();
        drop(inner);
        self.evicted.add(0, evicted);
        evicted
    }

    /// (traces, approximate bytes) held now.
    pub fn stats(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.traces.len(), inner.bytes)
    }

    /// One trace's spans, decoded from their chunks and ordered by start time.
    pub fn get(&self, trace_id: &TraceId) -> Option<Vec<StoredSpan>> {
        // Copy the entries and their chunks under the lock; inflate and decode outside it.
        let (entries, chunks) = {
            let inner = self.lock();
            let trace = inner.traces.get(trace_id)?;
            let mut chunks: Vec<Arc<Chunk>> = Vec::new();
            for e in &trace.spans {
                if chunks.last().is_none_or(|c| c.seq != e.chunk)
                    && !chunks.iter().any(|c| c.seq == e.chunk)
                {
                    chunks.extend(inner.chunk(e.chunk).cloned());
                }
            }
            (trace.spans.clone(), chunks)
        };
        Some(decode_entries(&entries, &chunks))
    }

    /// Runs `f` over the index under the lock (queries that read no span bytes).
    pub(super) fn with_index<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.lock())
    }
}

/// A chunk's resource, scope and service, decoded once for all its spans.
type DecodedOrigin = (Arc<Resource>, Arc<InstrumentationScope>, Arc<str>);

/// Decodes index entries from their chunks (each inflated once), ordered by start time.
pub(super) fn decode_entries(entries: &[SpanEntry], chunks: &[Arc<Chunk>]) -> Vec<StoredSpan> {
    let mut out = Vec::with_capacity(entries.len());
    for chunk in chunks {
        let raw = chunk.raw();
        let at = |r: &Range<u32>| raw.get(r.start as usize..r.end as usize).unwrap_or(&[]);
        let mut origins: Vec<Option<DecodedOrigin>> = vec![None; chunk.origins.len()];
        for e in entries.iter().filter(|e| e.chunk == chunk.seq) {
            // The receiver decoded these bytes once already; a span that fails now is skipped.
            let Ok(span) = Span::decode(e.bytes(&raw)) else {
                continue;
            };
            let Some(slot) = origins.get_mut(e.origin as usize) else {
                continue;
            };
            let (resource, scope, service) = slot
                .get_or_insert_with(|| {
                    let o = &chunk.origins[e.origin as usize];
                    (
                        Arc::new(Resource::decode(at(&o.resource)).unwrap_or_default()),
                        Arc::new(InstrumentationScope::decode(at(&o.scope)).unwrap_or_default()),
                        Arc::from(chunk.text(o.service)),
                    )
                })
                .clone();
            out.push(StoredSpan {
                span,
                service,
                resource,
                scope,
            });
        }
    }
    out.sort_by_key(|s| s.span.start_time_unix_nano);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Rng, Shape, request};

    pub(crate) fn batch(seed: u64, shape: &Shape) -> Batch {
        let req = request(&mut Rng::new(seed), shape);
        crate::receivers::decode::decode_request(
            req.encode_to_vec().into(),
            crate::model::Protocol::Grpc,
        )
        .unwrap()
        .batch
    }

    #[test]
    fn spans_come_back_as_they_were_sent() {
        let store = LocalStore::new(10_000, 64 << 20, 10_000);
        let shape = Shape::default();
        let req = request(&mut Rng::new(3), &shape);
        store.insert(&batch(3, &shape));
        let sent = &req.resource_spans[0];
        let want = &sent.scope_spans[0].spans[0];
        let got = store
            .get(&want.trace_id[..].try_into().unwrap())
            .expect("stored");
        let span = got
            .iter()
            .find(|s| s.span.span_id == want.span_id)
            .expect("the span is in its trace");
        assert_eq!(&span.span, want);
        assert_eq!(span.resource.as_ref(), sent.resource.as_ref().unwrap());
        assert_eq!(
            span.scope.as_ref(),
            sent.scope_spans[0].scope.as_ref().unwrap()
        );
        assert_eq!(&*span.service, "checkout");
        assert!(got.is_sorted_by_key(|s| s.span.start_time_unix_nano));
    }

    #[test]
    fn the_compressed_store_charges_under_two_fifths_of_the_wire_size() {
        let store = LocalStore::new(1_000_000, 1 << 30, 10_000);
        let shape = Shape::default();
        let mut wire = 0;
        for seed in 1..=20 {
            let b = batch(seed, &shape);
            wire += b.buf.len();
            store.insert(&b);
        }
        let (_, bytes) = store.stats();
        assert!(
            bytes * 5 < wire * 2,
            "{bytes} charged for {wire} on the wire"
        );
    }

    #[test]
    fn eviction_drops_the_oldest_chunks_traces_whole() {
        let shape = Shape::default();
        let one = {
            let s = LocalStore::new(1_000_000, 1 << 30, 10_000);
            s.insert(&batch(1, &shape));
            s.stats().1
        };
        let store = LocalStore::new(1_000_000, one * 5 / 2, 10_000);
        for seed in 1..=6 {
            store.insert(&batch(seed, &shape));
        }
        let (traces, bytes) = store.stats();
        assert!(bytes <= one * 5 / 2, "{bytes} over the cap");
        assert_eq!(traces, 2 * 64, "the two newest batches of 64 traces each");
        assert_eq!(store.evicted.get(0), 4 * 64);
        let inner = store.lock();
        assert_eq!(
            inner.spans,
            inner.traces.values().map(|t| t.spans.len()).sum::<usize>()
        );
    }

    #[test]
    fn under_memory_pressure_the_store_sheds_its_oldest_half() {
        let store = LocalStore::new(10_000, 64 << 20, 10_000);
        let shape = Shape::default();
        let batches: Vec<Batch> = (1..=4).map(|seed| batch(seed, &shape)).collect();
        for b in &batches {
            store.insert(b);
        }
        let (traces, bytes) = store.stats();
        assert_eq!(traces, 4 * 64, "512 spans in traces of 8 per batch");

        let shed = store.shed_half();
        let (left, left_bytes) = store.stats();
        assert!(left <= 2 * 64 && left > 0, "{left} left");
        assert_eq!(shed as usize, traces - left);
        assert!(left_bytes <= bytes / 2, "{left_bytes} of {bytes}");
        assert!(
            store.get(&batches[3].spans[0].trace_id).is_some(),
            "the newest traces stay"
        );
        assert!(
            store.get(&batches[0].spans[0].trace_id).is_none(),
            "the oldest go"
        );
        assert_eq!(store.evicted.get(0), shed);
    }

    #[test]
    fn a_retried_export_does_not_store_its_spans_twice() {
        let store = LocalStore::new(10_000, 64 << 20, 10_000);
        let b = batch(5, &Shape::default());
        store.insert(&b);
        store.insert(&b);
        let spans = store.get(&b.spans[0].trace_id).unwrap();
        assert_eq!(spans.len(), 8);
        assert_eq!(store.duplicates.get(0), 512);
        assert_eq!(store.status().spans, 512);
    }

    #[test]
    fn a_trace_over_its_span_cap_keeps_its_first_spans() {
        let store = LocalStore::new(10_000, 64 << 20, 3);
        store.insert(&batch(1, &Shape::default()));
        let inner = store.lock();
        assert!(inner.traces.values().all(|t| t.spans.len() == 3));
    }
}
