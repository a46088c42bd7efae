//! End to end against an independent AWS emulator (moto's server): the Rust OpenTelemetry SDK →
//! agent binary → span metrics → PutMetricData (aws-sdk-cloudwatch 1.99, awsQuery) → read back
//! with GetMetricStatistics and ListMetrics: sample counts equal the spans sent per series, the
//! dimension sets are [Service, Operation] and the [Service] roll-up (every span of a service in
//! one distribution). SIGTERM publishes the last partial interval.

// Real processes on a real clock: these tests measure wall time and may block.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use common::process::{Running, aws_env, moto, spawn_agent};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanExporter as _};

fn cloudwatch(endpoint: &str) -> aws_sdk_cloudwatch::Client {
    let creds =
        aws_sdk_cloudwatch::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
}

/// One kind of span to send `n` times: (service, name, kind, attributes, error).
struct Shape {
    service: &'static str,
    name: &'static str,
    kind: SpanKind,
    attrs: Vec<KeyValue>,
    error: bool,
    n: usize,
    /// Every span of the shape lasts this long.
    ms: u64,
}

/// Sends the shapes' spans with the real SDK over gRPC, one export per service.
async fn send(agent: &Running, shapes: &[Shape]) {
    let services: BTreeSet<&str> = shapes.iter().map(|s| s.service).collect();
    for service in services {
        let memory = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(memory.clone())
            .build();
        let tracer = provider.tracer("cloudwatch-e2e");
        for s in shapes.iter().filter(|s| s.service == service) {
            for _ in 0..s.n {
                let end = SystemTime::now();
                let mut span = tracer
                    .span_builder(s.name)
                    .with_kind(s.kind.clone())
                    .with_attributes(s.attrs.clone())
                    .with_start_time(end - Duration::from_millis(s.ms))
                    .start(&tracer);
                if s.error {
                    span.set_status(Status::error("boom"));
                }
                span.end_with_timestamp(end);
            }
        }
        let spans = memory.get_finished_spans().unwrap();
        let mut exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{}", agent.grpc))
            .build()
            .unwrap();
        exporter.set_resource(&Resource::builder_empty().with_service_name(service).build());
        exporter.export(spans).await.unwrap();
    }
}

/// Sum of a statistic of one metric over the last/next hour.
async fn statistic(
    cw: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    service: &str,
    operation: &str,
    stat: Statistic,
) -> f64 {
    let now = SystemTime::now();
    let out = cw
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(metric)
        .dimensions(Dimension::builder().name("Service").value(service).build())
        .dimensions(
            Dimension::builder()
                .name("Operation")
                .value(operation)
                .build(),
        )
        .start_time(DateTime::from(now - Duration::from_secs(3600)))
        .end_time(DateTime::from(now + Duration::from_secs(3600)))
        .period(7200)
        .statistics(stat.clone())
        .send()
        .await
        .unwrap();
    out.datapoints()
        .iter()
        .map(|d| match stat {
            Statistic::SampleCount => d.sample_count().unwrap_or(0.0),
            Statistic::Sum => d.sum().unwrap_or(0.0),
            Statistic::Maximum => d.maximum().unwrap_or(0.0),
            _ => 0.0,
        })
        .sum()
}

/// A statistic of the `[Service]` series alone, through GetMetricData: it matches dimensions
/// exactly, as CloudWatch does, where moto's GetMetricStatistics also counts every series that
/// merely contains them (here the per-operation ones).
async fn service_statistic(
    cw: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    service: &str,
    stat: &str,
) -> f64 {
    use aws_sdk_cloudwatch::types::{Metric, MetricDataQuery, MetricStat};
    let now = SystemTime::now();
    let query = MetricDataQuery::builder()
        .id("q")
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(namespace)
                        .metric_name(metric)
                        .dimensions(Dimension::builder().name("Service").value(service).build())
                        .build(),
                )
                .period(7200)
                .stat(stat)
                .build(),
        )
        .build();
    let out = cw
        .get_metric_data()
        .metric_data_queries(query)
        .start_time(DateTime::from(now - Duration::from_secs(3600)))
        .end_time(DateTime::from(now + Duration::from_secs(3600)))
        .send()
        .await
        .unwrap();
    out.metric_data_results()
        .iter()
        .flat_map(|r| r.values())
        .sum()
}

fn wait_for_metric(agent: &Running, series: &str, want: f64) {
    let t = Instant::now();
    while agent.metric(series) < want {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{series} never reached {want}:\n{}",
            agent.metrics_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_sdk_spans_become_cloudwatch_distributions_with_exact_sample_counts() {
    let endpoint = moto();
    let namespace = format!("SidetraceE2E{}", std::process::id());
    let env = aws_env(endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut agent = spawn_agent(
        &[
            "--exporters",
            "cloudwatch",
            "--set",
            "cloudwatch.interval=1s",
            "--set",
            &format!("cloudwatch.namespace={namespace}"),
        ],
        &env,
    );
    let route = |m: &'static str, r: &'static str, code: i64| {
        vec![
            KeyValue::new("http.request.method", m),
            KeyValue::new("http.route", r),
            KeyValue::new("http.response.status_code", code),
        ]
    };
    let mut shapes = vec![
        Shape {
            service: "orders",
            name: "GET /orders/{id}",
            kind: SpanKind::Server,
            attrs: route("GET", "/orders/{id}", 200),
            error: false,
            n: 37,
            ms: 12,
        },
        Shape {
            service: "orders",
            name: "GET /orders/{id}",
            kind: SpanKind::Server,
            attrs: route("GET", "/orders/{id}", 503),
            error: true,
            n: 3,
            ms: 40,
        },
        Shape {
            service: "orders",
            name: "SELECT orders",
            kind: SpanKind::Client,
            attrs: vec![],
            error: false,
            n: 25,
            ms: 3,
        },
        Shape {
            service: "payments",
            name: "POST /charge",
            kind: SpanKind::Server,
            attrs: route("POST", "/charge", 429),
            error: false,
            n: 4,
            ms: 250,
        },
        Shape {
            service: "payments",
            name: "POST",
            kind: SpanKind::Server,
            attrs: vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", "/refunds/81723"),
            ],
            error: false,
            n: 11,
            ms: 1500,
        },
    ];
    send(&agent, &shapes).await;
    let total: usize = shapes.iter().map(|s| s.n).sum();
    wait_for_metric(
        &agent,
        "sidetrace_exporter_sent_spans_total{exporter=\"cloudwatch\"}",
        total as f64,
    );
    let m = agent.metrics_text();
    assert!(
        m.contains("sidetrace_cloudwatch_requests_total{outcome=\"ok\"}"),
        "{m}"
    );
    assert!(
        m.contains("sidetrace_cloudwatch_requests_total{outcome=\"permanent_error\"} 0"),
        "{m}"
    );

    // More spans, then SIGTERM: the last partial interval is published while draining.
    shapes.truncate(1);
    shapes[0].n = 5;
    send(&agent, &shapes).await;
    assert!(agent.terminate(Duration::from_secs(20)).success());

    let cw = cloudwatch(endpoint);
    for (service, operation, requests, errors, faults, throttles, max_ms) in [
        ("orders", "GET /orders/{id}", 45.0, 0.0, 3.0, 0.0, 40.0),
        ("orders", "SELECT orders", 25.0, 0.0, 0.0, 0.0, 3.0),
        ("payments", "POST /charge", 4.0, 4.0, 0.0, 4.0, 250.0),
        (
            "payments",
            "POST /refunds/{id}",
            11.0,
            0.0,
            0.0,
            0.0,
            1500.0,
        ),
    ] {
        let samples = statistic(
            &cw,
            &namespace,
            "Latency",
            service,
            operation,
            Statistic::SampleCount,
        )
        .await;
        assert_eq!(
            samples, requests,
            "Latency samples of {service} {operation}"
        );
        let max = statistic(
            &cw,
            &namespace,
            "Latency",
            service,
            operation,
            Statistic::Maximum,
        )
        .await;
        // Values stand within 1% of the HDR value (itself within 1/1024 of the duration).
        assert!(
            (max - max_ms).abs() / max_ms <= 0.011,
            "{service} {operation}: max {max} ms"
        );
        for (metric, want) in [
            ("Requests", requests),
            ("Errors", errors),
            ("Faults", faults),
            ("Throttles", throttles),
        ] {
            let got = statistic(&cw, &namespace, metric, service, operation, Statistic::Sum).await;
            assert_eq!(got, want, "{metric} of {service} {operation}");
        }
    }
    // The [Service] roll-up: one distribution of every span of the service, all operations.
    for (service, spans, max_ms, faults) in
        [("orders", 70.0, 40.0, 3.0), ("payments", 15.0, 1500.0, 0.0)]
    {
        let stat = |metric, stat| service_statistic(&cw, &namespace, metric, service, stat);
        assert_eq!(stat("Latency", "SampleCount").await, spans, "{service}");
        assert_eq!(stat("Requests", "Sum").await, spans, "{service}");
        assert_eq!(stat("Faults", "Sum").await, faults, "{service}");
        let max = stat("Latency", "Maximum").await;
        assert!(
            (max - max_ms).abs() / max_ms <= 0.011,
            "{service}: max {max} ms"
        );
    }
    let listed = cw
        .list_metrics()
        .namespace(&namespace)
        .send()
        .await
        .unwrap();
    let (mut names, mut sets) = (BTreeSet::new(), BTreeSet::new());
    for metric in listed.metrics() {
        let dims: Vec<&str> = metric
            .dimensions()
            .iter()
            .filter_map(|d| d.name())
            .collect();
        sets.insert(dims.join(","));
        names.insert(metric.metric_name().unwrap_or_default().to_string());
    }
    assert_eq!(
        sets,
        ["Service", "Service,Operation"].map(String::from).into()
    );
    assert_eq!(
        names,
        ["Errors", "Faults", "Latency", "Requests", "Throttles"]
            .map(String::from)
            .into()
    );
}
