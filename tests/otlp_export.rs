//! The `otlp` exporter against real processes on loopback: a sidecar forwarding to a sidetrace
//! gateway (every span arrives intact), and against a test endpoint that answers as the OTLP
//! spec's failure cases do (Retry-After, 429, partial success, permanent errors), with the
//! spec's variables for the URL, headers and compression.

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Running, free_port, http_get, spawn_agent, spawn_agent_under};
use prost::Message;
use sidetrace::admin::api::attrs_json;
use sidetrace::model::hex;
use sidetrace::proto::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use sidetrace::workload::{Rng, Shape, Topology, request};

async fn post(agent: &Running, body: Vec<u8>) {
    common::process::post_protobuf(&agent.http, body).await;
}

/// An agent that forwards every span (`--exporters otlp`, sampling off), with `args` and `env`.
fn sidecar(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut all = vec![
        "--exporters",
        "otlp",
        "--sampling-ratio",
        "1",
        "--set",
        "otlp.idle_flush=50ms",
    ];
    all.extend_from_slice(args);
    spawn_agent(&all, env)
}

async fn wait_metric(agent: &Running, series: &str, want: f64) {
    let t = Instant::now();
    while agent.metric(series) < want {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{series} stayed at {} (want {want})\n{}",
            agent.metric(series),
            agent.metrics_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sidecar with `--exporters otlp` forwards to a gateway (sidetrace in local mode) found
/// through OTEL_EXPORTER_OTLP_ENDPOINT, gzip on: every span arrives with its IDs, name, times,
/// attributes and resource.
#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_forwards_every_span_intact_to_a_gateway() {
    let gateway = spawn_agent(&["--exporters", "local"], &[]);
    let base = format!("http://{}", gateway.http);
    let sidecar = sidecar(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    let req = request(
        &mut Rng::new(17),
        &Shape {
            spans: 60,
            topology: Topology::Services,
            extra_attributes: 3,
            ..Shape::default()
        },
    );
    post(&sidecar, req.encode_to_vec()).await;
    wait_metric(
        &sidecar,
        "sidetrace_exporter_sent_spans_total{exporter=\"otlp\"}",
        60.0,
    )
    .await;
    let mut checked = 0;
    for rs in &req.resource_spans {
        let resource = attrs_json(&rs.resource.clone().unwrap_or_default().attributes);
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let trace = http_get(
                &gateway.admin,
                &format!("/api/traces/{}", hex(&span.trace_id)),
            );
            let trace: serde_json::Value = serde_json::from_str(&trace).unwrap();
            let got = trace["spans"]
                .as_array()
                .unwrap_or_else(|| {
                    panic!("trace {} not at the gateway: {trace}", hex(&span.trace_id))
                })
                .iter()
                .find(|s| s["span_id"] == hex(&span.span_id).as_str())
                .unwrap_or_else(|| panic!("span {} missing", hex(&span.span_id)));
            assert_eq!(got["name"], span.name.as_str());
            assert_eq!(got["start_time_unix_nano"], span.start_time_unix_nano);
            assert_eq!(got["end_time_unix_nano"], span.end_time_unix_nano);
            assert_eq!(got["attributes"], attrs_json(&span.attributes));
            assert_eq!(got["resource"], resource);
            checked += 1;
        }
    }
    assert_eq!(checked, 60);
    assert_eq!(
        gateway.metric("sidetrace_receiver_spans_received_total{protocol=\"http_protobuf\"}"),
        60.0,
        "{}",
        gateway.metrics_text()
    );
    // Span metrics are recorded once, by the sidecar; the gateway knows (the header) and does not.
    assert_eq!(family_sum(&sidecar, "sidetrace_spans_total"), 60.0);
    assert_eq!(family_sum(&gateway, "sidetrace_spans_total"), 0.0);
    assert_eq!(
        gateway.metric("sidetrace_receiver_spans_forwarded_total{protocol=\"http_protobuf\"}"),
        60.0
    );
}

/// The sum of every series of a metric family.
fn family_sum(agent: &Running, family: &str) -> f64 {
    agent
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the test endpoint saw of one call.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    path: String,
    api_key: Option<String>,
    gzip: bool,
    spans: usize,
}

/// An OTLP/HTTP endpoint answering each call with the next status of `script` (then 200).
async fn endpoint(port: u16, script: Vec<(u16, Option<&'static str>)>) -> Arc<Mutex<Vec<Call>>> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (seen, script) = (seen.clone(), script.clone());
        async move {
            use axum::response::IntoResponse;
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
            let gzip = parts
                .headers
                .get("content-encoding")
                .is_some_and(|v| v == "gzip");
            let mut raw = Vec::new();
            if gzip {
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut raw)
                    .unwrap();
            } else {
                raw = body.to_vec();
            }
            let req = ExportTraceServiceRequest::decode(&raw[..]).unwrap();
            let n = {
                let mut calls = seen.lock().unwrap();
                calls.push(Call {
                    at: Instant::now(),
                    path: parts.uri.path().to_owned(),
                    api_key: parts
                        .headers
                        .get("api-key")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    gzip,
                    spans: req
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum(),
                });
                calls.len() - 1
            };
            match script.get(n) {
                Some(&(status, retry_after)) => {
                    let mut r =
                        (axum::http::StatusCode::from_u16(status).unwrap(), "no").into_response();
                    if let Some(s) = retry_after {
                        r.headers_mut().insert("retry-after", s.parse().unwrap());
                    }
                    r
                }
                None => {
                    // Two spans refused, as a partial success.
                    let answer = ExportTraceServiceResponse {
                        partial_success: Some(ExportTracePartialSuccess {
                            rejected_spans: 2,
                            error_message: "2 spans had no name".into(),
                        }),
                    };
                    (
                        [("content-type", "application/x-protobuf")],
                        answer.encode_to_vec(),
                    )
                        .into_response()
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    calls
}

fn sidecar_for(port: u16) -> Running {
    let url = format!("http://127.0.0.1:{port}/ingest/traces");
    sidecar(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.leak()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret%20key"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
        ],
    )
}

fn ten_spans() -> Vec<u8> {
    request(
        &mut Rng::new(3),
        &Shape {
            spans: 10,
            ..Shape::default()
        },
    )
    .encode_to_vec()
}

/// 503 with Retry-After and 429 are retried (the first after the time the server named), the
/// partial success is counted as rejected; the URL, header and gzip come from the spec's variables.
#[tokio::test(flavor = "multi_thread")]
async fn retryable_answers_are_retried_and_partial_success_is_counted() {
    let port = free_port();
    let calls = endpoint(port, vec![(503, Some("1")), (429, None)]).await;
    let sidecar = sidecar_for(port);
    post(&sidecar, ten_spans()).await;
    wait_metric(
        &sidecar,
        "sidetrace_exporter_sent_spans_total{exporter=\"otlp\"}",
        8.0,
    )
    .await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for c in &calls {
        assert_eq!(c.path, "/ingest/traces", "the traces URL is used as is");
        assert_eq!(
            c.api_key.as_deref(),
            Some("s=cret key"),
            "the header, URL-decoded"
        );
        assert!(c.gzip);
        assert_eq!(c.spans, 10);
    }
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(950),
        "Retry-After: 1 was honoured ({:?})",
        calls[1].at - calls[0].at
    );
    let m = |s: &str| sidecar.metric(s);
    assert_eq!(
        m(
            "sidetrace_exporter_rejected_spans_total{exporter=\"otlp\",code=\"otlp_partial_success\"}"
        ),
        2.0
    );
    assert_eq!(
        m("sidetrace_exporter_retries_total{exporter=\"otlp\",reason=\"server_error\"}"),
        1.0
    );
    assert_eq!(
        m("sidetrace_exporter_retries_total{exporter=\"otlp\",reason=\"throttled\"}"),
        1.0
    );
    assert_eq!(
        m("sidetrace_exporter_pending_spans{exporter=\"otlp\"}"),
        0.0
    );
}

/// The spec retries 429, 502, 503 and 504 only: a 500 or a 400 is dropped after one call.
#[tokio::test(flavor = "multi_thread")]
async fn other_statuses_are_not_retried() {
    for status in [500, 400] {
        let port = free_port();
        let calls = endpoint(port, vec![(status, None); 5]).await;
        let sidecar = sidecar_for(port);
        post(&sidecar, ten_spans()).await;
        wait_metric(
            &sidecar,
            "sidetrace_exporter_dropped_spans_total{exporter=\"otlp\",reason=\"permanent_error\"}",
            10.0,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            calls.lock().unwrap().len(),
            1,
            "HTTP {status} was not retried"
        );
        assert_eq!(
            sidecar.metric("sidetrace_exporter_sent_spans_total{exporter=\"otlp\"}"),
            0.0
        );
    }
}

/// Spans of `traces` traces (IDs from `first`), `per_trace` each, as `parts` requests: request
/// `p` holds spans `p*k..(p+1)*k` of every trace, so every trace is split over all of them.
fn split_traces(first: u64, traces: u64, per_trace: u64, parts: u64) -> Vec<Vec<u8>> {
    use sidetrace::proto::*;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let k = per_trace / parts;
    (0..parts)
        .map(|p| {
            let mut spans = Vec::new();
            for t in first..first + traces {
                let mut trace = [0u8; 16];
                trace[..8].copy_from_slice(&(t | 1 << 60).to_be_bytes());
                trace[8..].copy_from_slice(&u64::from(std::process::id()).to_be_bytes());
                for i in p * k..(p + 1) * k {
                    spans.push(Span {
                        trace_id: trace.to_vec().into(),
                        span_id: ((t << 8 | i) | 1 << 62).to_be_bytes().to_vec().into(),
                        name: format!("op-{i}"),
                        kind: 1,
                        start_time_unix_nano: now,
                        end_time_unix_nano: now + 1_000,
                        ..Default::default()
                    });
                }
            }
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(sidetrace::workload::resource("balanced")),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        })
        .collect()
}

fn trace_hex(t: u64) -> String {
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&(t | 1 << 60).to_be_bytes());
    trace[8..].copy_from_slice(&u64::from(std::process::id()).to_be_bytes());
    hex(&trace)
}

fn balancing_sidecar(gateways: &[&Running]) -> Running {
    let list: Vec<String> = gateways
        .iter()
        .map(|g| format!("http://{}", g.http))
        .collect();
    let endpoints = format!("otlp.endpoints={}", list.join(","));
    sidecar(&["--set", endpoints.leak()], &[])
}

/// One sidecar, three gateways: 1,000 traces, each split over three requests, each land whole
/// on exactly one gateway, and the three share them.
#[tokio::test(flavor = "multi_thread")]
async fn traces_land_whole_on_one_of_three_gateways() {
    let gateways: Vec<Running> = (0..3)
        .map(|_| spawn_agent(&["--exporters", "local"], &[]))
        .collect();
    let sidecar = balancing_sidecar(&gateways.iter().collect::<Vec<_>>());
    for group in 0..10 {
        for body in split_traces(group * 100, 100, 6, 3) {
            post(&sidecar, body).await;
        }
    }
    wait_metric(
        &sidecar,
        "sidetrace_exporter_sent_spans_total{exporter=\"otlp\"}",
        6000.0,
    )
    .await;
    let mut per_gateway = [0usize; 3];
    for t in 0..1000 {
        let id = trace_hex(t);
        let holders: Vec<(usize, usize)> = gateways
            .iter()
            .enumerate()
            .filter_map(|(g, gw)| {
                let doc: serde_json::Value =
                    serde_json::from_str(&http_get(&gw.admin, &format!("/api/traces/{id}")))
                        .ok()?;
                doc["spans"].as_array().map(|s| (g, s.len()))
            })
            .collect();
        assert_eq!(holders.len(), 1, "trace {id} is on {holders:?}");
        assert_eq!(holders[0].1, 6, "trace {id} arrived whole");
        per_gateway[holders[0].0] += 1;
    }
    assert!(per_gateway.iter().all(|&n| n > 200), "{per_gateway:?}");
}

/// A gateway killed mid-run: what it had not taken goes to the traces' next owners; every span
/// the sidecar acknowledged is sent, none dropped, and the rerouted traces are counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_run_loses_nothing_accepted() {
    let mut gateways: Vec<Running> = (0..3)
        .map(|_| spawn_agent(&["--exporters", "local"], &[]))
        .collect();
    let sidecar = balancing_sidecar(&gateways.iter().collect::<Vec<_>>());
    let mut acked = 0u64;
    for group in 0..60u64 {
        if group == 20 {
            gateways[1].child.kill().unwrap();
            gateways[1].child.wait().unwrap();
        }
        for body in split_traces(10_000 + group * 20, 20, 4, 2) {
            post(&sidecar, body).await;
            acked += 40;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_metric(
        &sidecar,
        "sidetrace_exporter_sent_spans_total{exporter=\"otlp\"}",
        acked as f64,
    )
    .await;
    let text = sidecar.metrics_text();
    assert!(
        !text.lines().any(|l| l
            .starts_with("sidetrace_exporter_dropped_spans_total{exporter=\"otlp\"")
            && !l.ends_with(" 0")),
        "{text}"
    );
    let gw1 = format!("http://{}/v1/traces", gateways[1].http);
    assert_eq!(
        sidecar.metric(&format!("sidetrace_otlp_backend_up{{backend=\"{gw1}\"}}")),
        0.0,
        "{text}"
    );
    assert!(
        sidecar.metric("sidetrace_otlp_rerouted_traces_total") > 0.0,
        "{text}"
    );
    let taken: f64 = [0, 2]
        .iter()
        .map(|&g| {
            gateways[g]
                .metric("sidetrace_receiver_spans_accepted_total{protocol=\"http_protobuf\"}")
        })
        .sum();
    assert!(
        taken > (acked as f64) * 0.6,
        "the two left took the most: {taken} of {acked}"
    );
}

/// Which gateways hold which parts of trace `t` (`part` = the request its spans came in, from
/// the span names `op-{i}` with `per_part` spans per request).
fn parts_held(gateways: &[Running], t: u64, per_part: usize) -> Vec<(usize, usize)> {
    let id = trace_hex(t);
    let mut held = Vec::new();
    for (g, gw) in gateways.iter().enumerate() {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&http_get(
            &gw.admin,
            &format!("/api/traces/{id}"),
        )) else {
            continue;
        };
        for span in doc["spans"].as_array().into_iter().flatten() {
            let i: usize = span["name"].as_str().unwrap()[3..].parse().unwrap();
            held.push((i / per_part, g));
        }
    }
    held.sort();
    held.dedup();
    held
}

/// `dns:` backends while the name's answer changes: the sidecar runs with its own /etc/hosts
/// (a private mount namespace, `unshare -rm`), which the test rewrites. Three gateways listen on
/// one port at 127.0.0.2-4. When one joins, only the traces it now owns move (about a third), all
/// to it; when one leaves, only its traces move. Each moved trace is counted as split, exactly.
#[tokio::test(flavor = "multi_thread")]
async fn dns_answers_that_change_move_only_the_traces_of_the_backend_that_came_or_went() {
    let port = free_port();
    let addrs: Vec<String> = (2..5).map(|i| format!("127.0.0.{i}:{port}")).collect();
    let gateways: Vec<Running> = addrs
        .iter()
        .map(|a| spawn_agent(&["--exporters", "local", "--otlp-http-addr", a], &[]))
        .collect();
    let hosts = std::env::temp_dir().join(format!("sidetrace-hosts-{}", std::process::id()));
    let name = "gateways.sidetrace.test";
    // Rewritten in place: the bind mount holds on to the file, not its name.
    let set_hosts = |ips: &[usize]| {
        let text: String = ips
            .iter()
            .map(|i| format!("127.0.0.{i} {name}\n"))
            .collect();
        std::fs::write(&hosts, text).unwrap();
    };
    set_hosts(&[2, 3]);
    let endpoints = format!("otlp.endpoints=dns:{name}:{port}");
    let hosts_path = hosts.display().to_string();
    let sidecar = spawn_agent_under(
        &[
            "unshare",
            "-rm",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            &hosts_path,
        ],
        &[
            "--exporters",
            "otlp",
            "--sampling-ratio",
            "1",
            "--set",
            "sampling.keep_errors=false",
            "--set",
            "otlp.idle_flush=50ms",
            "--set",
            "otlp.resolve_interval=100ms",
            "--set",
            &endpoints,
        ],
        &[],
    );
    let up = |i: usize| {
        format!("sidetrace_otlp_backend_up{{backend=\"http://127.0.0.{i}:{port}/v1/traces\"}}")
    };
    let sent = "sidetrace_exporter_sent_spans_total{exporter=\"otlp\"}";
    let bodies = split_traces(50_000, 600, 6, 3);
    let traces = 50_000..50_600u64;

    // Two gateways.
    wait_metric(&sidecar, &up(3), 1.0).await;
    post(&sidecar, bodies[0].clone()).await;
    wait_metric(&sidecar, sent, 1200.0).await;
    // A third joins.
    set_hosts(&[2, 3, 4]);
    wait_metric(&sidecar, &up(4), 1.0).await;
    post(&sidecar, bodies[1].clone()).await;
    wait_metric(&sidecar, sent, 2400.0).await;
    // The second leaves (its process stays up: only the answer changes).
    set_hosts(&[2, 4]);
    let t = Instant::now();
    while sidecar
        .metrics_text()
        .contains(&format!("127.0.0.3:{port}"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "127.0.0.3 never left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(&sidecar, bodies[2].clone()).await;
    wait_metric(&sidecar, sent, 3600.0).await;

    let (mut joined, mut left, mut split) = (0u64, 0u64, 0u64);
    for t in traces {
        let held = parts_held(&gateways, t, 2);
        let part = |p: usize| -> Vec<usize> {
            held.iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, g)| *g)
                .collect()
        };
        let (a, b, c) = (part(0), part(1), part(2));
        assert!(
            a.len() == 1 && b.len() == 1 && c.len() == 1,
            "trace {t}: each part on exactly one gateway: {held:?}"
        );
        let (a, b, c) = (a[0], b[0], c[0]);
        assert!(a != 2, "trace {t}: 127.0.0.4 was not there for part 0");
        if b != a {
            assert_eq!(b, 2, "trace {t}: a join moves traces only to the newcomer");
            joined += 1;
        }
        if c != b {
            assert_eq!(b, 1, "trace {t}: a leave moves only the leaver's traces");
            left += 1;
        } else {
            assert_ne!(c, 1, "trace {t}: nothing goes to the gateway that left");
        }
        split += u64::from(a != b || b != c);
    }
    assert!(
        (120..=280).contains(&joined),
        "about a third of 600 moved to the newcomer: {joined}"
    );
    assert!(left > 100, "the leaver's traces moved: {left}");
    // Counted once per move: a trace that moved twice counts twice.
    assert_eq!(
        sidecar.metric("sidetrace_otlp_split_traces_total"),
        (joined + left) as f64,
        "split traces counted exactly ({split} traces in parts)"
    );
    std::fs::remove_file(&hosts).ok();
}

/// OTLP/gRPC (gzip) to a gateway's gRPC port, chosen by OTEL_EXPORTER_OTLP_PROTOCOL: every span
/// arrives, and the span-metrics mark travels as gRPC metadata.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_forwarding_delivers_every_span() {
    let gateway = spawn_agent(&["--exporters", "local"], &[]);
    let endpoint = format!("http://{}", gateway.grpc);
    let sidecar = sidecar(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    for body in split_traces(50_000, 30, 4, 2) {
        post(&sidecar, body).await;
    }
    wait_metric(
        &sidecar,
        "sidetrace_exporter_sent_spans_total{exporter=\"otlp\"}",
        120.0,
    )
    .await;
    assert_eq!(
        gateway.metric("sidetrace_receiver_spans_accepted_total{protocol=\"grpc\"}"),
        120.0
    );
    assert_eq!(
        gateway.metric("sidetrace_receiver_spans_forwarded_total{protocol=\"grpc\"}"),
        120.0
    );
    let doc: serde_json::Value = serde_json::from_str(&http_get(
        &gateway.admin,
        &format!("/api/traces/{}", trace_hex(50_000)),
    ))
    .unwrap();
    assert_eq!(doc["spans"].as_array().map(Vec::len), Some(4));
}
