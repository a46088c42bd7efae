//! The local JSON API: trace search and traces from the local store (`/api/traces`), its status
//! (`/api/store`), services and their calls (`/api/services`, `/api/dependencies`), and span
//! metrics (`/api/metrics`). Errors are JSON naming the bad parameter.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::admin::AdminState;
use crate::exporters::local::{Sort, StoreStatus, StoredSpan, TraceFilter};
use crate::model::{hex, parse_hex};
use crate::proto::{AnyValue, KeyValue, any_value};

/// Most traces one listing returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Query of `GET /api/metrics`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    service: Option<String>,
}

/// Span metrics per (service, operation, kind): count, errors, error rate, p50/p90/p99/max, a
/// latency histogram, and (in local mode) the stored traces with its slowest span and its
/// newest failure.
pub async fn span_metrics(
    State(s): State<AdminState>,
    q: Result<Query<MetricsQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text(), None),
    };
    let service = q.service.filter(|s| !s.is_empty());
    let started = s.started;
    let doc = tokio::task::spawn_blocking(move || {
        let mut doc = s.span_metrics.summary(service.as_deref());
        doc["uptime_seconds"] = json!(started.elapsed().as_secs_f64());
        let exemplars = s
            .store
            .as_ref()
            .map(|st| st.exemplars())
            .unwrap_or_default();
        if let Some(rows) = doc["series"].as_array_mut() {
            for row in rows {
                let key = (
                    row["service"].as_str().unwrap_or("").to_string(),
                    row["operation"].as_str().unwrap_or("").to_string(),
                );
                let ex = exemplars.get(&key).cloned().unwrap_or_default();
                row["slowest_trace_id"] = ex.slowest.map_or(Value::Null, |id| json!(hex(&id)));
                row["failed_trace_id"] = ex.failed.map_or(Value::Null, |id| json!(hex(&id)));
            }
        }
        doc
    });
    match doc.await {
        Ok(doc) => Json(doc).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "summary failed", None),
    }
}

/// A JSON error naming the bad parameter, when there is one.
fn error(status: StatusCode, message: &str, parameter: Option<&str>) -> Response {
    let mut doc = json!({ "error": message });
    if let Some(p) = parameter {
        doc["parameter"] = json!(p);
    }
    (status, Json(doc)).into_response()
}

fn no_store() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "the local exporter is not enabled (exporters setting)",
        None,
    )
}

/// Most `attr` filters one search takes.
pub const MAX_ATTR_FILTERS: usize = 8;

/// A search duration: "250us", "100ms", "1.5s", "2m", "1h", or a plain number of milliseconds.
pub fn parse_duration_nanos(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let nanos_per = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "" | "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let nanos = n * nanos_per;
    (nanos < u64::MAX as f64).then_some(nanos as u64)
}

fn parse_flag(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Builds the filter from `/api/traces`'s query pairs, or names the first bad parameter.
pub fn trace_filter(
    pairs: &[(String, String)],
    now_nanos: u64,
) -> Result<TraceFilter, (String, String)> {
    let mut f = TraceFilter {
        limit: 100,
        ..Default::default()
    };
    let bad = |p: &str, why: String| Err((p.to_string(), why));
    for (key, value) in pairs {
        let v = value.trim();
        let duration = || {
            parse_duration_nanos(v).ok_or_else(|| {
                (
                    key.clone(),
                    format!("{key}={v:?} is not a duration like 100ms, 1.5s or 2m"),
                )
            })
        };
        let unix_ms = || {
            v.parse::<u64>()
                .ok()
                .and_then(|ms| ms.checked_mul(1_000_000))
                .ok_or_else(|| {
                    (
                        key.clone(),
                        format!("{key}={v:?} is not a time in Unix milliseconds"),
                    )
                })
        };
        match key.as_str() {
            "service" if !v.is_empty() => f.service = Some(v.to_string()),
            "operation" if !v.is_empty() => f.operation = Some(v.to_string()),
            "service" | "operation" => {}
            "attr" if v.is_empty() => {}
            "attr" => {
                let Some((k, val)) = v.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
                    return bad(key, format!("attr={v:?} must be key=value"));
                };
                if f.attributes.len() == MAX_ATTR_FILTERS {
                    return bad(key, format!("at most {MAX_ATTR_FILTERS} attr filters"));
                }
                f.attributes
                    .push((k.trim().to_string(), val.trim().to_string()));
            }
            "min_duration" | "max_duration" | "min_duration_ms" | "lookback" if v.is_empty() => {}
            "min_duration" => f.min_duration_nanos = Some(duration()?),
            // The first API's name, in milliseconds.
            "min_duration_ms" => f.min_duration_nanos = Some(duration()?),
            "max_duration" => f.max_duration_nanos = Some(duration()?),
            "lookback" => f.start_from_nanos = Some(now_nanos.saturating_sub(duration()?)),
            "start" if !v.is_empty() => f.start_from_nanos = Some(unix_ms()?),
            "end" if !v.is_empty() => f.start_to_nanos = Some(unix_ms()?),
            "start" | "end" => {}
            "errors" => {
                f.errors_only = parse_flag(v)
                    .ok_or_else(|| (key.clone(), format!("errors={v:?} must be true or false")))?
            }
            "sort" if v.is_empty() => {}
            "sort" => {
                f.sort = Sort::from_name(v)
                    .ok_or_else(|| (key.clone(), format!("sort={v:?} must be {}", Sort::NAMES)))?
            }
            "limit" if v.is_empty() => {}
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => f.limit = n,
                _ => return bad(key, format!("limit={v:?} must be 1 to {MAX_LIST_LIMIT}")),
            },
            other => {
                return bad(
                    other,
                    format!(
                        "unknown parameter {other:?} (known: service, operation, attr, min_duration, max_duration, errors, lookback, start, end, sort, limit)"
                    ),
                );
            }
        }
    }
    Ok(f)
}

pub async fn list_traces(
    State(s): State<AdminState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Some(store) = s.store.clone() else {
        return no_store();
    };
    let pairs = match q {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text(), None),
    };
    let filter = match trace_filter(&pairs, now_nanos()) {
        Ok(f) => f,
        Err((param, message)) => return error(StatusCode::BAD_REQUEST, &message, Some(&param)),
    };
    // An attribute search inflates chunks: keep it off the admin server's workers.
    let found = tokio::task::spawn_blocking(move || (store.list(&filter), store.status())).await;
    match found {
        Ok((list, status)) => Json(json!({
            "traces": list.traces,
            "matched": list.matched,
            "store": status_json(&status),
        }))
        .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "search failed", None),
    }
}

fn status_json(st: &StoreStatus) -> Value {
    let mut doc = serde_json::to_value(st).unwrap_or_default();
    doc["now_unix_nano"] = json!(now_nanos());
    doc
}

/// `GET /api/store`: how much history the local store holds.
pub async fn store_status(State(s): State<AdminState>) -> Response {
    match &s.store {
        Some(store) => Json(status_json(&store.status())).into_response(),
        None => no_store(),
    }
}

/// `GET /api/services`: every service seen (stored spans and span metrics) and its operations.
pub async fn services(State(s): State<AdminState>) -> Response {
    let doc = tokio::task::spawn_blocking(move || {
        let mut all = s.store.as_ref().map(|st| st.services()).unwrap_or_default();
        if let Some(rows) = s.span_metrics.summary(None)["series"].as_array() {
            for row in rows.iter().filter(|r| r["overflow"] != json!(true)) {
                let (Some(svc), Some(op)) = (row["service"].as_str(), row["operation"].as_str()) else {
                    continue;
                };
                all.entry(svc.to_string()).or_default().insert(op.to_string());
            }
        }
        json!({
            "services": all.into_iter().map(|(name, ops)| json!({"name": name, "operations": ops})).collect::<Vec<_>>(),
        })
    })
    .await;
    match doc {
        Ok(doc) => Json(doc).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed", None),
    }
}

/// `GET /api/dependencies`: calls between services, from the stored traces.
pub async fn dependencies(State(s): State<AdminState>) -> Response {
    let Some(store) = s.store.clone() else {
        return no_store();
    };
    match tokio::task::spawn_blocking(move || store.dependencies()).await {
        Ok(edges) => Json(json!({ "edges": edges })).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "graph failed", None),
    }
}

pub async fn get_trace(State(s): State<AdminState>, Path(trace_id): Path<String>) -> Response {
    let Some(store) = s.store.clone() else {
        return no_store();
    };
    let Some(id) = parse_hex(&trace_id).and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "trace ID must be 32 hex digits",
            Some("trace_id"),
        );
    };
    match tokio::task::spawn_blocking(move || store.get(&id)).await {
        Ok(Some(spans)) => Json(json!({
            "trace_id": hex(&id),
            "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no such trace in the local store (never received, or evicted to stay within local.max_bytes)",
            None,
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "lookup failed", None),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn search_durations_take_units_or_milliseconds() {
        assert_eq!(parse_duration_nanos("100ms"), Some(100_000_000));
        assert_eq!(parse_duration_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration_nanos("250us"), Some(250_000));
        assert_eq!(parse_duration_nanos("2m"), Some(120_000_000_000));
        assert_eq!(parse_duration_nanos("40"), Some(40_000_000));
        for bad in ["", "fast", "-1s", "1.5 parsecs", "1e400s"] {
            assert_eq!(parse_duration_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_search_query_becomes_a_filter_or_names_its_bad_parameter() {
        let f = trace_filter(
            &pairs(&[
                ("service", "cart"),
                ("operation", "GET /cart"),
                ("attr", "http.response.status_code=500"),
                ("min_duration", "100ms"),
                ("max_duration", "1.5s"),
                ("errors", "1"),
                ("lookback", "15m"),
                ("sort", "longest"),
                ("limit", "20"),
                ("service", ""),
            ]),
            1_000_000_000_000,
        )
        .unwrap();
        assert_eq!(f.service.as_deref(), Some("cart"));
        assert_eq!(f.operation.as_deref(), Some("GET /cart"));
        assert_eq!(
            f.attributes,
            [("http.response.status_code".to_string(), "500".to_string())]
        );
        assert_eq!(
            (f.min_duration_nanos, f.max_duration_nanos),
            (Some(100_000_000), Some(1_500_000_000))
        );
        assert!(f.errors_only);
        assert_eq!(
            f.start_from_nanos,
            Some(1_000_000_000_000 - 900_000_000_000)
        );
        assert_eq!((f.sort, f.limit), (Sort::Longest, 20));
        for (k, v) in [
            ("errors", "maybe"),
            ("limit", "0"),
            ("limit", "5000"),
            ("sort", "random"),
            ("attr", "=x"),
            ("start", "yesterday"),
            ("min_duration_ms", "x"),
        ] {
            let err = trace_filter(&pairs(&[(k, v)]), 0).unwrap_err();
            assert_eq!(err.0, k, "{k}={v}: {}", err.1);
        }
        let nine = vec![("attr".to_string(), "a=b".to_string()); MAX_ATTR_FILTERS + 1];
        assert_eq!(trace_filter(&nine, 0).unwrap_err().0, "attr");
    }
}
