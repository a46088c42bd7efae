//! Span → X-Ray segment document: a pure translation that follows the Collector's awsxrayexporter rules and writes JSON straight into a reusable buffer.
//
// Rules: opentelemetry-collector-contrib `exporter/awsxrayexporter/internal/translator/*.go`
// (v0.156.0 behaviour, summarised in reference/otelcol.md §2), document limits from the X-Ray
// developer guide "Segment documents" (reference/aws.md §1.2). Deliberate differences from the
// Collector are marked "Deviation:" where they happen.

mod json;
mod stack;

use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use crate::proto::{AnyValue, InstrumentationScope, KeyValue, Resource, Span, any_value::Value};

use json::{Writer, truncate_chars};
use stack::Exception;

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
/// separator). On error `out` is left as it was.
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
        (true, Kind::Server | Kind::Internal) => &[Role::LocalRootSegment],
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    fn of(k: i32) -> Kind {
        match k {
            1 => Kind::Internal,
            2 => Kind::Server,
            3 => Kind::Client,
            4 => Kind::Producer,
            5 => Kind::Consumer,
            _ => Kind::Unspecified,
        }
    }
}

/// Span attributes the translation reads, by the block that consumes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Key {
    Other,
    HttpMethod,
    HttpRequestMethod,
    HttpClientIp,
    HttpUserAgent,
    UserAgentOriginal,
    HttpStatusCode,
    HttpResponseStatusCode,
    HttpUrl,
    UrlFull,
    HttpScheme,
    UrlScheme,
    HttpHost,
    HttpTarget,
    HttpServerName,
    NetHostPort,
    HostName,
    NetHostName,
    NetPeerName,
    NetPeerPort,
    NetPeerIp,
    NetworkPeerAddress,
    ClientAddress,
    UrlPath,
    UrlQuery,
    ServerAddress,
    ServerPort,
    HttpStatusText,
    AwsOperation,
    RpcMethod,
    AwsAccountId,
    AwsRegion,
    AwsRequestId,
    AwsRequestId2,
    AwsQueueUrl,
    AwsQueueUrl2,
    AwsTableName,
    AwsTableName2,
    MessagingUrl,
    DynamoDbTableNames,
    DbConnectionString,
    DbSystem,
    DbSystemName,
    DbName,
    DbNamespace,
    DbStatement,
    DbQueryText,
    DbUser,
    AwsLocalService,
    AwsRemoteService,
    AwsRemoteOperation,
    RemoteTarget,
    K8sRemoteNamespace,
    AwsSpanKind,
    PeerService,
    AwsService,
    RpcSystem,
    RpcService,
    XrayInProgress,
    XrayAnnotations,
    EnduserId,
    PayloadSize,
    MessageType,
    Count,
}

const KEY_COUNT: usize = Key::Count as usize;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Http,
    Aws,
    Sql,
    StatusText,
    InProgress,
}

impl Key {
    fn of(key: &str) -> Key {
        match key {
            "http.method" => Key::HttpMethod,
            "http.request.method" => Key::HttpRequestMethod,
            "http.client_ip" => Key::HttpClientIp,
            "http.user_agent" => Key::HttpUserAgent,
            "user_agent.original" => Key::UserAgentOriginal,
            "http.status_code" => Key::HttpStatusCode,
            "http.response.status_code" => Key::HttpResponseStatusCode,
            "http.url" => Key::HttpUrl,
            "url.full" => Key::UrlFull,
            "http.scheme" => Key::HttpScheme,
            "url.scheme" => Key::UrlScheme,
            "http.host" => Key::HttpHost,
            "http.target" => Key::HttpTarget,
            "http.server_name" => Key::HttpServerName,
            "net.host.port" => Key::NetHostPort,
            "host.name" => Key::HostName,
            "net.host.name" => Key::NetHostName,
            "net.peer.name" => Key::NetPeerName,
            "net.peer.port" => Key::NetPeerPort,
            "net.peer.ip" => Key::NetPeerIp,
            "network.peer.address" => Key::NetworkPeerAddress,
            "client.address" => Key::ClientAddress,
            "url.path" => Key::UrlPath,
            "url.query" => Key::UrlQuery,
            "server.address" => Key::ServerAddress,
            "server.port" => Key::ServerPort,
            "http.status_text" => Key::HttpStatusText,
            "aws.operation" => Key::AwsOperation,
            "rpc.method" => Key::RpcMethod,
            "aws.account_id" => Key::AwsAccountId,
            "aws.region" => Key::AwsRegion,
            "aws.request_id" => Key::AwsRequestId,
            "aws.requestId" => Key::AwsRequestId2,
            "aws.queue_url" => Key::AwsQueueUrl,
            "aws.queue.url" => Key::AwsQueueUrl2,
            "aws.table_name" => Key::AwsTableName,
            "aws.table.name" => Key::AwsTableName2,
            "messaging.url" => Key::MessagingUrl,
            "aws.dynamodb.table_names" => Key::DynamoDbTableNames,
            "db.connection_string" => Key::DbConnectionString,
            "db.system" => Key::DbSystem,
            "db.system.name" => Key::DbSystemName,
            "db.name" => Key::DbName,
            "db.namespace" => Key::DbNamespace,
            "db.statement" => Key::DbStatement,
            "db.query.text" => Key::DbQueryText,
            "db.user" => Key::DbUser,
            "aws.local.service" => Key::AwsLocalService,
            "aws.remote.service" => Key::AwsRemoteService,
            "aws.remote.operation" => Key::AwsRemoteOperation,
            "remoteTarget" => Key::RemoteTarget,
            "K8s.RemoteNamespace" => Key::K8sRemoteNamespace,
            "aws.span.kind" => Key::AwsSpanKind,
            "peer.service" => Key::PeerService,
            "aws.service" => Key::AwsService,
            "rpc.system" => Key::RpcSystem,
            "rpc.service" => Key::RpcService,
            "aws.xray.inprogress" => Key::XrayInProgress,
            "aws.xray.annotations" => Key::XrayAnnotations,
            "enduser.id" => Key::EnduserId,
            "messaging.message_payload_size_bytes" => Key::PayloadSize,
            "message.type" => Key::MessageType,
            _ => Key::Other,
        }
    }

    /// The block whose presence removes this attribute from annotations and metadata.
    fn block(self) -> Block {
        use Key::*;
        match self {
            HttpMethod
            | HttpRequestMethod
            | HttpClientIp
            | HttpUserAgent
            | UserAgentOriginal
            | HttpStatusCode
            | HttpResponseStatusCode
            | HttpUrl
            | UrlFull
            | HttpScheme
            | UrlScheme
            | HttpHost
            | HttpTarget
            | HttpServerName
            | NetHostPort
            | HostName
            | NetHostName
            | NetPeerName
            | NetPeerPort
            | NetPeerIp
            | NetworkPeerAddress
            | ClientAddress
            | UrlPath
            | UrlQuery
            | ServerAddress
            | ServerPort => Block::Http,
            AwsOperation | RpcMethod | AwsAccountId | AwsRegion | AwsRequestId | AwsRequestId2
            | AwsQueueUrl | AwsQueueUrl2 | AwsTableName | AwsTableName2 => Block::Aws,
            DbConnectionString | DbSystem | DbSystemName | DbName | DbNamespace | DbStatement
            | DbQueryText | DbUser => Block::Sql,
            HttpStatusText => Block::StatusText,
            XrayInProgress => Block::InProgress,
            _ => Block::None,
        }
    }
}

fn str_of(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// An integer attribute. Deviation: numeric strings count too (the Collector reads them as 0).
fn int_of(v: &AnyValue) -> Option<i64> {
    match &v.value {
        Some(Value::IntValue(i)) => Some(*i),
        Some(Value::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

fn is_scalar(v: &AnyValue) -> bool {
    matches!(
        v.value,
        Some(
            Value::StringValue(_)
                | Value::IntValue(_)
                | Value::DoubleValue(_)
                | Value::BoolValue(_)
        )
    )
}

fn is_resource_key(listed: &str, key: &str) -> bool {
    listed.len() == RESOURCE_PREFIX.len() + key.len()
        && listed.starts_with(RESOURCE_PREFIX)
        && listed.ends_with(key)
}

/// The first value of each attribute the translation reads.
struct Known<'a> {
    values: [Option<&'a AnyValue>; KEY_COUNT],
    /// `Key` of each span attribute, in order.
    keys: Vec<Key>,
}

impl<'a> Known<'a> {
    fn new(attrs: &'a [KeyValue]) -> Self {
        let mut values = [None; KEY_COUNT];
        let mut keys = Vec::with_capacity(attrs.len());
        for kv in attrs {
            let k = Key::of(&kv.key);
            keys.push(k);
            if k != Key::Other && values[k as usize].is_none() {
                values[k as usize] = kv.value.as_ref().filter(|v| v.value.is_some());
            }
        }
        Known { values, keys }
    }

    fn get(&self, k: Key) -> Option<&'a AnyValue> {
        self.values[k as usize]
    }

    fn has(&self, k: Key) -> bool {
        self.values[k as usize].is_some()
    }

    fn str(&self, k: Key) -> Option<&'a str> {
        self.get(k).and_then(str_of)
    }

    /// A non-empty string (an empty one counts as absent where the Collector tests `== ""`).
    fn text(&self, k: Key) -> Option<&'a str> {
        self.str(k).filter(|s| !s.is_empty())
    }

    fn first_text(&self, keys: &[Key]) -> Option<&'a str> {
        keys.iter().find_map(|k| self.text(*k))
    }
}

/// The resource attributes the translation reads.
#[derive(Default)]
struct Res<'a> {
    attrs: &'a [KeyValue],
    provider: Option<&'a str>,
    platform: Option<&'a str>,
    account: Option<&'a str>,
    zone: Option<&'a str>,
    host_id: Option<&'a str>,
    host_type: Option<&'a str>,
    ami_id: Option<&'a str>,
    container: Option<&'a str>,
    pod: Option<&'a str>,
    namespace: Option<&'a str>,
    instance_id: Option<&'a str>,
    version: Option<&'a str>,
    image_tag: Option<&'a str>,
    sdk_name: Option<&'a str>,
    sdk_language: Option<&'a str>,
    sdk_version: Option<&'a str>,
    auto_version: Option<&'a str>,
    container_id: Option<&'a str>,
    cluster_name: Option<&'a str>,
    cluster_arn: Option<&'a str>,
    container_arn: Option<&'a str>,
    task_arn: Option<&'a str>,
    task_family: Option<&'a str>,
    launch_type: Option<&'a str>,
    log_groups: Option<&'a AnyValue>,
    log_group_arns: Option<&'a AnyValue>,
    service_name: Option<&'a str>,
}

impl<'a> Res<'a> {
    fn new(resource: &'a Resource) -> Self {
        let mut r = Res {
            attrs: &resource.attributes,
            ..Res::default()
        };
        for kv in &resource.attributes {
            let Some(v) = kv.value.as_ref() else { continue };
            let s = str_of(v);
            let slot = match kv.key.as_str() {
                "cloud.provider" => &mut r.provider,
                "cloud.platform" => &mut r.platform,
                "cloud.account.id" => &mut r.account,
                "cloud.availability_zone" => &mut r.zone,
                "host.id" => &mut r.host_id,
                "host.type" => &mut r.host_type,
                "host.image.id" => &mut r.ami_id,
                "container.name" => &mut r.container,
                "k8s.pod.name" => &mut r.pod,
                "service.namespace" => &mut r.namespace,
                "service.instance.id" => &mut r.instance_id,
                "service.version" => &mut r.version,
                "container.image.tag" => &mut r.image_tag,
                "telemetry.sdk.name" => &mut r.sdk_name,
                "telemetry.sdk.language" => &mut r.sdk_language,
                "telemetry.sdk.version" => &mut r.sdk_version,
                "telemetry.auto.version" | "telemetry.distro.version" => &mut r.auto_version,
                "container.id" => &mut r.container_id,
                "k8s.cluster.name" => &mut r.cluster_name,
                "aws.ecs.cluster.arn" => &mut r.cluster_arn,
                "aws.ecs.container.arn" => &mut r.container_arn,
                "aws.ecs.task.arn" => &mut r.task_arn,
                "aws.ecs.task.family" => &mut r.task_family,
                "aws.ecs.launchtype" => &mut r.launch_type,
                "service.name" => &mut r.service_name,
                "aws.log.group.names" => {
                    r.log_groups.get_or_insert(v);
                    continue;
                }
                "aws.log.group.arns" => {
                    r.log_group_arns.get_or_insert(v);
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = s;
            }
        }
        r
    }

    /// Collector: a resource whose `cloud.provider` is set and is not `aws` gets no AWS data.
    fn is_other_cloud(&self) -> bool {
        self.provider.is_some_and(|p| p != "aws")
    }

    /// Collector `determineAwsOrigin`.
    fn origin(&self) -> Option<&'static str> {
        if self.attrs.is_empty() || self.is_other_cloud() {
            return None;
        }
        Some(match self.platform? {
            "aws_app_runner" => "AWS::AppRunner::Service",
            "aws_eks" => "AWS::EKS::Container",
            "aws_elastic_beanstalk" => "AWS::ElasticBeanstalk::Environment",
            "aws_ec2" => "AWS::EC2::Instance",
            "aws_ecs" => match self.launch_type {
                Some("ec2") => "AWS::ECS::EC2",
                Some("fargate") => "AWS::ECS::Fargate",
                _ => "AWS::ECS::Container",
            },
            _ => return None,
        })
    }
}

#[derive(Clone, Copy)]
enum Port<'a> {
    Text(&'a str),
    Number(i64),
}

fn port_of(v: &AnyValue) -> Option<Port<'_>> {
    match &v.value {
        Some(Value::StringValue(s)) => Some(Port::Text(s)),
        Some(Value::IntValue(i)) => Some(Port::Number(*i)),
        _ => None,
    }
}

struct Url<'a> {
    full: Option<&'a str>,
    scheme: &'a str,
    host: &'a str,
    port: Option<Port<'a>>,
    /// `http.target`, or `url.path` (default `/`) plus the query.
    path: &'a str,
    query: Option<&'a str>,
}

/// The `http` block (Collector http.go), old and new HTTP semantic conventions.
struct Http<'a> {
    method: Option<&'a str>,
    client_ip: Option<&'a str>,
    x_forwarded_for: bool,
    user_agent: Option<&'a str>,
    status: Option<i64>,
    url: Option<Url<'a>>,
    content_length: i64,
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

impl<'a> Http<'a> {
    fn new(k: &Known<'a>, kind: Kind, span: &'a Span) -> Option<Self> {
        use Key::*;
        let has_http = [
            HttpMethod,
            HttpRequestMethod,
            HttpClientIp,
            HttpUserAgent,
            UserAgentOriginal,
            HttpStatusCode,
            HttpResponseStatusCode,
            HttpUrl,
            UrlFull,
            HttpScheme,
            UrlScheme,
            HttpHost,
            HttpTarget,
            HttpServerName,
            NetHostPort,
            UrlPath,
            UrlQuery,
        ]
        .iter()
        .any(|key| k.has(*key));
        if !has_http {
            return None;
        }
        let peer_address = k.str(NetworkPeerAddress).filter(|a| is_ip(a));
        let has_peer_addr = k.has(NetPeerIp) || peer_address.is_some();
        let client_ip = k
            .str(ClientAddress)
            .filter(|a| is_ip(a))
            .or_else(|| k.str(HttpClientIp))
            .or_else(|| k.str(NetPeerIp))
            .or(peer_address)
            .filter(|s| !s.is_empty());
        let has_url = [
            HttpUrl,
            UrlFull,
            HttpHost,
            HttpServerName,
            HostName,
            NetHostName,
            NetPeerName,
            NetPeerIp,
            ServerAddress,
        ]
        .iter()
        .any(|key| k.has(*key))
            || peer_address.is_some();
        let url = has_url.then(|| Url::new(k, kind));
        Some(Http {
            method: k.str(HttpMethod).or_else(|| k.str(HttpRequestMethod)),
            x_forwarded_for: client_ip.is_some() && !has_peer_addr,
            client_ip,
            user_agent: k.str(HttpUserAgent).or_else(|| k.str(UserAgentOriginal)),
            status: status_code(k),
            url,
            content_length: response_size(&span.attributes)
                .or_else(|| {
                    span.events
                        .iter()
                        .find_map(|e| response_size(&e.attributes))
                })
                .unwrap_or(0),
        })
    }
}

impl<'a> Url<'a> {
    fn new(k: &Known<'a>, kind: Kind) -> Self {
        use Key::*;
        let full = k.str(HttpUrl).or_else(|| k.str(UrlFull));
        let scheme = k
            .str(HttpScheme)
            .or_else(|| k.str(UrlScheme))
            .unwrap_or("http");
        let (host, port) = match k.str(HttpHost) {
            Some(host) => (host, None),
            None if kind == Kind::Server => (
                k.str(HttpServerName)
                    .or_else(|| k.str(NetHostName))
                    .or_else(|| k.str(HostName))
                    .or_else(|| k.str(ServerAddress))
                    .unwrap_or(""),
                k.get(NetHostPort)
                    .or_else(|| k.get(ServerPort))
                    .and_then(port_of),
            ),
            None => match k.str(NetPeerName).or_else(|| k.str(NetPeerIp)) {
                Some(host) => (host, k.get(NetPeerPort).and_then(port_of)),
                // Deviation: the Collector ignores server.address on client spans and writes
                // "http:///…"; new-convention clients without url.full name their server here.
                None => (
                    k.str(ServerAddress).unwrap_or(""),
                    k.get(ServerPort).and_then(port_of),
                ),
            },
        };
        let (path, query) = match k.str(HttpTarget) {
            Some(target) => (target, None),
            None => (k.str(UrlPath).unwrap_or("/"), k.str(UrlQuery)),
        };
        Url {
            full,
            scheme,
            host,
            port,
            path,
            query,
        }
    }
}

fn status_code(k: &Known<'_>) -> Option<i64> {
    k.get(Key::HttpStatusCode)
        .or_else(|| k.get(Key::HttpResponseStatusCode))
        .and_then(int_of)
}

/// Collector `extractResponseSizeFromAttributes`: a RECEIVED message's payload size.
fn response_size(attrs: &[KeyValue]) -> Option<i64> {
    let mut received = false;
    let mut size = None;
    for kv in attrs {
        match kv.key.as_str() {
            "message.type" => received = kv.value.as_ref().and_then(str_of) == Some("RECEIVED"),
            "messaging.message_payload_size_bytes" => size = kv.value.as_ref().and_then(int_of),
            _ => {}
        }
    }
    size.filter(|s| received && *s != 0)
}

enum Tables<'a> {
    None,
    One(&'a str),
    Many(&'a [AnyValue]),
}

/// The span part of the `aws` block (Collector aws.go).
struct AwsSpan<'a> {
    operation: Option<&'a str>,
    account: Option<&'a str>,
    region: Option<&'a str>,
    request_id: Option<&'a str>,
    queue_url: Option<&'a str>,
    tables: Tables<'a>,
}

impl<'a> AwsSpan<'a> {
    fn new(k: &Known<'a>) -> Self {
        use Key::*;
        let mut tables = match k.str(AwsTableName).or_else(|| k.str(AwsTableName2)) {
            Some(t) => Tables::One(t),
            None => Tables::None,
        };
        // The semantic-convention attributes win over the X-Ray SDK ones.
        match k.get(DynamoDbTableNames).and_then(|v| v.value.as_ref()) {
            Some(Value::ArrayValue(a)) if a.values.len() == 1 => {
                tables = Tables::One(str_of(&a.values[0]).unwrap_or(""));
            }
            Some(Value::ArrayValue(a)) if a.values.len() > 1 => tables = Tables::Many(&a.values),
            Some(Value::StringValue(s)) => tables = Tables::One(s),
            _ => {}
        }
        AwsSpan {
            operation: match k.get(AwsOperation) {
                Some(v) => str_of(v),
                None => k.str(RpcMethod),
            },
            account: k.str(AwsAccountId),
            region: k.str(AwsRegion),
            request_id: k.str(AwsRequestId).or_else(|| k.str(AwsRequestId2)),
            queue_url: k
                .str(MessagingUrl)
                .or_else(|| k.str(AwsQueueUrl))
                .or_else(|| k.str(AwsQueueUrl2)),
            tables,
        }
    }
}

/// The `sql` block (Collector sql.go); only for SQL database systems.
struct Sql<'a> {
    url: &'a str,
    connection: &'a str,
    database: &'a str,
    database_type: &'a str,
    user: Option<&'a str>,
    query: Option<&'a str>,
}

impl<'a> Sql<'a> {
    fn new(k: &Known<'a>, span: &'a Span) -> Option<Self> {
        use Key::*;
        // Deviation: the newer names (db.system.name, db.namespace, db.query.text) count too.
        let system = k.str(DbSystem).or_else(|| k.str(DbSystemName))?;
        let is_sql = matches!(
            system,
            "db2"
                | "derby"
                | "hive"
                | "mariadb"
                | "mssql"
                | "mysql"
                | "oracle"
                | "postgresql"
                | "sqlite"
                | "teradata"
                | "other_sql"
        );
        is_sql.then(|| Sql {
            // Collector: the span name is a more useful URL than the connection string.
            url: &span.name,
            connection: k.text(DbConnectionString).unwrap_or("localhost"),
            database: k.str(DbName).or_else(|| k.str(DbNamespace)).unwrap_or(""),
            database_type: system,
            user: k.str(DbUser),
            query: k.str(DbStatement).or_else(|| k.str(DbQueryText)),
        })
    }
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
    kind: Kind,
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
        let kind = Kind::of(span.kind);
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

/// The host of a URL-like string (`scheme://user@host:port/…` or `//host…`), as Go's
/// `url.Parse(..).Hostname()` finds it; `None` when there is no authority part.
fn url_host(s: &str) -> Option<&str> {
    let after = match s.find("://") {
        Some(i)
            if i > 0
                && s[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            &s[i + 3..]
        }
        _ => s.strip_prefix("//")?,
    };
    let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => hostport.split_once(':').map_or(hostport, |(h, _)| h),
    };
    (!host.is_empty()).then_some(host)
}

fn make_cause<'a>(
    span: &'a Span,
    k: &Known<'a>,
    res: &Res<'_>,
    kind: Kind,
    aws_sdk: bool,
    is_error: bool,
) -> Cause<'a> {
    let is_failure =
        |name: &str| name == "exception" || (aws_sdk && name == "HTTP request failure");
    if span.events.iter().any(|e| is_failure(&e.name)) {
        let remote = matches!(kind, Kind::Client | Kind::Producer);
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
        let service_like = matches!(kind, Kind::Server | Kind::Consumer)
            || (c.local_root && kind == Kind::Internal);
        let remote_like = matches!(kind, Kind::Client | Kind::Producer);
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
                !matches!(kind, Kind::Server | Kind::Consumer) && c.ids.parent.is_some()
            }
            Role::LocalRootDependency => true,
            Role::LocalRootSegment | Role::LocalRootService => false,
        };
        let mut namespace = if c.aws_sdk || from_aws_service {
            Some("aws")
        } else if matches!(kind, Kind::Client | Kind::Producer) {
            Some("remote")
        } else {
            None
        };
        if namespace.is_none()
            && subsegment
            && matches!(kind, Kind::Client | Kind::Producer | Kind::Consumer)
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
            Role::LocalRootDependency => kind != Kind::Consumer,
            Role::LocalRootService => kind == Kind::Consumer,
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
                    let clash = self.annotations.iter().any(|&(r, j)| {
                        same_annotation_key(self.annotation_source_key(r, j), key, keep_dots)
                    });
                    let verdict = if chars == 0 || chars > MAX_ANNOTATION_KEY_CHARS || clash {
                        report.annotations_not_indexable += 1;
                        Disp::Metadata
                    } else if self.annotations.len() >= opts.max_annotations {
                        report.annotations_over_cap += 1;
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

/// Renders one document, trimming it to `max_document_bytes` if it has to.
fn write_document(
    doc: &Doc<'_, '_>,
    out: &mut Vec<u8>,
    report: &mut Translated,
) -> Result<Range<usize>, TranslateError> {
    let begin = out.len();
    let limit = doc.c.opts.max_document_bytes;
    let mut trim = Trim::default();
    render(
        doc,
        &mut Writer::new(out, usize::MAX, false, usize::MAX),
        &mut trim,
    );
    let full = out.len() - begin;
    if full <= limit {
        return Ok(begin..out.len());
    }
    // Pass 2: everything but the metadata entries that do not fit.
    out.truncate(begin);
    trim = Trim::default();
    let mut w = Writer::new(out, limit, false, usize::MAX);
    render(doc, &mut w, &mut trim);
    if w.len() > limit {
        // Pass 3: also cap strings and keep, in priority order, whatever optional part fits.
        out.truncate(begin);
        trim = Trim::default();
        let mut w = Writer::new(out, limit, true, TRIMMED_STRING_CHARS);
        render(doc, &mut w, &mut trim);
        trim.strings_truncated = w.strings_truncated;
        let needed = w.len();
        if needed > limit {
            return Err(TranslateError::TooLarge {
                needed_bytes: needed,
                limit_bytes: limit,
            });
        }
    }
    trim.original_bytes = full;
    report.trim.get_or_insert_with(Trim::default).add(&trim);
    Ok(begin..out.len())
}

/// Writes `f` as one optional member; in budget mode it is rolled back (and counted) if it overflows.
fn optional(
    w: &mut Writer<'_>,
    first: &mut bool,
    check: bool,
    dropped: &mut u32,
    f: impl FnOnce(&mut Writer<'_>, &mut bool),
) -> bool {
    let mark = w.mark();
    let was_first = *first;
    f(w, first);
    if check && !w.fits() {
        w.rollback(mark);
        *first = was_first;
        *dropped += 1;
        return false;
    }
    true
}

fn render(d: &Doc<'_, '_>, w: &mut Writer<'_>, trim: &mut Trim) {
    let c = d.c;
    let budget = w.greedy_all;
    let mut first = true;
    w.byte(b'{');
    w.key(&mut first, "name");
    write_name(w, d.name);
    w.key(&mut first, "id");
    w.hex_id(&d.id);
    w.key(&mut first, "trace_id");
    w.byte(b'"');
    push_trace_id(w.out, &c.ids.trace);
    w.byte(b'"');
    w.key(&mut first, "start_time");
    w.time(c.span.start_time_unix_nano);
    if c.in_progress {
        w.key(&mut first, "in_progress");
        w.bool(true);
    } else {
        w.key(&mut first, "end_time");
        // Deviation: an end before the start is clamped (X-Ray rejects it).
        w.time(c.span.end_time_unix_nano.max(c.span.start_time_unix_nano));
    }
    if let Some(parent) = &d.parent {
        w.key(&mut first, "parent_id");
        w.hex_id(parent);
    }
    if d.subsegment {
        w.key(&mut first, "type");
        w.str("subsegment");
    }
    for (key, value) in [
        ("error", c.error),
        ("fault", c.fault),
        ("throttle", c.throttle),
    ] {
        w.key(&mut first, key);
        w.bool(value);
    }
    let mut blocks = 0;
    if let Some(ns) = d.namespace {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "namespace");
            w.str(ns);
        });
    }
    if let Some(origin) = c.res.origin() {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "origin");
            w.str(origin);
        });
    }
    if let Some(user) = c.user.filter(|u| !u.is_empty()) {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "user");
            w.str_capped(user);
        });
    }
    // Collector service.go: service.version, else the container image tag.
    if let Some(version) = c.res.version.or(c.res.image_tag).filter(|v| !v.is_empty()) {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            w.key(f, "service");
            w.raw(b"{\"version\":");
            w.str_capped(version);
            w.byte(b'}');
        });
    }
    if let Some(http) = c.http.as_ref().filter(|_| d.role != Role::LocalRootService) {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            write_http(w, f, http)
        });
    }
    if let Some(aws) = &c.aws {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            write_aws(w, f, d, aws)
        });
    }
    if let Some(sql) = &c.sql {
        optional(w, &mut first, budget, &mut blocks, |w, f| {
            write_sql(w, f, sql)
        });
    }
    trim.blocks_dropped = blocks;
    // Budget order: annotations (indexed, small) before exceptions, links and metadata.
    write_annotations(w, &mut first, d, trim);
    write_cause(w, &mut first, d, trim);
    if d.links {
        write_links(w, &mut first, d, trim);
    }
    write_metadata(w, &mut first, d, trim);
    w.byte(b'}');
}

/// The name, sanitised (Deviation: attribute-derived names too) and cut to 200 characters.
fn write_name(w: &mut Writer<'_>, name: Name<'_>) {
    let mut buf = [0u8; 4];
    let mut kept = 0;
    w.byte(b'"');
    let chars = name.main.chars().chain(
        name.host
            .into_iter()
            .flat_map(|h| "@".chars().chain(h.chars())),
    );
    for ch in chars.filter(|c| name_char_ok(*c)) {
        if kept == MAX_NAME_CHARS {
            break;
        }
        let s = ch.encode_utf8(&mut buf);
        json::escape_into(w.out, s);
        kept += 1;
    }
    if kept == 0 {
        w.raw(DEFAULT_NAME.as_bytes());
    }
    w.byte(b'"');
}

fn write_http(w: &mut Writer<'_>, first: &mut bool, h: &Http<'_>) {
    w.key(first, "http");
    w.byte(b'{');
    let mut f = true;
    let has_request =
        h.method.is_some() || h.client_ip.is_some() || h.user_agent.is_some() || h.url.is_some();
    if has_request {
        w.key(&mut f, "request");
        w.byte(b'{');
        let mut r = true;
        if let Some(m) = h.method {
            w.key(&mut r, "method");
            w.str_capped(m);
        }
        if let Some(url) = &h.url {
            w.key(&mut r, "url");
            write_url(w, url);
        }
        if let Some(ua) = h.user_agent {
            w.key(&mut r, "user_agent");
            w.str_capped(ua);
        }
        if let Some(ip) = h.client_ip {
            w.key(&mut r, "client_ip");
            w.str_capped(ip);
        }
        if h.x_forwarded_for {
            w.key(&mut r, "x_forwarded_for");
            w.bool(true);
        }
        w.byte(b'}');
    }
    // Deviation: content_length is left out when unknown (the Collector writes 0).
    if h.status.is_some() || h.content_length != 0 {
        w.key(&mut f, "response");
        w.byte(b'{');
        let mut r = true;
        if let Some(s) = h.status {
            w.key(&mut r, "status");
            w.int(s);
        }
        if h.content_length != 0 {
            w.key(&mut r, "content_length");
            w.int(h.content_length);
        }
        w.byte(b'}');
    }
    w.byte(b'}');
}

fn write_url(w: &mut Writer<'_>, u: &Url<'_>) {
    if let Some(full) = u.full {
        w.str_capped(full);
        return;
    }
    let mut digits = itoa::Buffer::new();
    let port = match u.port {
        Some(Port::Text(t)) => t,
        Some(Port::Number(n)) => digits.format(n),
        None => "",
    };
    let default_port =
        (u.scheme == "http" && port == "80") || (u.scheme == "https" && port == "443");
    let (colon, port) = if port.is_empty() || default_port {
        ("", "")
    } else {
        (":", port)
    };
    let (mark, query) = match u.query {
        Some(q) if q.starts_with('?') => ("", q),
        Some(q) => ("?", q),
        None => ("", ""),
    };
    w.str_parts(&[u.scheme, "://", u.host, colon, port, u.path, mark, query]);
}

fn write_aws(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, a: &AwsSpan<'_>) {
    let r = d.c.res;
    // Collector: the LOCAL_ROOT service segment loses the call's fields, account included.
    let call_fields = d.role != Role::LocalRootService;
    w.key(first, "aws");
    w.byte(b'{');
    let mut f = true;
    fn text(w: &mut Writer<'_>, f: &mut bool, key: &str, v: Option<&str>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            w.key(f, key);
            w.str_capped(v);
        }
    }
    if call_fields {
        text(w, &mut f, "account_id", a.account.or(r.account));
        text(w, &mut f, "operation", a.operation);
        text(w, &mut f, "region", a.region);
        text(w, &mut f, "request_id", a.request_id);
        text(w, &mut f, "queue_url", a.queue_url);
        match a.tables {
            Tables::One(t) => text(w, &mut f, "table_name", Some(t)),
            Tables::Many(list) => {
                w.key(&mut f, "table_names");
                w.byte(b'[');
                for (i, t) in list.iter().enumerate() {
                    if i > 0 {
                        w.byte(b',');
                    }
                    w.str_capped(str_of(t).unwrap_or(""));
                }
                w.byte(b']');
            }
            Tables::None => {}
        }
    }
    let platform = r.platform.unwrap_or("");
    if platform == "aws_elastic_beanstalk" && r.instance_id.is_some_and(|i| !i.is_empty()) {
        w.key(&mut f, "elastic_beanstalk");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "environment_name", r.namespace);
        text(w, &mut g, "version_label", r.version);
        w.key(&mut g, "deployment_id");
        w.int(r.instance_id.and_then(|i| i.parse().ok()).unwrap_or(0));
        w.byte(b'}');
    }
    write_log_groups(w, &mut f, r, &d.c.opts.log_group_names);
    if platform == "aws_ecs" {
        w.key(&mut f, "ecs");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "container", r.container);
        text(w, &mut g, "container_id", r.container_id);
        text(w, &mut g, "task_arn", r.task_arn);
        text(w, &mut g, "task_family", r.task_family);
        text(w, &mut g, "cluster_arn", r.cluster_arn);
        text(w, &mut g, "container_arn", r.container_arn);
        text(w, &mut g, "availability_zone", r.zone);
        text(w, &mut g, "launch_type", r.launch_type);
        w.byte(b'}');
    }
    if platform == "aws_ec2" || r.host_id.is_some_and(|h| !h.is_empty()) {
        w.key(&mut f, "ec2");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "instance_id", r.host_id);
        text(w, &mut g, "availability_zone", r.zone);
        text(w, &mut g, "instance_size", r.host_type);
        text(w, &mut g, "ami_id", r.ami_id);
        w.byte(b'}');
    }
    if platform == "aws_eks" || r.cluster_name.is_some_and(|c| !c.is_empty()) {
        w.key(&mut f, "eks");
        w.byte(b'{');
        let mut g = true;
        text(w, &mut g, "cluster_name", r.cluster_name);
        text(w, &mut g, "pod", r.pod);
        text(w, &mut g, "container_id", r.container_id);
        w.byte(b'}');
    }
    w.key(&mut f, "xray");
    w.byte(b'{');
    let mut g = true;
    match (
        r.sdk_name.filter(|s| !s.is_empty()),
        r.sdk_language.filter(|s| !s.is_empty()),
    ) {
        (Some(name), Some(lang)) => {
            w.key(&mut g, "sdk");
            w.str_parts(&[name, " for ", lang]);
        }
        (name, _) => text(w, &mut g, "sdk", name),
    }
    text(w, &mut g, "sdk_version", r.sdk_version);
    w.key(&mut g, "auto_instrumentation");
    w.bool(r.auto_version.is_some_and(|v| !v.is_empty()));
    w.byte(b'}');
    w.byte(b'}');
}

/// `cloudwatch_logs`: log group ARNs, else names, else the configured names. A string value may
/// list several, separated by `&` (how OTEL_RESOURCE_ATTRIBUTES carries lists).
fn write_log_groups(w: &mut Writer<'_>, first: &mut bool, r: &Res<'_>, configured: &[String]) {
    fn items(v: &AnyValue) -> Vec<&str> {
        match &v.value {
            Some(Value::StringValue(s)) => s.split('&').filter(|p| !p.is_empty()).collect(),
            Some(Value::ArrayValue(a)) => {
                a.values.iter().map(|v| str_of(v).unwrap_or("")).collect()
            }
            _ => Vec::new(),
        }
    }
    let arns = r.log_group_arns.map(items).unwrap_or_default();
    let (list, are_arns) = if !arns.is_empty() {
        (arns, true)
    } else {
        let names = r.log_groups.map(items).unwrap_or_default();
        if names.is_empty() {
            (configured.iter().map(String::as_str).collect(), false)
        } else {
            (names, false)
        }
    };
    if list.is_empty() {
        return;
    }
    w.key(first, "cloudwatch_logs");
    w.byte(b'[');
    for (i, item) in list.iter().enumerate() {
        if i > 0 {
            w.byte(b',');
        }
        let mut f = true;
        w.byte(b'{');
        w.key(&mut f, "log_group");
        if are_arns {
            // arn:aws:logs:<region>:<account>:log-group:<name>[:*]
            w.str_capped(item.split(':').nth(6).unwrap_or(item));
            w.key(&mut f, "arn");
        }
        w.str_capped(item);
        w.byte(b'}');
    }
    w.byte(b']');
}

fn write_sql(w: &mut Writer<'_>, first: &mut bool, s: &Sql<'_>) {
    w.key(first, "sql");
    w.byte(b'{');
    let mut f = true;
    w.key(&mut f, "url");
    w.str_capped(s.url);
    w.key(&mut f, "connection_string");
    w.str_parts(&[s.connection, "/", s.database]);
    w.key(&mut f, "database_type");
    w.str_capped(s.database_type);
    if let Some(user) = s.user.filter(|u| !u.is_empty()) {
        w.key(&mut f, "user");
        w.str_capped(user);
    }
    if let Some(q) = s.query.filter(|q| !q.is_empty()) {
        w.key(&mut f, "sanitized_query");
        w.str_capped(q);
    }
    w.byte(b'}');
}

fn write_cause(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, trim: &mut Trim) {
    let budget = w.greedy_all;
    let exception_id = |i: usize| derived_id(&d.c.ids.span, (d.salt << 32) | (i as u64 + 1));
    match &d.c.cause {
        Cause::None => {}
        Cause::Message(message) => {
            if message.is_empty() {
                return;
            }
            let mut dropped = 0;
            optional(w, first, budget, &mut dropped, |w, f| {
                w.key(f, "cause");
                w.raw(b"{\"exceptions\":[{\"id\":");
                w.hex_id(&exception_id(0));
                w.raw(b",\"message\":");
                w.str_capped(message);
                w.raw(b"}]}");
            });
            trim.exceptions_dropped += dropped;
        }
        Cause::Exceptions(list) => {
            let mark = w.mark();
            let was_first = *first;
            w.key(first, "cause");
            w.raw(b"{\"exceptions\":[");
            let mut written = 0;
            for (i, e) in list.iter().enumerate() {
                let item = w.mark();
                if written > 0 {
                    w.byte(b',');
                }
                let mut f = true;
                w.byte(b'{');
                w.key(&mut f, "id");
                w.hex_id(&exception_id(i));
                if !e.ty.is_empty() {
                    w.key(&mut f, "type");
                    w.str_capped(&e.ty);
                }
                if !e.message.is_empty() {
                    w.key(&mut f, "message");
                    w.str_capped(&e.message);
                }
                w.key(&mut f, "remote");
                w.bool(e.remote);
                if let Some(cause) = e.cause {
                    w.key(&mut f, "cause");
                    w.hex_id(&exception_id(cause));
                }
                if budget && !w.fits() {
                    w.rollback(item);
                    trim.exceptions_dropped += 1;
                    trim.stack_frames_dropped += e.stack.len() as u32;
                    continue;
                }
                let mut omitted = 0u32;
                if !e.stack.is_empty() {
                    let stack = w.mark();
                    let stack_first = f;
                    w.key(&mut f, "stack");
                    w.byte(b'[');
                    let mut frames = 0;
                    for frame in &e.stack {
                        let at = w.mark();
                        if frames > 0 {
                            w.byte(b',');
                        }
                        let mut g = true;
                        w.byte(b'{');
                        if !frame.path.is_empty() {
                            w.key(&mut g, "path");
                            w.str_capped(frame.path);
                        }
                        if frame.line != 0 {
                            w.key(&mut g, "line");
                            w.int(frame.line);
                        }
                        if !frame.label.is_empty() {
                            w.key(&mut g, "label");
                            w.str_capped(frame.label);
                        }
                        w.byte(b'}');
                        if budget && !w.fits() {
                            w.rollback(at);
                            omitted += 1;
                        } else {
                            frames += 1;
                        }
                    }
                    if frames == 0 {
                        w.rollback(stack);
                        f = stack_first;
                    } else {
                        w.byte(b']');
                    }
                }
                if omitted > 0 {
                    // X-Ray's own field for frames left out of `stack`.
                    w.key(&mut f, "truncated");
                    w.int(i64::from(omitted));
                    trim.stack_frames_dropped += omitted;
                }
                w.byte(b'}');
                written += 1;
            }
            if written == 0 {
                w.rollback(mark);
                *first = was_first;
            } else {
                w.raw(b"]}");
            }
        }
    }
}

fn write_annotations(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, trim: &mut Trim) {
    if d.annotations.is_empty() {
        return;
    }
    let budget = w.greedy_all;
    let keep_dots = d.c.opts.annotation_keys_keep_dots;
    let mark = w.mark();
    let was_first = *first;
    w.key(first, "annotations");
    w.byte(b'{');
    let mut f = true;
    for &(resource, i) in &d.annotations {
        let (prefix, key) = d.annotation_source_key(resource, i);
        optional(w, &mut f, budget, &mut trim.annotations_dropped, |w, f| {
            if !*f {
                w.byte(b',');
            }
            *f = false;
            w.byte(b'"');
            let mut buf = [0u8; 4];
            for ch in prefix.chars().chain(key.chars()) {
                w.raw(
                    annotation_key_char(ch, keep_dots)
                        .encode_utf8(&mut buf)
                        .as_bytes(),
                );
            }
            w.raw(b"\":");
            match d.annotation_value(resource, i).value.as_ref() {
                Some(Value::StringValue(s)) => w.str_max(s, MAX_ANNOTATION_VALUE_CHARS),
                Some(Value::IntValue(n)) => w.int(*n),
                Some(Value::DoubleValue(x)) => w.float(*x),
                Some(Value::BoolValue(b)) => w.bool(*b),
                _ => w.raw(b"null"),
            }
        });
    }
    finish_object(w, first, mark, was_first, f);
}

/// Closes an object opened after `mark`, or removes it when nothing went in.
fn finish_object(
    w: &mut Writer<'_>,
    first: &mut bool,
    mark: usize,
    was_first: bool,
    inner_first: bool,
) {
    if inner_first {
        w.rollback(mark);
        *first = was_first;
    } else {
        w.byte(b'}');
    }
}

fn write_links(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, trim: &mut Trim) {
    let budget = w.greedy_all;
    let mut links = d.c.span.links.iter().filter(|l| d.link_ok(l)).peekable();
    if links.peek().is_none() {
        return;
    }
    let mark = w.mark();
    let was_first = *first;
    w.key(first, "links");
    w.byte(b'[');
    let mut written = false;
    for link in links {
        let mut f = !written;
        let ok = optional(w, &mut f, budget, &mut trim.links_dropped, |w, f| {
            if !*f {
                w.byte(b',');
            }
            *f = false;
            w.raw(b"{\"trace_id\":\"");
            push_trace_id(w.out, link.trace_id[..].try_into().unwrap_or(&[0; 16]));
            w.raw(b"\",\"id\":");
            w.hex_id(&link.span_id);
            let attrs = link
                .attributes
                .iter()
                .filter(|kv| kv.value.as_ref().is_some_and(|v| v.value.is_some()));
            let mut g = true;
            for kv in attrs {
                if g {
                    w.raw(b",\"attributes\":{");
                }
                w.key_escaped(&mut g, &kv.key);
                w.any_value(kv.value.as_ref().unwrap_or(&EMPTY));
            }
            if !g {
                w.byte(b'}');
            }
            w.byte(b'}');
        });
        written |= ok;
    }
    if written {
        w.byte(b']');
    } else {
        w.rollback(mark);
        *first = was_first;
    }
}

fn write_metadata(w: &mut Writer<'_>, first: &mut bool, d: &Doc<'_, '_>, trim: &mut Trim) {
    let c = d.c;
    // Collector: the LOCAL_ROOT service segment keeps only the otel.resource.* entries.
    let span_entries = d.role != Role::LocalRootService;
    let mark = w.mark();
    let was_first = *first;
    w.key(first, "metadata");
    w.byte(b'{');
    let mut outer = true;
    // The default namespace.
    let default_mark = w.mark();
    w.key(&mut outer, "default");
    w.byte(b'{');
    let mut f = true;
    // Metadata entries are always checked: they are the first thing trimmed.
    let dropped = &mut trim.metadata_dropped;
    if span_entries {
        for (kv, disp) in c.span.attributes.iter().zip(&d.span_disp) {
            let value = kv.value.as_ref().unwrap_or(&EMPTY);
            match disp {
                Disp::Metadata => {
                    optional(w, &mut f, true, dropped, |w, f| {
                        w.key_escaped(f, &kv.key);
                        w.any_value(value);
                    });
                }
                Disp::Namespace => {
                    let ns = &kv.key[METADATA_PREFIX.len()..];
                    match parse_object(value) {
                        Some(map) if ns.eq_ignore_ascii_case("default") => {
                            for (k, v) in &map {
                                optional(w, &mut f, true, dropped, |w, f| {
                                    w.key_escaped(f, k);
                                    let _ = serde_json::to_writer(&mut *w.out, v);
                                });
                            }
                        }
                        Some(_) => {}
                        // Collector: text that is not a JSON object stays as it is.
                        None => {
                            optional(w, &mut f, true, dropped, |w, f| {
                                w.key_escaped(f, &kv.key);
                                w.any_value(value);
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for (kv, disp) in c.res.attrs.iter().zip(&d.res_disp) {
        if *disp == Disp::Metadata {
            optional(w, &mut f, true, dropped, |w, f| {
                if !*f {
                    w.byte(b',');
                }
                *f = false;
                w.byte(b'"');
                w.raw(RESOURCE_PREFIX.as_bytes());
                json::escape_into(w.out, &kv.key);
                w.raw(b"\":");
                w.any_value(kv.value.as_ref().unwrap_or(&EMPTY));
            });
        }
    }
    if f {
        w.rollback(default_mark);
        outer = true;
    } else {
        w.byte(b'}');
    }
    // Named namespaces from aws.xray.metadata.<namespace>.
    if span_entries {
        for (kv, disp) in c.span.attributes.iter().zip(&d.span_disp) {
            if *disp != Disp::Namespace {
                continue;
            }
            let ns = &kv.key[METADATA_PREFIX.len()..];
            if ns.eq_ignore_ascii_case("default") {
                continue;
            }
            if let Some(map) = parse_object(kv.value.as_ref().unwrap_or(&EMPTY)) {
                optional(w, &mut outer, true, dropped, |w, f| {
                    w.key_escaped(f, ns);
                    let _ = serde_json::to_writer(&mut *w.out, &map);
                });
            }
        }
    }
    finish_object(w, first, mark, was_first, outer);
}

fn parse_object(v: &AnyValue) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_str(str_of(v)?).ok()
}

#[cfg(test)]
mod tests;
