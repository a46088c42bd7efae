//! The internal batch type the pipeline passes around: the request's bytes plus an index of its spans.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::proto::{InstrumentationScope, Resource, Span};

/// A trace ID as it travels on the wire.
pub type TraceId = [u8; 16];
/// A span ID as it travels on the wire.
pub type SpanId = [u8; 8];

/// Which receiver and encoding a batch came in on (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
        }
    }
}

/// One resource (with its scopes) inside a batch, as byte ranges into [`Batch::buf`].
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// The `Resource` message; empty when the request had none.
    pub resource: Range<u32>,
    /// The `service.name` string attribute; empty when absent.
    pub service: Range<u32>,
    /// The `service.version` string attribute; empty when absent.
    pub version: Range<u32>,
}

/// One instrumentation scope inside a batch.
#[derive(Debug, Clone)]
pub struct ScopeInfo {
    /// The `InstrumentationScope` message; empty when absent.
    pub scope: Range<u32>,
}

/// The fields of one span that the hot path reads, plus where the whole span sits in the buffer.
#[derive(Debug, Clone)]
pub struct SpanInfo {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// All zeros when the span has no parent.
    pub parent_span_id: SpanId,
    /// `Span.SpanKind` as sent (0 unspecified … 5 consumer).
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// `Status.StatusCode` (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// The span's name string.
    pub name: Range<u32>,
    /// The W3C `tracestate` string (empty when absent); carries `ot=th:` sampling thresholds.
    pub trace_state: Range<u32>,
    /// The whole `Span` message.
    pub bytes: Range<u32>,
    /// Index into [`Batch::resources`].
    pub resource: u32,
    /// Index into [`Batch::scopes`].
    pub scope: u32,
    /// The HTTP attributes span metrics name operations and classify status with.
    pub http: HttpInfo,
}

/// HTTP attributes captured by the decoder's walk (string ranges into [`Batch::buf`], empty
/// when absent). The stable semantic-convention names win over the older ones when both are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpInfo {
    /// `http.route`.
    pub route: Range<u32>,
    /// `http.request.method`, else `http.method`.
    pub method: Range<u32>,
    /// `url.path`, else `http.target` (which may carry a query).
    pub path: Range<u32>,
    /// `http.response.status_code`, else `http.status_code`; 0 when absent.
    pub status_code: u16,
}

impl SpanInfo {
    pub fn has_parent(&self) -> bool {
        self.parent_span_id != [0; 8]
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    pub fn is_error(&self) -> bool {
        self.status_code == 2
    }
}

/// A decoded, validated `ExportTraceServiceRequest`: one queue item.
///
/// Only an index is built on the hot path; exporters decode the full spans they need from
/// `buf` (which every span range points into) behind the queue.
#[derive(Debug, Clone)]
pub struct Batch {
    pub protocol: Protocol,
    pub buf: Bytes,
    pub resources: Vec<ResourceInfo>,
    pub scopes: Vec<ScopeInfo>,
    pub spans: Vec<SpanInfo>,
}

fn slice(buf: &Bytes, r: &Range<u32>) -> Bytes {
    buf.slice(r.start as usize..r.end as usize)
}

impl Batch {
    /// Bytes this batch holds in memory (what queue limits count).
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
            + self.spans.len() * std::mem::size_of::<SpanInfo>()
            + self.resources.len() * std::mem::size_of::<ResourceInfo>()
    }

    fn str_at(&self, r: &Range<u32>) -> &str {
        // Validated as UTF-8 by the decoder before the batch was built.
        std::str::from_utf8(&self.buf[r.start as usize..r.end as usize]).unwrap_or("")
    }

    pub fn span_name(&self, span: &SpanInfo) -> &str {
        self.str_at(&span.name)
    }

    /// A string the decoder indexed (a span's name or one of its [`HttpInfo`] ranges).
    pub fn text(&self, range: &Range<u32>) -> &str {
        self.str_at(range)
    }

    /// The `service.version` of a span's resource, or "" when it has none.
    pub fn service_version(&self, span: &SpanInfo) -> &str {
        self.resources
            .get(span.resource as usize)
            .map_or("", |r| self.str_at(&r.version))
    }

    pub fn trace_state(&self, span: &SpanInfo) -> &str {
        self.str_at(&span.trace_state)
    }

    /// The `service.name` of a span's resource, or "" when it has none.
    pub fn service_name(&self, span: &SpanInfo) -> &str {
        self.resources
            .get(span.resource as usize)
            .map_or("", |r| self.str_at(&r.service))
    }

    /// The full span, decoded from the buffer (cheap for `bytes` fields: they share `buf`).
    pub fn decode_span(&self, span: &SpanInfo) -> Result<Span, prost::DecodeError> {
        Span::decode(slice(&self.buf, &span.bytes))
    }

    pub fn decode_resource(&self, index: u32) -> Result<Resource, prost::DecodeError> {
        match self.resources.get(index as usize) {
            Some(r) => Resource::decode(slice(&self.buf, &r.resource)),
            None => Ok(Resource::default()),
        }
    }

    pub fn decode_scope(&self, index: u32) -> Result<InstrumentationScope, prost::DecodeError> {
        match self.scopes.get(index as usize) {
            Some(s) => InstrumentationScope::decode(slice(&self.buf, &s.scope)),
            None => Ok(InstrumentationScope::default()),
        }
    }
}

/// One span decoded for an exporter, with its resource and scope shared across the batch.
#[derive(Debug, Clone)]
pub struct DecodedSpan {
    pub trace_id: TraceId,
    /// Size of the span on the wire.
    pub encoded_bytes: usize,
    pub span: Span,
    pub service: Arc<str>,
    pub resource: Arc<Resource>,
    pub scope: Arc<InstrumentationScope>,
}

impl Batch {
    /// Decodes every span (behind the queue, never on the hot path), each resource and scope
    /// once. Returns the spans and how many could not be decoded (the receiver checked them, so
    /// this should stay zero).
    pub fn decode_all(&self) -> (Vec<DecodedSpan>, u64) {
        let mut resources: Vec<Option<(Arc<Resource>, Arc<str>)>> =
            vec![None; self.resources.len()];
        let mut scopes: Vec<Option<Arc<InstrumentationScope>>> = vec![None; self.scopes.len()];
        let mut out = Vec::with_capacity(self.spans.len());
        let mut undecodable = 0;
        for info in &self.spans {
            let Ok(span) = self.decode_span(info) else {
                undecodable += 1;
                continue;
            };
            let (resource, service) = match resources.get_mut(info.resource as usize) {
                Some(slot) => slot
                    .get_or_insert_with(|| {
                        let r = self.decode_resource(info.resource).unwrap_or_default();
                        (Arc::new(r), Arc::from(self.service_name(info)))
                    })
                    .clone(),
                None => (Arc::default(), Arc::from("")),
            };
            let scope = match scopes.get_mut(info.scope as usize) {
                Some(slot) => slot
                    .get_or_insert_with(|| {
                        Arc::new(self.decode_scope(info.scope).unwrap_or_default())
                    })
                    .clone(),
                None => Arc::default(),
            };
            out.push(DecodedSpan {
                trace_id: info.trace_id,
                encoded_bytes: info.bytes.len(),
                span,
                service,
                resource,
                scope,
            });
        }
        (out, undecodable)
    }
}

/// Lower-case hex of an ID, as OTLP/JSON and the local API print them.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Parses hex (either case) into bytes; `None` when the text is not even-length hex.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = [0x5b, 0x8e, 0xff, 0x00];
        assert_eq!(hex(&id), "5b8eff00");
        assert_eq!(parse_hex("5B8Eff00").unwrap(), id);
        assert!(parse_hex("abc").is_none());
        assert!(parse_hex("zz").is_none());
    }
}
