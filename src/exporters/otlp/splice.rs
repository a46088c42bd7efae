//! Splices received span bytes into new `ExportTraceServiceRequest` bodies: resource, scope and
//! span messages are copied as they came (nothing is re-encoded), within a request's span and
//! byte limits.

use bytes::Bytes;
use tokio::time::Instant;

use crate::exporters::batching::{BatchLimits, Batcher};
use crate::model::{Batch, Ticket, hold};
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

/// Accumulates spliced `ResourceSpans` (one batch item each) until a limit or the idle timer.
#[derive(Debug)]
pub struct Splicer {
    batch: Batcher<Vec<u8>>,
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
            let mut body = Vec::with_capacity(t.bytes);
            for item in t.items {
                body.extend_from_slice(&item);
            }
            Request {
                body: body.into(),
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
        let added = self.add_spans(batch, now, full);
        self.adding.clear();
        added
    }

    fn add_spans(&mut self, batch: &Batch, now: Instant, full: &mut Vec<Request>) -> Added {
        let buf = &batch.buf[..];
        let slice = |r: &std::ops::Range<u32>| &buf[r.start as usize..r.end as usize];
        let mut added = Added::default();
        let mut i = 0;
        while i < batch.spans.len() {
            // Spans of one (resource, scope) pair are contiguous in a batch.
            let (res, scope) = (batch.spans[i].resource, batch.spans[i].scope);
            let mut j = i;
            while j < batch.spans.len()
                && batch.spans[j].resource == res
                && batch.spans[j].scope == scope
            {
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
            for info in &batch.spans[i..j] {
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
        let header = field_len(1, resource.len()) + field_len(2, scope.len());
        let mut added = 0;
        while !spans.is_empty() {
            // Take as many spans as fit in the current request.
            let (span_room, byte_room) = self.batch.room();
            let (mut take, mut scope_body) = (0, field_len(1, scope.len()));
            for s in spans {
                let next = scope_body + field_len(2, s.len());
                let item = field_len(1, field_len(1, resource.len()) + field_len(2, next));
                if take >= span_room || item > byte_room {
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
            let mut scope_spans = Vec::with_capacity(scope_body);
            if !scope.is_empty() {
                wire::bytes(&mut scope_spans, 1, scope);
            }
            for s in &spans[..take] {
                wire::bytes(&mut scope_spans, 2, s);
            }
            let mut rs = Vec::with_capacity(header + field_len(2, scope_spans.len()));
            if !resource.is_empty() {
                wire::bytes(&mut rs, 1, resource);
            }
            wire::bytes(&mut rs, 2, &scope_spans);
            let mut item = Vec::with_capacity(field_len(1, rs.len()));
            wire::bytes(&mut item, 1, &rs);
            let len = item.len();
            for t in &self.adding {
                hold(&mut self.tickets, t);
            }
            if self.batch.push(item, take, len, now) {
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
