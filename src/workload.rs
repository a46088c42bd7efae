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
    pub topology: Topology,
}

/// How a trace's spans are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// `spans_per_trace` spans of one service: a server span over database and internal
    /// spans (what the benchmarks measure).
    #[default]
    Chain,
    /// Seven spans across three services: a frontend calls two backends over HTTP, and one of
    /// them calls a database (what the local UI's search and service graph are tried with).
    Services,
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
            topology: Topology::Chain,
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
        let start = shape.now_unix_nano - rng.below(5_000_000_000);
        if shape.topology == Topology::Services {
            let want = SERVICES_TRACE_SPANS.min(shape.spans - made);
            made += services_trace(
                rng,
                shape,
                &trace_id,
                start,
                (outcome, error),
                want,
                &mut by_service,
            );
            continue;
        }
        let service = rng.below(SERVICES.len() as u64) as usize;
        let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let n = shape.spans_per_trace.min(shape.spans - made).max(1);
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

/// Spans in one [`Topology::Services`] trace.
const SERVICES_TRACE_SPANS: usize = 7;

/// One cross-service trace (at most `want` spans): `frontend` serves a page, calling `cart` or
/// `catalog` (which queries PostgreSQL) and then `payments` or `checkout`. Each span goes to its
/// service's list, as each service's SDK would send it. Returns the spans made.
fn services_trace(
    rng: &mut Rng,
    shape: &Shape,
    trace_id: &[u8; 16],
    start: u64,
    (outcome, error): (Outcome, bool),
    want: usize,
    by_service: &mut [Vec<Span>],
) -> usize {
    const FRONTEND: usize = 4;
    let reader = if rng.below(2) == 0 { 1 } else { 3 };
    let writer = if rng.below(2) == 0 { 2 } else { 0 };
    let item = rng.below(100_000);
    let page = ["/checkout", "/cart", "/product/{id}"][rng.below(3) as usize];
    let ms = 1_000_000u64;
    let db = ms + rng.below(20 * ms);
    let charge = 2 * ms + rng.below(60 * ms);
    // Which spans fail, and the HTTP status each server answers.
    let (read_fails, write_status) = match outcome {
        _ if error => (true, 500),
        Outcome::ServerFault => (false, 503),
        Outcome::DependencyError => (true, 200),
        Outcome::Throttled => (false, 429),
        _ => (false, 200),
    };
    let read_status = if read_fails { 500 } else { 200 };
    let page_status = match outcome {
        Outcome::ClientError => 404,
        _ if read_fails || write_status >= 500 => 502,
        _ => 200,
    };
    let id = |rng: &mut Rng| (rng.next_u64() | 1).to_be_bytes();
    let ids: [[u8; 8]; SERVICES_TRACE_SPANS] = std::array::from_fn(|_| id(rng));
    let exception = |at: u64, kind: &str, message: &str| span::Event {
        time_unix_nano: at,
        name: "exception".into(),
        attributes: vec![
            s("exception.type", kind),
            s("exception.message", message),
            s(
                "exception.stacktrace",
                format!(
                    "{kind}: {message}\n  at handler (app/handlers.py:88)\n  at dispatch (app/server.py:210)"
                ),
            ),
        ],
        ..Default::default()
    };
    let http_server = |method: &str, route: &str, path: String, status: i64| {
        vec![
            s("http.request.method", method),
            s("http.route", route),
            s("url.path", path),
            s("url.scheme", "http"),
            i("http.response.status_code", status),
            s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
        ]
    };
    let http_client = |method: &str, host: &str, path: String, status: i64| {
        vec![
            s("http.request.method", method),
            s("server.address", host),
            i("server.port", 8080),
            s("url.full", format!("http://{host}:8080{path}")),
            i("http.response.status_code", status),
        ]
    };
    let (t0, t1) = (start, start + ms / 2);
    let (t3, t4) = (t1 + ms / 5, t1 + ms / 2);
    let t5 = t1 + db + 2 * ms;
    let t6 = t5 + ms / 5;
    let end = t5 + charge + ms;
    let r = SERVICES[reader];
    let w = SERVICES[writer];
    // (service, id, parent, kind, name, start, end, attributes, error, events)
    let mut spans = vec![
        (
            FRONTEND,
            0,
            None,
            span::SpanKind::Server,
            format!("GET {page}"),
            t0,
            end,
            http_server(
                "GET",
                page,
                page.replace("{id}", &item.to_string()),
                page_status,
            ),
            page_status >= 500,
            Vec::new(),
        ),
        (
            FRONTEND,
            1,
            Some(0),
            span::SpanKind::Client,
            "GET".to_string(),
            t1,
            t1 + db + ms,
            http_client("GET", r, format!("/items/{item}"), read_status),
            read_fails,
            Vec::new(),
        ),
        (
            reader,
            2,
            Some(1),
            span::SpanKind::Server,
            "GET /items/{id}".to_string(),
            t3 - ms / 10,
            t1 + db + ms - ms / 10,
            http_server("GET", "/items/{id}", format!("/items/{item}"), read_status),
            read_fails,
            Vec::new(),
        ),
        (
            reader,
            3,
            Some(2),
            span::SpanKind::Client,
            "SELECT items".to_string(),
            t4,
            t4 + db,
            vec![
                s("db.system.name", "postgresql"),
                s("db.namespace", "shop"),
                s("db.operation.name", "SELECT"),
                s("db.collection.name", "items"),
                s(
                    "db.query.text",
                    "SELECT id, name, price FROM items WHERE id = $1",
                ),
                s("server.address", "db.internal"),
                i("server.port", 5432),
            ],
            read_fails,
            if read_fails {
                vec![exception(
                    t4 + db,
                    "OperationalError",
                    "could not connect to server: Connection refused",
                )]
            } else {
                Vec::new()
            },
        ),
        (
            FRONTEND,
            4,
            Some(0),
            span::SpanKind::Client,
            "POST".to_string(),
            t5,
            t5 + charge,
            http_client("POST", w, "/charge".into(), write_status),
            write_status >= 400,
            Vec::new(),
        ),
        (
            writer,
            5,
            Some(4),
            span::SpanKind::Server,
            "POST /charge".to_string(),
            t6,
            t5 + charge - ms / 10,
            http_server("POST", "/charge", "/charge".into(), write_status),
            write_status >= 500,
            if write_status >= 500 {
                vec![exception(
                    t5 + charge - ms / 5,
                    "PaymentGatewayError",
                    "card processor timed out",
                )]
            } else {
                Vec::new()
            },
        ),
        (
            writer,
            6,
            Some(5),
            span::SpanKind::Internal,
            "authorize card".to_string(),
            t6 + ms / 10,
            t6 + charge / 2,
            vec![
                s("code.function.name", "authorize"),
                s("payment.method", "card"),
            ],
            false,
            Vec::new(),
        ),
    ];
    spans.truncate(want);
    let made = spans.len();
    for (service, k, parent, kind, name, begin, finish, mut attrs, failed, events) in spans {
        for x in 0..shape.extra_attributes {
            attrs.push(s(
                &format!("app.attr{x}"),
                format!("value-{}", rng.below(1000)),
            ));
        }
        by_service[service].push(Span {
            trace_id: trace_id.to_vec().into(),
            span_id: ids[k].to_vec().into(),
            parent_span_id: parent.map_or(Vec::new(), |p: usize| ids[p].to_vec()).into(),
            name,
            kind: kind as i32,
            start_time_unix_nano: begin,
            end_time_unix_nano: finish.max(begin),
            attributes: attrs,
            status: Some(Status {
                code: if failed { 2 } else { 0 },
                message: if failed {
                    "request failed".into()
                } else {
                    String::new()
                },
            }),
            events,
            flags: 0x101,
            ..Default::default()
        });
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn cross_service_traces_link_a_frontend_to_two_backends_and_a_database() {
        let shape = Shape {
            spans: 7 * 50,
            topology: Topology::Services,
            error_mix: ErrorMix::Realistic,
            ..Shape::default()
        };
        let req = request(&mut Rng::new(11), &shape);
        // span id -> (service, parent id, name)
        let mut spans = std::collections::HashMap::new();
        for rs in &req.resource_spans {
            let service = match &rs.resource.as_ref().unwrap().attributes[0]
                .value
                .as_ref()
                .unwrap()
                .value
            {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => unreachable!(),
            };
            for sp in &rs.scope_spans[0].spans {
                spans.insert(
                    sp.span_id.to_vec(),
                    (
                        service.clone(),
                        sp.parent_span_id.to_vec(),
                        sp.name.clone(),
                        sp.status.as_ref().unwrap().code,
                    ),
                );
            }
        }
        assert_eq!(spans.len(), 7 * 50);
        let mut edges = std::collections::BTreeSet::new();
        for (service, parent, _, _) in spans.values() {
            if parent.is_empty() {
                assert_eq!(service, "frontend", "every trace starts at the frontend");
                continue;
            }
            let (up, ..) = &spans[parent];
            if up != service {
                edges.insert((up.as_str(), service.as_str()));
            }
        }
        assert_eq!(
            edges.into_iter().collect::<Vec<_>>(),
            [
                ("frontend", "cart"),
                ("frontend", "catalog"),
                ("frontend", "checkout"),
                ("frontend", "payments")
            ]
        );
        assert!(spans.values().any(|(_, _, name, _)| name == "SELECT items"));
        assert!(
            spans.values().any(|(_, _, _, code)| *code == 2),
            "some spans fail"
        );
    }

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
