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
use crate::telemetry::span_metrics::SpanMetrics;
use crate::telemetry::{Registry, family};

/// Admin port, the Collector's health_check extension port.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:13133";

/// The `admin_addr` key.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub admin_addr: std::net::SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            admin_addr: DEFAULT_ADMIN_ADDR.parse().expect("default address parses"),
        }
    }
}

impl crate::config::Section for AdminConfig {
    const KEYS: &'static [crate::config::Key<Self>] = &[crate::config::Key::<Self>::addr(
        "admin_addr",
        "Admin address: /healthz, /readyz, /metrics, /api/traces and the local UI.",
        |c| &mut c.admin_addr,
    )
    .flag()];
}

/// Everything the admin endpoints read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Every component's own stats, rendered on `/metrics`.
    pub registry: Arc<Registry>,
    /// True once every listener is bound; false again while draining.
    pub ready: Arc<AtomicBool>,
    /// Present in local mode.
    pub store: Option<Arc<LocalStore>>,
    pub span_metrics: SpanMetrics,
    /// When the agent started: span metrics count from here (rates in `/api/metrics`).
    pub started: tokio::time::Instant,
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
        .route("/api/metrics", get(api::span_metrics))
        .route("/api/store", get(api::store_status))
        .route("/api/services", get(api::services))
        .route("/api/dependencies", get(api::dependencies))
        .with_state(state)
}

/// Serves the admin routes on `listener` until `stop` resolves.
pub fn start(
    listener: tokio::net::TcpListener,
    state: AdminState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let app = router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(listener = "admin", error = %e, "Admin server stopped with an error.");
        }
    })
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
    let mut text = String::with_capacity(16 * 1024);
    family(
        &mut text,
        "sidetrace_build_info",
        "gauge",
        "Build information.",
        [(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
    );
    family(
        &mut text,
        "sidetrace_ready",
        "gauge",
        "1 when every listener is bound and the agent is not draining.",
        [(String::new(), u64::from(s.ready.load(Ordering::Acquire)))],
    );
    text.push_str(&s.registry.render());
    // Thousands of series take milliseconds to render: keep that off the receivers' workers.
    let text = tokio::task::spawn_blocking(move || {
        s.span_metrics.render_prometheus(&mut text);
        text
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn ui() -> Html<&'static str> {
    Html(include_str!("ui.html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(ready: bool, store: bool) -> AdminState {
        let registry = Arc::new(Registry::default());
        registry.register(Arc::new(crate::pipeline::Queue::new(10, 1000)));
        let store = store.then(|| Arc::new(LocalStore::new(10, 1 << 20, 10)));
        if let Some(s) = &store {
            registry.register(s.clone());
        }
        AdminState {
            registry,
            ready: Arc::new(AtomicBool::new(ready)),
            store,
            span_metrics: SpanMetrics::new(Default::default()),
            started: tokio::time::Instant::now(),
        }
    }

    async fn get(state: AdminState, path: &str) -> (StatusCode, String) {
        let r = router(state)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_ready_flag_and_healthz_is_always_ok() {
        assert_eq!(get(state(true, true), "/readyz").await.0, StatusCode::OK);
        assert_eq!(
            get(state(false, true), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(state(false, true), "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_and_api_answer() {
        let (s, text) = get(state(true, true), "/metrics").await;
        assert_eq!(s, StatusCode::OK);
        assert!(text.contains("sidetrace_queue_capacity_spans 10\n"));
        assert!(text.contains("sidetrace_local_store_traces 0\n"));
        let (s, doc) = get(state(true, true), "/api/traces").await;
        assert_eq!(s, StatusCode::OK);
        assert!(doc.starts_with("{\"matched\":0,\"store\":{"), "{doc}");
        assert!(doc.ends_with("\"traces\":[]}"), "{doc}");
        let (s, doc) = get(state(true, true), "/api/traces?min_duration=fast").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(doc.contains("\"parameter\":\"min_duration\""), "{doc}");
        let (s, doc) = get(state(true, true), "/api/traces?colour=red").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(doc.contains("unknown parameter \\\"colour\\\""), "{doc}");
        for path in ["/api/store", "/api/services", "/api/dependencies"] {
            assert_eq!(
                get(state(true, true), path).await.0,
                StatusCode::OK,
                "{path}"
            );
        }
        assert_eq!(
            get(state(true, false), "/api/store").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(state(true, false), "/api/traces").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(state(true, true), "/api/traces/xyz").await.0,
            StatusCode::BAD_REQUEST
        );
        let (s, doc) = get(state(true, false), "/api/metrics?service=x").await;
        assert_eq!(s, StatusCode::OK);
        assert!(doc.contains("\"series\":[]"), "{doc}");
        let (s, page) = get(state(true, true), "/").await;
        assert_eq!(s, StatusCode::OK);
        assert!(page.contains("<title>sidetrace</title>"));
    }
}
