//! The exporter against a local fake CloudWatch endpoint (the real SDK's awsQuery requests):
//! what is sent, how failures are retried, carried over or dropped, and counted.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::*;
use crate::telemetry::span_metrics::SpanMetricsConfig;
use crate::telemetry::span_metrics::tests::{batch, span};

const OK: &str = r#"<PutMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></PutMetricDataResponse>"#;

fn error_xml(code: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>no</Message></Error><RequestId>r</RequestId></ErrorResponse>"#
    )
}

#[derive(Default)]
struct Fake {
    /// Answers to give, in order; then 200.
    script: VecDeque<(u16, String)>,
    /// Decoded form bodies received, and their size on the wire before gzip.
    bodies: Vec<(Vec<(String, String)>, usize)>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() + 1 => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn handle(
    State(fake): State<Arc<Mutex<Fake>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut raw = body.to_vec();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        raw = out;
    }
    let text = String::from_utf8(raw).unwrap();
    let form = text
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let mut f = fake.lock().unwrap();
    f.bodies.push((form, text.len()));
    let (status, body) = f.script.pop_front().unwrap_or((200, OK.into()));
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn fake_endpoint(script: Vec<(u16, String)>) -> (String, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(Fake {
        script: script.into(),
        ..Default::default()
    }));
    let app = Router::new()
        .route("/", post(handle))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

/// The exporter's two sets of counters, as the tests read them.
#[derive(Debug, Clone)]
struct Counts {
    stats: Arc<ExporterStats>,
    cloudwatch: Arc<CloudwatchStats>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            stats: ExporterStats::new("cloudwatch"),
            cloudwatch: Arc::default(),
        }
    }
}

/// The per-operation set alone (most tests look at one series).
const PER_OPERATION: DimensionSet = DimensionSet {
    operation: true,
    version: false,
};

async fn exporter(url: &str, span_metrics: SpanMetrics, metrics: Counts) -> CloudwatchExporter {
    exporter_with(url, span_metrics, metrics, vec![PER_OPERATION]).await
}

async fn exporter_with(
    url: &str,
    span_metrics: SpanMetrics,
    metrics: Counts,
    dimension_sets: Vec<DimensionSet>,
) -> CloudwatchExporter {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "k", "s", None, None, "test",
        ))
        .endpoint_url(url)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let settings = CloudwatchSettings {
        namespace: "Shop".into(),
        interval: Duration::from_secs(60),
        dimension_sets,
        retry: RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            max_elapsed: Duration::from_millis(100),
        },
    };
    CloudwatchExporter::new(
        CloudwatchClient::new(&sdk),
        settings,
        span_metrics,
        metrics.stats,
        metrics.cloudwatch,
    )
}

fn get<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// One datum as received: (metric, dimensions, values, counts, single value).
type Received = (
    String,
    Vec<(String, String)>,
    Vec<f64>,
    Vec<f64>,
    Option<f64>,
);

/// The datums of one request.
fn datums_of(form: &[(String, String)]) -> Vec<Received> {
    let mut out = Vec::new();
    for n in 1.. {
        let p = format!("MetricData.member.{n}.");
        let Some(name) = get(form, &format!("{p}MetricName")) else {
            break;
        };
        let list = |what: &str| -> Vec<String> {
            (1..)
                .map_while(|k| get(form, &format!("{p}{what}.member.{k}")).map(String::from))
                .collect()
        };
        let dims = (1..)
            .map_while(|k| {
                Some((
                    get(form, &format!("{p}Dimensions.member.{k}.Name"))?.to_string(),
                    get(form, &format!("{p}Dimensions.member.{k}.Value"))?.to_string(),
                ))
            })
            .collect();
        let nums = |v: Vec<String>| v.iter().map(|x| x.parse().unwrap()).collect::<Vec<f64>>();
        out.push((
            name.to_string(),
            dims,
            nums(list("Values")),
            nums(list("Counts")),
            get(form, &format!("{p}Value")).map(|v| v.parse().unwrap()),
        ));
    }
    out
}

fn record_some(m: &SpanMetrics, ok: usize, faults: usize) {
    let mut spans: Vec<_> = (0..ok)
        .map(|i| {
            span(
                "GET /a",
                2,
                false,
                1000 + i as u64 * 10,
                &[("http.route", "/a"), ("http.request.method", "GET")],
                200,
            )
        })
        .collect();
    spans.extend((0..faults).map(|_| {
        span(
            "GET /a",
            3,
            false,
            20_000,
            &[("http.route", "/a"), ("http.request.method", "GET")],
            503,
        )
    }));
    m.record(&batch(vec![("shop", "", spans)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_distributions_and_counts_per_service_and_operation() {
    let (url, fake) = fake_endpoint(vec![]).await;
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let metrics = Counts::default();
    let mut e = exporter(&url, m.clone(), metrics.clone()).await;
    record_some(&m, 300, 20);
    e.publish(false).await;
    // Nothing new: nothing sent.
    e.publish(false).await;
    record_some(&m, 5, 0);
    e.publish(false).await;

    let f = fake.lock().unwrap();
    assert_eq!(f.bodies.len(), 2);
    let (form, _) = &f.bodies[0];
    assert_eq!(get(form, "Action"), Some("PutMetricData"));
    assert_eq!(get(form, "Namespace"), Some("Shop"));
    let datums = datums_of(form);
    let dims = vec![
        ("Service".to_string(), "shop".to_string()),
        ("Operation".to_string(), "GET /a".to_string()),
    ];
    assert!(datums.iter().all(|d| d.1 == dims), "{datums:?}");
    let latency: Vec<_> = datums.iter().filter(|d| d.0 == "Latency").collect();
    assert_eq!(latency.len(), 1);
    assert!(latency[0].2.len() <= 150 && latency[0].2.len() == latency[0].3.len());
    // Server and client spans of one operation share the distribution (kind is no dimension).
    assert_eq!(latency[0].3.iter().sum::<f64>(), 320.0);
    let slowest = *latency[0].2.last().unwrap();
    assert!((slowest - 20.0).abs() / 20.0 <= 0.01, "{slowest}");
    let count = |name: &str| datums.iter().find(|d| d.0 == name).and_then(|d| d.4);
    assert_eq!(count("Requests"), Some(320.0));
    assert_eq!(count("Faults"), Some(20.0));
    assert_eq!(count("Errors"), Some(0.0));
    assert_eq!(count("Throttles"), Some(0.0));
    let second = datums_of(&f.bodies[1].0);
    assert_eq!(
        second.iter().find(|d| d.0 == "Requests").and_then(|d| d.4),
        Some(5.0)
    );
    assert_eq!(metrics.cloudwatch.requests(PublishOutcome::Ok), 2);
    assert_eq!(metrics.cloudwatch.datums(), 10);
    assert_eq!(metrics.stats.sent_spans(), 325);
}

#[tokio::test(flavor = "multi_thread")]
async fn roll_ups_give_each_service_and_version_its_own_distribution() {
    let (url, fake) = fake_endpoint(vec![]).await;
    let m = SpanMetrics::new(SpanMetricsConfig {
        service_version: true,
        ..Default::default()
    });
    let metrics = Counts::default();
    let mut e = exporter_with(&url, m.clone(), metrics.clone(), DimensionSet::auto(true)).await;
    let op = |name: &str, n: u64, ms: u64, status: i64| -> Vec<_> {
        let attrs = [("http.route", &name[4..]), ("http.request.method", "GET")];
        (0..n)
            .map(|_| span(name, 2, false, ms * 1000, &attrs, status))
            .collect()
    };
    // Two operations on the stable version, one on the canary; the canary is slow and failing.
    m.record(&batch(vec![(
        "shop",
        "1.0",
        [op("GET /a", 90, 2, 200), op("GET /b", 10, 4, 200)].concat(),
    )]));
    m.record(&batch(vec![("shop", "1.1", op("GET /a", 20, 50, 503))]));
    e.publish(false).await;

    let f = fake.lock().unwrap();
    let datums: Vec<Received> = f
        .bodies
        .iter()
        .flat_map(|(form, _)| datums_of(form))
        .collect();
    let d = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let find = |metric: &str, dims: &[(&str, &str)]| -> Vec<&Received> {
        datums
            .iter()
            .filter(|r| r.0 == metric && r.1 == d(dims))
            .collect()
    };
    let requests = |dims: &[(&str, &str)]| find("Requests", dims).first().and_then(|r| r.4);
    // [Service]: every span of the service, whatever its version or operation.
    assert_eq!(requests(&[("Service", "shop")]), Some(120.0));
    let [all] = find("Latency", &[("Service", "shop")])[..] else {
        panic!("{datums:?}")
    };
    assert_eq!(all.3.iter().sum::<f64>(), 120.0);
    assert!(
        (all.2.last().unwrap() - 50.0).abs() / 50.0 <= 0.01,
        "the canary's 50 ms is in it"
    );
    // [Service, Version]: the canary alone, to compare with the stable version.
    assert_eq!(
        requests(&[("Service", "shop"), ("Version", "1.0")]),
        Some(100.0)
    );
    assert_eq!(
        requests(&[("Service", "shop"), ("Version", "1.1")]),
        Some(20.0)
    );
    let faults = find("Faults", &[("Service", "shop"), ("Version", "1.1")]);
    assert_eq!(faults[0].4, Some(20.0));
    // [Service, Operation, Version]: the finest series, as before.
    let fine = [
        ("Service", "shop"),
        ("Operation", "GET /b"),
        ("Version", "1.0"),
    ];
    assert_eq!(requests(&fine), Some(10.0));
    // 3 fine + 2 version + 1 service series, 5 datums each; each span counted once as sent.
    assert_eq!(metrics.cloudwatch.datums(), 30);
    assert_eq!(metrics.stats.sent_spans(), 120);
}

#[test]
fn dimension_sets_parse_and_print() {
    use super::config::parse_dimension_sets;
    let sets = parse_dimension_sets("Service,Operation; Service ;Service,Version").unwrap();
    assert_eq!(
        sets,
        Some(vec![
            PER_OPERATION,
            DimensionSet::SERVICE,
            DimensionSet {
                operation: false,
                version: true
            }
        ])
    );
    assert_eq!(parse_dimension_sets("auto").unwrap(), None);
    for bad in ["Operation", "Service,Region", "Service,Service", ";"] {
        assert!(parse_dimension_sets(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_size_estimate_bounds_the_real_request_body() {
    let (url, fake) = fake_endpoint(vec![]).await;
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let mut spans = Vec::new();
    for op in 0..10 {
        for i in 0..400u64 {
            let route = format!("/r{op}/ü\"&=?");
            spans.push(span(
                "x",
                2,
                false,
                1 + i * i * 37,
                &[("http.route", &route)],
                0,
            ));
        }
    }
    m.record(&batch(vec![("svc with spaces & ünïcode", "", spans)]));
    let metrics = Counts::default();
    let mut e = exporter(&url, m.clone(), metrics.clone()).await;
    let expected: usize = {
        let groups = Groups::get();
        let current = project(&cumulative(&m.snapshot(), groups), &[PER_OPERATION]);
        current
            .iter()
            .map(|(k, t)| datums::series_datums(&minus(t, None, k), groups))
            .flat_map(|d| d.into_iter().map(|d| d.estimated_bytes()))
            .sum::<usize>()
            + 200
            + 3 * "Shop".len()
    };
    e.publish(false).await;
    let f = fake.lock().unwrap();
    assert_eq!(f.bodies.len(), 1);
    let (form, size) = &f.bodies[0];
    assert!(*size <= expected, "body {size} bytes > estimate {expected}");
    assert!(
        *size > expected / 4,
        "estimate {expected} is far too loose for {size}"
    );
    assert_eq!(
        datums_of(form).iter().filter(|d| d.0 == "Requests").count(),
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_and_an_outage_is_carried_over_not_lost() {
    let throttle = (400, error_xml("Throttling"));
    let unavailable = (503, error_xml("ServiceUnavailable"));
    let (url, fake) = fake_endpoint(vec![throttle]).await;
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let metrics = Counts::default();
    let mut e = exporter(&url, m.clone(), metrics.clone()).await;
    record_some(&m, 10, 0);
    e.publish(false).await;
    assert_eq!(metrics.cloudwatch.requests(PublishOutcome::Retried), 1);
    assert_eq!(metrics.cloudwatch.requests(PublishOutcome::Ok), 1);
    assert_eq!(metrics.stats.sent_spans(), 10);

    // The second publish meets an outage longer than its retry budget.
    fake.lock().unwrap().script = std::iter::repeat_n(unavailable, 500).collect();
    record_some(&m, 7, 0);
    e.publish(false).await;
    assert_eq!(
        metrics.cloudwatch.requests(PublishOutcome::RetryExhausted),
        1
    );
    assert_eq!(metrics.stats.sent_spans(), 10);
    fake.lock().unwrap().script.clear();
    record_some(&m, 1, 0);
    e.publish(false).await;
    // The 7 spans of the failed interval went out with the next one.
    assert_eq!(metrics.stats.sent_spans(), 18);
    let f = fake.lock().unwrap();
    let last = datums_of(&f.bodies.last().unwrap().0);
    assert_eq!(
        last.iter().find(|d| d.0 == "Requests").and_then(|d| d.4),
        Some(8.0)
    );
    assert_eq!(metrics.stats.dropped_spans(DropReason::RetryExhausted), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_refusal_drops_and_counts_and_the_last_publish_counts_what_it_could_not_send() {
    let (url, fake) = fake_endpoint(vec![(400, error_xml("InvalidParameterValue"))]).await;
    let m = SpanMetrics::new(SpanMetricsConfig::default());
    let metrics = Counts::default();
    let mut e = exporter(&url, m.clone(), metrics.clone()).await;
    record_some(&m, 4, 0);
    e.publish(false).await;
    assert_eq!(
        metrics.cloudwatch.requests(PublishOutcome::PermanentError),
        1
    );
    assert_eq!(metrics.stats.dropped_spans(DropReason::PermanentError), 4);
    record_some(&m, 3, 0);
    fake.lock().unwrap().script =
        std::iter::repeat_n((500, error_xml("InternalServiceFault")), 500).collect();
    e.publish(true).await;
    assert_eq!(metrics.stats.dropped_spans(DropReason::RetryExhausted), 3);
    assert_eq!(metrics.stats.sent_spans(), 0);
}

#[test]
fn dimension_values_are_what_cloudwatch_accepts() {
    assert_eq!(dimension_value("GET /cart/{id}"), "GET /cart/{id}");
    assert_eq!(dimension_value("caf\u{e9} \n"), "caf_ _");
    assert_eq!(dimension_value("   "), "unknown");
    assert_eq!(dimension_value(&"x".repeat(2000)).len(), 1024);
}
