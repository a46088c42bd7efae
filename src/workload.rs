//! Synthetic but realistic OTLP trace requests, for the benchmarks and the load generator.

use crate::proto::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, Status, any_value, span,
};

/// A small deterministic PRNG (xorshift64*): no dependency, same requests on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

const SERVICES: [&str; 5] = ["checkout", "cart", "payments", "catalog", "frontend"];
const ROUTES: [&str; 6] = [
    "/cart/{id}",
    "/orders",
    "/orders/{id}",
    "/products",
    "/login",
    "/health",
];

/// A resource like an ECS Fargate task's (about two dozen attributes, as SDK detectors send).
pub fn resource(service: &str) -> Resource {
    let mut attributes = vec![
        s("service.name", service),
        s("service.version", "1.4.2"),
        s("deployment.environment.name", "production"),
        s("telemetry.sdk.name", "opentelemetry"),
        s("telemetry.sdk.language", "python"),
        s("telemetry.sdk.version", "1.45.2"),
        s("cloud.provider", "aws"),
        s("cloud.platform", "aws_ecs"),
        s("cloud.region", "eu-west-1"),
        s("cloud.account.id", "123456789012"),
        s("cloud.availability_zone", "eu-west-1a"),
        s("aws.ecs.launchtype", "fargate"),
        s(
            "aws.ecs.cluster.arn",
            "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
        ),
        s(
            "aws.ecs.task.arn",
            "arn:aws:ecs:eu-west-1:123456789012:task/prod/0a1b2c3d4e5f",
        ),
        s("aws.ecs.task.family", service),
        s("aws.ecs.task.revision", "42"),
        s(
            "aws.ecs.container.arn",
            "arn:aws:ecs:eu-west-1:123456789012:container/prod/0a1b2c3d4e5f/abc",
        ),
        s("aws.log.group.names", format!("/ecs/{service}")),
        s("container.id", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        s("container.name", service),
        s("process.runtime.name", "cpython"),
        s("process.runtime.version", "3.12.4"),
        i("process.pid", 1),
    ];
    attributes.shrink_to_fit();
    Resource {
        attributes,
        ..Default::default()
    }
}

/// How errors are spread over traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMix {
    /// `error_ratio` of traces fail whole: every span ERROR, the server span 500.
    Uniform,
    /// What ECS services show (issue 14's harness): 3 % of traces a server 5xx with status
    /// ERROR and an exception event, 6 % a 4xx (status unset, as OpenTelemetry's server rule
    /// has it), 4 % a failed database call, 2 % a throttled (429) dependency call.
    Realistic,
}

/// What one trace of the realistic mix ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    ServerFault,
    ClientError,
    DependencyError,
    Throttled,
}

/// Options for [`request`].
#[derive(Debug, Clone)]
pub struct Shape {
    pub spans: usize,
    /// Fraction of traces (0–1) whose spans end in error (the uniform mix).
    pub error_ratio: f64,
    pub error_mix: ErrorMix,
    /// Spans per trace (a trace's spans share an ID and form a chain under one root).
    pub spans_per_trace: usize,
    /// X-Ray-compatible trace IDs (first 32 bits are the current epoch second).
    pub xray_ids: bool,
    /// Extra attributes per span on top of the semantic-convention ones.
    pub extra_attributes: usize,
    pub now_unix_nano: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            spans: 512,
            error_ratio: 0.02,
            error_mix: ErrorMix::Uniform,
            spans_per_trace: 8,
            xray_ids: true,
            extra_attributes: 2,
            now_unix_nano: 1_764_000_000_000_000_000,
        }
    }
}

/// One request of `shape.spans` spans over five services, HTTP/DB/RPC spans with 8–13 attributes.
pub fn request(rng: &mut Rng, shape: &Shape) -> ExportTraceServiceRequest {
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut made = 0;
    while made < shape.spans {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        if shape.xray_ids {
            let epoch = (shape.now_unix_nano / 1_000_000_000) as u32;
            trace_id[..4].copy_from_slice(&epoch.to_be_bytes());
        }
        let draw = rng.below(10_000);
        let error = match shape.error_mix {
            ErrorMix::Uniform => (draw as f64) < shape.error_ratio * 10_000.0,
            ErrorMix::Realistic => false,
        };
        let outcome = match (shape.error_mix, draw) {
            (ErrorMix::Uniform, _) => Outcome::Ok,
            (ErrorMix::Realistic, 0..300) => Outcome::ServerFault,
            (ErrorMix::Realistic, 300..900) => Outcome::ClientError,
            (ErrorMix::Realistic, 900..1300) => Outcome::DependencyError,
            (ErrorMix::Realistic, 1300..1500) => Outcome::Throttled,
            _ => Outcome::Ok,
        };
        let service = rng.below(SERVICES.len() as u64) as usize;
        let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let n = shape.spans_per_trace.min(shape.spans - made).max(1);
        let start = shape.now_unix_nano - rng.below(5_000_000_000);
        let mut parent = Vec::new();
        for k in 0..n {
            let span_id = (rng.next_u64() | 1).to_be_bytes().to_vec();
            let dur = 200_000 + rng.below(50_000_000);
            let begin = start + k as u64 * 100_000;
            let (kind, name, mut attrs) = match k {
                0 => (
                    span::SpanKind::Server,
                    format!("GET {route}"),
                    vec![
                        s("http.request.method", "GET"),
                        s("http.route", route),
                        s(
                            "url.path",
                            route.replace("{id}", &rng.below(100_000).to_string()),
                        ),
                        s("url.scheme", "https"),
                        i(
                            "http.response.status_code",
                            match outcome {
                                _ if error => 500,
                                Outcome::ServerFault => 503,
                                Outcome::ClientError => 404,
                                _ => 200,
                            },
                        ),
                        s("server.address", "api.example.com"),
                        s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                        s("client.address", "10.0.3.17"),
                    ],
                ),
                k if k % 3 == 1 => (
                    span::SpanKind::Client,
                    "SELECT orders".to_string(),
                    vec![
                        s("db.system.name", "postgresql"),
                        s("db.namespace", "shop"),
                        s("db.operation.name", "SELECT"),
                        s(
                            "db.query.text",
                            "SELECT id, total FROM orders WHERE customer_id = $1",
                        ),
                        s("server.address", "db.internal"),
                        i("server.port", 5432),
                        i("db.response.returned_rows", rng.below(50) as i64),
                        s("db.collection.name", "orders"),
                    ],
                ),
                _ => (
                    span::SpanKind::Internal,
                    "render template".to_string(),
                    vec![
                        s("code.function.name", "render"),
                        s("code.file.path", "app/views/orders.py"),
                        i("code.line.number", 120),
                        s("template.name", "orders.html"),
                        i("items", rng.below(20) as i64),
                        s("thread.name", "worker-3"),
                        i("thread.id", 7),
                        s("cache.result", "miss"),
                    ],
                ),
            };
            for x in 0..shape.extra_attributes + rng.below(4) as usize {
                attrs.push(s(
                    &format!("app.attr{x}"),
                    format!("value-{}", rng.below(1000)),
                ));
            }
            // The realistic mix fails one span of the trace: the server span, or its first
            // database call (k == 1), which a throttled call also marks with a 429.
            let failing = match outcome {
                Outcome::ServerFault => k == 0,
                Outcome::DependencyError | Outcome::Throttled => k == 1.min(n - 1),
                _ => false,
            };
            if failing && outcome == Outcome::Throttled {
                attrs.push(i("http.response.status_code", 429));
            }
            let span_error = error || failing;
            let events = match failing && outcome != Outcome::Throttled {
                true => vec![span::Event {
                    time_unix_nano: begin + dur,
                    name: "exception".into(),
                    attributes: vec![
                        s("exception.type", "ConnectionError"),
                        s("exception.message", "upstream reset the connection"),
                    ],
                    ..Default::default()
                }],
                false => Vec::new(),
            };
            by_service[service].push(Span {
                trace_id: trace_id.to_vec().into(),
                span_id: span_id.clone().into(),
                parent_span_id: parent.clone().into(),
                name,
                kind: kind as i32,
                start_time_unix_nano: begin,
                end_time_unix_nano: begin + dur,
                attributes: attrs,
                status: Some(Status {
                    code: if span_error { 2 } else { 0 },
                    message: if span_error {
                        "internal error".into()
                    } else {
                        String::new()
                    },
                }),
                events,
                flags: 0x101,
                ..Default::default()
            });
            if k == 0 {
                parent = span_id;
            }
            made += 1;
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(i, spans)| ResourceSpans {
                resource: Some(resource(SERVICES[i])),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.instrumentation.flask".into(),
                        version: "0.66b2".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_realistic_mix_fails_about_one_trace_in_eleven() {
        let shape = Shape {
            spans: 8 * 4000,
            error_mix: ErrorMix::Realistic,
            ..Shape::default()
        };
        let req = request(&mut Rng::new(11), &shape);
        let spans: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        let traces = |pred: &dyn Fn(&Span) -> bool| {
            spans
                .iter()
                .filter(|s| pred(s))
                .map(|s| s.trace_id.clone())
                .collect::<std::collections::HashSet<_>>()
                .len() as f64
                / 4000.0
        };
        let status = |s: &Span, code: i64| {
            s.attributes.iter().any(|kv| {
                kv.key == "http.response.status_code"
                    && kv.value.as_ref().and_then(|v| v.value.clone())
                        == Some(any_value::Value::IntValue(code))
            })
        };
        let failed = traces(&|s| s.status.as_ref().is_some_and(|st| st.code == 2));
        assert!((0.07..0.11).contains(&failed), "ERROR traces {failed}");
        assert!((0.04..0.08).contains(&traces(&|s| status(s, 404))));
        assert!((0.01..0.03).contains(&traces(&|s| status(s, 429))));
        assert!((0.02..0.04).contains(&traces(&|s| status(s, 503))));
    }

    #[test]
    fn requests_are_valid_and_realistically_sized() {
        let req = request(&mut Rng::new(7), &Shape::default());
        let bytes = req.encode_to_vec();
        let per_span = bytes.len() / 512;
        assert!((300..700).contains(&per_span), "{per_span} bytes per span");
        let d =
            crate::receivers::decode::decode_request(bytes.into(), crate::model::Protocol::Grpc)
                .unwrap();
        assert_eq!(d.batch.spans.len(), 512);
        assert_eq!(d.rejected.total(), 0);
    }
}
