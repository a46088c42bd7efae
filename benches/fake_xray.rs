//! A minimal, fast stand-in for the X-Ray API for pipeline benchmarks (moto is too slow to be
//! the bottleneck-free endpoint a throughput run needs): accepts PutTraceSegments and counts.
//! `fake-xray ADDR [FAULT_EVERY]`: every FAULT_EVERY-th call fails instead, alternately throttled
//! (HTTP 429 `ThrottlingException`) and a 500, as X-Ray's own faults look (benches/soak.sh).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    documents: AtomicU64,
    faults: AtomicU64,
    fault_every: u64,
}

async fn put(
    State(c): State<Arc<Counts>>,
    body: Bytes,
) -> (
    axum::http::StatusCode,
    [(&'static str, &'static str); 1],
    &'static str,
) {
    let n = c.calls.fetch_add(1, Ordering::Relaxed) + 1;
    if c.fault_every > 0 && n.is_multiple_of(c.fault_every) {
        let k = c.faults.fetch_add(1, Ordering::Relaxed);
        let json = [("content-type", "application/json")];
        return match k % 2 {
            0 => (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                json,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ),
            _ => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                json,
                r#"{"__type":"InternalFailure","message":"injected"}"#,
            ),
        };
    }
    // Counting the documents without parsing: each one is a JSON string in the array.
    let docs = body
        .windows(8)
        .filter(|w| w == b"\"{\\\"name" || w == b"\"{\\\"trac" || w == b"\"{\\\"id\\\"")
        .count()
        .max(1);
    c.documents.fetch_add(docs as u64, Ordering::Relaxed);
    (
        axum::http::StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"UnprocessedTraceSegments":[]}"#,
    )
}

/// An OTLP/HTTP endpoint that takes every request (a blackhole gateway for the forwarding
/// configuration): counted as calls, answered with an empty ExportTraceServiceResponse.
async fn otlp(
    State(c): State<Arc<Counts>>,
    _body: Bytes,
) -> ([(&'static str, &'static str); 1], &'static [u8]) {
    c.calls.fetch_add(1, Ordering::Relaxed);
    ([("content-type", "application/x-protobuf")], b"")
}

async fn stats(State(c): State<Arc<Counts>>) -> String {
    format!(
        "{{\"calls\":{},\"documents\":{},\"faults\":{}}}\n",
        c.calls.load(Ordering::Relaxed),
        c.documents.load(Ordering::Relaxed),
        c.faults.load(Ordering::Relaxed)
    )
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4566".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let fault_every = std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let counts = Arc::new(Counts {
            fault_every,
            ..Counts::default()
        });
        let app = Router::new()
            .route("/TraceSegments", post(put))
            .route("/v1/traces", post(otlp))
            .route("/stats", get(stats))
            // OTLP requests of up to 4 MiB (axum's default cap is 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
            .with_state(counts);
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        eprintln!("fake X-Ray on {addr}");
        axum::serve(listener, app).await.expect("serve");
    });
}
