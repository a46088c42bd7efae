//! Span-metrics tests: labels, shards, cardinality caps, Prometheus text and accuracy.

use std::sync::Arc;

use prost::Message;

use super::*;
use crate::model::Protocol;
use crate::proto::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
    Status, any_value,
};
use crate::receivers::decode::decode_request;
use crate::workload::Rng;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A span for tests: `attrs` are string attributes; `http_status` 0 means none.
pub(crate) fn span(
    name: &str,
    kind: i32,
    error: bool,
    dur_us: u64,
    attrs: &[(&str, &str)],
    http_status: i64,
) -> Span {
    let mut attributes: Vec<KeyValue> = attrs
        .iter()
        .map(|(k, v)| kv(k, any_value::Value::StringValue((*v).into())))
        .collect();
    if http_status > 0 {
        attributes.push(kv(
            "http.response.status_code",
            any_value::Value::IntValue(http_status),
        ));
    }
    let start = 1_700_000_000_000_000_000u64;
    Span {
        trace_id: vec![7; 16].into(),
        span_id: vec![9; 8].into(),
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_us * 1000,
        attributes,
        status: Some(Status {
            code: if error { 2 } else { 0 },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A decoded batch: one resource per (service, version, spans).
pub(crate) fn batch(resources: Vec<(&str, &str, Vec<Span>)>) -> crate::model::Batch {
    let req = ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(service, version, spans)| {
                let mut attributes = Vec::new();
                if !service.is_empty() {
                    attributes.push(kv(
                        "service.name",
                        any_value::Value::StringValue(service.into()),
                    ));
                }
                if !version.is_empty() {
                    attributes.push(kv(
                        "service.version",
                        any_value::Value::StringValue(version.into()),
                    ));
                }
                ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect(),
    };
    decode_request(req.encode_to_vec().into(), Protocol::Grpc)
        .unwrap()
        .batch
}

fn rows(m: &SpanMetrics) -> Vec<(String, String, String, &'static str, &'static str, u64)> {
    m.snapshot()
        .series
        .iter()
        .map(|s| {
            let l = &s.labels;
            (
                l.service.to_string(),
                l.version.to_string(),
                l.operation.to_string(),
                l.kind.label(),
                l.status.label(),
                s.histogram().total,
            )
        })
        .collect()
}

#[test]
fn operations_status_classes_and_kinds_label_the_series() {
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let b = batch(vec![
        (
            "shop",
            "1.0",
            vec![
                span(
                    "GET /cart/{id}",
                    2,
                    false,
                    900,
                    &[
                        ("http.route", "/cart/{id}"),
                        ("http.request.method", "GET"),
                        ("url.path", "/cart/7"),
                    ],
                    200,
                ),
                span(
                    "GET /cart/{id}",
                    2,
                    false,
                    1100,
                    &[("http.route", "/cart/{id}"), ("http.request.method", "GET")],
                    200,
                ),
                span(
                    "POST",
                    2,
                    false,
                    5,
                    &[
                        ("url.path", "/users/42/orders/9f8e7d6c5b4a"),
                        ("http.request.method", "POST"),
                    ],
                    503,
                ),
                span(
                    "POST",
                    2,
                    false,
                    5,
                    &[
                        ("http.target", "/users/7/orders/1?x=1"),
                        ("http.method", "POST"),
                    ],
                    404,
                ),
                span(
                    "POST",
                    2,
                    false,
                    5,
                    &[("url.path", "/users/7"), ("http.request.method", "POST")],
                    429,
                ),
                span("SELECT orders", 3, true, 250, &[], 0),
                span("render", 1, true, 30, &[], 200),
                span(
                    "weird",
                    2,
                    false,
                    30,
                    &[("url.path", "/x"), ("http.request.method", "get")],
                    0,
                ),
            ],
        ),
        ("", "", vec![span("work", 9, false, 1, &[], 0)]),
    ]);
    m.record(&b);
    let got = rows(&m);
    let want = vec![
        ("shop", "GET /cart/{id}", "server", "ok", 2),
        ("shop", "POST /users/{id}", "server", "throttle", 1),
        ("shop", "POST /users/{id}/orders/{id}", "server", "error", 1),
        ("shop", "POST /users/{id}/orders/{id}", "server", "fault", 1),
        ("shop", "SELECT orders", "client", "fault", 1),
        ("shop", "_OTHER /x", "server", "ok", 1),
        // ERROR status with a 2xx code: still a fault (the X-Ray translator's rule).
        ("shop", "render", "internal", "fault", 1),
        ("unknown_service", "work", "unspecified", "ok", 1),
    ];
    let got_short: Vec<_> = got
        .iter()
        .map(|r| (r.0.as_str(), r.2.as_str(), r.3, r.4, r.5))
        .collect();
    assert_eq!(got_short, want);
    // service.version is a label only when enabled.
    assert!(got.iter().all(|r| r.1.is_empty()));
    let m = SpanMetrics::new(SpanMetricsConfig {
        service_version: true,
        ..Default::default()
    });
    m.record(&b);
    assert_eq!(rows(&m)[0].1, "1.0");
}

#[test]
fn worker_keys_name_the_same_series_as_the_registry() {
    // A worker keys a span by (its service number, kind, status, method code, route bytes)
    // and falls back to the written-out operation: every way in must land on the series the
    // registry's text key names, whatever the batch, the order, or the key's length.
    let long_route = format!("/{}", "segment/".repeat(12));
    let long_name = "a span name longer than the forty-six bytes kept inline in an entry";
    let spans = |n: usize| {
        let mut v = Vec::new();
        for i in 0..n {
            v.push(span(
                "x",
                2,
                false,
                10,
                &[("http.route", "/a"), ("http.request.method", "GET")],
                200,
            ));
            v.push(span(
                "x",
                2,
                false,
                10,
                &[("http.route", "/a"), ("http.request.method", "PUT")],
                200,
            ));
            // Unknown methods share `_OTHER`, however spelled.
            let odd = if i % 2 == 0 { "FOO" } else { "BAR" };
            v.push(span(
                "x",
                2,
                false,
                10,
                &[("http.route", "/a"), ("http.request.method", odd)],
                200,
            ));
            v.push(span("x", 2, false, 10, &[("http.route", "/a")], 200));
            v.push(span(
                "x",
                2,
                false,
                10,
                &[("http.route", &long_route), ("http.request.method", "GET")],
                200,
            ));
            v.push(span(long_name, 1, false, 10, &[], 0));
            v.push(span("/a", 1, false, 10, &[], 0));
        }
        v
    };
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    for round in 0..3 {
        // Different resource orders and more than one resource per service.
        let b = if round == 1 {
            batch(vec![
                ("two", "", spans(2)),
                ("one", "", spans(2)),
                ("one", "", spans(1)),
            ])
        } else {
            batch(vec![("one", "", spans(3)), ("two", "", spans(2))])
        };
        m.record(&b);
    }
    let mut got: Vec<(String, String, u64)> =
        rows(&m).into_iter().map(|r| (r.0, r.2, r.5)).collect();
    got.sort();
    let long_op = format!("GET {long_route}");
    let want_for = |service: &str, n: u64| {
        vec![
            (service.to_string(), "/a".to_string(), n * 2),
            (service.to_string(), "GET /a".to_string(), n),
            (service.to_string(), long_op.clone(), n),
            (service.to_string(), "PUT /a".to_string(), n),
            (service.to_string(), "_OTHER /a".to_string(), n),
            (service.to_string(), long_name.to_string(), n),
        ]
    };
    let mut want = want_for("one", 3 + 3 + 3);
    want.extend(want_for("two", 2 + 2 + 2));
    want.sort();
    // "/a" counts the route without a method and the span named "/a" (kind differs).
    let merged: Vec<(String, String, u64)> = got
        .chunk_by(|a, b| a.0 == b.0 && a.1 == b.1)
        .map(|c| (c[0].0.clone(), c[0].1.clone(), c.iter().map(|r| r.2).sum()))
        .collect();
    assert_eq!(merged, want);
}

#[test]
fn a_worker_forgets_its_service_numbers_without_losing_counts() {
    let m = SpanMetrics::new(SpanMetricsConfig {
        max_services: 10_000,
        ..Default::default()
    });
    let services = LOCAL_SERVICES + 100;
    for round in 0..2 {
        for chunk in (0..services).collect::<Vec<_>>().chunks(500) {
            let names: Vec<String> = chunk.iter().map(|i| format!("svc-{i}")).collect();
            let b = batch(
                names
                    .iter()
                    .map(|n| {
                        let s = span("op", 2, false, 10 + round, &[], 0);
                        (n.as_str(), "", vec![s])
                    })
                    .collect(),
            );
            m.record(&b);
        }
    }
    let snap = m.snapshot();
    assert_eq!(snap.series.len(), services);
    assert!(snap.series.iter().all(|s| s.histogram().total == 2));
}

#[test]
fn worker_shards_merge_in_snapshots() {
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let b = Arc::new(batch(vec![(
        "svc",
        "",
        (0..100)
            .map(|i| span(&format!("op{}", i % 4), 2, false, 1000 + i, &[], 0))
            .collect(),
    )]));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (m, b) = (m.clone(), b.clone());
            scope.spawn(move || {
                for _ in 0..250 {
                    m.record(&b);
                }
            });
        }
    });
    let snap = m.snapshot();
    assert_eq!(snap.series.len(), 4);
    for s in &snap.series {
        assert_eq!(s.cells.len(), 4, "one cell per worker thread");
        assert_eq!(s.histogram().total, 4 * 250 * 25);
    }
}

#[test]
fn a_hundred_thousand_url_paths_make_a_handful_of_series() {
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let mut rng = Rng::new(5);
    for chunk in 0..100 {
        let spans = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                let path = match n % 4 {
                    0 => format!("/users/{n}/orders"),
                    1 => format!(
                        "/orders/{:08x}-{:04x}-4a5b-8c9d-{:012x}",
                        rng.next_u64() as u32,
                        n % 65536,
                        n
                    ),
                    2 => format!("/blobs/{:016x}", rng.next_u64()),
                    _ => format!("/search?q=term{n}"),
                };
                span(
                    "GET",
                    2,
                    false,
                    10,
                    &[("url.path", &path), ("http.request.method", "GET")],
                    200,
                )
            })
            .collect();
        m.record(&batch(vec![("web", "", spans)]));
    }
    let ops: Vec<String> = rows(&m).into_iter().map(|r| r.2).collect();
    assert_eq!(
        ops,
        [
            "GET /blobs/{id}",
            "GET /orders/{id}",
            "GET /search",
            "GET /users/{id}/orders"
        ]
    );
}

#[test]
fn the_cap_sends_further_label_sets_to_an_overflow_series_and_says_so() {
    let m = SpanMetrics::new(SpanMetricsConfig {
        max_services: 3,
        ..Default::default()
    });
    for chunk in 0..100 {
        // Routes are taken as sent (they are templates already): 100,000 distinct ones.
        let spans = (0..1000)
            .map(|i| {
                span(
                    "x",
                    2,
                    false,
                    10,
                    &[("http.route", &format!("/r{}", chunk * 1000 + i))],
                    0,
                )
            })
            .collect();
        m.record(&batch(vec![("flood", "", spans)]));
    }
    for svc in ["a", "b", "c", "d"] {
        m.record(&batch(vec![(
            svc,
            "",
            vec![span("op", 2, false, 10, &[], 0)],
        )]));
    }
    let snap = m.snapshot();
    assert_eq!(snap.series.len(), 500 + 1 + 2 + 1, "{:?}", snap.services);
    let overflow: Vec<_> = rows(&m).into_iter().filter(|r| r.2 == OVERFLOW).collect();
    assert_eq!(overflow.len(), 2);
    assert_eq!(overflow[0].0, "_overflow"); // service "d" came after the 3-service cap
    assert_eq!(overflow[1].0, "flood");
    assert_eq!(overflow[1].5, 100_000 - 500);
    let mut text = String::new();
    m.render_prometheus(&mut text);
    assert!(text.contains("sidetrace_span_metrics_series{service=\"flood\"} 500\n"));
    assert!(
        text.contains("sidetrace_span_metrics_overflow_spans_total{service=\"flood\"} 99500\n")
    );
    assert!(text.contains("sidetrace_span_metrics_series_limit 500\n"));
    // The registry did not remember the overflowing names.
    let reg = m.shared.registry.lock().unwrap();
    assert!(reg.by_key.len() <= 503, "{}", reg.by_key.len());
}

/// The series of one family in a Prometheus text page, as (labels, value).
pub(crate) fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

#[test]
fn prometheus_histograms_are_cumulative_consistent_and_escaped() {
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let weird = "we\"ird\\svc\nnew line ünï";
    m.record(&batch(vec![(
        weird,
        "",
        vec![
            span("a\"b", 2, false, 500, &[], 0),
            span("a\"b", 2, false, 2500, &[], 0),
            span("a\"b", 2, false, 70_000_000, &[], 0),
            span("a\"b", 2, true, 7, &[], 0),
        ],
    )]));
    let mut text = String::new();
    m.render_prometheus(&mut text);
    let labels =
        r#"service="we\"ird\\svc\nnew line ünï",operation="a\"b",kind="server",status="ok""#;
    let buckets = samples(&text, "sidetrace_span_duration_seconds_bucket");
    let ok: Vec<_> = buckets
        .iter()
        .filter(|(l, _)| l.starts_with(labels))
        .collect();
    assert_eq!(ok.len(), 16);
    let values: Vec<f64> = ok.iter().map(|(_, v)| *v).collect();
    // 0.5 ms ≤ 1 ms; 2.5 ms exactly on its bound; 70 s only in +Inf.
    assert_eq!(values[0], 1.0);
    assert_eq!(values[1], 2.0);
    assert_eq!(values[14], 2.0);
    assert_eq!(values[15], 3.0);
    assert!(values.windows(2).all(|w| w[0] <= w[1]));
    assert!(ok[15].0.ends_with("le=\"+Inf\""));
    assert!(text.contains(&format!(
        "sidetrace_span_duration_seconds_count{{{labels}}} 3\n"
    )));
    assert!(text.contains(&format!(
        "sidetrace_span_duration_seconds_sum{{{labels}}} 70.003\n"
    )));
    assert!(text.contains(&format!("sidetrace_spans_total{{{labels}}} 3\n")));
    assert!(text.contains(r#"sidetrace_span_errors_total{service="we\"ird\\svc\nnew line ünï",operation="a\"b",kind="server"} 1"#));
    // Every family has its HELP and TYPE once.
    for family in [
        "sidetrace_span_duration_seconds",
        "sidetrace_spans_total",
        "sidetrace_span_errors_total",
    ] {
        assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1);
    }
    assert!(!text.contains("\n\n"));
}

/// Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the rank.
pub(crate) fn histogram_quantile(q: f64, bounds: &[f64], cumulative: &[f64]) -> f64 {
    let total = *cumulative.last().unwrap();
    let rank = q * total;
    let i = cumulative.iter().position(|c| *c >= rank).unwrap();
    if i == bounds.len() {
        return bounds[bounds.len() - 1];
    }
    let (lo, below) = if i == 0 {
        (0.0, 0.0)
    } else {
        (bounds[i - 1], cumulative[i - 1])
    };
    lo + (bounds[i] - lo) * (rank - below) / (cumulative[i] - below)
}

/// Deterministic latency distributions in µs: log-normal, uniform, bimodal (fast hits, slow misses).
pub(crate) fn distributions() -> Vec<(&'static str, Vec<u64>)> {
    let mut rng = Rng::new(42);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut normal = move || {
        let (a, b) = (unit().max(1e-12), unit());
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    };
    let lognormal: Vec<u64> = (0..50_000)
        .map(|_| (20_000.0 * (0.8 * normal()).exp()) as u64)
        .collect();
    let mut rng = Rng::new(7);
    let uniform: Vec<u64> = (0..50_000).map(|_| 10_000 + rng.below(10_000)).collect();
    let bimodal: Vec<u64> = (0..50_000)
        .map(|i| {
            if i % 10 == 0 {
                400_000 + rng.below(200_000)
            } else {
                800 + rng.below(400)
            }
        })
        .collect();
    vec![
        ("lognormal", lognormal),
        ("uniform", uniform),
        ("bimodal", bimodal),
    ]
}

pub(crate) fn exact_quantile(sorted: &[u64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1] as f64
}

fn record_values(m: &SpanMetrics, service: &str, values: &[u64]) {
    for chunk in values.chunks(2000) {
        m.record(&batch(vec![(
            service,
            "",
            chunk
                .iter()
                .map(|v| span("op", 2, false, *v, &[], 0))
                .collect(),
        )]));
    }
}

#[test]
fn quantiles_from_buckets_and_the_json_api_are_within_the_stated_error() {
    // The default ladder and a fine one (5% apart, 0.5 ms … 2 s: 170 bounds).
    let fine: Vec<f64> = (0..)
        .map(|k| 0.0005 * 1.05f64.powi(k))
        .take_while(|b| *b <= 2.0)
        .collect();
    for (name, values) in distributions() {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for (ladder, bounds) in [
            ("default", DEFAULT_BUCKETS_SECONDS.to_vec()),
            ("fine", fine.clone()),
        ] {
            let m = SpanMetrics::new(SpanMetricsConfig {
                buckets_seconds: bounds.clone(),
                ..Default::default()
            });
            record_values(&m, name, &values);
            let mut text = String::new();
            m.render_prometheus(&mut text);
            let cumulative: Vec<f64> = samples(&text, "sidetrace_span_duration_seconds_bucket")
                .iter()
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(cumulative.len(), bounds.len() + 1);
            for q in [0.5, 0.99] {
                let truth = exact_quantile(&sorted, q) / 1e6;
                let est = histogram_quantile(q, &bounds, &cumulative);
                if ladder == "fine" {
                    // Interpolation inside a 5% bucket: within 5% (+ HDR's 0.1%).
                    let err = (est - truth).abs() / truth;
                    assert!(err <= 0.051, "{name} {ladder} q={q}: {est} vs {truth}");
                } else {
                    // Classic buckets can only promise the bucket that holds the true value.
                    let i = bounds.partition_point(|b| *b < truth);
                    let lo = if i == 0 { 0.0 } else { bounds[i - 1] };
                    let hi = bounds.get(i).copied().unwrap_or(f64::INFINITY);
                    assert!(
                        lo * 0.999 <= est && est <= hi * 1.001,
                        "{name} q={q}: {est} not in ({lo}, {hi}]"
                    );
                }
            }
            // The JSON API reads the HDR histogram itself: within 1/1024.
            let doc = m.summary(None);
            let row = &doc["series"][0];
            assert_eq!(row["count"], values.len() as u64);
            for (key, q) in [
                ("p50_ms", 0.5),
                ("p90_ms", 0.9),
                ("p99_ms", 0.99),
                ("max_ms", 1.0),
            ] {
                let truth = exact_quantile(&sorted, q) / 1000.0;
                let got = row[key].as_f64().unwrap();
                assert!(
                    (got - truth).abs() / truth <= 1.0 / 1024.0,
                    "{name} {key}: {got} vs {truth}"
                );
            }
        }
    }
}

#[test]
fn summary_merges_status_classes_and_reports_error_rates() {
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let mut spans: Vec<Span> = (0..90)
        .map(|_| span("GET /a", 2, false, 1000, &[("http.route", "/a")], 200))
        .collect();
    spans.extend((0..10).map(|_| span("GET /a", 2, false, 9000, &[("http.route", "/a")], 500)));
    m.record(&batch(vec![("svc", "", spans)]));
    let doc = m.summary(Some("svc"));
    let rows = doc["series"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r["operation"], "/a");
    assert_eq!(r["count"], 100);
    assert_eq!(r["errors"], 10);
    assert_eq!(r["error_rate"], 0.1);
    assert_eq!(r["by_status"]["fault"], 10);
    assert_eq!(r["p50_ms"], 1.0);
    // HdrHistogram reports the highest value of the counter: 9,000 µs shares one with 9,007.
    assert_eq!(r["max_ms"], 9.007);
    assert!(
        m.summary(Some("other"))["series"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bucket_counts_from_split_pages_equal_counting_each_value() {
    // Pages across one bound are counted from their slots' two counts, pages across more from
    // their counters: both must give what placing every value by the `le` rule gives. Ladders:
    // the default, one with bounds inside the linear range (< 2,048 µs), and a dense one that
    // puts several bounds in one page.
    let ladders: [&[f64]; 3] = [
        &DEFAULT_BUCKETS_SECONDS,
        &[0.0001, 0.0002, 0.00021, 0.0009, 0.002, 0.1],
        &[0.01, 0.01001, 0.01002, 0.01003, 0.0101, 0.011, 0.5],
    ];
    let mut rng = Rng::new(5);
    for ladder in ladders {
        let m = SpanMetrics::new(SpanMetricsConfig {
            buckets_seconds: ladder.to_vec(),
            ..Default::default()
        });
        let values: Vec<u64> = (0..40_000)
            .map(|_| match rng.below(3) {
                0 => 50 + rng.below(3000),
                1 => 9_900 + rng.below(1_300),
                _ => {
                    let magnitude = rng.below(30);
                    1 + rng.below(1 << magnitude)
                }
            })
            .collect();
        record_values(&m, "svc", &values);
        let bounds_us: Vec<u64> = ladder.iter().map(|b| (b * 1e6).floor() as u64).collect();
        let mut want = vec![0u64; ladder.len() + 1];
        for v in &values {
            let lowest = hdr::lowest_value(hdr::index_of(*v));
            want[bounds_us.partition_point(|b| *b < lowest)] += 1;
        }
        let snap = m.snapshot();
        assert_eq!(snap.series.len(), 1);
        let got = m.shared.buckets.counts(&snap.series[0]);
        assert_eq!(got, want, "ladder {ladder:?}");
        assert!(
            m.shared
                .buckets
                .splits
                .iter()
                .any(|s| *s < hdr::PAGE_LEN as u8)
        );
        let sum: u64 = values.iter().map(|v| (*v).min(hdr::MAX_VALUE_US)).sum();
        assert_eq!(snap.series[0].histogram().sum_us, sum);
    }
}
