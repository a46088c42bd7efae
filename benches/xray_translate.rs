//! Throughput of the X-Ray translator: one realistic span, and a PutTraceSegments-sized batch of 50 documents.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sidetrace::exporters::xray::translate::{IndexedKeys, TranslateOptions, to_segment};
use sidetrace::proto::{
    AnyValue, InstrumentationScope, KeyValue, Resource, Span, Status, any_value::Value,
};

/// PutTraceSegments takes at most 50 documents per call.
const BATCH_DOCUMENTS: usize = 50;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_owned()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

/// An ECS Fargate task's resource, as the OTel SDK's resource detectors fill it.
fn resource() -> Resource {
    Resource {
        attributes: vec![
            s("service.name", "checkout"),
            s("service.version", "1.8.2"),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", "java"),
            s("telemetry.sdk.version", "1.40.0"),
            s("cloud.provider", "aws"),
            s("cloud.platform", "aws_ecs"),
            s("aws.ecs.launchtype", "fargate"),
            s(
                "aws.ecs.task.arn",
                "arn:aws:ecs:us-east-1:123456789012:task/prod/8f1e0c2d9b7a4e3f",
            ),
        ],
        ..Resource::default()
    }
}

fn span(n: u64, kind: i32, attributes: Vec<KeyValue>) -> Span {
    let mut trace = vec![0x65, 0x53, 0xf1, 0x00];
    trace.extend_from_slice(&(0xa1b2_c3d4_e5f6_0718_u64 ^ n).to_be_bytes());
    trace.extend_from_slice(&[0x29, 0x3a, 0x4b, 0x5c]);
    Span {
        trace_id: trace.into(),
        span_id: (0x5399_5c3f_42cd_8ad8_u64 + n)
            .to_be_bytes()
            .to_vec()
            .into(),
        parent_span_id: 0x1a2b_3c4d_5e6f_7081_u64.to_be_bytes().to_vec().into(),
        name: "GET /orders/{id}".into(),
        kind,
        start_time_unix_nano: 1_700_000_000_123_456_789 + n * 1_000,
        end_time_unix_nano: 1_700_000_000_169_135_701 + n * 1_000,
        attributes,
        status: Some(Status::default()),
        ..Span::default()
    }
}

/// The realistic case: an HTTP server span with 10 attributes.
fn server_span(n: u64) -> Span {
    span(
        n,
        2,
        vec![
            s("http.method", "GET"),
            s("http.scheme", "https"),
            s("http.host", "api.example.com"),
            s("http.target", "/orders/42?expand=items"),
            s("http.route", "/orders/{id}"),
            i("http.status_code", 200),
            s("http.user_agent", "Mozilla/5.0 (X11; Linux x86_64)"),
            s("net.peer.ip", "10.0.3.17"),
            s("customer.tier", "gold"),
            s("order.id", "o-1234567"),
        ],
    )
}

fn client_span(n: u64) -> Span {
    span(
        n,
        3,
        vec![
            s("http.request.method", "POST"),
            s("url.full", "https://payments.internal/charge"),
            s("server.address", "payments.internal"),
            i("server.port", 443),
            i("http.response.status_code", 201),
            s("peer.service", "payments"),
        ],
    )
}

fn dynamodb_span(n: u64) -> Span {
    span(
        n,
        3,
        vec![
            s("rpc.system", "aws-api"),
            s("rpc.service", "DynamoDB"),
            s("rpc.method", "GetItem"),
            s("aws.region", "us-east-1"),
            s(
                "aws.request_id",
                "V5I6JBDRMLP0N5U0H2BF2T1FQ3VV4KQNSO5AEMVJF66Q9ASUAAJG",
            ),
            kv(
                "aws.dynamodb.table_names",
                Value::ArrayValue(sidetrace::proto::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("orders".into())),
                    }],
                }),
            ),
            i("http.status_code", 200),
        ],
    )
}

fn options() -> TranslateOptions {
    TranslateOptions {
        indexed_attributes: IndexedKeys::new(["customer.tier"]),
        ..TranslateOptions::default()
    }
}

fn bench(c: &mut Criterion) {
    let resource = resource();
    let scope = InstrumentationScope::default();
    let opts = options();
    let mut out = Vec::with_capacity(64 * 1024);

    let one = server_span(0);
    let mut g = c.benchmark_group("xray_translate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("server_span_10_attributes", |b| {
        b.iter(|| {
            out.clear();
            let t = to_segment(black_box(&one), &resource, &scope, &opts, &mut out)
                .expect("translates");
            black_box(t);
        })
    });

    let batch: Vec<Span> = (0..BATCH_DOCUMENTS as u64)
        .map(|n| match n % 5 {
            0..=2 => server_span(n),
            3 => client_span(n),
            _ => dynamodb_span(n),
        })
        .collect();
    g.throughput(Throughput::Elements(BATCH_DOCUMENTS as u64));
    g.bench_function("batch_of_50_documents", |b| {
        b.iter(|| {
            out.clear();
            for span in &batch {
                let t = to_segment(black_box(span), &resource, &scope, &opts, &mut out)
                    .expect("translates");
                black_box(t);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
