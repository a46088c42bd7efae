//! Planning a span's document(s): everything derived once from the span (IDs, names, kind,
//! `cause`), which role each document plays, and where each attribute goes (annotation,
//! metadata, a block, or nowhere). `write` renders a plan; it does not decide.

use crate::model::SpanKind;
use crate::proto::{AnyValue, Span, any_value::Value};

use super::attrs::{Block, Key, Known, Res, is_resource_key, is_scalar, str_of};
use super::blocks::{AwsSpan, Http, Sql, status_code, url_host};
use super::json::{Writer, truncate_chars};
use super::stack::Exception;
use super::*;

#[derive(Clone, Copy)]
pub(super) struct Ids {
    pub(super) trace: [u8; 16],
    pub(super) span: [u8; 8],
    pub(super) parent: Option<[u8; 8]>,
}

impl Ids {
    pub(super) fn of(span: &Span) -> Result<Ids, TranslateError> {
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
pub(super) fn derived_id(span: &[u8; 8], n: u64) -> [u8; 8] {
    let mut z = u64::from_be_bytes(*span) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 { 1u64 } else { z }.to_be_bytes()
}

/// Where `cause` comes from.
pub(super) enum Cause<'a> {
    None,
    Exceptions(Vec<Exception<'a>>),
    /// Status ERROR without exception events: its message (or `http.status_text`).
    Message(&'a str),
}

/// A segment name in up to two pieces (`db@host`), sanitised when written.
#[derive(Clone, Copy)]
pub(super) struct Name<'a> {
    pub(super) main: &'a str,
    pub(super) host: Option<&'a str>,
}

/// Everything derived once from the span, shared by the one or two documents it becomes.
pub(super) struct Ctx<'a> {
    pub(super) span: &'a Span,
    pub(super) res: &'a Res<'a>,
    pub(super) opts: &'a TranslateOptions,
    pub(super) known: Known<'a>,
    pub(super) ids: Ids,
    pub(super) kind: SpanKind,
    pub(super) local_root: bool,
    pub(super) aws_sdk: bool,
    pub(super) in_progress: bool,
    pub(super) error: bool,
    pub(super) fault: bool,
    pub(super) throttle: bool,
    pub(super) http: Option<Http<'a>>,
    pub(super) aws: Option<AwsSpan<'a>>,
    pub(super) sql: Option<Sql<'a>>,
    pub(super) cause: Cause<'a>,
    pub(super) user: Option<&'a str>,
    /// Per-span `aws.xray.annotations`: more keys to index.
    pub(super) annotate: &'a [AnyValue],
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        span: &'a Span,
        res: &'a Res<'a>,
        opts: &'a TranslateOptions,
        ids: Ids,
    ) -> Self {
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
    pub(super) fn consumes(&self, key: Key, v: &AnyValue) -> bool {
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

    pub(super) fn listed_for_annotation(&self, key: &str, resource: bool) -> bool {
        self.annotate.iter().filter_map(str_of).any(|k| {
            if resource {
                is_resource_key(k, key)
            } else {
                k == key
            }
        })
    }

    pub(super) fn remote_service(&self) -> Option<&'a str> {
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
    pub(super) fn name(&self, local: bool, remote: bool, resource: bool) -> (Name<'a>, bool) {
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

pub(super) fn make_cause<'a>(
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
pub(super) enum Role {
    Normal,
    /// LOCAL_ROOT SERVER/INTERNAL span: always a segment.
    LocalRootSegment,
    /// LOCAL_ROOT CLIENT/PRODUCER/CONSUMER span, part 1: the call, as a subsegment of part 2.
    LocalRootDependency,
    /// Part 2: the local service, as a segment with a derived ID.
    LocalRootService,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disp {
    Skip,
    Metadata,
    /// `aws.xray.metadata.<namespace>` JSON.
    Namespace,
    Annotation,
    /// An annotation candidate, by priority: 0 listed, 1 index-all span attribute, 2 index-all resource.
    Candidate(u8),
}

/// One document's plan.
pub(super) struct Doc<'c, 'a> {
    pub(super) c: &'c Ctx<'a>,
    pub(super) role: Role,
    pub(super) id: [u8; 8],
    pub(super) parent: Option<[u8; 8]>,
    pub(super) name: Name<'a>,
    pub(super) subsegment: bool,
    pub(super) namespace: Option<&'static str>,
    pub(super) store_resource: bool,
    pub(super) links: bool,
    pub(super) salt: u64,
    pub(super) span_disp: Vec<Disp>,
    pub(super) res_disp: Vec<Disp>,
    /// Annotations in write order: (from the resource, attribute index).
    pub(super) annotations: Vec<(bool, usize)>,
}

impl<'c, 'a> Doc<'c, 'a> {
    pub(super) fn new(c: &'c Ctx<'a>, role: Role, salt: u64, report: &mut Translated) -> Self {
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

    pub(super) fn link_ok(&self, link: &crate::proto::span::Link) -> bool {
        link.trace_id.len() == 16
            && link.span_id.len() == 8
            && link.trace_id.iter().any(|b| *b != 0)
            && link.span_id.iter().any(|b| *b != 0)
            // Deviation: the Collector fails the whole span on a refused link trace ID.
            && (self.c.opts.trace_id_policy == TraceIdPolicy::PassThrough
                || epoch_is_recent(&link.trace_id, self.c.opts))
    }

    /// Collector makeXRayAttributes: which attributes become annotations, which metadata.
    pub(super) fn plan_attributes(&mut self, report: &mut Translated) {
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
    pub(super) fn annotation_source_key(
        &self,
        resource: bool,
        i: usize,
    ) -> (&'static str, &'a str) {
        if resource {
            (RESOURCE_PREFIX, &self.c.res.attrs[i].key)
        } else {
            ("", &self.c.span.attributes[i].key)
        }
    }

    pub(super) fn annotation_value(&self, resource: bool, i: usize) -> &'a AnyValue {
        let kv = if resource {
            &self.c.res.attrs[i]
        } else {
            &self.c.span.attributes[i]
        };
        kv.value.as_ref().unwrap_or(&EMPTY)
    }
}

pub(super) static EMPTY: AnyValue = AnyValue { value: None };

/// Collector fixAnnotationKey: ASCII letters and digits stay (and `.` when allowed), the rest become `_`.
pub(super) fn annotation_key_char(c: char, keep_dots: bool) -> char {
    if c.is_ascii_alphanumeric() || c == '_' || (keep_dots && c == '.') {
        c
    } else {
        '_'
    }
}

pub(super) fn same_annotation_key(a: (&str, &str), b: (&str, &str), keep_dots: bool) -> bool {
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
