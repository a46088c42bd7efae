//! Hot-path benchmarks: decode + admit of realistic 512-span OTLP requests, in spans/s on one core.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sidetrace::model::Protocol;
use sidetrace::pipeline::span_metrics::SpanMetricsConfig;
use sidetrace::pipeline::{Pipeline, Queue, SpanMetrics};
use sidetrace::proto::ExportTraceServiceRequest;
use sidetrace::receivers::decode::decode_request;
use sidetrace::telemetry::Metrics;
use sidetrace::workload::{Rng, Shape, request};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn requests() -> Vec<Bytes> {
    let mut rng = Rng::new(42);
    (0..16)
        .map(|_| request(&mut rng, &Shape::default()).encode_to_vec().into())
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let reqs = requests();
    let spans = 512u64;
    let mut g = c.benchmark_group("hot_path_512_span_request");
    g.throughput(Throughput::Elements(spans));

    let mut k = 0;
    g.bench_function("decode_walk", |b| {
        b.iter(|| {
            k = (k + 1) % reqs.len();
            decode_request(reqs[k].clone(), Protocol::Grpc).unwrap()
        })
    });

    let pipeline = Pipeline::new(
        Arc::new(Queue::new(1 << 20, 1 << 30)),
        Arc::new(Metrics::default()),
        SpanMetrics::new(SpanMetricsConfig::default()),
    );
    g.bench_function("decode_and_admit", |b| {
        b.iter(|| {
            k = (k + 1) % reqs.len();
            let d = decode_request(reqs[k].clone(), Protocol::Grpc).unwrap();
            pipeline.admit(Protocol::Grpc, d).unwrap();
            // The consumer side, so the queue never fills during the run.
            pipeline.queue.try_pop()
        })
    });

    // For comparison: what a full prost decode of the same request costs.
    g.bench_function("prost_full_decode", |b| {
        b.iter(|| {
            k = (k + 1) % reqs.len();
            ExportTraceServiceRequest::decode(reqs[k].clone()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
