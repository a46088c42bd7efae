//! Splices received span bytes into new `ExportTraceServiceRequest` bodies: resource, scope and
//! span messages are copied as they came (nothing is re-encoded), within a request's span and
//! byte limits.

use bytes::Bytes;
use tokio::time::Instant;

use crate::exporters::batching::{BatchLimits, Batcher};
use crate::model::{Batch, SpanInfo, Ticket, hold};
use crate::proto::wire::{self, field_len};

/// Limits of one outgoing request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_spans: usize,
    pub max_bytes: usize,
    /// A span larger than this is not sent (counted by the caller).
    pub max_span_bytes: usize,
    pub idle: std::time::Duration,
}

/// A request ready to send.
#[derive(Debug)]
pub struct Request {
    pub body: Bytes,
    pub spans: u64,
    /// The persistent queue's requests whose spans are in this one: held until it is answered.
    pub tickets: Vec<Ticket>,
}

/// What adding a batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Spans now batched or in `full` requests.
    pub spans: u64,
    /// Spans over `max_span_bytes`, left out.
    pub too_large: u64,
}

/// Accumulates spliced `ResourceSpans` until a limit or the idle timer.
#[derive(Debug)]
pub struct Splicer {
    /// Counts spans and bytes; the items themselves are written straight into `body`.
    batch: Batcher<()>,
    /// The body of the request being filled: each span's bytes are copied once, here.
    body: Vec<u8>,
    /// What a new body reserves: a whole request, or one trace's message.
    capacity: usize,
    max_span_bytes: usize,
    /// The tickets of the request being filled, and that of the batch being added.
    tickets: Vec<Ticket>,
    adding: Vec<Ticket>,
}

impl Splicer {
    pub fn new(limits: Limits) -> Self {
        Splicer {
            // 8 bytes of slack per request for the nesting headers' varints.
            batch: Batcher::new(BatchLimits {
                max_weight: limits.max_spans,
                max_bytes: limits.max_bytes.saturating_sub(8),
                idle: limits.idle,
            }),
            body: Vec::new(),
            capacity: 0,
            max_span_bytes: limits.max_span_bytes,
            tickets: Vec::new(),
            adding: Vec::new(),
        }
    }

    /// Spans batched and not yet taken.
    pub fn pending_spans(&self) -> usize {
        self.batch.weight()
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.batch.is_due(now)
    }

    /// The request being filled, if any (idle flush and shutdown).
    pub fn take(&mut self) -> Option<Request> {
        let tickets = std::mem::take(&mut self.tickets);
        self.batch.take().map(|t| {
            debug_assert_eq!(self.body.len(), t.bytes, "items' lengths as counted");
            Request {
                body: std::mem::take(&mut self.body).into(),
                spans: t.weight as u64,
                tickets,
            }
        })
    }

    /// Splices a batch's spans in; every request that fills up is pushed to `full`.
    pub fn add(&mut self, batch: &Batch, now: Instant, full: &mut Vec<Request>) -> Added {
        self.add_holding(batch, &[], now, full)
    }

    /// [`Splicer::add`], where every request the spans go into also holds `extra` (the tickets
    /// of spans spliced again after a failed send).
    pub fn add_holding(
        &mut self,
        batch: &Batch,
        extra: &[Ticket],
        now: Instant,
        full: &mut Vec<Request>,
    ) -> Added {
        self.adding.clear();
        hold(&mut self.adding, &batch.ticket);
        for t in extra {
            hold(&mut self.adding, t);
        }
        self.capacity = self.batch.limits.max_bytes + 8;
        let added = self.add_spans(batch, batch.spans.len(), |k| &batch.spans[k], now, full);
        self.adding.clear();
        added
    }

    /// Splices the spans of `batch` at `order` (indices into `batch.spans`, in batch order
    /// within each trace): one trace's message, without a batch of its own.
    pub fn add_some(
        &mut self,
        batch: &Batch,
        order: &[u32],
        now: Instant,
        full: &mut Vec<Request>,
    ) -> Added {
        self.adding.clear();
        let span = |k: usize| &batch.spans[order[k] as usize];
        // One message's body, allocated to size: its spans and their keys, and the resource,
        // scope and headers of each (resource, scope) run (a trace often crosses services).
        let len = |r: &std::ops::Range<u32>| (r.end - r.start) as usize;
        let mut capacity = 0;
        for k in 0..order.len() {
            let info = span(k);
            capacity += len(&info.bytes) + 8;
            if k == 0 || (span(k - 1).resource, span(k - 1).scope) != (info.resource, info.scope) {
                let resource = batch.resources.get(info.resource as usize);
                let scope = batch.scopes.get(info.scope as usize);
                capacity += resource.map_or(0, |r| len(&r.resource))
                    + scope.map_or(0, |s| len(&s.scope))
                    + 32;
            }
        }
        self.capacity = capacity;
        self.add_spans(batch, order.len(), span, now, full)
    }

    fn add_spans<'b>(
        &mut self,
        batch: &'b Batch,
        n: usize,
        span: impl Fn(usize) -> &'b SpanInfo,
        now: Instant,
        full: &mut Vec<Request>,
    ) -> Added {
        let buf = &batch.buf[..];
        let slice = |r: &std::ops::Range<u32>| &buf[r.start as usize..r.end as usize];
        let mut added = Added::default();
        let mut i = 0;
        while i < n {
            // Spans of one (resource, scope) pair are contiguous in a batch.
            let (res, scope) = (span(i).resource, span(i).scope);
            let mut j = i;
            while j < n && span(j).resource == res && span(j).scope == scope {
                j += 1;
            }
            let resource = batch
                .resources
                .get(res as usize)
                .map_or(&[][..], |r| slice(&r.resource));
            let scope_bytes = batch
                .scopes
                .get(scope as usize)
                .map_or(&[][..], |s| slice(&s.scope));
            let mut group: Vec<&[u8]> = Vec::with_capacity(j - i);
            for info in (i..j).map(&span) {
                let span = slice(&info.bytes);
                if span.len() > self.max_span_bytes {
                    added.too_large += 1;
                } else {
                    group.push(span);
                }
            }
            added.spans += self.add_group(resource, scope_bytes, &group, now, full);
            i = j;
        }
        added
    }

    fn add_group(
        &mut self,
        resource: &[u8],
        scope: &[u8],
        mut spans: &[&[u8]],
        now: Instant,
        full: &mut Vec<Request>,
    ) -> u64 {
        // A ResourceSpans { resource, ScopeSpans { scope, spans } } per group, its lengths known
        // before it is written, so the nesting headers go straight into the body, then the bytes.
        let part = |b: &[u8], field| {
            if b.is_empty() {
                0
            } else {
                field_len(field, b.len())
            }
        };
        let (resource_part, scope_part) = (part(resource, 1), part(scope, 1));
        let item_len = |scope_body| field_len(1, resource_part + field_len(2, scope_body));
        let mut added = 0;
        while !spans.is_empty() {
            // Take as many spans as fit in the current request.
            let (span_room, byte_room) = self.batch.room();
            let (mut take, mut scope_body) = (0, scope_part);
            for s in spans {
                let next = scope_body + field_len(2, s.len());
                if take >= span_room || item_len(next) > byte_room {
                    break;
                }
                scope_body = next;
                take += 1;
            }
            if take == 0 {
                if self.batch.is_empty() {
                    // Cannot happen with spans under the per-span cap, but never loop forever.
                    return added;
                }
                full.extend(self.take());
                continue;
            }
            let len = item_len(scope_body);
            let body = &mut self.body;
            if body.capacity() == 0 {
                // Reserved whole, so the body never moves as it grows; the pages not written
                // are never touched, so they cost no memory.
                body.reserve(self.capacity.max(len));
            }
            wire::len_prefix(body, 1, resource_part + field_len(2, scope_body));
            if !resource.is_empty() {
                wire::bytes(body, 1, resource);
            }
            wire::len_prefix(body, 2, scope_body);
            if !scope.is_empty() {
                wire::bytes(body, 1, scope);
            }
            for s in &spans[..take] {
                wire::bytes(body, 2, s);
            }
            for t in &self.adding {
                hold(&mut self.tickets, t);
            }
            if self.batch.push((), take, len, now) {
                full.extend(self.take());
            }
            added += take as u64;
            spans = &spans[take..];
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use crate::proto::ExportTraceServiceRequest;
    use crate::receivers::decode::decode_request;
    use crate::workload::{Rng, Shape, request};
    use prost::Message;

    const LIMITS: Limits = Limits {
        max_spans: 10_000,
        max_bytes: 5_000_000,
        max_span_bytes: 200_000,
        idle: std::time::Duration::from_secs(60),
    };

    fn spans_of(req: &ExportTraceServiceRequest) -> Vec<crate::proto::Span> {
        let mut spans: Vec<_> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .cloned()
            .collect();
        spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        spans
    }

    #[test]
    fn spliced_requests_decode_to_the_same_spans_within_limits() {
        let req = request(
            &mut Rng::new(3),
            &Shape {
                spans: 512,
                ..Shape::default()
            },
        );
        let batch = decode_request(req.encode_to_vec().into(), Protocol::Grpc)
            .unwrap()
            .batch;
        let mut s = Splicer::new(LIMITS);
        let mut full = Vec::new();
        let added = s.add(&batch, Instant::now(), &mut full);
        assert_eq!(
            added,
            Added {
                spans: 512,
                too_large: 0
            }
        );
        assert!(full.is_empty());
        let spliced = ExportTraceServiceRequest::decode(s.take().unwrap().body).unwrap();
        assert_eq!(spans_of(&spliced), spans_of(&req));
        for rs in &spliced.resource_spans {
            assert!(rs.resource.as_ref().unwrap().attributes.len() > 20);
            assert_eq!(
                rs.scope_spans[0].scope.as_ref().unwrap().name,
                "opentelemetry.instrumentation.flask"
            );
        }
    }

    #[test]
    fn some_spans_of_a_batch_make_a_request_of_their_own() {
        let req = request(&mut Rng::new(5), &Shape::default());
        let batch = decode_request(req.encode_to_vec().into(), Protocol::Grpc)
            .unwrap()
            .batch;
        let trace = batch.spans[0].trace_id;
        let order: Vec<u32> = (0..batch.spans.len() as u32)
            .filter(|&i| batch.spans[i as usize].trace_id == trace)
            .collect();
        assert!(order.len() > 1 && order.len() < batch.spans.len());
        let mut s = Splicer::new(LIMITS);
        let mut full = Vec::new();
        let added = s.add_some(&batch, &order, Instant::now(), &mut full);
        assert_eq!(added.spans, order.len() as u64);
        // Reserved once, to the estimate, and never grown (growth at least doubles).
        assert_eq!(s.body.capacity(), s.capacity);
        assert!(s.capacity < s.body.len() + 64 * order.len());
        let r = s.take().unwrap();
        assert_eq!(r.spans, order.len() as u64);
        let mut want = spans_of(&req);
        want.retain(|sp| sp.trace_id[..] == trace);
        assert_eq!(
            spans_of(&ExportTraceServiceRequest::decode(r.body).unwrap()),
            want
        );
    }

    #[test]
    fn requests_never_pass_the_span_or_byte_limit() {
        let req = request(
            &mut Rng::new(4),
            &Shape {
                spans: 25_000,
                extra_attributes: 0,
                ..Shape::default()
            },
        );
        let batch = decode_request(req.encode_to_vec().into(), Protocol::Grpc)
            .unwrap()
            .batch;
        let mut s = Splicer::new(LIMITS);
        let mut full = Vec::new();
        s.add(&batch, Instant::now(), &mut full);
        // Two full requests; the remainder waits for more spans or the idle timer.
        assert_eq!(
            full.iter().map(|r| r.spans).collect::<Vec<_>>(),
            [10_000, 10_000]
        );
        assert_eq!(s.pending_spans(), 5_000);
        full.extend(s.take());
        let mut all = ExportTraceServiceRequest::default();
        for r in &full {
            assert!(r.body.len() <= LIMITS.max_bytes);
            let d = ExportTraceServiceRequest::decode(r.body.clone()).unwrap();
            assert_eq!(spans_of(&d).len() as u64, r.spans);
            all.resource_spans.extend(d.resource_spans);
        }
        assert_eq!(spans_of(&all), spans_of(&req));

        let small = Limits {
            max_bytes: 64 * 1024,
            ..LIMITS
        };
        let mut s = Splicer::new(small);
        let mut full = Vec::new();
        s.add(&batch, Instant::now(), &mut full);
        assert!(full.len() > 10);
        assert!(full.iter().all(|r| r.body.len() <= small.max_bytes));
    }
}
