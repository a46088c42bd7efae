//! X-Ray SDK documents as OTLP spans, so that span metrics, the local store and the console see
//! X-Ray SDK services like the others. The rules follow the Collector's awsxrayreceiver:
//! a segment is a SERVER span, a subsegment in the `aws` or `remote` namespace a CLIENT span,
//! any other an INTERNAL span; nested subsegments are flattened with their parent's ID;
//! `http`, `aws` and `sql` become the attributes the X-Ray exporter reads back; `cause`
//! becomes exception events; annotations stay attributes (listed in `aws.xray.annotations`)
//! and metadata becomes `aws.xray.metadata.<namespace>` JSON strings.
//!
//! In-progress (sub)segments have no view: the SDK sends them again complete, and a view of
//! both would count the work twice in span metrics.
//!
//! The view is written as protobuf field by field (`proto::wire`), not built as prost structs
//! and then encoded: building and encoding them took a quarter of the port's CPU.

use std::fmt::Write as _;

use serde_json::Value;

use super::datagram::{Annotation, Segment, Sql};
use crate::proto::wire;

const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;
const STATUS_ERROR: u64 = 2;

// Field numbers, from opentelemetry-proto (trace.proto, common.proto, resource.proto).
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START: u32 = 7;
const SPAN_END: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_EVENTS: u32 = 11;
const SPAN_STATUS: u32 = 15;
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
const ANY_ARRAY: u32 = 5;
const ARRAY_VALUES: u32 = 1;

/// Span bytes kept between bursts; a burst of larger documents gets a fresh buffer after it.
const RETAINED_BYTES: usize = 256 * 1024;

/// Writes one OTLP request from the documents of one burst of datagrams.
#[derive(Debug, Default)]
pub struct SpanViews {
    /// The request's `ResourceSpans` fields written so far.
    out: Vec<u8>,
    /// The open group: its `Resource` message, and its spans (`ScopeSpans.spans` fields).
    resource: Vec<u8>,
    spans: Vec<u8>,
    /// The resource of the document being added, to compare with the open group's.
    next_resource: Vec<u8>,
    count: usize,
}

impl SpanViews {
    /// Adds the complete (sub)segments of one document; returns how many spans it made.
    /// `service` names the service of an independent subsegment, which does not say it.
    pub fn add(&mut self, seg: &Segment<'_>, service: Option<&str>) -> usize {
        let Some(trace_id) = seg.trace_id.as_deref().and_then(trace_id_bytes) else {
            return 0;
        };
        let independent_subsegment = seg.kind.as_deref() == Some("subsegment");
        self.next_resource.clear();
        resource(
            seg,
            independent_subsegment,
            service,
            &mut self.next_resource,
        );
        // Documents of one burst mostly come from one service: they share its resource, which
        // is then written, decoded and indexed once instead of once per document.
        if self.next_resource != self.resource {
            self.close_group();
            std::mem::swap(&mut self.resource, &mut self.next_resource);
        }
        let parent = seg.parent_id.as_deref().and_then(span_id_bytes);
        let n = flatten(
            seg,
            !independent_subsegment,
            &trace_id,
            parent,
            &mut self.spans,
        );
        self.count += n;
        n
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The request's protobuf encoding; the builder is empty again afterwards.
    pub fn take_encoded(&mut self) -> Vec<u8> {
        self.close_group();
        self.count = 0;
        if self.spans.capacity() > RETAINED_BYTES {
            self.spans = Vec::new();
        }
        std::mem::take(&mut self.out)
    }

    /// Writes the open group's spans (if any) as one `ResourceSpans` with one `ScopeSpans`.
    fn close_group(&mut self) {
        if self.spans.is_empty() {
            return;
        }
        let resource = wire::field_len(RESOURCE_SPANS_RESOURCE, self.resource.len());
        let scope = wire::field_len(RESOURCE_SPANS_SCOPE_SPANS, self.spans.len());
        wire::len_prefix(&mut self.out, REQUEST_RESOURCE_SPANS, resource + scope);
        wire::bytes(&mut self.out, RESOURCE_SPANS_RESOURCE, &self.resource);
        wire::bytes(&mut self.out, RESOURCE_SPANS_SCOPE_SPANS, &self.spans);
        self.spans.clear();
    }
}

/// Writes the spans of `seg` and its subsegments (children first) as `ScopeSpans.spans`
/// fields; returns how many.
fn flatten(
    seg: &Segment<'_>,
    is_segment: bool,
    trace_id: &[u8; 16],
    parent: Option<[u8; 8]>,
    out: &mut Vec<u8>,
) -> usize {
    let Some(id) = seg.id.as_deref().and_then(span_id_bytes) else {
        return 0;
    };
    let mut n = 0;
    for sub in seg.subsegments.iter().flatten() {
        n += flatten(sub, false, trace_id, Some(id), out);
    }
    let (Some(start), Some(end)) = (seg.start_time, seg.end_time) else {
        return n;
    };
    if seg.in_progress == Some(true) {
        return n;
    }
    let kind = match seg.namespace.as_deref() {
        _ if is_segment => KIND_SERVER,
        Some("aws" | "remote") => KIND_CLIENT,
        _ => KIND_INTERNAL,
    };
    let span = wire::begin_large(out, SCOPE_SPANS_SPANS);
    wire::bytes(out, SPAN_TRACE_ID, trace_id);
    wire::bytes(out, SPAN_SPAN_ID, &id);
    if let Some(p) = parent {
        wire::bytes(out, SPAN_PARENT_SPAN_ID, &p);
    }
    let name = seg.name.as_deref().unwrap_or_default();
    if !name.is_empty() {
        wire::bytes(out, SPAN_NAME, name.as_bytes());
    }
    wire::varint(out, SPAN_KIND, kind as u64);
    wire::fixed64(out, SPAN_START, unix_nanos(start));
    wire::fixed64(out, SPAN_END, unix_nanos(end));
    attributes(seg, out);
    let message = exception_events(seg, unix_nanos(end), out);
    // A fault is the server's error; `error` (4xx) and `throttle` (429) are the caller's, so
    // the span's status stays unset, as OpenTelemetry's HTTP conventions have it for servers.
    if seg.fault == Some(true) {
        let status = wire::begin(out, SPAN_STATUS);
        if let Some(m) = message.filter(|m| !m.is_empty()) {
            wire::bytes(out, STATUS_MESSAGE, m.as_bytes());
        }
        wire::varint(out, STATUS_CODE, STATUS_ERROR);
        wire::end(out, status);
    }
    wire::end(out, span);
    n + 1
}

/// The service a document describes, as `Resource` fields: a segment's name is its service's
/// name. An independent subsegment does not say which service it belongs to: the caller's
/// guess, else `unknown_service` (what the OpenTelemetry SDKs report, and what span metrics
/// would show).
fn resource(
    seg: &Segment<'_>,
    independent_subsegment: bool,
    service: Option<&str>,
    out: &mut Vec<u8>,
) {
    let attr = |out: &mut Vec<u8>, key: &str, v: &str| {
        kv(out, RESOURCE_ATTRIBUTES, &[key], Scalar::Str(v))
    };
    let name = match independent_subsegment {
        true => service,
        false => seg.name.as_deref(),
    };
    attr(out, "service.name", name.unwrap_or("unknown_service"));
    if let Some(v) = seg.service.get().and_then(|s| s.version.get()) {
        attr(out, "service.version", v);
    }
    if let Some(origin) = seg.origin.as_deref() {
        attr(out, "cloud.provider", "aws");
        if let Some(platform) = platform(origin) {
            attr(out, "cloud.platform", platform);
        }
    }
    if let Some(aws) = &seg.aws
        && !independent_subsegment
    {
        let (ec2, ecs, xray) = (aws.ec2.get(), aws.ecs.get(), aws.xray.get());
        for (key, v) in [
            ("cloud.account.id", aws.account_id.get()),
            ("host.id", ec2.and_then(|b| b.instance_id.get())),
            (
                "cloud.availability_zone",
                ec2.and_then(|b| b.availability_zone.get()),
            ),
            ("container.name", ecs.and_then(|b| b.container.get())),
            ("container.id", ecs.and_then(|b| b.container_id.get())),
            ("aws.ecs.cluster.arn", ecs.and_then(|b| b.cluster_arn.get())),
            ("aws.ecs.task.arn", ecs.and_then(|b| b.task_arn.get())),
            ("telemetry.sdk.name", xray.and_then(|b| b.sdk.get())),
            (
                "telemetry.sdk.version",
                xray.and_then(|b| b.sdk_version.get()),
            ),
        ] {
            if let Some(v) = v {
                attr(out, key, v);
            }
        }
    }
}

/// `origin` → `cloud.platform` (the inverse of the X-Ray exporter's origin rule).
fn platform(origin: &str) -> Option<&'static str> {
    Some(match origin {
        "AWS::EC2::Instance" => "aws_ec2",
        "AWS::ECS::Container" | "AWS::ECS::EC2" => "aws_ecs",
        "AWS::ECS::Fargate" => "aws_ecs",
        "AWS::EKS::Container" => "aws_eks",
        "AWS::ElasticBeanstalk::Environment" => "aws_elastic_beanstalk",
        "AWS::Lambda::Function" => "aws_lambda",
        "AWS::AppRunner::Service" => "aws_app_runner",
        _ => return None,
    })
}

/// The span's attributes (`Span.attributes` fields).
fn attributes(seg: &Segment<'_>, out: &mut Vec<u8>) {
    let str_attr =
        |out: &mut Vec<u8>, key: &str, v: &str| kv(out, SPAN_ATTRIBUTES, &[key], Scalar::Str(v));
    if let Some(http) = &seg.http {
        if let Some(r) = &http.request {
            for (key, v) in [
                ("http.method", &r.method),
                ("http.url", &r.url),
                ("http.client_ip", &r.client_ip),
                ("http.user_agent", &r.user_agent),
            ] {
                if let Some(v) = v.as_deref() {
                    str_attr(out, key, v);
                }
            }
        }
        if let Some(r) = &http.response {
            if let Some(code) = r.status.as_ref().and_then(int) {
                kv(
                    out,
                    SPAN_ATTRIBUTES,
                    &["http.status_code"],
                    Scalar::Int(code),
                );
            }
            if let Some(len) = r.content_length.as_ref().and_then(int) {
                kv(
                    out,
                    SPAN_ATTRIBUTES,
                    &["http.response_content_length"],
                    Scalar::Int(len),
                );
            }
        }
    }
    if let Some(aws) = &seg.aws {
        for (key, v) in [
            ("aws.operation", &aws.operation),
            ("aws.region", &aws.region),
            ("aws.request_id", &aws.request_id),
            ("aws.queue_url", &aws.queue_url),
            ("aws.table_name", &aws.table_name),
            ("aws.account_id", &aws.account_id),
        ] {
            if let Some(v) = v.get() {
                str_attr(out, key, v);
            }
        }
        if seg.namespace.as_deref() == Some("aws")
            && let Some(op) = aws.operation.get()
        {
            // What OpenTelemetry's AWS SDK instrumentation sets, so the exporter names it back.
            str_attr(out, "rpc.system", "aws-api");
            str_attr(out, "rpc.service", seg.name.as_deref().unwrap_or_default());
            str_attr(out, "rpc.method", op);
        }
    }
    if let Some(Sql {
        url,
        sanitized_query,
        database_type,
        user,
    }) = &seg.sql
    {
        for (key, v) in [
            ("db.connection_string", url),
            ("db.statement", sanitized_query),
            ("db.system", database_type),
            ("db.user", user),
        ] {
            if let Some(v) = v.as_deref() {
                str_attr(out, key, v);
            }
        }
    }
    if let Some(user) = seg.user.as_deref() {
        str_attr(out, "enduser.id", user);
    }
    if let Some(annotations) = &seg.annotations {
        let mut any = false;
        for (k, v) in annotations {
            if let Some(v) = Scalar::of_annotation(v) {
                kv(out, SPAN_ATTRIBUTES, &[k], v);
                any = true;
            }
        }
        if any {
            // `aws.xray.annotations`: the keys written above, as an array of strings.
            let attr = wire::begin_large(out, SPAN_ATTRIBUTES);
            wire::bytes(out, KEY_VALUE_KEY, b"aws.xray.annotations");
            let value = wire::begin_large(out, KEY_VALUE_VALUE);
            let array = wire::begin_large(out, ANY_ARRAY);
            for (k, v) in annotations {
                if Scalar::of_annotation(v).is_some() {
                    let item = Scalar::Str(k);
                    wire::len_prefix(out, ARRAY_VALUES, item.len());
                    item.write(out);
                }
            }
            wire::end(out, array);
            wire::end(out, value);
            wire::end(out, attr);
        }
    }
    if let Some(metadata) = &seg.metadata {
        for (namespace, v) in metadata {
            kv(
                out,
                SPAN_ATTRIBUTES,
                &["aws.xray.metadata.", namespace],
                Scalar::Str(v.get()),
            );
        }
    }
}

/// `cause.exceptions` → one `exception` event each (`Span.events` fields); returns the first
/// message, for the status.
fn exception_events<'a>(seg: &'a Segment<'_>, at: u64, out: &mut Vec<u8>) -> Option<&'a str> {
    let exceptions = seg
        .cause
        .as_ref()
        .and_then(|c| c.get("exceptions"))
        .and_then(Value::as_array)?;
    let mut first = None;
    let mut trace = String::new();
    for e in exceptions {
        let event = wire::begin_large(out, SPAN_EVENTS);
        wire::fixed64(out, EVENT_TIME, at);
        wire::bytes(out, EVENT_NAME, b"exception");
        let text = |k: &str| e.get(k).and_then(Value::as_str);
        if let Some(t) = text("type") {
            kv(out, EVENT_ATTRIBUTES, &["exception.type"], Scalar::Str(t));
        }
        if let Some(m) = text("message") {
            first.get_or_insert(m);
            kv(
                out,
                EVENT_ATTRIBUTES,
                &["exception.message"],
                Scalar::Str(m),
            );
        }
        if let Some(stack) = e.get("stack").and_then(Value::as_array) {
            trace.clear();
            for frame in stack {
                let f = |k: &str| frame.get(k);
                let label = f("label").and_then(Value::as_str).unwrap_or("?");
                let path = f("path").and_then(Value::as_str).unwrap_or("?");
                let line = f("line").and_then(Value::as_i64).unwrap_or(0);
                let _ = writeln!(trace, "at {label} ({path}:{line})");
            }
            if !trace.is_empty() {
                let stacktrace = Scalar::Str(trace.trim_end());
                kv(out, EVENT_ATTRIBUTES, &["exception.stacktrace"], stacktrace);
            }
        }
        wire::end(out, event);
    }
    first
}

/// An integer, or a decimal string of one (content lengths arrive both ways).
fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Epoch seconds (a double) → nanoseconds, rounded to the microsecond: a double near 1.7e9
/// holds no finer digits (its step is ~0.24 µs), and the SDKs write microseconds.
fn unix_nanos(secs: f64) -> u64 {
    if !secs.is_finite() || secs <= 0.0 {
        return 0;
    }
    let whole = secs.trunc();
    (whole as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(((secs - whole) * 1e6).round() as u64 * 1000)
}

/// `1-5f84c7a8-0123456789abcdef01234567` → the 16 bytes `5f84c7a8` + `0123…`.
pub fn trace_id_bytes(s: &str) -> Option<[u8; 16]> {
    if !super::datagram::is_trace_id(s) {
        return None;
    }
    let hex = s.as_bytes();
    let mut out = [0u8; 16];
    let (epoch, unique) = out.split_at_mut(4);
    (decode_hex(&hex[2..10], epoch) && decode_hex(&hex[11..], unique)).then_some(out)
}

fn span_id_bytes(s: &str) -> Option<[u8; 8]> {
    let mut out = [0u8; 8];
    decode_hex(s.as_bytes(), &mut out).then_some(out)
}

fn decode_hex(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return false;
        };
        out[i] = hi << 4 | lo;
    }
    true
}

/// An attribute value of the kinds the view writes (an `AnyValue`).
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl Scalar<'_> {
    /// An annotation's value: X-Ray annotations are strings, numbers or booleans.
    fn of_annotation<'a>(v: &'a Annotation<'_>) -> Option<Scalar<'a>> {
        Some(match v {
            Annotation::Str(s) => Scalar::Str(s),
            Annotation::Bool(b) => Scalar::Bool(*b),
            Annotation::Int(i) => Scalar::Int(*i),
            Annotation::Double(d) => Scalar::Double(*d),
            Annotation::Other => return None,
        })
    }

    /// The `AnyValue` message's length.
    fn len(self) -> usize {
        match self {
            Scalar::Str(s) => wire::field_len(ANY_STRING, s.len()),
            Scalar::Int(i) => 1 + wire::varint_len(i as u64),
            Scalar::Bool(_) => 2,
            Scalar::Double(_) => 9,
        }
    }

    /// The `AnyValue` message's fields.
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Scalar::Str(s) => wire::bytes(out, ANY_STRING, s.as_bytes()),
            Scalar::Int(i) => wire::varint(out, ANY_INT, i as u64),
            Scalar::Bool(b) => wire::varint(out, ANY_BOOL, u64::from(b)),
            Scalar::Double(d) => wire::fixed64(out, ANY_DOUBLE, d.to_bits()),
        }
    }
}

/// One `KeyValue` as field `field`, its key given in parts; lengths are known up front, so
/// nothing is moved.
fn kv(out: &mut Vec<u8>, field: u32, key: &[&str], value: Scalar<'_>) {
    let key_len: usize = key.iter().map(|k| k.len()).sum();
    let value_len = value.len();
    let len = wire::field_len(KEY_VALUE_KEY, key_len) + wire::field_len(KEY_VALUE_VALUE, value_len);
    wire::len_prefix(out, field, len);
    wire::string_parts(out, KEY_VALUE_KEY, key);
    wire::len_prefix(out, KEY_VALUE_VALUE, value_len);
    value.write(out);
}

#[cfg(test)]
mod tests;
