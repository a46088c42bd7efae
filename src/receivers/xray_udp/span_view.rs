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

use serde_json::Value;

use super::datagram::{Segment, Sql};
use crate::proto::{
    AnyValue, ArrayValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, Status, any_value, span, status,
};

const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

/// Builds one OTLP request from the documents of one burst of datagrams.
#[derive(Debug, Default)]
pub struct SpanViews {
    resource_spans: Vec<ResourceSpans>,
    spans: usize,
}

impl SpanViews {
    /// Adds the complete (sub)segments of one document; returns how many spans it made.
    /// `service` names the service of an independent subsegment, which does not say it.
    pub fn add(&mut self, seg: &Segment<'_>, service: Option<&str>) -> usize {
        let Some(trace_id) = seg.trace_id.as_deref().and_then(trace_id_bytes) else {
            return 0;
        };
        let independent_subsegment = seg.kind.as_deref() == Some("subsegment");
        let resource = resource(seg, independent_subsegment, service);
        let mut spans = Vec::new();
        let parent = seg.parent_id.as_deref().and_then(span_id_bytes);
        flatten(seg, !independent_subsegment, &trace_id, parent, &mut spans);
        let n = spans.len();
        if n == 0 {
            return 0;
        }
        self.spans += n;
        // Documents of one burst mostly come from one service: they share its resource, which
        // is then written, decoded and indexed once instead of once per document.
        if let Some(last) = self.resource_spans.last_mut()
            && last.resource.as_ref() == Some(&resource)
            && let Some(scope) = last.scope_spans.first_mut()
        {
            scope.spans.extend(spans);
        } else {
            self.resource_spans.push(ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// The request's protobuf encoding; the builder is empty again afterwards.
    pub fn take_encoded(&mut self) -> Vec<u8> {
        use prost::Message;
        self.spans = 0;
        ExportTraceServiceRequest {
            resource_spans: std::mem::take(&mut self.resource_spans),
        }
        .encode_to_vec()
    }
}

fn flatten(
    seg: &Segment<'_>,
    is_segment: bool,
    trace_id: &[u8; 16],
    parent: Option<[u8; 8]>,
    out: &mut Vec<Span>,
) {
    let Some(id) = seg.id.as_deref().and_then(span_id_bytes) else {
        return;
    };
    for sub in seg.subsegments.iter().flatten() {
        flatten(sub, false, trace_id, Some(id), out);
    }
    let (Some(start), Some(end)) = (seg.start_time, seg.end_time) else {
        return;
    };
    if seg.in_progress == Some(true) {
        return;
    }
    let kind = match seg.namespace.as_deref() {
        _ if is_segment => KIND_SERVER,
        Some("aws" | "remote") => KIND_CLIENT,
        _ => KIND_INTERNAL,
    };
    let mut attrs = Vec::new();
    attributes(seg, &mut attrs);
    let (events, message) = exception_events(seg, unix_nanos(end));
    // A fault is the server's error; `error` (4xx) and `throttle` (429) are the caller's, so
    // the span's status stays unset, as OpenTelemetry's HTTP conventions have it for servers.
    let status = (seg.fault == Some(true)).then(|| Status {
        code: status::StatusCode::Error as i32,
        message: message.unwrap_or_default(),
    });
    out.push(Span {
        trace_id: trace_id.to_vec().into(),
        span_id: id.to_vec().into(),
        parent_span_id: parent.map(|p| p.to_vec().into()).unwrap_or_default(),
        name: seg.name.as_deref().unwrap_or_default().to_owned(),
        kind,
        start_time_unix_nano: unix_nanos(start),
        end_time_unix_nano: unix_nanos(end),
        attributes: attrs,
        events,
        status,
        ..Default::default()
    });
}

/// The service a document describes: a segment's name is its service's name. An independent
/// subsegment does not say which service it belongs to: the caller's guess, else
/// `unknown_service` (what the OpenTelemetry SDKs report, and what span metrics would show).
fn resource(seg: &Segment<'_>, independent_subsegment: bool, service: Option<&str>) -> Resource {
    let mut attrs = Vec::new();
    let name = match independent_subsegment {
        true => service,
        false => seg.name.as_deref(),
    };
    attrs.push(kv_str("service.name", name.unwrap_or("unknown_service")));
    if let Some(v) = seg
        .service
        .as_ref()
        .and_then(|s| s.get("version"))
        .and_then(Value::as_str)
    {
        attrs.push(kv_str("service.version", v));
    }
    if let Some(origin) = seg.origin.as_deref() {
        attrs.push(kv_str("cloud.provider", "aws"));
        if let Some(platform) = platform(origin) {
            attrs.push(kv_str("cloud.platform", platform));
        }
    }
    if let Some(aws) = &seg.aws {
        let s = |path: &[&str]| {
            let mut v = aws.get(path[0])?;
            for p in &path[1..] {
                v = v.get(p)?;
            }
            v.as_str()
        };
        for (key, path) in [
            ("cloud.account.id", &["account_id"][..]),
            ("host.id", &["ec2", "instance_id"]),
            ("cloud.availability_zone", &["ec2", "availability_zone"]),
            ("container.name", &["ecs", "container"]),
            ("container.id", &["ecs", "container_id"]),
            ("aws.ecs.cluster.arn", &["ecs", "cluster_arn"]),
            ("aws.ecs.task.arn", &["ecs", "task_arn"]),
            ("telemetry.sdk.name", &["xray", "sdk"]),
            ("telemetry.sdk.version", &["xray", "sdk_version"]),
        ] {
            if !independent_subsegment && let Some(v) = s(path) {
                attrs.push(kv_str(key, v));
            }
        }
    }
    Resource {
        attributes: attrs,
        ..Default::default()
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

fn attributes(seg: &Segment<'_>, out: &mut Vec<KeyValue>) {
    if let Some(http) = &seg.http {
        if let Some(r) = &http.request {
            for (key, v) in [
                ("http.method", &r.method),
                ("http.url", &r.url),
                ("http.client_ip", &r.client_ip),
                ("http.user_agent", &r.user_agent),
            ] {
                if let Some(v) = v.as_deref() {
                    out.push(kv_str(key, v));
                }
            }
        }
        if let Some(r) = &http.response {
            if let Some(code) = r.status.as_ref().and_then(int) {
                out.push(kv_int("http.status_code", code));
            }
            if let Some(len) = r.content_length.as_ref().and_then(int) {
                out.push(kv_int("http.response_content_length", len));
            }
        }
    }
    if let Some(aws) = &seg.aws {
        for (field, key) in [
            ("operation", "aws.operation"),
            ("region", "aws.region"),
            ("request_id", "aws.request_id"),
            ("queue_url", "aws.queue_url"),
            ("table_name", "aws.table_name"),
            ("account_id", "aws.account_id"),
        ] {
            if let Some(v) = aws.get(field).and_then(Value::as_str) {
                out.push(kv_str(key, v));
            }
        }
        if seg.namespace.as_deref() == Some("aws")
            && let Some(op) = aws.get("operation").and_then(Value::as_str)
        {
            // What OpenTelemetry's AWS SDK instrumentation sets, so the exporter names it back.
            out.push(kv_str("rpc.system", "aws-api"));
            out.push(kv_str(
                "rpc.service",
                seg.name.as_deref().unwrap_or_default(),
            ));
            out.push(kv_str("rpc.method", op));
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
                out.push(kv_str(key, v));
            }
        }
    }
    if let Some(user) = seg.user.as_deref() {
        out.push(kv_str("enduser.id", user));
    }
    if let Some(annotations) = &seg.annotations {
        let mut keys = Vec::with_capacity(annotations.len());
        for (k, v) in annotations {
            let value = match v {
                Value::String(s) => any_value::Value::StringValue(s.clone()),
                Value::Bool(b) => any_value::Value::BoolValue(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => any_value::Value::IntValue(i),
                    None => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
                },
                _ => continue,
            };
            out.push(kv(k, value));
            keys.push(AnyValue {
                value: Some(any_value::Value::StringValue(k.clone())),
            });
        }
        if !keys.is_empty() {
            out.push(kv(
                "aws.xray.annotations",
                any_value::Value::ArrayValue(ArrayValue { values: keys }),
            ));
        }
    }
    if let Some(metadata) = &seg.metadata {
        for (namespace, v) in metadata {
            out.push(kv_str(&format!("aws.xray.metadata.{namespace}"), v.get()));
        }
    }
}

/// `cause.exceptions` → one `exception` event each; returns the first message for the status.
fn exception_events(seg: &Segment<'_>, at: u64) -> (Vec<span::Event>, Option<String>) {
    let Some(exceptions) = seg
        .cause
        .as_ref()
        .and_then(|c| c.get("exceptions"))
        .and_then(Value::as_array)
    else {
        return (Vec::new(), None);
    };
    let mut first = None;
    let events = exceptions
        .iter()
        .map(|e| {
            let mut attrs = Vec::new();
            let text = |k: &str| e.get(k).and_then(Value::as_str);
            if let Some(t) = text("type") {
                attrs.push(kv_str("exception.type", t));
            }
            if let Some(m) = text("message") {
                first.get_or_insert_with(|| m.to_owned());
                attrs.push(kv_str("exception.message", m));
            }
            if let Some(stack) = e.get("stack").and_then(Value::as_array) {
                let mut trace = String::new();
                for frame in stack {
                    let f = |k: &str| frame.get(k);
                    let label = f("label").and_then(Value::as_str).unwrap_or("?");
                    let path = f("path").and_then(Value::as_str).unwrap_or("?");
                    let line = f("line").and_then(Value::as_i64).unwrap_or(0);
                    trace.push_str(&format!("at {label} ({path}:{line})\n"));
                }
                if !trace.is_empty() {
                    attrs.push(kv_str("exception.stacktrace", trace.trim_end()));
                }
            }
            span::Event {
                time_unix_nano: at,
                name: "exception".to_owned(),
                attributes: attrs,
                ..Default::default()
            }
        })
        .collect();
    (events, first)
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
    let hex: Vec<u8> = s.bytes().skip(2).filter(|b| *b != b'-').collect();
    let mut out = [0u8; 16];
    decode_hex(&hex, &mut out).then_some(out)
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

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
}

fn kv_int(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

#[cfg(test)]
mod tests;
