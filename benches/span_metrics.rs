//! Span-metrics benchmarks: recording cost per span with 1,000 live series (target ≤ 50 ns on
//! one core) and a `/metrics` scrape of 10,000 series (target ≤ 50 ms).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sidetrace::model::{Batch, Protocol};
use sidetrace::proto::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
    any_value,
};
use sidetrace::receivers::decode::decode_request;
use sidetrace::telemetry::span_metrics::SpanMetrics;
use sidetrace::telemetry::span_metrics::SpanMetricsConfig;
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

/// Span durations: `Realistic` = log-normal per series (σ = 0.7, medians 1–128 ms by series);
/// `Wide` = log-uniform over 17 octaves for every series (each span hits a cold counter).
#[derive(Clone, Copy)]
enum Latency {
    Realistic,
    Wide,
}

fn duration_us(rng: &mut Rng, series: usize, latency: Latency) -> u64 {
    match latency {
        Latency::Wide => {
            let magnitude = rng.below(18);
            200 + rng.below(1 << magnitude)
        }
        Latency::Realistic => {
            let unit = |rng: &mut Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let (a, b) = (unit(rng).max(1e-12), unit(rng));
            let normal = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
            let median = 1000.0 * (1u64 << (series % 8)) as f64;
            (median * (0.7 * normal).exp()) as u64
        }
    }
}

/// A 512-span request whose spans fall at random on `series` label sets (5 services × routes),
/// with realistic HTTP attributes.
fn request(rng: &mut Rng, series: usize, spans: usize, latency: Latency) -> Batch {
    let routes = series / SERVICES;
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES];
    for _ in 0..spans {
        let n = rng.below(series as u64) as usize;
        let route = format!("/api/v1/resource{}/{{id}}", n / SERVICES % routes);
        let dur_us = duration_us(rng, n, latency);
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
    let mut g = c.benchmark_group("span_metrics_record_1000_series");
    g.throughput(Throughput::Elements(512));
    for (name, latency) in [
        (
            "record_512_span_batch_realistic_latencies",
            Latency::Realistic,
        ),
        ("record_512_span_batch_wide_latencies", Latency::Wide),
    ] {
        let mut rng = Rng::new(1);
        let batches: Vec<Batch> = (0..64)
            .map(|_| request(&mut rng, 1000, 512, latency))
            .collect();
        let m = SpanMetrics::new(SpanMetricsConfig::default());
        for b in &batches {
            m.record(b);
        }
        assert_eq!(m.snapshot().series.len(), 1000);
        let mut k = 0;
        g.bench_function(name, |b| {
            // On the hot path recording follows the decode walk over the same request, so its
            // bytes are in cache; the setup (not timed) reads them the way the walk does. The
            // counters of 1,000 series stay cold: 64 requests with random series and latencies.
            b.iter_batched_ref(
                || {
                    k = (k + 1) % batches.len();
                    let batch = &batches[k];
                    std::hint::black_box(batch.buf.iter().fold(0u8, |a, b| a ^ b));
                    std::hint::black_box(batch.spans.iter().map(|s| s.kind).sum::<i32>());
                    batch
                },
                |batch| m.record(batch),
                BatchSize::PerIteration,
            )
        });
        if matches!(latency, Latency::Realistic) {
            // The same with the request bytes cold too (the worst case: recording far from
            // the decode).
            g.bench_function(format!("{name}_cold_request_bytes"), |b| {
                b.iter(|| {
                    k = (k + 1) % batches.len();
                    m.record(&batches[k]);
                })
            });
        }
    }
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
        m.record(&request(&mut rng, 10_000, 512, Latency::Realistic));
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
