//! Sampling end to end: the real binary with a consistent ratio against moto (exactly the traces
//! the ratio keeps arrive, whole), and X-Ray centralised rules served by a local endpoint shaped
//! like the AWS API reference's examples, read through the real aws-sdk-xray client.

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{aws_env, env_refs, moto, spawn_agent, xray_client};
use prost::Message;
use serde_json::{Value, json};
use sidetrace::exporters::xray::translate::xray_trace_id;
use sidetrace::pipeline::sampler::{ratio_keeps, threshold};
use sidetrace::proto::*;
use sidetrace::workload::Rng;

/// One request holding `traces` traces of 3 spans each (entry SERVER span + 2 children).
fn request(service: &str, traces: &[[u8; 16]]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = traces
        .iter()
        .flat_map(|t| {
            (1..=3u8).map(move |i| Span {
                trace_id: t.to_vec().into(),
                span_id: [&t[8..15], &[i]].concat().into(),
                parent_span_id: if i == 1 {
                    Default::default()
                } else {
                    [&t[8..15], &[1u8]].concat().into()
                },
                name: format!("op-{i}"),
                kind: if i == 1 { 2 } else { 3 },
                start_time_unix_nano: now - 50_000_000 + u64::from(i),
                end_time_unix_nano: now,
                ..Default::default()
            })
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(sidetrace::workload::resource(service)),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn trace_ids(seed: u64, n: usize) -> Vec<[u8; 16]> {
    let mut rng = Rng::new(seed);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    (0..n)
        .map(|_| {
            let mut t = [0u8; 16];
            t[..4].copy_from_slice(&epoch.to_be_bytes());
            t[4..12].copy_from_slice(&rng.next_u64().to_be_bytes());
            t[12..].copy_from_slice(&(rng.next_u64() as u32).to_be_bytes());
            t
        })
        .collect()
}

async fn post(addr: &str, body: Vec<u8>) {
    common::process::post_protobuf(addr, body).await;
}

/// Segments per trace found at the endpoint.
async fn segments(endpoint: &str, ids: &[[u8; 16]]) -> HashMap<String, usize> {
    let client = xray_client(endpoint);
    let mut out = HashMap::new();
    for chunk in ids.chunks(5) {
        let ids: Vec<String> = chunk.iter().map(xray_trace_id).collect();
        let r = client
            .batch_get_traces()
            .set_trace_ids(Some(ids))
            .send()
            .await
            .unwrap();
        for t in r.traces() {
            out.insert(t.id().unwrap().to_owned(), t.segments().len());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_percent_ratio_keeps_exactly_the_consistent_set_whole() {
    let endpoint = moto();
    let env = aws_env(endpoint);
    let agent = spawn_agent(
        &[
            "--sampling-ratio",
            "0.1",
            "--set",
            "xray.idle_flush=100ms",
            "--set",
            "sampling.grace=200ms",
        ],
        &env_refs(&env),
    );
    let ids = trace_ids(77, 300);
    for chunk in ids.chunks(50) {
        post(&agent.http, request("ratio-shop", chunk)).await;
    }
    let expected: HashSet<String> = ids
        .iter()
        .filter(|t| ratio_keeps(t, "", threshold(0.1)))
        .map(xray_trace_id)
        .collect();
    assert!(
        (12..=50).contains(&expected.len()),
        "{} of 300 expected at 10%",
        expected.len()
    );
    let t = Instant::now();
    loop {
        let got = segments(endpoint, &ids).await;
        let complete = got.values().filter(|n| **n == 3).count();
        if complete >= expected.len() || t.elapsed() > Duration::from_secs(20) {
            let got_ids: HashSet<String> = got.keys().cloned().collect();
            assert_eq!(
                got_ids, expected,
                "exactly the consistently chosen traces arrive"
            );
            assert!(
                got.values().all(|n| *n == 3),
                "every kept trace is whole: {got:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Dropped traces are decided when their grace period ends, a moment after the kept ones.
    let t = Instant::now();
    let decided = || {
        agent.metric("sidetrace_sampling_traces_total{decision=\"kept\",policy=\"ratio\"}")
            + agent.metric("sidetrace_sampling_traces_total{decision=\"dropped\",policy=\"ratio\"}")
    };
    while decided() < 300.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            agent.metrics_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = agent.metric("sidetrace_sampling_traces_total{decision=\"kept\",policy=\"ratio\"}");
    let dropped =
        agent.metric("sidetrace_sampling_traces_total{decision=\"dropped\",policy=\"ratio\"}");
    assert_eq!(kept as usize, expected.len());
    assert_eq!((kept + dropped) as usize, 300);
    let eff = agent.metric("sidetrace_sampling_effective_ratio{service=\"ratio-shop\"}");
    assert!((eff - expected.len() as f64 / 300.0).abs() < 1e-9);
}

#[derive(Clone, Default)]
struct FakeXray {
    statistics: Arc<Mutex<Vec<Value>>>,
    rules_calls: Arc<Mutex<usize>>,
}

/// GetSamplingRules, GetSamplingTargets as in the AWS API reference; anything else goes to moto.
async fn fake_xray(
    axum::extract::State(f): axum::extract::State<FakeXray>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let rule = |name: &str, priority: i64, rate: f64, reservoir: i64, service: &str| {
        json!({"SamplingRule": {
            "RuleName": name, "RuleARN": format!("arn:aws:xray:us-east-1:123456789012:sampling-rule/{name}"),
            "ResourceARN": "*", "Priority": priority, "FixedRate": rate, "ReservoirSize": reservoir,
            "ServiceName": service, "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*",
            "Version": 1, "Attributes": {}},
            "CreatedAt": 1530557721.0, "ModifiedAt": 1530558121.0})
    };
    match path.as_str() {
        "/GetSamplingRules" => {
            *f.rules_calls.lock().unwrap() += 1;
            let doc = json!({"SamplingRuleRecords": [
                rule("Default", 10000, 1.0, 0, "*"),
                rule("quiet-shop", 10, 0.0, 0, "quiet-*"),
                // Ignored by the SDKs (and by us): version 2 and a resource condition.
                {"SamplingRule": {"RuleName": "v2", "ResourceARN": "*", "Priority": 1, "FixedRate": 0.0, "ReservoirSize": 0,
                  "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*", "Version": 2}},
            ]});
            ([("content-type", "application/json")], doc.to_string()).into_response()
        }
        "/SamplingTargets" => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            let docs = v["SamplingStatisticsDocuments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let targets: Vec<Value> = docs
                .iter()
                .map(|d| json!({"RuleName": d["RuleName"], "FixedRate": 1.0, "ReservoirQuota": 5, "ReservoirQuotaTTL": now + 60.0, "Interval": 10}))
                .collect();
            f.statistics.lock().unwrap().extend(docs);
            let doc = json!({"SamplingTargetDocuments": targets, "LastRuleModification": 1530558121.0, "UnprocessedStatistics": []});
            ([("content-type", "application/json")], doc.to_string()).into_response()
        }
        _ => {
            let mut fwd = reqwest::Client::new()
                .request(parts.method.clone(), format!("{}{}", moto(), parts.uri));
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" {
                    fwd = fwd.header(k, v);
                }
            }
            let resp = fwd.body(body).send().await.unwrap();
            let status = resp.status();
            let ct = resp.headers().get("content-type").cloned();
            let mut out = (status, resp.bytes().await.unwrap()).into_response();
            if let Some(ct) = ct {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn xray_rules_decide_and_statistics_are_reported() {
    let fake = FakeXray::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(fake_xray)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let env = aws_env(&url);
    let agent = spawn_agent(
        &[
            "--set",
            "xray.idle_flush=100ms",
            "--set",
            "sampling.keep_errors=false",
            "--set",
            "sampling.xray_targets_interval=500ms",
        ],
        &env_refs(&env),
    );
    assert!(
        agent.log.contains("X-Ray centralised rules"),
        "{}",
        agent.log
    );
    let t = Instant::now();
    while *fake.rules_calls.lock().unwrap() == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "rules never fetched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let quiet = trace_ids(1, 10);
    let loud = trace_ids(2, 10);
    post(&agent.http, request("quiet-shop", &quiet)).await;
    post(&agent.http, request("web", &loud)).await;

    // Default (rate 1.0) keeps every "web" trace; quiet-shop (rate 0, no reservoir) keeps none.
    let t = Instant::now();
    loop {
        let got = segments(moto(), &loud).await;
        if got.len() == 10 && got.values().all(|n| *n == 3) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "web traces missing: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        segments(moto(), &quiet).await.is_empty(),
        "quiet-shop traces were dropped by their rule"
    );
    assert_eq!(
        agent.metric("sidetrace_sampling_traces_total{decision=\"dropped\",policy=\"rules\"}"),
        10.0
    );
    assert_eq!(
        agent.metric("sidetrace_sampling_traces_total{decision=\"kept\",policy=\"rules\"}"),
        10.0
    );

    // Statistics reach GetSamplingTargets with the counts per rule and a 24-hex client ID.
    let t = Instant::now();
    loop {
        let stats = fake.statistics.lock().unwrap().clone();
        let sum = |rule: &str, field: &str| {
            stats
                .iter()
                .filter(|d| d["RuleName"] == rule)
                .map(|d| d[field].as_i64().unwrap_or(0))
                .sum::<i64>()
        };
        if sum("Default", "RequestCount") == 10 && sum("quiet-shop", "RequestCount") == 10 {
            assert_eq!(sum("Default", "SampledCount"), 10);
            assert_eq!(sum("quiet-shop", "SampledCount"), 0);
            assert_eq!(sum("quiet-shop", "BorrowCount"), 0);
            assert!(
                stats
                    .iter()
                    .all(|d| d["ClientID"].as_str().unwrap().len() == 24)
            );
            assert!(
                !stats.iter().any(|d| d["RuleName"] == "v2"),
                "rules of version 2 are not used"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "statistics not reported: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
