//! Datum tests: the 1% guarantee, the per-datum and per-request limits, deltas.

use super::*;
use crate::telemetry::span_metrics::hdr::{INDEX_COUNT, highest_value};
use crate::telemetry::span_metrics::tests::{distributions, exact_quantile};

#[test]
fn every_group_value_is_within_one_percent_of_what_it_stands_for() {
    let g = Groups::get();
    assert!((900..1000).contains(&g.len()), "{} groups", g.len());
    for i in 1..INDEX_COUNT {
        let hdr_ms = highest_value(i) as f64 / 1000.0;
        let rep = g.value_ms(g.group_of[i]);
        assert!(
            (rep - hdr_ms).abs() / hdr_ms <= MAX_RELATIVE_ERROR + 1e-12,
            "index {i}: {rep} vs {hdr_ms}"
        );
    }
    // Small values are sent exactly.
    assert_eq!(g.value_ms(g.group_of[7]), 0.007);
}

fn pairs(datums: &[Datum]) -> Vec<(f64, f64)> {
    datums
        .iter()
        .filter(|d| d.metric == LATENCY)
        .flat_map(|d| d.values.iter().copied().zip(d.counts.iter().copied()))
        .collect()
}

#[test]
fn cloudwatch_percentiles_from_values_and_counts_stay_within_one_percent() {
    let groups = Groups::get();
    for (name, values) in distributions() {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let h = Histogram::from_values(values.iter().copied());
        let delta = SeriesDelta {
            dimensions: vec![("Service", "s".into()), ("Operation", "o".into())],
            latency: groups.fold(&h),
            requests: h.total,
            ..Default::default()
        };
        let datums = series_datums(&delta, groups);
        let latency: Vec<&Datum> = datums.iter().filter(|d| d.metric == LATENCY).collect();
        assert!(latency.iter().all(|d| d.values.len() <= MAX_VALUES_PER_DATUM && d.values.len() == d.counts.len()));
        assert_eq!(
            latency.iter().map(|d| d.samples()).sum::<u64>(),
            values.len() as u64
        );
        let pc = pairs(&datums);
        let raw: Vec<(f64, f64)> = values.iter().map(|v| (*v as f64 / 1000.0, 1.0)).collect();
        for q in [0.5, 0.9, 0.99, 0.999] {
            // Nearest rank (CloudWatch's documented meaning): within 1% of the histogram's own
            // quantile, and of the exact one (+ HDR's 1/1024).
            let own = h.value_at_quantile(q) as f64 / 1000.0;
            let truth = exact_quantile(&sorted, q) / 1000.0;
            let cw = nearest_rank(&pc, q);
            assert!(
                (cw - own).abs() / own <= MAX_RELATIVE_ERROR,
                "{name} p{q}: CloudWatch {cw} vs histogram {own}"
            );
            assert!(
                (cw - truth).abs() / truth <= MAX_RELATIVE_ERROR + 1.0 / 1024.0,
                "{name} p{q}: {cw} vs exact {truth}"
            );
            // Had CloudWatch interpolated, it would still be within 1% of what it would compute
            // from every raw duration.
            let (cw, from_raw) = (interpolated(&pc, q), interpolated(&raw, q));
            assert!(
                (cw - from_raw).abs() / from_raw <= MAX_RELATIVE_ERROR + 1.0 / 1024.0,
                "{name} interpolated p{q}: {cw} vs {from_raw}"
            );
        }
        // The average CloudWatch computes is within 1% too.
        let (n, sum) = pc
            .iter()
            .fold((0.0, 0.0), |(n, s), (v, c)| (n + c, s + v * c));
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64 / 1000.0;
        assert!(
            (sum / n - mean).abs() / mean <= MAX_RELATIVE_ERROR,
            "{name} mean"
        );
    }
}

#[test]
fn a_wide_distribution_spreads_over_several_datums_of_one_metric() {
    // 1 µs … 1 h log-uniform touches every group: ~960 values in 7 datums of ≤ 150.
    let values: Vec<u64> = (0..200_000u64)
        .map(|i| (3.6e9f64.powf(i as f64 / 200_000.0)) as u64)
        .collect();
    let h = Histogram::from_values(values);
    let groups = Groups::get();
    let delta = SeriesDelta {
        latency: groups.fold(&h),
        requests: h.total,
        errors: 3,
        ..Default::default()
    };
    let datums = series_datums(&delta, groups);
    let latency = datums.iter().filter(|d| d.metric == LATENCY).count();
    assert_eq!(latency, groups.len().div_ceil(MAX_VALUES_PER_DATUM));
    let counts: Vec<(&str, f64)> = datums
        .iter()
        .filter(|d| d.unit == Unit::Count)
        .map(|d| (d.metric, d.values[0]))
        .collect();
    assert_eq!(
        counts,
        [
            (REQUESTS, 200_000.0),
            (ERRORS, 3.0),
            (FAULTS, 0.0),
            (THROTTLES, 0.0)
        ]
    );
    assert!(series_datums(&SeriesDelta::default(), groups).is_empty());
}

#[test]
fn deltas_subtract_what_was_published() {
    assert_eq!(
        delta(&[(1, 5), (3, 2), (9, 4)], &[(1, 5), (2, 7), (9, 1)]),
        [(3, 2), (9, 3)]
    );
    assert_eq!(delta(&[(1, 5)], &[]), [(1, 5)]);
}

#[test]
fn requests_stay_within_a_thousand_datums_and_a_megabyte_and_keep_series_whole() {
    let groups = Groups::get();
    let wide = Histogram::from_values((0..20_000u64).map(|i| 50 + i * 97));
    let narrow = Histogram::from_values([1000, 2000]);
    let series: Vec<Vec<Datum>> = (0..3000)
        .map(|i| {
            let h = if i % 3 == 0 { &wide } else { &narrow };
            series_datums(
                &SeriesDelta {
                    dimensions: vec![
                        ("Service", format!("svc-{}", i % 7)),
                        ("Operation", format!("GET /route/{i}/é\"&=")),
                    ],
                    latency: groups.fold(h),
                    requests: h.total,
                    ..Default::default()
                },
                groups,
            )
        })
        .collect();
    let sizes: Vec<usize> = series.iter().map(Vec::len).collect();
    let requests = pack(series.clone(), "Sidetrace");
    assert!(requests.len() > 1);
    let mut seen = Vec::new();
    for (datums, members) in &requests {
        assert!(datums.len() <= MAX_DATUMS_PER_REQUEST);
        let bytes: usize = 200 + 27 + datums.iter().map(Datum::estimated_bytes).sum::<usize>();
        assert!(bytes <= MAX_REQUEST_BYTES, "{bytes}");
        assert_eq!(
            datums.len(),
            members.iter().map(|i| sizes[*i]).sum::<usize>()
        );
        seen.extend(members.iter().copied());
    }
    assert_eq!(seen, (0..3000).collect::<Vec<_>>());
}
