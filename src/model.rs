//! The types every stage shares: the batch (the request's bytes plus an index of its spans), the
//! decoded-span view, span kind, `origin`, and the bounded label enums of outcomes, rejections and drops.

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
    /// Span views of X-Ray SDK documents (UDP :2000): already sampled by the SDK, and relayed
    /// to X-Ray as sent rather than translated from these spans.
    XrayUdp,
    /// OTLP `TracesData` messages consumed from Kafka.
    Kafka,
}

impl Protocol {
    /// In the order of the persistent queue's protocol codes: new ones go last.
    pub const ALL: [Protocol; 5] = [
        Protocol::Grpc,
        Protocol::HttpProtobuf,
        Protocol::HttpJson,
        Protocol::XrayUdp,
        Protocol::Kafka,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
            Protocol::XrayUdp => "xray_udp",
            Protocol::Kafka => "kafka",
        }
    }
}

/// What became of one OTLP request (a label of `sidetrace_receiver_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok,
    Partial,
    Malformed,
    TooLarge,
    UnsupportedMediaType,
    QueueFull,
    ShuttingDown,
    MemoryLimit,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 8] = [
        RequestOutcome::Ok,
        RequestOutcome::Partial,
        RequestOutcome::Malformed,
        RequestOutcome::TooLarge,
        RequestOutcome::UnsupportedMediaType,
        RequestOutcome::QueueFull,
        RequestOutcome::ShuttingDown,
        RequestOutcome::MemoryLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Partial => "partial",
            RequestOutcome::Malformed => "malformed",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::UnsupportedMediaType => "unsupported_media_type",
            RequestOutcome::QueueFull => "queue_full",
            RequestOutcome::ShuttingDown => "shutting_down",
            RequestOutcome::MemoryLimit => "memory_limit",
        }
    }
}

/// Why spans that were accepted did not reach an exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The drain deadline passed at shutdown with the spans still queued.
    DrainDeadline,
    /// A span could not be decoded by an exporter (should not happen: the receiver checked it).
    Undecodable,
    /// A trace in the local store reached its span cap.
    TraceSpanCap,
    /// The destination refused the request in a way retrying cannot fix.
    PermanentError,
    /// Retries ran out of their time budget.
    RetryExhausted,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::DrainDeadline,
        DropReason::Undecodable,
        DropReason::TraceSpanCap,
        DropReason::PermanentError,
        DropReason::RetryExhausted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::DrainDeadline => "drain_deadline",
            DropReason::Undecodable => "undecodable",
            DropReason::TraceSpanCap => "trace_span_cap",
            DropReason::PermanentError => "permanent_error",
            DropReason::RetryExhausted => "retry_exhausted",
        }
    }
}

/// Why one span inside a good request was not accepted (reported as OTLP partial success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    InvalidTraceId,
    InvalidSpanId,
    InvalidParentSpanId,
    EndBeforeStart,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::InvalidTraceId,
        RejectReason::InvalidSpanId,
        RejectReason::InvalidParentSpanId,
        RejectReason::EndBeforeStart,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::InvalidSpanId => "invalid_span_id",
            RejectReason::InvalidParentSpanId => "invalid_parent_span_id",
            RejectReason::EndBeforeStart => "end_before_start",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "trace_id must be 16 bytes and not all zero",
            RejectReason::InvalidSpanId => "span_id must be 8 bytes and not all zero",
            RejectReason::InvalidParentSpanId => "parent_span_id must be empty or 8 bytes",
            RejectReason::EndBeforeStart => "end_time_unix_nano is before start_time_unix_nano",
        }
    }
}

/// Spans rejected from a request, counted by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub by_reason: [u64; RejectReason::ALL.len()],
}

impl Rejected {
    pub fn total(&self) -> u64 {
        self.by_reason.iter().sum()
    }

    pub fn add(&mut self, reason: RejectReason) {
        self.by_reason[reason as usize] += 1;
    }

    /// The English `error_message` of the partial-success answer.
    pub fn message(&self) -> String {
        let parts: Vec<String> = RejectReason::ALL
            .iter()
            .filter(|r| self.by_reason[**r as usize] > 0)
            .map(|r| format!("{} span(s): {}", self.by_reason[*r as usize], r.explain()))
            .collect();
        format!(
            "rejected {} invalid span(s): {}",
            self.total(),
            parts.join("; ")
        )
    }
}

/// The result of reading one request: the batch of accepted spans and what was rejected.
#[derive(Debug)]
pub struct Decoded {
    pub batch: Batch,
    pub rejected: Rejected,
    /// Sent by a sidetrace that already recorded these spans' metrics ([`SPAN_METRICS_HEADER`]).
    pub metrics_recorded: bool,
}

/// The request header (and gRPC metadata) with which a sidetrace forwarding spans over OTLP says
/// it recorded their span metrics (value `recorded`): a gateway does not count them again.
pub const SPAN_METRICS_HEADER: &str = "x-sidetrace-span-metrics";

/// OTLP span kind (`Span.SpanKind`) as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub const ALL: [SpanKind; 6] = [
        SpanKind::Unspecified,
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];

    /// `Span.SpanKind` as sent (out-of-range values count as unspecified).
    pub fn from_otlp(kind: i32) -> SpanKind {
        usize::try_from(kind)
            .ok()
            .and_then(|k| SpanKind::ALL.get(k).copied())
            .unwrap_or(SpanKind::Unspecified)
    }

    pub fn label(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// The X-Ray `origin` (the service type that segments carry and sampling rules match) from a
/// resource's `cloud.provider`, `cloud.platform` and `aws.ecs.launchtype`: the Collector's
/// `determineAwsOrigin`. `None` for a resource without attributes or from another cloud.
pub fn aws_origin(
    has_attributes: bool,
    provider: Option<&str>,
    platform: Option<&str>,
    launch_type: Option<&str>,
) -> Option<&'static str> {
    if !has_attributes || provider.is_some_and(|p| p != "aws") {
        return None;
    }
    Some(match platform? {
        "aws_app_runner" => "AWS::AppRunner::Service",
        "aws_eks" => "AWS::EKS::Container",
        "aws_elastic_beanstalk" => "AWS::ElasticBeanstalk::Environment",
        "aws_ec2" => "AWS::EC2::Instance",
        "aws_ecs" => match launch_type {
            Some("ec2") => "AWS::ECS::EC2",
            Some("fargate") => "AWS::ECS::Fargate",
            _ => "AWS::ECS::Container",
        },
        _ => return None,
    })
}

/// [`aws_origin`] of a decoded resource (the first occurrence of each attribute wins).
pub fn origin(resource: &Resource) -> Option<&'static str> {
    use crate::proto::any_value::Value;
    let (mut provider, mut platform, mut launch) = (None, None, None);
    for kv in &resource.attributes {
        let Some(Value::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        let slot = match kv.key.as_str() {
            "cloud.provider" => &mut provider,
            "cloud.platform" => &mut platform,
            "aws.ecs.launchtype" => &mut launch,
            _ => continue,
        };
        slot.get_or_insert(v.as_str());
    }
    aws_origin(!resource.attributes.is_empty(), provider, platform, launch)
}

/// An X-Ray segment document received as it is (from an X-Ray SDK over UDP), relayed byte for
/// byte: the SDK already sampled it.
#[derive(Debug, Clone)]
pub struct RawDocument {
    /// The document JSON-escaped (the contents of the JSON string PutTraceSegments carries it
    /// in), escaped once on receipt instead of copied.
    pub escaped: Vec<u8>,
    /// The document's `id`, to match X-Ray's `UnprocessedTraceSegments`.
    pub id: String,
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

/// Keeps a request held in the persistent queue open: every batch made from the request (and
/// every exporter call holding its spans) carries a clone, and the request is done when the last
/// clone drops. The default holds nothing (no persistent queue).
#[derive(Debug, Clone, Default)]
pub struct Ticket(Option<Arc<Held>>);

/// What a ticket holds (a thin pointer, so that a batch stays small).
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>);

impl Ticket {
    pub fn new(record: Box<dyn std::any::Any + Send + Sync>) -> Self {
        Ticket(Some(Arc::new(Held(record))))
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Whether both hold the same request (or both nothing).
    pub fn same(&self, other: &Ticket) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

/// Adds `ticket` to `held` unless it holds nothing or is among the last few there (tickets
/// come in runs: the spans of one request are added together).
pub fn hold(held: &mut Vec<Ticket>, ticket: &Ticket) {
    if ticket.is_some() && !held.iter().rev().take(8).any(|t| t.same(ticket)) {
        held.push(ticket.clone());
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
    /// Set when the request is in the persistent queue.
    pub ticket: Ticket,
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
