//! Span → X-Ray segment document: a pure translation that follows the Collector's awsxrayexporter rules and writes JSON straight into a reusable buffer.
//
// Rules: opentelemetry-collector-contrib `exporter/awsxrayexporter/internal/translator/*.go`
// (v0.156.0 behaviour, summarised in reference/otelcol.md §2), document limits from the X-Ray
// developer guide "Segment documents" (reference/aws.md §1.2). Deliberate differences from the
// Collector are marked "Deviation:" where they happen.
//
// Control runs one way: `to_segment` has `plan` decide each document (role, IDs, name, where
// every attribute goes), then `write` renders that plan; `attrs`, `blocks` and `stack` read the
// span's attributes for the plan, `json` is the writer both use.

mod attrs;
mod blocks;
pub(crate) mod json;
mod plan;
mod stack;
mod write;

use std::ops::Range;
use std::time::Duration;

use crate::model::SpanKind;
use crate::proto::{InstrumentationScope, Resource, Span};

use attrs::{Res, is_resource_key};
use plan::{Ctx, Doc, Ids, Role};
use write::{write_document, write_document_escaped};

/// X-Ray devguide "Segment documents": at most 64 kB per document. Counted as 64,000 bytes so
/// that both readings of "kB" hold.
pub const MAX_DOCUMENT_BYTES: usize = 64_000;
/// X-Ray devguide: at most 50 indexed annotations per trace, so never more in one document.
pub const MAX_ANNOTATIONS: usize = 50;
/// X-Ray devguide: segment names are at most 200 characters.
pub const MAX_NAME_CHARS: usize = 200;
/// X-Ray SDK docs (xray-sdk-go-segment): annotation keys are at most 500 characters.
pub const MAX_ANNOTATION_KEY_CHARS: usize = 500;
/// X-Ray SDK docs (xray-sdk-go-segment): annotation string values are at most 1,000 characters.
pub const MAX_ANNOTATION_VALUE_CHARS: usize = 1_000;
/// Collector segment.go `maxAge`: oldest accepted trace-ID time (X-Ray keeps traces 30 days).
pub const MAX_TRACE_ID_AGE: Duration = Duration::from_secs(28 * 24 * 60 * 60);
/// Collector segment.go `maxSkew`: how far in the future a trace-ID time may be.
pub const MAX_TRACE_ID_SKEW: Duration = Duration::from_secs(5 * 60);
/// Characters kept of each string when a document must be trimmed to fit.
pub const TRIMMED_STRING_CHARS: usize = 1_024;
/// Collector `defaultSegmentName`: the name when nothing valid is left.
const DEFAULT_NAME: &str = "span";
/// Collector `awsAPIRPCSystem`: the `rpc.system` of AWS SDK calls.
const AWS_API: &str = "aws-api";
/// Prefix of span attributes that carry whole metadata namespaces as JSON.
const METADATA_PREFIX: &str = "aws.xray.metadata.";
/// Prefix given to resource attributes written on segments.
const RESOURCE_PREFIX: &str = "otel.resource.";
/// OTLP `Status.StatusCode` ERROR.
const STATUS_ERROR: i32 = 2;

/// What to do with trace IDs whose first 32 bits are not a recent epoch second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceIdPolicy {
    /// Send every valid W3C trace ID as `1-xxxxxxxx-…` (X-Ray accepts W3C IDs since Oct 2023; the
    /// Collector's default with the `skiptimestampvalidation` gate on).
    #[default]
    PassThrough,
    /// Reject IDs whose time is more than [`MAX_TRACE_ID_AGE`] old or [`MAX_TRACE_ID_SKEW`] ahead
    /// of [`TranslateOptions::now_unix_secs`] (the Collector with that gate off).
    RequireRecentEpoch,
}

/// Attribute keys that become annotations.
#[derive(Debug, Clone, Default)]
pub struct IndexedKeys {
    keys: Vec<String>,
}

impl IndexedKeys {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        IndexedKeys {
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Whether `otel.resource.<key>` is listed.
    fn contains_resource(&self, key: &str) -> bool {
        self.keys.iter().any(|k| is_resource_key(k, key))
    }
}

/// Translation settings; build once, refresh `now_unix_secs` per batch.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// Attribute keys written as annotations (`otel.resource.<key>` names resource attributes).
    pub indexed_attributes: IndexedKeys,
    /// Every scalar attribute becomes an annotation (up to `max_annotations`).
    pub index_all_attributes: bool,
    pub trace_id_policy: TraceIdPolicy,
    /// Wall-clock time, read only by [`TraceIdPolicy::RequireRecentEpoch`].
    pub now_unix_secs: u64,
    /// Documents never exceed this; metadata is trimmed first, then the rest.
    pub max_document_bytes: usize,
    /// Annotations beyond this go to metadata instead.
    pub max_annotations: usize,
    /// Keep `.` in annotation keys (X-Ray accepts it since 2024; Collector gate `exporter.xray.allowDot`, on by default).
    pub annotation_keys_keep_dots: bool,
    /// `cloudwatch_logs` when the resource names no log groups (Collector `aws_log_groups`).
    pub log_group_names: Vec<String>,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            indexed_attributes: IndexedKeys::default(),
            index_all_attributes: false,
            trace_id_policy: TraceIdPolicy::PassThrough,
            now_unix_secs: 0,
            max_document_bytes: MAX_DOCUMENT_BYTES,
            max_annotations: MAX_ANNOTATIONS,
            annotation_keys_keep_dots: true,
            log_group_names: Vec::new(),
        }
    }
}

/// Why a span could not become a document; every variant means "rejected, do not retry".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("trace ID must be 16 bytes and not all zero")]
    InvalidTraceId,
    #[error("span ID must be 8 bytes and not all zero")]
    InvalidSpanId,
    #[error("parent span ID must be empty or 8 bytes")]
    InvalidParentSpanId,
    #[error("trace ID time {epoch_secs} is not within 28 days before or 5 minutes after now")]
    TraceIdEpochOutOfRange { epoch_secs: u32 },
    #[error("document needs {needed_bytes} bytes even when trimmed; the limit is {limit_bytes}")]
    TooLarge {
        needed_bytes: usize,
        limit_bytes: usize,
    },
}

impl TranslateError {
    /// A bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            TranslateError::InvalidTraceId => "invalid_trace_id",
            TranslateError::InvalidSpanId => "invalid_span_id",
            TranslateError::InvalidParentSpanId => "invalid_parent_span_id",
            TranslateError::TraceIdEpochOutOfRange { .. } => "trace_id_epoch_out_of_range",
            TranslateError::TooLarge { .. } => "document_too_large",
        }
    }
}

/// What was cut to fit a document into `max_document_bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trim {
    /// Size of the untrimmed document(s).
    pub original_bytes: usize,
    pub metadata_dropped: u32,
    pub annotations_dropped: u32,
    pub links_dropped: u32,
    pub exceptions_dropped: u32,
    pub stack_frames_dropped: u32,
    /// Whole blocks (`http`, `aws`, `sql`, `service`, …) left out.
    pub blocks_dropped: u32,
    /// Strings cut to [`TRIMMED_STRING_CHARS`].
    pub strings_truncated: u32,
}

impl Trim {
    fn add(&mut self, o: &Trim) {
        self.original_bytes += o.original_bytes;
        self.metadata_dropped += o.metadata_dropped;
        self.annotations_dropped += o.annotations_dropped;
        self.links_dropped += o.links_dropped;
        self.exceptions_dropped += o.exceptions_dropped;
        self.stack_frames_dropped += o.stack_frames_dropped;
        self.blocks_dropped += o.blocks_dropped;
        self.strings_truncated += o.strings_truncated;
    }
}

/// The outcome of one translation, for the exporter's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translated {
    documents: [Range<usize>; 2],
    document_count: usize,
    /// Indexed attributes written as metadata because the document already had `max_annotations`.
    pub annotations_over_cap: u32,
    /// Indexed attributes written as metadata because of their key (empty, too long, clashing
    /// once sanitised) or a value that is not a string, number or bool.
    pub annotations_not_indexable: u32,
    /// Annotation strings cut to [`MAX_ANNOTATION_VALUE_CHARS`].
    pub annotation_values_truncated: u32,
    /// Links left out: invalid IDs, or trace-ID time refused by the policy.
    pub links_dropped: u32,
    /// Set when a document had to be trimmed.
    pub trim: Option<Trim>,
}

impl Translated {
    /// Byte ranges, in `out`, of the documents written: one, or two for a LOCAL_ROOT dependency
    /// span (the dependency subsegment first, then the service segment).
    pub fn documents(&self) -> &[Range<usize>] {
        &self.documents[..self.document_count]
    }
}

/// Translates one span into X-Ray segment document(s), appended to `out` (compact JSON, no
/// separator). On error `out` is left as it was. The scope is not read (nor is it by the
/// Collector); it is taken so that callers need not change if that ever changes.
pub fn to_segment(
    span: &Span,
    resource: &Resource,
    scope: &InstrumentationScope,
    opts: &TranslateOptions,
    out: &mut Vec<u8>,
) -> Result<Translated, TranslateError> {
    translate(span, resource, scope, opts, out, None)
}

/// Like [`to_segment`], but each document is written as a JSON string (`"…"`, its text
/// escaped, documents separated by `,`): the elements of a PutTraceSegments body, written in
/// the one pass that translates them. `scratch` is only used for a document that must be trimmed.
/// The ranges of [`Translated::documents`] are the escaped texts, without their quotes.
pub fn to_segment_escaped(
    span: &Span,
    resource: &Resource,
    scope: &InstrumentationScope,
    opts: &TranslateOptions,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<Translated, TranslateError> {
    translate(span, resource, scope, opts, out, Some(scratch))
}

fn translate(
    span: &Span,
    resource: &Resource,
    _scope: &InstrumentationScope,
    opts: &TranslateOptions,
    out: &mut Vec<u8>,
    mut escaped: Option<&mut Vec<u8>>,
) -> Result<Translated, TranslateError> {
    let ids = Ids::of(span)?;
    check_trace_id(&ids.trace, opts)?;
    let res = Res::new(resource);
    let ctx = Ctx::new(span, &res, opts, ids);
    let mut report = Translated::default();
    let begin = out.len();
    let roles: &[Role] = match (ctx.local_root, ctx.kind) {
        (false, _) => &[Role::Normal],
        (true, SpanKind::Server | SpanKind::Internal) => &[Role::LocalRootSegment],
        (true, _) => &[Role::LocalRootDependency, Role::LocalRootService],
    };
    for (n, role) in roles.iter().enumerate() {
        let doc = Doc::new(&ctx, *role, n as u64, &mut report);
        let written = match escaped.as_deref_mut() {
            Some(scratch) => {
                out.extend_from_slice(if n == 0 { b"\"" } else { b",\"" });
                let r = write_document_escaped(&doc, out, scratch, &mut report);
                out.push(b'"');
                r
            }
            None => write_document(&doc, out, &mut report),
        };
        match written {
            Ok(range) => {
                report.documents[n] = range;
                report.document_count = n + 1;
            }
            Err(e) => {
                out.truncate(begin);
                return Err(e);
            }
        }
    }
    Ok(report)
}

/// `1-` + 8 hex (the time part) + `-` + 24 hex, as X-Ray writes trace IDs.
pub fn xray_trace_id(trace_id: &[u8; 16]) -> String {
    let mut out = Vec::with_capacity(35);
    json::push_trace_id(&mut out, trace_id);
    String::from_utf8(out).unwrap_or_default()
}

fn check_trace_id(trace: &[u8; 16], opts: &TranslateOptions) -> Result<(), TranslateError> {
    if opts.trace_id_policy == TraceIdPolicy::PassThrough || epoch_is_recent(trace, opts) {
        Ok(())
    } else {
        Err(TranslateError::TraceIdEpochOutOfRange {
            epoch_secs: u32::from_be_bytes([trace[0], trace[1], trace[2], trace[3]]),
        })
    }
}

fn epoch_is_recent(trace: &[u8], opts: &TranslateOptions) -> bool {
    let epoch = i64::from(u32::from_be_bytes([trace[0], trace[1], trace[2], trace[3]]));
    let delta = opts.now_unix_secs as i64 - epoch;
    delta <= MAX_TRACE_ID_AGE.as_secs() as i64 && delta >= -(MAX_TRACE_ID_SKEW.as_secs() as i64)
}

#[cfg(test)]
mod tests;
