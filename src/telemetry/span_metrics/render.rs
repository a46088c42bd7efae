//! Span metrics out: Prometheus text for `/metrics` (classic histograms from the HDR counts)
//! and the JSON summary of `/api/metrics`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::hdr::{self, Histogram, PAGE_LEN, PAGES};
use super::{OVERFLOW, SeriesLabels, SeriesRef, Snapshot, StatusClass};

/// Most `le` bounds accepted (bucket numbers are kept in a byte per HDR counter).
pub const MAX_BUCKETS: usize = 200;

/// A Prometheus `le` ladder mapped onto HDR counters, computed once per configuration.
#[derive(Debug, Clone)]
pub struct Buckets {
    le_text: Vec<String>,
    /// For each page: runs of counters in one bucket, as (first counter in the page, bucket);
    /// bucket `len()` is `+Inf` only. Most pages are one run and are counted by their totals.
    page_runs: Vec<Vec<(usize, usize)>>,
    /// Where each page's second run starts: the cells count the first run apart (see
    /// [`hdr::Splits`]), so pages across one bound are counted without reading counters.
    pub splits: hdr::Splits,
}

impl Buckets {
    /// `bounds` in seconds, ascending and positive (the config checks this); at most
    /// [`MAX_BUCKETS`]. A counter is in `le` when its lowest value is ≤ `le`, so a duration
    /// exactly on a bound lands in that bound's bucket (HDR precision: 1/1024 of the value).
    pub fn new(bounds: &[f64]) -> Self {
        let bounds = &bounds[..bounds.len().min(MAX_BUCKETS)];
        let bounds_us: Vec<u64> = bounds.iter().map(|b| (b * 1e6).floor() as u64).collect();
        let bucket_of = |i: usize| bounds_us.partition_point(|b| *b < hdr::lowest_value(i));
        let page_runs = (0..PAGES)
            .map(|p| {
                let mut runs: Vec<(usize, usize)> = Vec::new();
                for k in 0..PAGE_LEN.min(hdr::INDEX_COUNT - p * PAGE_LEN) {
                    let b = bucket_of(p * PAGE_LEN + k);
                    if runs.last().is_none_or(|r| r.1 != b) {
                        runs.push((k, b));
                    }
                }
                runs
            })
            .collect();
        let mut splits = hdr::NO_SPLIT;
        for (split, runs) in splits.iter_mut().zip(&page_runs) {
            let runs: &Vec<(usize, usize)> = runs;
            if let Some(second) = runs.get(1) {
                *split = second.0 as u8;
            }
        }
        Buckets {
            le_text: bounds.iter().map(|b| format!("{b}")).collect(),
            page_runs,
            splits,
        }
    }

    /// Per-bucket (not cumulative) counts of one series, `+Inf` last. A page in one bucket or
    /// across one bound is counted from its slots' two counts; only pages across two or more
    /// bounds (a dense custom ladder) are read counter by counter past their first run.
    pub fn counts(&self, series: &SeriesRef) -> Vec<u64> {
        let mut counts = vec![0u64; self.le_text.len() + 1];
        for p in hdr::used_pages(&series.cells) {
            let runs = &self.page_runs[p];
            let (first, rest) = hdr::page_parts(&series.cells, p);
            counts[runs[0].1] += first;
            match runs[..] {
                [_] => counts[runs[0].1] += rest,
                [_, (_, b)] => counts[b] += rest,
                _ => {
                    for cell in &series.cells {
                        let Some(page) = cell.page(p) else { continue };
                        for (n, &(start, b)) in runs.iter().enumerate().skip(1) {
                            let end = runs.get(n + 1).map_or(PAGE_LEN, |r| r.0);
                            counts[b] += page[start..end]
                                .iter()
                                .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                                .sum::<u64>();
                        }
                    }
                }
            }
        }
        counts
    }
}

/// Appends a label value with Prometheus text-format escaping (backslash, quote, newline).
pub fn push_escaped(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// Appends a series' labels except its status (which the families add or leave out).
pub fn push_labels(out: &mut String, l: &SeriesLabels, version: bool) {
    out.push_str("service=\"");
    push_escaped(out, &l.service);
    if version {
        out.push_str("\",service_version=\"");
        push_escaped(out, &l.version);
    }
    out.push_str("\",operation=\"");
    push_escaped(out, &l.operation);
    out.push_str("\",kind=\"");
    out.push_str(l.kind.label());
    out.push('"');
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends every span-metrics family in the Prometheus text format (0.0.4).
pub fn prometheus(snapshot: &Snapshot, buckets: &Buckets, out: &mut String) {
    let mut totals = Vec::with_capacity(snapshot.series.len());
    let mut labels = String::with_capacity(256);
    let mut int = itoa::Buffer::new();
    header(
        out,
        "sidetrace_span_duration_seconds",
        "histogram",
        "Duration of every admitted span (before sampling), by service, operation, kind and status class.",
    );
    for s in &snapshot.series {
        labels.clear();
        labels.push_str(&s.text);
        labels.push_str(",status=\"");
        labels.push_str(s.labels.status.label());
        labels.push('"');
        let counts = buckets.counts(s);
        let mut cumulative = 0;
        for (le, c) in buckets
            .le_text
            .iter()
            .map(String::as_str)
            .chain(["+Inf"])
            .zip(&counts)
        {
            cumulative += c;
            out.push_str("sidetrace_span_duration_seconds_bucket{");
            out.push_str(&labels);
            out.push_str(",le=\"");
            out.push_str(le);
            out.push_str("\"} ");
            out.push_str(int.format(cumulative));
            out.push('\n');
        }
        let sum_us: u64 = s.cells.iter().map(|c| c.sum_us()).sum();
        let _ = writeln!(
            out,
            "sidetrace_span_duration_seconds_sum{{{labels}}} {}",
            sum_us as f64 / 1e6
        );
        out.push_str("sidetrace_span_duration_seconds_count{");
        out.push_str(&labels);
        out.push_str("} ");
        out.push_str(int.format(cumulative));
        out.push('\n');
        totals.push(cumulative);
    }
    header(
        out,
        "sidetrace_spans_total",
        "counter",
        "Spans admitted, by service, operation, kind and status class (ok, error = 4xx, fault = 5xx or ERROR, throttle = 429).",
    );
    for (s, total) in snapshot.series.iter().zip(&totals) {
        out.push_str("sidetrace_spans_total{");
        out.push_str(&s.text);
        out.push_str(",status=\"");
        out.push_str(s.labels.status.label());
        out.push('"');
        out.push_str("} ");
        out.push_str(int.format(*total));
        out.push('\n');
    }
    header(
        out,
        "sidetrace_span_errors_total",
        "counter",
        "Spans whose status class is error, fault or throttle, by service, operation and kind.",
    );
    let mut i = 0;
    while i < snapshot.series.len() {
        let first = &snapshot.series[i].labels;
        let text = &snapshot.series[i].text;
        let mut errors = 0;
        while i < snapshot.series.len() && same_group(first, &snapshot.series[i].labels) {
            if snapshot.series[i].labels.status != StatusClass::Ok {
                errors += totals[i];
            }
            i += 1;
        }
        out.push_str("sidetrace_span_errors_total{");
        out.push_str(text);
        out.push_str("} ");
        out.push_str(int.format(errors));
        out.push('\n');
    }
    header(
        out,
        "sidetrace_span_metrics_series_limit",
        "gauge",
        "Series kept per service; spans of further label sets go to the service's _overflow series.",
    );
    let _ = writeln!(
        out,
        "sidetrace_span_metrics_series_limit {}",
        snapshot.max_series_per_service
    );
    header(
        out,
        "sidetrace_span_metrics_series",
        "gauge",
        "Span-metrics series per service (overflow series not counted).",
    );
    for (service, n) in &snapshot.services {
        out.push_str("sidetrace_span_metrics_series{service=\"");
        push_escaped(out, service);
        out.push_str("\"} ");
        out.push_str(int.format(*n));
        out.push('\n');
    }
    header(
        out,
        "sidetrace_span_metrics_overflow_spans_total",
        "counter",
        "Spans recorded into a service's _overflow series because it had reached the series limit.",
    );
    for (service, _) in &snapshot.services {
        let overflow: u64 = snapshot
            .series
            .iter()
            .zip(&totals)
            .filter(|(s, _)| s.labels.is_overflow() && s.labels.service == *service)
            .map(|(_, t)| t)
            .sum();
        out.push_str("sidetrace_span_metrics_overflow_spans_total{service=\"");
        push_escaped(out, service);
        out.push_str("\"} ");
        out.push_str(int.format(overflow));
        out.push('\n');
    }
}

fn same_group(a: &SeriesLabels, b: &SeriesLabels) -> bool {
    a.service == b.service
        && a.version == b.version
        && a.operation == b.operation
        && a.kind == b.kind
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Upper bounds (ms) of the latency histogram `/api/metrics` gives each row (the last bucket,
/// `null`, is everything slower): 1-2.5-5 steps, coarse enough to draw as a row of bars.
const UI_BOUNDS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];

/// A histogram as `{"le_ms": [bounds…, null], "counts": [per bucket]}`.
fn ui_histogram(h: &Histogram) -> Value {
    let mut counts = [0u64; UI_BOUNDS_MS.len() + 1];
    for &(index, n) in &h.counts {
        // A counter holds values up to its highest; place it by its midpoint.
        let us = (super::hdr::lowest_value(index as usize)
            + super::hdr::highest_value(index as usize))
            / 2;
        let b = UI_BOUNDS_MS.partition_point(|&le| le * 1000.0 < us as f64);
        counts[b] += n;
    }
    let mut le: Vec<Value> = UI_BOUNDS_MS.iter().map(|b| json!(b)).collect();
    le.push(Value::Null);
    json!({ "le_ms": le, "counts": counts })
}

/// The `/api/metrics` document: per (service, operation, kind) — status classes merged — the
/// span count, error count and rate, p50/p90/p99/max in ms; optionally for one service only.
pub fn summary(snapshot: &Snapshot, service: Option<&str>) -> Value {
    let series: Vec<&SeriesRef> = snapshot
        .series
        .iter()
        .filter(|s| service.is_none_or(|want| &*s.labels.service == want))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < series.len() {
        let first = &series[i].labels;
        let mut hist = Histogram::default();
        let mut by_status = serde_json::Map::new();
        let mut errors = 0;
        while i < series.len() && same_group(first, &series[i].labels) {
            let h = series[i].histogram();
            if series[i].labels.status != StatusClass::Ok {
                errors += h.total;
            }
            by_status.insert(series[i].labels.status.label().into(), json!(h.total));
            hist.add(&h);
            i += 1;
        }
        let mut row = json!({
            "service": &*first.service,
            "operation": &*first.operation,
            "kind": first.kind.label(),
            "overflow": &*first.operation == OVERFLOW,
            "count": hist.total,
            "errors": errors,
            "error_rate": if hist.total == 0 { 0.0 } else { errors as f64 / hist.total as f64 },
            "by_status": by_status,
            "mean_ms": if hist.total == 0 { 0.0 } else { hist.sum_us as f64 / hist.total as f64 / 1000.0 },
            "p50_ms": ms(hist.value_at_quantile(0.5)),
            "p90_ms": ms(hist.value_at_quantile(0.9)),
            "p99_ms": ms(hist.value_at_quantile(0.99)),
            "max_ms": ms(hist.max()),
            "histogram": ui_histogram(&hist),
        });
        if snapshot.service_version {
            row["service_version"] = json!(&*first.version);
        }
        out.push(row);
    }
    json!({
        "series": out,
        "max_series_per_service": snapshot.max_series_per_service,
        "services": snapshot.services.iter().map(|(s, n)| json!({"service": &**s, "series": n})).collect::<Vec<_>>(),
    })
}
