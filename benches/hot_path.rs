//! Hot-path benchmarks: decode + admit of realistic 512-span OTLP requests, in spans/s on one core.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sidetrace::model::Protocol;
use sidetrace::pipeline::{MemoryGuard, Pipeline, Queue, ReceiverStats};
use sidetrace::proto::ExportTraceServiceRequest;
use sidetrace::receivers::decode::decode_request;
use sidetrace::telemetry::span_metrics::SpanMetrics;
use sidetrace::telemetry::span_metrics::SpanMetricsConfig;
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
        Arc::new(ReceiverStats::default()),
        SpanMetrics::new(SpanMetricsConfig::default()),
        Arc::new(MemoryGuard::new(0)),
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

/// The sampling stage behind the queue, per span, on the same 512-span requests (8 spans a
/// trace, entry span first): off (pass-through), ratio 1% head-only, ratio 1% + keep errors
/// (drops held until their grace ends or the hold cap decides them), X-Ray rules + keep errors.
fn sampling(c: &mut Criterion) {
    use sidetrace::exporters::xray::rules::Rules;
    use sidetrace::pipeline::sampler::{Head, Policies, Sampler, SamplingStats};
    use std::sync::Mutex;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let reqs = requests();
    let mut g = c.benchmark_group("sampling_512_span_request");
    g.throughput(Throughput::Elements(512));
    let rules = || {
        Head::Rules(Arc::new(Mutex::new(Rules::fallback(
            tokio::time::Instant::now(),
        ))))
    };
    let cases: Vec<(&str, Head, bool)> = vec![
        ("off", Head::All, true),
        ("ratio_1pct_head_only", Head::Ratio(0.01), false),
        ("ratio_1pct_keep_errors", Head::Ratio(0.01), true),
        ("xray_rules_keep_errors", rules(), true),
    ];
    for (name, head, keep_errors) in cases {
        let mut cfg = Policies {
            head,
            ..Policies::keep_all()
        };
        cfg.config.keep_errors = keep_errors;
        let mut sampler = Sampler::new(cfg, Arc::new(SamplingStats::default()));
        let pipeline = Pipeline::new(
            Arc::new(Queue::new(1 << 20, 1 << 30)),
            Arc::new(ReceiverStats::default()),
            SpanMetrics::new(SpanMetricsConfig::default()),
            Arc::new(MemoryGuard::new(0)),
        );
        let mut k = 0;
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                k = (k + 1) % reqs.len();
                n += 1;
                let d = decode_request(reqs[k].clone(), Protocol::Grpc).unwrap();
                pipeline.admit(Protocol::Grpc, d).unwrap();
                let batch = pipeline.queue.try_pop().unwrap();
                let now = tokio::time::Instant::now();
                let mut out = sampler.admit(batch, now);
                if n.is_multiple_of(64) {
                    out.extend(sampler.tick(now));
                }
                out
            })
        });
    }
    g.finish();
}

criterion_group!(sampling_benches, sampling);
criterion_main!(benches, sampling_benches);
