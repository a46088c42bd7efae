//! Admin HTTP server: `/healthz`, `/readyz`, `/metrics`, the local trace API and the local UI.

pub mod api;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::exporters::LocalStore;
use crate::pipeline::Queue;
use crate::telemetry::{Gauges, Metrics};

/// Everything the admin endpoints read.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub queue: Arc<Queue>,
    /// True once every listener is bound; false again while draining.
    pub ready: Arc<AtomicBool>,
    /// Present in local mode.
    pub store: Option<Arc<LocalStore>>,
}

/// The admin routes, testable with `oneshot` and no socket.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(ui))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/traces", get(api::list_traces))
        .route("/api/traces/{trace_id}", get(api::get_trace))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let gauges = Gauges {
        ready: s.ready.load(Ordering::Acquire),
        queue_spans: s.queue.queued_spans(),
        queue_bytes: s.queue.queued_bytes(),
        queue_capacity_spans: s.queue.max_spans(),
        queue_capacity_bytes: s.queue.max_bytes(),
        local_traces: s.store.as_ref().map(|st| st.stats()),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(&gauges),
    )
        .into_response()
}

async fn ui() -> Html<&'static str> {
    Html(include_str!("ui.html"))
}
