//! What the local API asks of the store: trace search, services and operations, the service
//! dependency graph, the store's status, and each operation's slowest and failed trace.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::LocalStore;
use super::store::{Inner, SpanEntry, StoredTrace};
use crate::model::TraceId;
use crate::receivers::decode::has_attribute;

/// A one-line view of a trace, as `/api/traces` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root span's service.
    pub service: String,
    pub root_name: String,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub span_count: usize,
    pub error: bool,
    pub error_count: u32,
    /// Every service with a span in the trace, sorted.
    pub services: Vec<String>,
}

/// The order of a listing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Newest,
    Oldest,
    Longest,
    Shortest,
    MostSpans,
}

impl Sort {
    pub const NAMES: &'static str = "newest, oldest, longest, shortest or most_spans";

    pub fn from_name(name: &str) -> Option<Sort> {
        Some(match name {
            "newest" => Sort::Newest,
            "oldest" => Sort::Oldest,
            "longest" => Sort::Longest,
            "shortest" => Sort::Shortest,
            "most_spans" => Sort::MostSpans,
            _ => return None,
        })
    }
}

/// Filters of `/api/traces`: a trace matches when all given ones hold.
#[derive(Debug, Default, Clone)]
pub struct TraceFilter {
    /// Some span of the trace is from this service.
    pub service: Option<String>,
    /// Some span (of `service`, when given) has this name or span-metrics operation.
    pub operation: Option<String>,
    /// Each (key, value): some span, or its resource, has that attribute.
    pub attributes: Vec<(String, String)>,
    pub min_duration_nanos: Option<u64>,
    pub max_duration_nanos: Option<u64>,
    pub errors_only: bool,
    /// The trace started at or after this time.
    pub start_from_nanos: Option<u64>,
    /// The trace started at or before this time.
    pub start_to_nanos: Option<u64>,
    pub sort: Sort,
    pub limit: usize,
}

/// A listing: the first `limit` matches in order, and how many matched in all.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceList {
    pub traces: Vec<TraceSummary>,
    pub matched: usize,
}

/// What the store holds, as `/api/store` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStatus {
    pub traces: usize,
    pub spans: usize,
    pub bytes: usize,
    pub max_bytes: usize,
    pub max_traces: usize,
    pub evicted_traces: u64,
    /// Traces ever stored: grows by one per new trace, so a client can tell that new ones came.
    pub received_traces: u64,
    pub oldest_start_unix_nano: Option<u64>,
    pub newest_start_unix_nano: Option<u64>,
}

/// One edge of the service graph: spans of `child` whose parent span is of `parent`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Edge {
    pub parent: String,
    pub child: String,
    pub calls: u64,
    pub errors: u64,
}

/// The traces to link from one (service, operation) row of the metrics table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exemplars {
    /// The stored trace holding the operation's slowest span.
    pub slowest: Option<TraceId>,
    /// The newest stored trace where the operation failed.
    pub failed: Option<TraceId>,
}

fn service_of<'a>(inner: &'a Inner, e: &SpanEntry) -> &'a str {
    inner.chunk(e.chunk).map_or("", |c| c.service(e.origin))
}

fn text_of<'a>(inner: &'a Inner, e: &SpanEntry, index: u32) -> &'a str {
    inner.chunk(e.chunk).map_or("", |c| c.text(index))
}

/// The trace's root: the span without a parent, else one whose parent is not here (a local
/// root, when the real root has not arrived), else the earliest.
fn root_of(spans: &[SpanEntry]) -> Option<&SpanEntry> {
    spans.iter().find(|s| !s.has_parent()).or_else(|| {
        let ids: BTreeSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
        spans
            .iter()
            .filter(|s| !ids.contains(&s.parent))
            .min_by_key(|s| s.start)
            .or_else(|| spans.iter().min_by_key(|s| s.start))
    })
}

fn summarize(inner: &Inner, id: &TraceId, t: &StoredTrace) -> TraceSummary {
    let root = root_of(&t.spans);
    let services: BTreeSet<&str> = t.spans.iter().map(|e| service_of(inner, e)).collect();
    TraceSummary {
        trace_id: crate::model::hex(id),
        service: root.map_or("", |r| service_of(inner, r)).to_string(),
        root_name: root.map_or("", |r| text_of(inner, r, r.name)).to_string(),
        start_unix_nano: t.start,
        duration_nanos: t.end.saturating_sub(t.start),
        span_count: t.spans.len(),
        error: t.errors > 0,
        error_count: t.errors,
        services: services.into_iter().map(str::to_string).collect(),
    }
}

/// Keeps the hits that have every wanted attribute (each on some span or its resource). Spans
/// are visited chunk by chunk so each chunk is inflated once, whatever order the hits are in.
fn retain_with_attributes(
    inner: &Inner,
    hits: &mut Vec<(&TraceId, &StoredTrace)>,
    want: &[(String, String)],
) {
    let mut by_chunk: BTreeMap<u64, Vec<(usize, &SpanEntry)>> = BTreeMap::new();
    for (i, (_, t)) in hits.iter().enumerate() {
        for e in &t.spans {
            by_chunk.entry(e.chunk).or_default().push((i, e));
        }
    }
    // Bit k set: the k-th wanted attribute was found in the trace (at most 8 are asked for).
    let mut found = vec![0u32; hits.len()];
    let all = (1u32 << want.len().min(31)) - 1;
    for (seq, spans) in by_chunk {
        let Some(chunk) = inner.chunk(seq) else {
            continue;
        };
        let raw = chunk.raw();
        for (i, e) in spans {
            for (k, (key, value)) in want.iter().enumerate() {
                if found[i] & (1 << k) == 0
                    && (has_attribute(e.bytes(&raw), 9, key, value)
                        || chunk
                            .origins
                            .get(e.origin as usize)
                            .is_some_and(|o| has_attribute(o.resource(&raw), 1, key, value)))
                {
                    found[i] |= 1 << k;
                }
            }
        }
    }
    let mut i = 0;
    hits.retain(|_| {
        i += 1;
        found[i - 1] == all
    });
}

impl LocalStore {
    /// The stored traces matching `filter`, in its order, at most `filter.limit`.
    pub fn list(&self, filter: &TraceFilter) -> TraceList {
        self.with_index(|inner| {
            let mut hits: Vec<(&TraceId, &StoredTrace)> = inner
                .traces
                .iter()
                .filter(|(_, t)| {
                    let d = t.end.saturating_sub(t.start);
                    filter.min_duration_nanos.is_none_or(|m| d >= m)
                        && filter.max_duration_nanos.is_none_or(|m| d <= m)
                        && (!filter.errors_only || t.errors > 0)
                        && filter.start_from_nanos.is_none_or(|m| t.start >= m)
                        && filter.start_to_nanos.is_none_or(|m| t.start <= m)
                })
                .filter(|(_, t)| {
                    if filter.service.is_none() && filter.operation.is_none() {
                        return true;
                    }
                    t.spans.iter().any(|e| {
                        filter
                            .service
                            .as_deref()
                            .is_none_or(|s| service_of(inner, e) == s)
                            && filter.operation.as_deref().is_none_or(|o| {
                                text_of(inner, e, e.name) == o
                                    || text_of(inner, e, e.operation) == o
                            })
                    })
                })
                .collect();
            // Ties (equal durations or span counts) go newest first, then by ID, so a listing
            // keeps its order from one refresh to the next.
            let newest = |a: &(&TraceId, &StoredTrace), b: &(&TraceId, &StoredTrace)| {
                b.1.start.cmp(&a.1.start).then_with(|| a.0.cmp(b.0))
            };
            let dur = |t: &StoredTrace| t.end.saturating_sub(t.start);
            match filter.sort {
                Sort::Newest => hits.sort_unstable_by(newest),
                Sort::Oldest => hits.sort_unstable_by(|a, b| newest(b, a)),
                Sort::Longest => {
                    hits.sort_unstable_by(|a, b| dur(b.1).cmp(&dur(a.1)).then_with(|| newest(a, b)))
                }
                Sort::Shortest => {
                    hits.sort_unstable_by(|a, b| dur(a.1).cmp(&dur(b.1)).then_with(|| newest(a, b)))
                }
                Sort::MostSpans => hits.sort_unstable_by(|a, b| {
                    b.1.spans
                        .len()
                        .cmp(&a.1.spans.len())
                        .then_with(|| newest(a, b))
                }),
            }
            if !filter.attributes.is_empty() {
                retain_with_attributes(inner, &mut hits, &filter.attributes);
            }
            TraceList {
                matched: hits.len(),
                traces: hits
                    .iter()
                    .take(filter.limit)
                    .map(|(id, t)| summarize(inner, id, t))
                    .collect(),
            }
        })
    }

    /// Every service with stored spans, and its span names and operations, sorted.
    pub fn services(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.with_index(|inner| {
            let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            // Each chunk's exemplars list its (service, operation) pairs; names need the traces.
            for c in &inner.chunks {
                for e in c.exemplars.iter() {
                    out.entry(c.text(e.service).to_string())
                        .or_default()
                        .insert(c.text(e.operation).to_string());
                }
            }
            let mut names: HashMap<(u64, u32), (u32, u32), foldhash::fast::RandomState> =
                HashMap::default();
            for t in inner.traces.values() {
                for e in &t.spans {
                    names.insert((e.chunk, e.name), (e.origin, e.name));
                }
            }
            for ((seq, _), (origin, name)) in names {
                if let Some(c) = inner.chunk(seq) {
                    out.entry(c.service(origin).to_string())
                        .or_default()
                        .insert(c.text(name).to_string());
                }
            }
            out
        })
    }

    /// Calls between services: each span whose parent span (in the same trace) has another
    /// service, counted per (parent service, child service).
    pub fn dependencies(&self) -> Vec<Edge> {
        self.with_index(|inner| {
            let mut edges: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
            let mut by_id: HashMap<[u8; 8], &str, foldhash::fast::RandomState> = HashMap::default();
            for t in inner.traces.values() {
                by_id.clear();
                by_id.extend(t.spans.iter().map(|e| (e.span_id, service_of(inner, e))));
                for e in t.spans.iter().filter(|e| e.has_parent()) {
                    let child = service_of(inner, e);
                    match by_id.get(&e.parent) {
                        Some(&parent) if parent != child => {
                            let n = edges.entry((parent, child)).or_default();
                            n.0 += 1;
                            n.1 += u64::from(e.is_error());
                        }
                        _ => {}
                    }
                }
            }
            edges
                .into_iter()
                .map(|((parent, child), (calls, errors))| Edge {
                    parent: parent.to_string(),
                    child: child.to_string(),
                    calls,
                    errors,
                })
                .collect()
        })
    }

    /// How much history the store holds.
    pub fn status(&self) -> StoreStatus {
        self.with_index(|inner| StoreStatus {
            traces: inner.traces.len(),
            spans: inner.spans,
            bytes: inner.bytes,
            max_bytes: self.max_bytes,
            max_traces: self.max_traces,
            evicted_traces: self.evicted.get(0),
            received_traces: inner.received_traces,
            oldest_start_unix_nano: inner.traces.values().map(|t| t.start).min(),
            newest_start_unix_nano: inner.traces.values().map(|t| t.start).max(),
        })
    }

    /// Per (service, operation): the stored traces with its slowest span and its newest failure.
    pub fn exemplars(&self) -> HashMap<(String, String), Exemplars> {
        self.with_index(|inner| {
            // (slowest span's nanoseconds, the exemplars) per (service, operation).
            let mut best: HashMap<(&str, &str), (u64, Exemplars)> = HashMap::new();
            // Oldest chunk first, so a newer failure replaces an older one.
            for c in &inner.chunks {
                for e in c.exemplars.iter() {
                    let (nanos, ex) = best
                        .entry((c.text(e.service), c.text(e.operation)))
                        .or_default();
                    if inner.traces.contains_key(&e.slowest) && e.slowest_nanos >= *nanos {
                        (*nanos, ex.slowest) = (e.slowest_nanos, Some(e.slowest));
                    }
                    if let Some(f) = e.failed.filter(|f| inner.traces.contains_key(f)) {
                        ex.failed = Some(f);
                    }
                }
            }
            best.into_iter()
                .map(|((s, o), (_, ex))| ((s.to_string(), o.to_string()), ex))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        AnyValue, ExportTraceServiceRequest, KeyValue, ResourceSpans, ScopeSpans, Span, Status,
        any_value,
    };
    use prost::Message as _;

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// A span of trace `t` with id `id` under `parent` (0 = root), `ms` long from `start_ms`.
    fn span(t: u8, id: u8, parent: u8, name: &str, start_ms: u64, ms: u64, error: bool) -> Span {
        Span {
            trace_id: vec![t; 16].into(),
            span_id: vec![id; 8].into(),
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                vec![parent; 8]
            }
            .into(),
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 1_000_000_000_000 + start_ms * 1_000_000,
            end_time_unix_nano: 1_000_000_000_000 + (start_ms + ms) * 1_000_000,
            status: Some(Status {
                code: if error { 2 } else { 0 },
                message: String::new(),
            }),
            attributes: vec![
                kv(
                    "http.response.status_code",
                    any_value::Value::IntValue(if error { 500 } else { 200 }),
                ),
                kv(
                    "cache.hit",
                    any_value::Value::BoolValue(id.is_multiple_of(2)),
                ),
            ],
            ..Default::default()
        }
    }

    fn insert(store: &LocalStore, service: &str, spans: Vec<Span>) {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(crate::workload::resource(service)),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let d = crate::receivers::decode::decode_request(
            req.encode_to_vec().into(),
            crate::model::Protocol::Grpc,
        )
        .unwrap();
        store.insert(&d.batch);
    }

    /// Trace 1: frontend -> cart (fails) and frontend -> payment, 120 ms; trace 2: one 5 ms
    /// payment span; each service's spans in their own batch, as their SDKs would send them.
    fn two_traces() -> LocalStore {
        let store = LocalStore::new(1000, 1 << 24, 1000);
        insert(
            &store,
            "frontend",
            vec![
                span(1, 1, 0, "GET /checkout", 0, 120, false),
                span(1, 2, 1, "GET cart", 5, 50, false),
            ],
        );
        insert(
            &store,
            "cart",
            vec![span(1, 3, 2, "GET /cart", 6, 48, true)],
        );
        insert(
            &store,
            "payment",
            vec![
                span(1, 4, 1, "POST /charge", 60, 50, false),
                span(2, 5, 0, "POST /charge", 500, 5, false),
            ],
        );
        store
    }

    fn ids(list: &TraceList) -> Vec<String> {
        list.traces
            .iter()
            .map(|t| t.trace_id[..2].to_string())
            .collect()
    }

    fn find(store: &LocalStore, f: TraceFilter) -> Vec<String> {
        ids(&store.list(&TraceFilter { limit: 100, ..f }))
    }

    #[test]
    fn search_matches_any_span_of_a_trace() {
        let s = two_traces();
        let by_service = |name: &str| TraceFilter {
            service: Some(name.into()),
            ..Default::default()
        };
        assert_eq!(
            find(&s, by_service("cart")),
            ["01"],
            "cart has no root span"
        );
        assert_eq!(
            find(&s, by_service("payment")),
            ["02", "01"],
            "newest first"
        );
        assert_eq!(
            find(
                &s,
                TraceFilter {
                    operation: Some("GET /cart".into()),
                    ..Default::default()
                }
            ),
            ["01"]
        );
        assert_eq!(
            find(
                &s,
                TraceFilter {
                    service: Some("frontend".into()),
                    operation: Some("POST /charge".into()),
                    ..Default::default()
                }
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            find(
                &s,
                TraceFilter {
                    errors_only: true,
                    ..Default::default()
                }
            ),
            ["01"]
        );
        assert_eq!(
            find(
                &s,
                TraceFilter {
                    min_duration_nanos: Some(100_000_000),
                    ..Default::default()
                }
            ),
            ["01"]
        );
        assert_eq!(
            find(
                &s,
                TraceFilter {
                    max_duration_nanos: Some(10_000_000),
                    ..Default::default()
                }
            ),
            ["02"]
        );
        assert_eq!(
            find(
                &s,
                TraceFilter {
                    sort: Sort::Longest,
                    ..Default::default()
                }
            ),
            ["01", "02"]
        );
        assert_eq!(
            find(
                &s,
                TraceFilter {
                    start_from_nanos: Some(1_000_000_000_000 + 100_000_000),
                    ..Default::default()
                }
            ),
            ["02"]
        );
        let attr = |k: &str, v: &str| TraceFilter {
            attributes: vec![(k.into(), v.into())],
            ..Default::default()
        };
        assert_eq!(find(&s, attr("http.response.status_code", "500")), ["01"]);
        assert_eq!(
            find(&s, attr("cache.hit", "true")),
            ["01"],
            "span 2 and 4 have even ids"
        );
        assert_eq!(
            find(&s, attr("cloud.region", "eu-west-1")),
            ["02", "01"],
            "resource attributes count"
        );
        assert_eq!(
            find(&s, attr("http.response.status_code", "404")),
            Vec::<String>::new()
        );
        let all = s.list(&TraceFilter {
            limit: 1,
            ..Default::default()
        });
        assert_eq!((all.traces.len(), all.matched), (1, 2));
    }

    #[test]
    fn a_summary_names_the_root_and_every_service() {
        let s = two_traces();
        let t = &s
            .list(&TraceFilter {
                errors_only: true,
                limit: 1,
                ..Default::default()
            })
            .traces[0];
        assert_eq!(
            (t.service.as_str(), t.root_name.as_str()),
            ("frontend", "GET /checkout")
        );
        assert_eq!(t.services, ["cart", "frontend", "payment"]);
        assert_eq!(
            (t.span_count, t.error_count, t.duration_nanos),
            (4, 1, 120_000_000)
        );
        let spans = s.get(&[1; 16]).unwrap();
        assert_eq!(
            spans.iter().map(|s| &*s.service).collect::<Vec<_>>(),
            ["frontend", "frontend", "cart", "payment"]
        );
    }

    #[test]
    fn the_service_graph_counts_calls_across_services() {
        let edges = two_traces().dependencies();
        let e = |p: &str, c: &str, calls, errors| Edge {
            parent: p.into(),
            child: c.into(),
            calls,
            errors,
        };
        assert_eq!(
            edges,
            [e("frontend", "cart", 1, 1), e("frontend", "payment", 1, 0)]
        );
    }

    #[test]
    fn services_exemplars_and_status_come_from_the_index() {
        let s = two_traces();
        let services = s.services();
        assert_eq!(
            services.keys().collect::<Vec<_>>(),
            ["cart", "frontend", "payment"]
        );
        assert!(services["frontend"].contains("GET cart"));
        let ex = s.exemplars();
        let charge = &ex[&("payment".to_string(), "POST /charge".to_string())];
        assert_eq!((charge.slowest, charge.failed), (Some([1; 16]), None));
        assert_eq!(
            ex[&("cart".to_string(), "GET /cart".to_string())].failed,
            Some([1; 16])
        );
        let st = s.status();
        assert_eq!((st.traces, st.spans, st.received_traces), (2, 5, 2));
        assert_eq!(st.oldest_start_unix_nano, Some(1_000_000_000_000));
    }
}
