//! Span-metrics benchmarks: recording cost per span with 1,000 live series (target ≤ 50 ns on
//! one core) and a `/metrics` scrape of 10,000 series (target ≤ 50 ms).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sidetrace::model::{Batch, Protocol};
use sidetrace::pipeline::SpanMetrics;
use sidetrace::pipeline::span_metrics::SpanMetricsConfig;
use sidetrace::proto::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
    any_value,
};
use sidetrace::receivers::decode::decode_request;
use sidetrace::workload::Rng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVICES: usize = 5;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A 512-span request whose spans fall at random on `series` label sets (5 services × routes),
/// with log-normal-ish durations, and realistic HTTP attributes.
fn request(rng: &mut Rng, series: usize, spans: usize) -> Batch {
    let routes = series / SERVICES;
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES];
    for _ in 0..spans {
        let n = rng.below(series as u64) as usize;
        let route = format!("/api/v1/resource{}/{{id}}", n / SERVICES % routes);
        let dur_us = 200 + rng.below(1 << rng.below(18));
        by_service[n % SERVICES].push(Span {
            trace_id: rng.next_u64().to_be_bytes().repeat(2).into(),
            span_id: (rng.next_u64() | 1).to_be_bytes().to_vec().into(),
            name: format!("GET {route}"),
            kind: 2,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + dur_us * 1000,
            attributes: vec![
                kv("http.request.method", "GET"),
                kv("http.route", &route),
                kv("url.path", &route.replace("{id}", "12345")),
                kv("url.scheme", "https"),
            ],
            ..Default::default()
        });
    }
    let req = ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .enumerate()
            .map(|(i, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &format!("service-{i}"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    decode_request(req.encode_to_vec().into(), Protocol::Grpc)
        .unwrap()
        .batch
}

fn record(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let batches: Vec<Batch> = (0..32).map(|_| request(&mut rng, 1000, 512)).collect();
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    for b in &batches {
        m.record(b);
    }
    assert_eq!(m.snapshot().series.len(), 1000);
    let mut g = c.benchmark_group("span_metrics_record_1000_series");
    g.throughput(Throughput::Elements(512));
    let mut k = 0;
    g.bench_function("record_512_span_batch", |b| {
        b.iter(|| {
            k = (k + 1) % batches.len();
            m.record(&batches[k]);
        })
    });
    g.finish();
}

fn scrape(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let m = SpanMetrics::new(SpanMetricsConfig {
        max_series_per_service: 10_000,
        ..Default::default()
    });
    // 10,000 series, ~100 spans each.
    for _ in 0..2000 {
        m.record(&request(&mut rng, 10_000, 512));
    }
    assert_eq!(m.snapshot().series.len(), 10_000);
    let mut g = c.benchmark_group("span_metrics_scrape_10000_series");
    g.sample_size(10);
    let mut bytes = 0;
    g.bench_function("render_prometheus", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(bytes);
            m.render_prometheus(&mut out);
            bytes = out.len();
            out
        })
    });
    g.finish();
    println!("scrape page: {} MB", bytes as f64 / 1e6);
}

criterion_group!(benches, record, scrape);
criterion_main!(benches);
