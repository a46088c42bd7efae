//! Span → X-Ray segment document: a pure translation that follows the Collector's awsxrayexporter rules and writes JSON straight into a reusable buffer.
//
// Rules: opentelemetry-collector-contrib `exporter/awsxrayexporter/internal/translator/*.go`
// (v0.156.0 behaviour, summarised in reference/otelcol.md §2), document limits from the X-Ray
// developer guide "Segment documents" (reference/aws.md §1.2). Deliberate differences from the
// Collector are marked "Deviation:" where they happen.

mod attrs;
mod blocks;
mod json;
mod stack;
mod write;

use std::ops::Range;
use std::time::Duration;

use crate::model::SpanKind;
use crate::proto::{AnyValue, InstrumentationScope, Resource, Span, any_value::Value};

use attrs::{Block, Key, Known, Res, is_resource_key, is_scalar, str_of};
use blocks::{AwsSpan, Http, Sql, status_code, url_host};
use json::{Writer, truncate_chars};
use stack::Exception;
use write::write_document;

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
    _scope: &InstrumentationScope,
    opts: &TranslateOptions,
    out: &mut Vec<u8>,
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
        match write_document(&doc, out, &mut report) {
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
    push_trace_id(&mut out, trace_id);
    String::from_utf8(out).unwrap_or_default()
}

fn push_trace_id(out: &mut Vec<u8>, trace_id: &[u8; 16]) {
    out.extend_from_slice(b"1-");
    json::push_hex(out, &trace_id[..4]);
    out.push(b'-');
    json::push_hex(out, &trace_id[4..]);
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

#[derive(Clone, Copy)]
struct Ids {
    trace: [u8; 16],
    span: [u8; 8],
    parent: Option<[u8; 8]>,
}

impl Ids {
    fn of(span: &Span) -> Result<Ids, TranslateError> {
        let trace: [u8; 16] = span.trace_id[..]
            .try_into()
            .map_err(|_| TranslateError::InvalidTraceId)?;
        if trace == [0; 16] {
            return Err(TranslateError::InvalidTraceId);
        }
        let id: [u8; 8] = span.span_id[..]
            .try_into()
            .map_err(|_| TranslateError::InvalidSpanId)?;
        if id == [0; 8] {
            return Err(TranslateError::InvalidSpanId);
        }
        let parent = match span.parent_span_id.len() {
            0 => None,
            8 => {
                Some(span.parent_span_id[..].try_into().unwrap_or([0; 8])).filter(|p| *p != [0; 8])
            }
            _ => return Err(TranslateError::InvalidParentSpanId),
        };
        Ok(Ids {
            trace,
            span: id,
            parent,
        })
    }
}

/// A stable 64-bit ID derived from a span ID (splitmix64), for the IDs the Collector draws at
/// random: exception IDs and the LOCAL_ROOT service segment. Deviation: deterministic, so the
/// translation stays a pure function and golden files are exact.
fn derived_id(span: &[u8; 8], n: u64) -> [u8; 8] {
    let mut z = u64::from_be_bytes(*span) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 { 1u64 } else { z }.to_be_bytes()
}

/// Where `cause` comes from.
enum Cause<'a> {
    None,
    Exceptions(Vec<Exception<'a>>),
    /// Status ERROR without exception events: its message (or `http.status_text`).
    Message(&'a str),
}

/// A segment name in up to two pieces (`db@host`), sanitised when written.
#[derive(Clone, Copy)]
struct Name<'a> {
    main: &'a str,
    host: Option<&'a str>,
}

/// Everything derived once from the span, shared by the one or two documents it becomes.
struct Ctx<'a> {
    span: &'a Span,
    res: &'a Res<'a>,
    opts: &'a TranslateOptions,
    known: Known<'a>,
    ids: Ids,
    kind: SpanKind,
    local_root: bool,
    aws_sdk: bool,
    in_progress: bool,
    error: bool,
    fault: bool,
    throttle: bool,
    http: Option<Http<'a>>,
    aws: Option<AwsSpan<'a>>,
    sql: Option<Sql<'a>>,
    cause: Cause<'a>,
    user: Option<&'a str>,
    /// Per-span `aws.xray.annotations`: more keys to index.
    annotate: &'a [AnyValue],
}

impl<'a> Ctx<'a> {
    fn new(span: &'a Span, res: &'a Res<'a>, opts: &'a TranslateOptions, ids: Ids) -> Self {
        let known = Known::new(&span.attributes);
        let kind = SpanKind::from_otlp(span.kind);
        let aws_sdk = known.str(Key::RpcSystem) == Some(AWS_API);
        let status = span.status.as_ref();
        let is_error = status.is_some_and(|s| s.code == STATUS_ERROR);
        // Collector cause.go: the HTTP status decides; otherwise the span status.
        let (mut error, mut fault, mut throttle) = (false, false, false);
        match status_code(&known) {
            Some(c @ 400..=499) => {
                error = true;
                throttle = c == 429;
            }
            Some(500..=599) => fault = true,
            _ => fault = is_error,
        }
        let cause = make_cause(span, &known, res, kind, aws_sdk, is_error);
        let in_progress = matches!(
            known
                .get(Key::XrayInProgress)
                .and_then(|v| v.value.as_ref()),
            Some(Value::BoolValue(true))
        ) || span.end_time_unix_nano == 0; // Deviation: a span with no end time is still in progress.
        let annotate = match known
            .get(Key::XrayAnnotations)
            .and_then(|v| v.value.as_ref())
        {
            Some(Value::ArrayValue(a)) => &a.values[..],
            _ => &[],
        };
        Ctx {
            span,
            res,
            opts,
            ids,
            kind,
            local_root: known.str(Key::AwsSpanKind) == Some("LOCAL_ROOT"),
            aws_sdk,
            in_progress,
            error,
            fault,
            throttle,
            http: Http::new(&known, kind, span),
            aws: (!res.is_other_cloud()).then(|| AwsSpan::new(&known)),
            sql: Sql::new(&known, span),
            cause,
            user: known.str(Key::EnduserId),
            annotate,
            known,
        }
    }

    /// Whether a block written from this attribute takes it out of annotations and metadata.
    fn consumes(&self, key: Key, v: &AnyValue) -> bool {
        match key.block() {
            Block::Http => self.http.is_some(),
            Block::Aws => self.aws.is_some(),
            Block::Sql => self.sql.is_some(),
            Block::StatusText => matches!(self.cause, Cause::Message(_)),
            Block::InProgress => matches!(v.value, Some(Value::BoolValue(_))),
            Block::None => match key {
                Key::EnduserId => str_of(v).is_some(),
                Key::XrayAnnotations => matches!(v.value, Some(Value::ArrayValue(_))),
                _ => false,
            },
        }
    }

    fn listed_for_annotation(&self, key: &str, resource: bool) -> bool {
        self.annotate.iter().filter_map(str_of).any(|k| {
            if resource {
                is_resource_key(k, key)
            } else {
                k == key
            }
        })
    }

    fn remote_service(&self) -> Option<&'a str> {
        let name = self.known.text(Key::AwsRemoteService)?;
        if self.aws_sdk {
            // Collector trimAwsSdkPrefix, for AWS SDK spans only.
            return Some(
                name.strip_prefix("AWS.SDK.")
                    .or_else(|| name.strip_prefix("AWS::"))
                    .unwrap_or(name),
            );
        }
        Some(name)
    }

    /// Collector MakeSegment's name search; returns the name and whether it came from `aws.service`.
    fn name(&self, local: bool, remote: bool, resource: bool) -> (Name<'a>, bool) {
        use Key::*;
        let k = &self.known;
        let one = |main| Name { main, host: None };
        if let Some(n) = local.then(|| k.text(AwsLocalService)).flatten() {
            return (one(n), false);
        }
        if let Some(n) = remote.then(|| self.remote_service()).flatten() {
            return (one(n), false);
        }
        if let Some(n) = k.text(PeerService) {
            return (one(n), false);
        }
        if let Some(n) = k.text(AwsService) {
            return (one(n), true);
        }
        if let Some(db) = k.first_text(&[DbName, DbNamespace]) {
            // "<db name>@<db host>", the X-Ray SDKs' convention for databases.
            let host = k
                .str(DbConnectionString)
                .and_then(|c| url_host(c.strip_prefix("jdbc:").unwrap_or(c)));
            return (Name { main: db, host }, false);
        }
        if let Some(n) = resource
            .then_some(self.res.service_name)
            .flatten()
            .filter(|s| !s.is_empty())
        {
            return (one(n), false);
        }
        // Deviation: server.address, the newer twin of net.peer.name, is a name too.
        if let Some(n) = k.first_text(&[RpcService, HttpHost, NetPeerName, ServerAddress]) {
            return (one(n), false);
        }
        (one(&self.span.name), false)
    }
}

fn make_cause<'a>(
    span: &'a Span,
    k: &Known<'a>,
    res: &Res<'_>,
    kind: SpanKind,
    aws_sdk: bool,
    is_error: bool,
) -> Cause<'a> {
    let is_failure =
        |name: &str| name == "exception" || (aws_sdk && name == "HTTP request failure");
    if span.events.iter().any(|e| is_failure(&e.name)) {
        let remote = matches!(kind, SpanKind::Client | SpanKind::Producer);
        let language = res.sdk_language.unwrap_or("");
        let mut list = Vec::new();
        for event in &span.events {
            let attr = |key: &str| {
                event
                    .attributes
                    .iter()
                    .find(|kv| kv.key == key)
                    .and_then(|kv| kv.value.as_ref())
            };
            let text = |key: &str| attr(key).and_then(str_of).unwrap_or("");
            if event.name == "exception" {
                stack::push_exception(
                    &mut list,
                    text("exception.type"),
                    text("exception.message"),
                    text("exception.stacktrace"),
                    remote,
                    language,
                );
            } else if event.name == "HTTP request failure" {
                // AWS SDK retries: "<status>@<event time, seconds.micros>@<error message>".
                let (Some(code), Some(message)) = (
                    attr("http.response.status_code"),
                    attr("aws.http.error_message").and_then(str_of),
                ) else {
                    continue;
                };
                let mut text = Vec::new();
                let mut w = Writer::new(&mut text, usize::MAX, false, usize::MAX);
                match &code.value {
                    Some(Value::StringValue(s)) => w.raw(s.as_bytes()),
                    Some(Value::IntValue(i)) => w.int(*i),
                    _ => {}
                }
                w.byte(b'@');
                w.time(event.time_unix_nano);
                w.byte(b'@');
                w.raw(message.as_bytes());
                let text = String::from_utf8(text).unwrap_or_default();
                list.push(Exception::new("aws.http.error.event", text, true));
            }
        }
        return if list.is_empty() {
            Cause::None
        } else {
            Cause::Exceptions(list)
        };
    }
    if !is_error {
        return Cause::None;
    }
    let message = span
        .status
        .as_ref()
        .map(|s| s.message.as_str())
        .filter(|m| !m.is_empty())
        .or_else(|| k.str(Key::HttpStatusText))
        .unwrap_or("");
    Cause::Message(message)
}

/// Which document of a span this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Normal,
    /// LOCAL_ROOT SERVER/INTERNAL span: always a segment.
    LocalRootSegment,
    /// LOCAL_ROOT CLIENT/PRODUCER/CONSUMER span, part 1: the call, as a subsegment of part 2.
    LocalRootDependency,
    /// Part 2: the local service, as a segment with a derived ID.
    LocalRootService,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disp {
    Skip,
    Metadata,
    /// `aws.xray.metadata.<namespace>` JSON.
    Namespace,
    Annotation,
    /// An annotation candidate, by priority: 0 listed, 1 index-all span attribute, 2 index-all resource.
    Candidate(u8),
}

/// One document's plan.
struct Doc<'c, 'a> {
    c: &'c Ctx<'a>,
    role: Role,
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: Name<'a>,
    subsegment: bool,
    namespace: Option<&'static str>,
    store_resource: bool,
    links: bool,
    salt: u64,
    span_disp: Vec<Disp>,
    res_disp: Vec<Disp>,
    /// Annotations in write order: (from the resource, attribute index).
    annotations: Vec<(bool, usize)>,
}

impl<'c, 'a> Doc<'c, 'a> {
    fn new(c: &'c Ctx<'a>, role: Role, salt: u64, report: &mut Translated) -> Self {
        let kind = c.kind;
        let service_id = derived_id(&c.ids.span, u64::MAX);
        let (id, parent) = match role {
            Role::LocalRootDependency => (c.ids.span, Some(service_id)),
            Role::LocalRootService => (service_id, c.ids.parent),
            _ => (c.ids.span, c.ids.parent),
        };
        // Deviation: CONSUMER segments (and LOCAL_ROOT INTERNAL ones) are named like SERVER ones,
        // after the local service, as contrib#43432 asks; the Collector only does so for LOCAL_ROOT.
        let service_like = matches!(kind, SpanKind::Server | SpanKind::Consumer)
            || (c.local_root && kind == SpanKind::Internal);
        let remote_like = matches!(kind, SpanKind::Client | SpanKind::Producer);
        let (mut name, from_aws_service) = match role {
            Role::LocalRootDependency => c.name(false, true, false),
            _ => c.name(service_like, remote_like, service_like),
        };
        if role == Role::LocalRootService {
            // Deviation: the Collector falls back to the dependency's peer names here.
            name = Name {
                main: c
                    .known
                    .text(Key::AwsLocalService)
                    .or(c.res.service_name.filter(|s| !s.is_empty()))
                    .unwrap_or(&c.span.name),
                host: None,
            };
        }
        let subsegment = match role {
            Role::Normal => {
                !matches!(kind, SpanKind::Server | SpanKind::Consumer) && c.ids.parent.is_some()
            }
            Role::LocalRootDependency => true,
            Role::LocalRootSegment | Role::LocalRootService => false,
        };
        let mut namespace = if c.aws_sdk || from_aws_service {
            Some("aws")
        } else if matches!(kind, SpanKind::Client | SpanKind::Producer) {
            Some("remote")
        } else {
            None
        };
        if namespace.is_none()
            && subsegment
            && matches!(
                kind,
                SpanKind::Client | SpanKind::Producer | SpanKind::Consumer
            )
            && c.known.has(Key::AwsRemoteService)
        {
            namespace = Some("remote");
        }
        match role {
            Role::LocalRootSegment | Role::LocalRootService => namespace = None,
            Role::LocalRootDependency => namespace = namespace.or(Some("remote")),
            Role::Normal => {}
        }
        let links = match role {
            Role::LocalRootDependency => kind != SpanKind::Consumer,
            Role::LocalRootService => kind == SpanKind::Consumer,
            _ => true,
        };
        let mut doc = Doc {
            c,
            role,
            id,
            parent,
            name,
            subsegment,
            namespace,
            // Deviation: every segment carries the resource (the Collector skips it on LOCAL_ROOT
            // segments made from spans that have a parent).
            store_resource: !subsegment,
            links,
            salt,
            span_disp: Vec::new(),
            res_disp: Vec::new(),
            annotations: Vec::new(),
        };
        doc.plan_attributes(report);
        if links {
            report.links_dropped += c.span.links.iter().filter(|l| !doc.link_ok(l)).count() as u32;
        }
        doc
    }

    fn link_ok(&self, link: &crate::proto::span::Link) -> bool {
        link.trace_id.len() == 16
            && link.span_id.len() == 8
            && link.trace_id.iter().any(|b| *b != 0)
            && link.span_id.iter().any(|b| *b != 0)
            // Deviation: the Collector fails the whole span on a refused link trace ID.
            && (self.c.opts.trace_id_policy == TraceIdPolicy::PassThrough
                || epoch_is_recent(&link.trace_id, self.c.opts))
    }

    /// Collector makeXRayAttributes: which attributes become annotations, which metadata.
    fn plan_attributes(&mut self, report: &mut Translated) {
        let c = self.c;
        let opts = c.opts;
        let service_doc = self.role == Role::LocalRootService;
        self.span_disp = c
            .span
            .attributes
            .iter()
            .zip(&c.known.keys)
            .map(|(kv, &key)| {
                let Some(v) = kv.value.as_ref().filter(|v| v.value.is_some()) else {
                    return Disp::Skip;
                };
                if service_doc
                    && matches!(
                        key,
                        Key::AwsRemoteService
                            | Key::AwsRemoteOperation
                            | Key::RemoteTarget
                            | Key::K8sRemoteNamespace
                    )
                {
                    return Disp::Skip;
                }
                let configured = opts.indexed_attributes.contains(&kv.key);
                let consumed = c.consumes(key, v);
                // Configured keys stay indexable after a block used them (Collector addSpecialAttributes),
                // but enduser.id and aws.xray.annotations never do.
                if consumed && (!configured || matches!(key, Key::EnduserId | Key::XrayAnnotations))
                {
                    return Disp::Skip;
                }
                let listed = configured || c.listed_for_annotation(&kv.key, false);
                if listed || opts.index_all_attributes {
                    if is_scalar(v) {
                        return Disp::Candidate(if listed { 0 } else { 1 });
                    }
                    // Deviation: the Collector drops indexed non-scalar values; keep them as metadata.
                    report.annotations_not_indexable += 1;
                    return Disp::Metadata;
                }
                if kv.key.starts_with(METADATA_PREFIX) && str_of(v).is_some() {
                    return Disp::Namespace;
                }
                Disp::Metadata
            })
            .collect();
        if self.store_resource {
            self.res_disp = c
                .res
                .attrs
                .iter()
                .map(|kv| {
                    let Some(v) = kv.value.as_ref().filter(|v| v.value.is_some()) else {
                        return Disp::Skip;
                    };
                    let listed = opts.indexed_attributes.contains_resource(&kv.key)
                        || c.listed_for_annotation(&kv.key, true);
                    if (listed || opts.index_all_attributes) && is_scalar(v) {
                        Disp::Candidate(if listed { 0 } else { 2 })
                    } else {
                        Disp::Metadata
                    }
                })
                .collect();
        }
        // Cap, in priority order; the rest become metadata.
        let keep_dots = opts.annotation_keys_keep_dots;
        for priority in 0..3u8 {
            for resource in [false, true] {
                let count = if resource {
                    self.res_disp.len()
                } else {
                    self.span_disp.len()
                };
                for i in 0..count {
                    let disp = if resource {
                        self.res_disp[i]
                    } else {
                        self.span_disp[i]
                    };
                    if disp != Disp::Candidate(priority) {
                        continue;
                    }
                    let key = self.annotation_source_key(resource, i);
                    let chars = key.0.len() + key.1.chars().count();
                    let verdict = if self.annotations.len() >= opts.max_annotations {
                        report.annotations_over_cap += 1;
                        Disp::Metadata
                    } else if chars == 0
                        || chars > MAX_ANNOTATION_KEY_CHARS
                        || self.annotations.iter().any(|&(r, j)| {
                            same_annotation_key(self.annotation_source_key(r, j), key, keep_dots)
                        })
                    {
                        report.annotations_not_indexable += 1;
                        Disp::Metadata
                    } else {
                        self.annotations.push((resource, i));
                        Disp::Annotation
                    };
                    if resource {
                        self.res_disp[i] = verdict;
                    } else {
                        self.span_disp[i] = verdict;
                    }
                }
            }
        }
        for &(resource, i) in &self.annotations {
            if let Some(Value::StringValue(s)) = self.annotation_value(resource, i).value.as_ref()
                && truncate_chars(s, MAX_ANNOTATION_VALUE_CHARS).1
            {
                report.annotation_values_truncated += 1;
            }
        }
    }

    /// An annotation's key before sanitising, as (prefix, key).
    fn annotation_source_key(&self, resource: bool, i: usize) -> (&'static str, &'a str) {
        if resource {
            (RESOURCE_PREFIX, &self.c.res.attrs[i].key)
        } else {
            ("", &self.c.span.attributes[i].key)
        }
    }

    fn annotation_value(&self, resource: bool, i: usize) -> &'a AnyValue {
        let kv = if resource {
            &self.c.res.attrs[i]
        } else {
            &self.c.span.attributes[i]
        };
        kv.value.as_ref().unwrap_or(&EMPTY)
    }
}

static EMPTY: AnyValue = AnyValue { value: None };

/// Collector fixAnnotationKey: ASCII letters and digits stay (and `.` when allowed), the rest become `_`.
fn annotation_key_char(c: char, keep_dots: bool) -> char {
    if c.is_ascii_alphanumeric() || c == '_' || (keep_dots && c == '.') {
        c
    } else {
        '_'
    }
}

fn same_annotation_key(a: (&str, &str), b: (&str, &str), keep_dots: bool) -> bool {
    let mut x =
        a.0.chars()
            .chain(a.1.chars())
            .map(|c| annotation_key_char(c, keep_dots));
    let mut y =
        b.0.chars()
            .chain(b.1.chars())
            .map(|c| annotation_key_char(c, keep_dots));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (p, q) if p != q => return false,
            _ => {}
        }
    }
}

/// X-Ray devguide: names may hold Unicode letters and numbers, whitespace and `_ . : / % & # = + \ - @`.
/// Only the plain space is kept of the whitespace (what the Collector keeps), so names suit both.
pub(crate) fn name_char_ok(c: char) -> bool {
    c.is_alphanumeric()
        || c == ' '
        || matches!(
            c,
            '_' | '.' | ':' | '/' | '%' | '&' | '#' | '=' | '+' | '\\' | '-' | '@'
        )
}

#[cfg(test)]
mod tests;
