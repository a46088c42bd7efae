//! The X-Ray daemon port's work per datagram, without the socket and the HTTP call: parse a
//! burst of 64 loadgen segments (~1 KB, two subsegments), write their span views and decode
//! them as the pipeline does, and escape each document for the request body.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use sidetrace::exporters::xray::RequestBody;
use sidetrace::loadgen::udp_segment;
use sidetrace::model::Protocol;
use sidetrace::receivers::decode::decode_request;
use sidetrace::receivers::xray_udp::{datagram, span_view::SpanViews};

/// The agent's allocator (src/main.rs), so allocation costs what it costs in the agent.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Datagrams read per wake-up at saturation (the receiver's burst).
const BURST: usize = 64;

fn datagrams() -> Vec<Vec<u8>> {
    (0..BURST as u64)
        .map(|i| udp_segment(1_000 + i, i % 10 == 0))
        .collect()
}

fn one_burst(datagrams: &[Vec<u8>], views: &mut SpanViews) {
    let mut docs = Vec::with_capacity(BURST);
    for d in datagrams {
        let doc = datagram::parse(black_box(d)).unwrap();
        views.add(&doc.segment, None);
        docs.push((doc.id().to_owned(), RequestBody::escape(doc.json)));
    }
    let decoded = decode_request(views.take_encoded().into(), Protocol::XrayUdp).unwrap();
    black_box((docs, decoded));
}

fn burst(c: &mut Criterion) {
    let datagrams = datagrams();
    let mut group = c.benchmark_group("xray_udp");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut views = SpanViews::default();
    group.bench_function("burst_of_64", |b| {
        b.iter(|| one_burst(&datagrams, &mut views))
    });
    group.finish();
}

criterion_group!(benches, burst);

/// `XRAY_UDP_BURSTS=N` does N bursts and exits: a fixed amount of work whose CPU time a
/// whole-process timer can compare between two builds on a noisy machine.
fn main() {
    if let Some(n) = std::env::var("XRAY_UDP_BURSTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let datagrams = datagrams();
        let mut views = SpanViews::default();
        for _ in 0..n {
            one_burst(&datagrams, &mut views);
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
