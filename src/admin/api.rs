//! The local JSON API: recent traces from the local store (`/api/traces`) and span metrics
//! (`/api/metrics`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::admin::AdminState;
use crate::exporters::local_store::{StoredSpan, TraceFilter};
use crate::model::{hex, parse_hex};
use crate::proto::{AnyValue, KeyValue, any_value};

/// Most traces one listing returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Query of `GET /api/metrics`.
#[derive(Debug, serde::Deserialize)]
pub struct MetricsQuery {
    service: Option<String>,
}

/// Span metrics per (service, operation, kind): count, errors, error rate, p50/p90/p99/max.
pub async fn span_metrics(State(s): State<AdminState>, Query(q): Query<MetricsQuery>) -> Response {
    let service = q.service.filter(|s| !s.is_empty());
    match tokio::task::spawn_blocking(move || s.span_metrics.summary(service.as_deref())).await {
        Ok(doc) => Json(doc).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "summary failed"),
    }
}

/// Query of `GET /api/traces`.
#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    service: Option<String>,
    min_duration_ms: Option<f64>,
    errors: Option<bool>,
    limit: Option<usize>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub async fn list_traces(State(s): State<AdminState>, Query(q): Query<ListQuery>) -> Response {
    let Some(store) = &s.store else {
        return error(
            StatusCode::NOT_FOUND,
            "the local exporter is not enabled (exporters setting)",
        );
    };
    let filter = TraceFilter {
        service: q.service.filter(|s| !s.is_empty()),
        min_duration_nanos: q.min_duration_ms.map(|ms| (ms.max(0.0) * 1e6) as u64),
        errors_only: q.errors.unwrap_or(false),
        limit: q.limit.unwrap_or(100).min(MAX_LIST_LIMIT),
    };
    Json(json!({ "traces": store.list(&filter) })).into_response()
}

pub async fn get_trace(State(s): State<AdminState>, Path(trace_id): Path<String>) -> Response {
    let Some(store) = &s.store else {
        return error(
            StatusCode::NOT_FOUND,
            "the local exporter is not enabled (exporters setting)",
        );
    };
    let Some(id) = parse_hex(&trace_id).and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
        return error(StatusCode::BAD_REQUEST, "trace ID must be 32 hex digits");
    };
    match store.get(&id) {
        Some(spans) => Json(json!({
            "trace_id": hex(&id),
            "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such trace in the local store"),
    }
}

/// An attribute value as plain JSON (bytes as hex, nested arrays and maps kept).
pub fn any_json(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match &v.value {
        Some(V::StringValue(s)) => json!(s),
        Some(V::BoolValue(b)) => json!(b),
        Some(V::IntValue(i)) => json!(i),
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| json!(d.to_string()), Value::Number)
        }
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(any_json).collect()),
        Some(V::KvlistValue(kv)) => attrs_json(&kv.values),
        Some(V::BytesValue(b)) => json!(hex(b)),
        Some(V::StringValueStrindex(i)) => json!(i),
        None => Value::Null,
    }
}

pub fn attrs_json(kvs: &[KeyValue]) -> Value {
    let mut m = Map::new();
    for kv in kvs {
        m.insert(
            kv.key.clone(),
            kv.value.as_ref().map_or(Value::Null, any_json),
        );
    }
    Value::Object(m)
}

fn id_or_null(b: &[u8]) -> Value {
    if b.is_empty() || b.iter().all(|x| *x == 0) {
        Value::Null
    } else {
        json!(hex(b))
    }
}

/// One stored span as the API returns it.
pub fn span_json(s: &StoredSpan) -> Value {
    let sp = &s.span;
    let status = sp.status.clone().unwrap_or_default();
    json!({
        "trace_id": hex(&sp.trace_id),
        "span_id": hex(&sp.span_id),
        "parent_span_id": id_or_null(&sp.parent_span_id),
        "name": sp.name,
        "kind": crate::model::SpanKind::from_otlp(sp.kind).label(),
        "service": &*s.service,
        "start_time_unix_nano": sp.start_time_unix_nano,
        "end_time_unix_nano": sp.end_time_unix_nano,
        "duration_ms": sp.end_time_unix_nano.saturating_sub(sp.start_time_unix_nano) as f64 / 1e6,
        "status": {
            "code": match status.code { 1 => "ok", 2 => "error", _ => "unset" },
            "message": status.message,
        },
        "attributes": attrs_json(&sp.attributes),
        "events": sp.events.iter().map(|e| json!({
            "name": e.name,
            "time_unix_nano": e.time_unix_nano,
            "attributes": attrs_json(&e.attributes),
        })).collect::<Vec<_>>(),
        "links": sp.links.iter().map(|l| json!({
            "trace_id": hex(&l.trace_id),
            "span_id": hex(&l.span_id),
            "attributes": attrs_json(&l.attributes),
        })).collect::<Vec<_>>(),
        "trace_state": sp.trace_state,
        "resource": attrs_json(&s.resource.attributes),
        "scope": { "name": s.scope.name, "version": s.scope.version },
    })
}
