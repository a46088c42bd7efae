//! Per-trace sampling, right behind the queue: a consistent trace-ID ratio or X-Ray rules decide
//! at the head; traces with an error or a slow entry span are kept anyway, which needs a short,
//! bounded hold. Each trace is decided once; later spans follow the cached decision.
//!
//! Why behind the queue and not on the request task: deciding needs whole-trace state (held
//! spans, open traces, decisions) that one task can own without any lock; the hot path stays
//! decode → span metrics → push, and the queue's byte budget still bounds everything upstream.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::exporters::xray::rules::{RequestAttrs, Rules};
use crate::model::{Batch, SpanInfo, TraceId};
use crate::proto::{Span, any_value};

/// Hold after the entry span arrives, waiting for stragglers (default) and its cap.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);
pub const MAX_GRACE: Duration = Duration::from_secs(30);
/// Traces whose entry span never arrives are decided this long after their first span.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_OPEN_TRACES: usize = 100_000;
/// Enough for the 2 s grace up to ~5,000 spans/s (held requests stay whole, ~400 bytes a span
/// with their index); busier agents decide early (counted). 8 MiB cost ~4 MB of peak RSS (BENCHMARKS.md, "Holds by reference").
pub const DEFAULT_MAX_HELD_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_DECISION_CACHE: usize = 200_000;
/// Bookkeeping counted per open trace on top of the requests it holds.
const OPEN_TRACE_OVERHEAD_BYTES: usize = 160;

/// Who decides at the head of a trace.
#[derive(Debug, Clone)]
pub enum Head {
    /// Keep everything (local mode).
    All,
    /// Consistent probability: keep when the trace ID's random bits clear the threshold.
    Ratio(f64),
    /// X-Ray centralised rules, applied to the trace's entry span.
    Rules(Arc<Mutex<Rules>>),
}

/// Latency thresholds that make a trace "slow" (kept whatever the head said).
#[derive(Debug, Clone, Default)]
pub struct SlowThresholds {
    pub default: Option<Duration>,
    pub by_service: HashMap<String, Duration>,
    /// Keyed by (service, operation = entry span name).
    pub by_operation: HashMap<(String, String), Duration>,
}

impl SlowThresholds {
    pub fn is_set(&self) -> bool {
        self.default.is_some() || !self.by_service.is_empty() || !self.by_operation.is_empty()
    }

    fn threshold(&self, service: &str, operation: &str) -> Option<Duration> {
        if self.by_operation.is_empty() && self.by_service.is_empty() {
            return self.default;
        }
        self.by_operation
            .get(&(service.to_owned(), operation.to_owned()))
            .or_else(|| self.by_service.get(service))
            .copied()
            .or(self.default)
    }
}

/// The policies a sampler applies: the chosen head, the slow thresholds by service and
/// operation, and the `sampling.*` settings as configured (grace, caps, keep-errors, rate limit).
#[derive(Debug, Clone)]
pub struct Policies {
    pub head: Head,
    pub slow: SlowThresholds,
    pub config: SamplingConfig,
}

impl Policies {
    pub fn keep_all() -> Self {
        Policies {
            head: Head::All,
            slow: SlowThresholds::default(),
            config: SamplingConfig::default(),
        }
    }

    fn tail(&self) -> bool {
        self.config.keep_errors || self.slow.is_set()
    }
}

/// Which policy made a decision (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    All,
    Ratio,
    Rules,
    Error,
    Slow,
    RateLimit,
}

impl Policy {
    pub const ALL: [Policy; 6] = [
        Policy::All,
        Policy::Ratio,
        Policy::Rules,
        Policy::Error,
        Policy::Slow,
        Policy::RateLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Policy::All => "all",
            Policy::Ratio => "ratio",
            Policy::Rules => "rules",
            Policy::Error => "error",
            Policy::Slow => "slow",
            Policy::RateLimit => "rate_limit",
        }
    }
}

/// A trace's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub keep: bool,
    pub policy: Policy,
}

/// The sampling stage. Owned by the dispatcher task: no locks on its state.
#[derive(Debug)]
pub struct Sampler {
    cfg: Policies,
    ratio_threshold: u64,
    open: HashMap<TraceId, Open>,
    /// First-seen order of open traces (stale IDs are skipped when popped).
    order: VecDeque<(Instant, TraceId)>,
    /// Traces whose entry span arrived, by when their grace period ends.
    due: VecDeque<(Instant, TraceId)>,
    decided: Decisions,
    /// Requests with held spans, oldest first; `held[0]` is number `held_base`. A slot is
    /// emptied when its last trace is decided and popped once it reaches the front.
    held: VecDeque<Option<HeldBatch>>,
    held_base: u64,
    held_bytes: usize,
    services: Services,
    buckets: HashMap<u32, Bucket>,
    pub stats: Arc<SamplingStats>,
}

fn is_entry(s: &SpanInfo) -> bool {
    // SERVER and CONSUMER spans start work in this service; a parentless span is a local root.
    s.kind == 2 || s.kind == 5 || !s.has_parent()
}

/// Per-request state while `admit` walks its runs.
struct Admission<'a> {
    batch: &'a Batch,
    seq: u64,
    keep: Vec<SpanInfo>,
    /// Runs of this request that open traces hold.
    live: u32,
    /// Interned service of each resource of the request, looked up once.
    services: Vec<Option<u32>>,
    finished: Vec<(Open, bool)>,
}

impl Sampler {
    pub fn new(cfg: Policies, stats: Arc<SamplingStats>) -> Self {
        let decided = Decisions::new(cfg.config.decision_cache);
        let ratio_threshold = match cfg.head {
            Head::Ratio(r) => threshold(r),
            _ => 0,
        };
        Sampler {
            cfg,
            ratio_threshold,
            open: HashMap::new(),
            order: VecDeque::new(),
            due: VecDeque::new(),
            decided,
            held: VecDeque::new(),
            held_base: 0,
            held_bytes: 0,
            services: Services::default(),
            buckets: HashMap::new(),
            stats,
        }
    }

    /// Whether the stage does anything (keep-all without a rate limit is a pass-through).
    pub fn is_pass_through(&self) -> bool {
        matches!(self.cfg.head, Head::All) && self.cfg.config.rate_limit.is_none()
    }

    /// Takes one batch off the queue and returns what is kept now: the batch filtered in place
    /// (sharing its buffer) and, when held traces were decided, their spans (sharing the
    /// buffers of the requests they came in).
    pub fn admit(&mut self, batch: Batch, now: Instant) -> Vec<Batch> {
        if self.is_pass_through() {
            let mut by_trace: Vec<(&TraceId, &SpanInfo)> =
                batch.spans.iter().map(|s| (&s.trace_id, s)).collect();
            by_trace.dedup_by_key(|(t, _)| **t);
            for (_, s) in &by_trace {
                self.stats.record(
                    Verdict {
                        keep: true,
                        policy: Policy::All,
                    },
                    0,
                    batch.service_name(s),
                    true,
                );
            }
            self.stats.spans[0][Policy::All as usize].fetch_add(
                batch.spans.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            return vec![batch];
        }
        let mut a = Admission {
            batch: &batch,
            seq: self.held_base + self.held.len() as u64,
            keep: Vec::with_capacity(batch.spans.len()),
            live: 0,
            services: vec![None; batch.resources.len()],
            finished: Vec::new(),
        };
        let mut i = 0;
        while i < batch.spans.len() {
            let tid = batch.spans[i].trace_id;
            let mut j = i + 1;
            while j < batch.spans.len() && batch.spans[j].trace_id == tid {
                j += 1;
            }
            self.run(&mut a, i..j, now);
            i = j;
        }
        let Admission {
            keep,
            live,
            mut finished,
            ..
        } = a;
        let mut out = Vec::with_capacity(2);
        if live > 0 {
            if !keep.is_empty() {
                out.push(Batch {
                    protocol: batch.protocol,
                    buf: batch.buf.clone(),
                    resources: batch.resources.clone(),
                    scopes: batch.scopes.clone(),
                    spans: keep,
                    ticket: batch.ticket.clone(),
                });
            }
            // The span index's spare capacity is memory too (the decoder sizes it by guess).
            let spare = batch.spans.capacity() - batch.spans.len();
            let bytes = batch.size_bytes() + spare * std::mem::size_of::<SpanInfo>();
            self.held_bytes += bytes;
            self.held.push_back(Some(HeldBatch { batch, live, bytes }));
        } else if !keep.is_empty() {
            out.push(Batch {
                spans: keep,
                ..batch
            });
        }
        // Now that this request is in the hold, traces decided in it can let go of it.
        for (open, _) in &finished {
            self.release(open);
        }
        self.relieve_pressure(&mut finished);
        out.extend(self.finish(finished));
        self.compact_order();
        self.publish_gauges();
        out
    }

    /// One run of consecutive spans of the same trace.
    fn run(&mut self, a: &mut Admission<'_>, run: Range<usize>, now: Instant) {
        let batch = a.batch;
        let spans = &batch.spans[run.clone()];
        let tid = spans[0].trace_id;
        if let Some(v) = self.decided.get(&tid) {
            if v.keep {
                a.keep.extend_from_slice(spans);
            }
            self.stats
                .record(v, spans.len() as u64, batch.service_name(&spans[0]), false);
            return;
        }
        let services = &mut self.services;
        let service = match a.services.get_mut(spans[0].resource as usize) {
            Some(slot) => *slot.get_or_insert_with(|| services.id(batch.service_name(&spans[0]))),
            None => services.id(batch.service_name(&spans[0])),
        };
        let open = match self.open.entry(tid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.order.push_back((now, tid));
                self.held_bytes += OPEN_TRACE_OVERHEAD_BYTES;
                e.insert(Open {
                    first: None,
                    more: Vec::new(),
                    error: false,
                    slow: false,
                    head: None,
                    entry_seen: false,
                    due: None,
                    service,
                })
            }
        };
        let mut entry: Option<&SpanInfo> = None;
        for s in spans {
            open.error |= s.is_error();
            if is_entry(s) {
                entry.get_or_insert(s);
                open.entry_seen = true;
                let name = batch.span_name(s);
                if let Some(t) = self.cfg.slow.threshold(batch.service_name(s), name) {
                    open.slow |= s.duration_nanos() > t.as_nanos() as u64;
                }
            }
        }
        if open.head.is_none() {
            open.head = match &self.cfg.head {
                Head::All => Some(Verdict {
                    keep: true,
                    policy: Policy::All,
                }),
                Head::Ratio(_) => {
                    let ts = spans
                        .iter()
                        .map(|s| batch.trace_state(s))
                        .find(|t| !t.is_empty())
                        .unwrap_or("");
                    Some(Verdict {
                        keep: ratio_keeps(&tid, ts, self.ratio_threshold),
                        policy: Policy::Ratio,
                    })
                }
                Head::Rules(rules) => entry.map(|e| {
                    let attrs = request_attrs(batch, e);
                    let random = randomness(&tid, "") as f64 / MAX_THRESHOLD as f64;
                    let keep = rules
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .decide(&attrs, now, random)
                        .0;
                    Verdict {
                        keep,
                        policy: Policy::Rules,
                    }
                }),
            };
        }
        let verdict = final_verdict(open, &self.cfg, false);
        match verdict {
            Some(v) => {
                let open = self.open.remove(&tid).expect("open trace present");
                self.held_bytes -= OPEN_TRACE_OVERHEAD_BYTES;
                let v = self.rate_limit(v, open.service, now);
                let n = open.held_spans() + spans.len();
                self.decide(tid, v, n, open.service, true);
                if v.keep {
                    a.keep.extend_from_slice(spans);
                }
                if open.first.is_some() {
                    a.finished.push((open, v.keep));
                }
            }
            None => {
                open.push_run(Run {
                    seq: a.seq,
                    spans: run.start as u32..run.end as u32,
                });
                a.live += 1;
                if open.entry_seen && open.due.is_none() {
                    let due = now + self.cfg.config.grace.min(MAX_GRACE);
                    open.due = Some(due);
                    self.due.push_back((due, tid));
                }
            }
        }
    }

    fn rate_limit(&mut self, v: Verdict, service: u32, now: Instant) -> Verdict {
        let Some(rate) = self.cfg.config.rate_limit.filter(|_| v.keep) else {
            return v;
        };
        let b = self
            .buckets
            .entry(service)
            .or_insert_with(|| Bucket::new(rate, now));
        if b.take(rate, now) {
            v
        } else {
            Verdict {
                keep: false,
                policy: Policy::RateLimit,
            }
        }
    }

    fn decide(&mut self, tid: TraceId, v: Verdict, spans: usize, service: u32, new_trace: bool) {
        let name = self.services.name(service);
        self.stats.record(v, spans as u64, name, new_trace);
        self.decided.insert(&tid, v);
    }

    /// `order` keeps IDs of traces decided since (they are skipped when popped); a long-open
    /// trace at its front would let them pile up under load, so drop them once they dominate.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.open.len() + 1024 {
            let open = &self.open;
            self.order.retain(|(_, t)| open.contains_key(t));
            // A burst of open traces grows it once; give that back (it was 2 MB of the peak).
            if self.order.capacity() > 4 * self.order.len() + 4096 {
                self.order.shrink_to(2 * self.order.len() + 1024);
            }
        }
    }

    /// Decides (with what is there) the open traces that push the hold over its caps. Held
    /// bytes fall only when a request's last open trace is decided, so this goes oldest first.
    fn relieve_pressure(&mut self, finished: &mut Vec<(Open, bool)>) {
        while self.open.len() > self.cfg.config.max_open_traces
            || self.hold_bytes() > self.cfg.config.max_held_bytes
        {
            let Some((_, tid)) = self.order.pop_front() else {
                break;
            };
            if self.open.contains_key(&tid) {
                self.stats
                    .early
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.close(tid, finished, Instant::now());
            }
        }
    }

    /// Held requests plus their slots: freed slots behind a long-open trace at the front stay
    /// until it is decided, so they count too (or they could pile up uncounted).
    fn hold_bytes(&self) -> usize {
        self.held_bytes + self.held.len() * std::mem::size_of::<Option<HeldBatch>>()
    }

    fn close(&mut self, tid: TraceId, finished: &mut Vec<(Open, bool)>, now: Instant) {
        let Some(mut open) = self.open.remove(&tid) else {
            return;
        };
        self.held_bytes -= OPEN_TRACE_OVERHEAD_BYTES;
        if open.head.is_none() {
            open.head = self.late_head(&tid, &open, now);
        }
        let v = final_verdict(&open, &self.cfg, true).expect("forced decisions always decide");
        let v = self.rate_limit(v, open.service, now);
        self.decide(tid, v, open.held_spans(), open.service, true);
        self.release(&open);
        if open.first.is_some() {
            finished.push((open, v.keep));
        }
    }

    /// Drops a decided trace's references to the requests it held. A request whose last
    /// reference this was stops counting now; its slot is emptied by `finish`, after the kept
    /// spans were taken from it.
    fn release(&mut self, open: &Open) {
        for r in open.runs() {
            let Some(Some(h)) = self.held.get_mut((r.seq - self.held_base) as usize) else {
                continue;
            };
            h.live -= 1;
            if h.live == 0 {
                self.held_bytes -= h.bytes;
            }
        }
    }

    /// The kept spans of decided traces, one batch per request they came in (sharing its
    /// buffer, in the request's order); then frees the requests no open trace holds.
    fn finish(&mut self, finished: Vec<(Open, bool)>) -> Vec<Batch> {
        let mut picks: Vec<(u64, Range<u32>)> = Vec::new();
        let mut done: Vec<u64> = Vec::new();
        for (open, keep) in &finished {
            for r in open.runs() {
                if *keep {
                    picks.push((r.seq, r.spans.clone()));
                }
                done.push(r.seq);
            }
        }
        picks.sort_unstable_by_key(|(seq, r)| (*seq, r.start));
        let mut out = Vec::new();
        let mut i = 0;
        while i < picks.len() {
            let seq = picks[i].0;
            let held = self
                .held
                .get((seq - self.held_base) as usize)
                .and_then(Option::as_ref);
            let mut spans = Vec::new();
            while i < picks.len() && picks[i].0 == seq {
                let r = &picks[i].1;
                if let Some(h) = held {
                    spans.extend_from_slice(&h.batch.spans[r.start as usize..r.end as usize]);
                }
                i += 1;
            }
            if let Some(h) = held {
                out.push(Batch {
                    protocol: h.batch.protocol,
                    buf: h.batch.buf.clone(),
                    resources: h.batch.resources.clone(),
                    scopes: h.batch.scopes.clone(),
                    spans,
                    ticket: h.batch.ticket.clone(),
                });
            }
        }
        for seq in done {
            let slot = self.held.get_mut((seq - self.held_base) as usize);
            if let Some(slot) = slot.filter(|s| s.as_ref().is_some_and(|h| h.live == 0)) {
                *slot = None;
            }
        }
        while matches!(self.held.front(), Some(None)) {
            self.held.pop_front();
            self.held_base += 1;
        }
        out
    }

    /// A head decision for a trace whose entry span never came: rules on the service alone.
    fn late_head(&self, tid: &TraceId, open: &Open, now: Instant) -> Option<Verdict> {
        match &self.cfg.head {
            Head::Rules(rules) => {
                let attrs = RequestAttrs {
                    service_name: self.services.name(open.service).to_owned(),
                    ..Default::default()
                };
                let random = randomness(tid, "") as f64 / MAX_THRESHOLD as f64;
                let keep = rules
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .decide(&attrs, now, random)
                    .0;
                Some(Verdict {
                    keep,
                    policy: Policy::Rules,
                })
            }
            _ => None,
        }
    }

    /// Decides traces whose grace period ended, or that waited `max_wait` without an entry span.
    pub fn tick(&mut self, now: Instant) -> Vec<Batch> {
        let mut finished = Vec::new();
        while let Some(&(due, tid)) = self.due.front() {
            if due > now {
                break;
            }
            self.due.pop_front();
            if self.open.get(&tid).is_some_and(|o| o.due == Some(due)) {
                self.close(tid, &mut finished, now);
            }
        }
        while let Some(&(first, tid)) = self.order.front() {
            if !self.open.contains_key(&tid) {
                self.order.pop_front();
                continue;
            }
            if now.duration_since(first) < self.cfg.config.max_wait {
                break;
            }
            self.order.pop_front();
            self.close(tid, &mut finished, now);
        }
        let out = self.finish(finished);
        self.publish_gauges();
        out
    }

    /// Decides everything still open (shutdown).
    pub fn flush_all(&mut self) -> Vec<Batch> {
        let mut finished = Vec::new();
        let ids: Vec<TraceId> = self.order.drain(..).map(|(_, t)| t).collect();
        for tid in ids {
            self.close(tid, &mut finished, Instant::now());
        }
        let out = self.finish(finished);
        self.publish_gauges();
        out
    }

    fn publish_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats
            .open_traces
            .store(self.open.len() as u64, Relaxed);
        self.stats
            .held_bytes
            .store(self.hold_bytes() as u64, Relaxed);
    }
}

/// The decision for an open trace, if one can be made now (`forced`: it must be).
fn final_verdict(open: &Open, cfg: &Policies, forced: bool) -> Option<Verdict> {
    if let Some(h) = open.head.filter(|h| h.keep) {
        return Some(h);
    }
    if cfg.config.keep_errors && open.error {
        return Some(Verdict {
            keep: true,
            policy: Policy::Error,
        });
    }
    if open.slow {
        return Some(Verdict {
            keep: true,
            policy: Policy::Slow,
        });
    }
    match open.head {
        Some(h) if !cfg.tail() || forced => Some(h),
        None if forced => Some(Verdict {
            keep: false,
            policy: Policy::Ratio,
        }),
        _ => None,
    }
}

fn attr_str<'a>(span: &'a Span, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| {
        span.attributes
            .iter()
            .find(|kv| kv.key == *k)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
    })
}

/// What X-Ray rules match on, read from the entry span (decoded here, once per trace).
fn request_attrs(batch: &Batch, entry: &SpanInfo) -> RequestAttrs {
    let span = batch.decode_span(entry).unwrap_or_default();
    let resource = batch.decode_resource(entry.resource).unwrap_or_default();
    let full_url = attr_str(&span, &["url.full", "http.url"]);
    let path = attr_str(&span, &["url.path", "http.target"])
        .map(|p| p.split('?').next().unwrap_or(p).to_owned())
        .or_else(|| {
            full_url.and_then(|u| {
                u.splitn(4, '/')
                    .nth(3)
                    .map(|p| format!("/{}", p.split('?').next().unwrap_or("")))
            })
        })
        .unwrap_or_default();
    let host = attr_str(&span, &["http.host", "server.address", "net.host.name"])
        .map(str::to_owned)
        .or_else(|| {
            full_url.and_then(|u| {
                u.split("://")
                    .nth(1)?
                    .split(['/', ':'])
                    .next()
                    .map(str::to_owned)
            })
        })
        .unwrap_or_default();
    RequestAttrs {
        service_name: batch.service_name(entry).to_owned(),
        service_type: crate::model::origin(&resource)
            .unwrap_or_default()
            .to_owned(),
        host,
        http_method: attr_str(&span, &["http.request.method", "http.method"])
            .unwrap_or_default()
            .to_owned(),
        url_path: path,
    }
}

pub mod config;
mod decisions;
mod holds;
mod rate_limit;
mod ratio;
mod stats;

pub use config::SamplingConfig;
use decisions::Decisions;
use holds::{HeldBatch, Open, Run, Services};
use rate_limit::Bucket;
use ratio::MAX_THRESHOLD;
pub use ratio::{incoming_threshold, randomness, ratio_keeps, threshold};
pub use stats::{MAX_SERVICES_TRACKED, SamplingStats};

#[cfg(test)]
mod tests;
