//! Span metrics → CloudWatch datums, as pure functions: latency as `Values`/`Counts` (at most 150
//! distinct values per datum, each within 1% of every HDR value it stands for), counts as values,
//! and requests within 1,000 datums and 1 MB.

use std::sync::OnceLock;

use crate::telemetry::span_metrics::hdr::{self, Histogram};

/// PutMetricData: distinct values per datum (`Values`/`Counts` arrays).
pub const MAX_VALUES_PER_DATUM: usize = 150;
/// PutMetricData: datums per request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1000;
/// PutMetricData: 1 MB per HTTP POST (taken as 10^6 bytes of uncompressed body).
pub const MAX_REQUEST_BYTES: usize = 1_000_000;
/// CloudWatch's percentiles must stay within 1% of the histogram's own.
pub const MAX_RELATIVE_ERROR: f64 = 0.01;
/// CloudWatch metric names.
pub const LATENCY: &str = "Latency";
pub const REQUESTS: &str = "Requests";
pub const ERRORS: &str = "Errors";
pub const FAULTS: &str = "Faults";
pub const THROTTLES: &str = "Throttles";

/// HDR counters folded into groups whose values are all within [`MAX_RELATIVE_ERROR`] of one
/// representative value: the unit of what is sent and of what is remembered between publishes.
#[derive(Debug)]
pub struct Groups {
    group_of: Vec<u16>,
    /// Representative value of each group, in milliseconds.
    value_ms: Vec<f64>,
}

impl Groups {
    /// The groups, computed once: starting from a counter, a group takes the following ones
    /// while their HDR value (highest equivalent, what HdrHistogram reports) stays within
    /// (1 + ε)² of the first; its representative is the geometric mean of its first and last
    /// values, so it is within ε of every value in the group. Below ~50 µs each counter (1 µs)
    /// is its own group and is sent exactly. About 960 groups cover 1 µs … 1 h.
    pub fn get() -> &'static Groups {
        static GROUPS: OnceLock<Groups> = OnceLock::new();
        GROUPS.get_or_init(|| {
            let limit = (1.0 + MAX_RELATIVE_ERROR).powi(2);
            let mut group_of = Vec::with_capacity(hdr::INDEX_COUNT);
            let mut value_ms = Vec::new();
            let mut i = 0;
            while i < hdr::INDEX_COUNT {
                let first = hdr::highest_value(i) as f64;
                let mut j = i;
                while j + 1 < hdr::INDEX_COUNT
                    && first > 0.0
                    && hdr::highest_value(j + 1) as f64 <= first * limit
                {
                    j += 1;
                }
                let last = hdr::highest_value(j) as f64;
                let g = value_ms.len() as u16;
                group_of.extend(std::iter::repeat_n(g, j - i + 1));
                value_ms.push((first * last).sqrt() / 1000.0);
                i = j + 1;
            }
            Groups { group_of, value_ms }
        })
    }

    pub fn len(&self) -> usize {
        self.value_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value_ms.is_empty()
    }

    pub fn value_ms(&self, group: u16) -> f64 {
        self.value_ms[group as usize]
    }

    /// A histogram's counts by group (ascending, non-zero).
    pub fn fold(&self, h: &Histogram) -> Vec<(u16, u64)> {
        let mut out: Vec<(u16, u64)> = Vec::new();
        for &(i, c) in &h.counts {
            let g = self.group_of[i as usize];
            match out.last_mut() {
                Some((last, n)) if *last == g => *n += c,
                _ => out.push((g, c)),
            }
        }
        out
    }
}

/// The sum of two grouped counts (both ascending by group).
pub fn merge(a: &[(u16, u64)], b: &[(u16, u64)]) -> Vec<(u16, u64)> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                let sum = (x.0, x.1 + y.1);
                a.next();
                b.next();
                sum
            }
            (Some(x), Some(y)) if x.0 < y.0 => *a.next().expect("peeked"),
            (Some(_), Some(_)) | (None, Some(_)) => *b.next().expect("peeked"),
            (Some(_), None) => *a.next().expect("peeked"),
            (None, None) => return out,
        };
        out.push(next);
    }
}

/// `current - previous` for grouped cumulative counts (both ascending); only positive entries.
pub fn delta(current: &[(u16, u64)], previous: &[(u16, u64)]) -> Vec<(u16, u64)> {
    let mut prev = previous.iter().peekable();
    let mut out = Vec::new();
    for &(g, c) in current {
        while prev.peek().is_some_and(|p| p.0 < g) {
            prev.next();
        }
        let before = prev.peek().filter(|p| p.0 == g).map_or(0, |p| p.1);
        if c > before {
            out.push((g, c - before));
        }
    }
    out
}

/// The unit of a datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Count,
}

/// One metric datum, independent of the SDK's types.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub metric: &'static str,
    /// (name, value): Service, Operation, and Version when enabled.
    pub dimensions: Vec<(&'static str, String)>,
    pub unit: Unit,
    /// With `counts` empty: one value. Otherwise `Values`, with `Counts` of the same length.
    pub values: Vec<f64>,
    pub counts: Vec<f64>,
}

impl Datum {
    /// Samples this datum stands for.
    pub fn samples(&self) -> u64 {
        if self.counts.is_empty() {
            1
        } else {
            self.counts.iter().sum::<f64>() as u64
        }
    }

    /// An upper bound of the datum's size in an awsQuery body (form-encoded, every byte of a
    /// dimension possibly percent-encoded as three): checked against the SDK's real bodies.
    pub fn estimated_bytes(&self) -> usize {
        // `MetricData.member.NNNN.MetricName=…&`, `.Unit=…&`, `.Timestamp=2024-…Z&`, and
        // `MetricData.member.NNNN.Values.member.NNN=<≤24 chars>&` per value (same for counts).
        const FIXED: usize = 40 + 40 + 70;
        const PER_DIMENSION: usize = 2 * 60;
        const PER_NUMBER: usize = 45 + 25;
        let dims: usize = self
            .dimensions
            .iter()
            .map(|(n, v)| PER_DIMENSION + 3 * (n.len() + v.len()))
            .sum();
        FIXED + 3 * self.metric.len() + dims + PER_NUMBER * (self.values.len() + self.counts.len())
    }
}

/// What one CloudWatch series (service, operation[, version]) did during an interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesDelta {
    pub dimensions: Vec<(&'static str, String)>,
    /// Latency counts by group.
    pub latency: Vec<(u16, u64)>,
    pub requests: u64,
    /// 4xx answers, 429 included (X-Ray's "error").
    pub errors: u64,
    pub faults: u64,
    pub throttles: u64,
}

/// The datums of one series: `Latency` split into datums of at most 150 values (CloudWatch
/// aggregates datums of one metric in a period, so percentiles see them all), plus the counts.
/// Nothing when the series saw no span.
pub fn series_datums(s: &SeriesDelta, groups: &Groups) -> Vec<Datum> {
    if s.requests == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for chunk in s.latency.chunks(MAX_VALUES_PER_DATUM) {
        out.push(Datum {
            metric: LATENCY,
            dimensions: s.dimensions.clone(),
            unit: Unit::Milliseconds,
            values: chunk.iter().map(|(g, _)| groups.value_ms(*g)).collect(),
            counts: chunk.iter().map(|(_, c)| *c as f64).collect(),
        });
    }
    for (metric, n) in [
        (REQUESTS, s.requests),
        (ERRORS, s.errors),
        (FAULTS, s.faults),
        (THROTTLES, s.throttles),
    ] {
        out.push(Datum {
            metric,
            dimensions: s.dimensions.clone(),
            unit: Unit::Count,
            values: vec![n as f64],
            counts: Vec::new(),
        });
    }
    out
}

/// Packs series into requests of at most 1,000 datums and [`MAX_REQUEST_BYTES`] (estimated),
/// keeping each series' datums in one request so a series is either published or not.
/// Returns, per request, the datums and the indexes of the series it carries.
pub fn pack(series: Vec<Vec<Datum>>, namespace: &str) -> Vec<(Vec<Datum>, Vec<usize>)> {
    let base = 200 + 3 * namespace.len();
    let mut out: Vec<(Vec<Datum>, Vec<usize>)> = Vec::new();
    let mut bytes = base;
    for (i, datums) in series.into_iter().enumerate() {
        if datums.is_empty() {
            continue;
        }
        let size: usize = datums.iter().map(Datum::estimated_bytes).sum();
        let fits = out.last().is_some_and(|(d, _)| {
            d.len() + datums.len() <= MAX_DATUMS_PER_REQUEST && bytes + size <= MAX_REQUEST_BYTES
        });
        if !fits {
            out.push((Vec::new(), Vec::new()));
            bytes = base;
        }
        let (d, idx) = out.last_mut().expect("pushed above");
        d.extend(datums);
        idx.push(i);
        bytes += size;
    }
    out
}

/// The percentile CloudWatch computes from raw data points (each value counted `count` times):
/// the smallest value with at least ⌈p·N⌉ data points at or below it (nearest rank).
pub fn nearest_rank(values_counts: &[(f64, f64)], p: f64) -> f64 {
    let mut sorted = values_counts.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n: f64 = sorted.iter().map(|(_, c)| c).sum();
    let rank = (p * n).ceil().max(1.0);
    let mut seen = 0.0;
    for (v, c) in &sorted {
        seen += c;
        if seen >= rank {
            return *v;
        }
    }
    sorted.last().map_or(0.0, |(v, _)| *v)
}

/// The same with linear interpolation between neighbouring data points (the other common
/// definition; CloudWatch does not document which one it uses, so tests check both).
pub fn interpolated(values_counts: &[(f64, f64)], p: f64) -> f64 {
    let mut sorted = values_counts.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n: f64 = sorted.iter().map(|(_, c)| c).sum();
    let pos = p * (n - 1.0);
    let (lo, frac) = (pos.floor(), pos - pos.floor());
    let at = |rank: f64| {
        let mut seen = 0.0;
        for (v, c) in &sorted {
            seen += c;
            if seen > rank {
                return *v;
            }
        }
        sorted.last().map_or(0.0, |(v, _)| *v)
    };
    at(lo) + (at(lo + 1.0) - at(lo)) * frac
}

#[cfg(test)]
mod tests;
