//! The CloudWatch exporter: every interval, the span-metrics delta goes out with PutMetricData
//! per (Service, Operation): `Latency` as real distributions (`Values`/`Counts`), plus
//! `Requests`, `Errors`, `Faults` and `Throttles`. It runs on its own task, fed by snapshots.
//!
//! What was published is remembered as cumulative counts per series; a publish that fails with a
//! retryable error after its retry budget leaves them unchanged, so the next interval carries the
//! data (late rather than lost). A permanent refusal drops it (counted).

pub mod client;
pub mod config;
pub mod datums;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::exporters::retry::{self, Backoff, RetryPolicy};
use crate::exporters::{ExporterStats, Shared};
use crate::model::DropReason;
use crate::telemetry::span_metrics::{Histogram, Snapshot, SpanMetrics, StatusClass};
use crate::telemetry::{Counters, Stats, family};
pub use client::CloudwatchClient;
pub use config::{CloudwatchConfig, DimensionSet};
use datums::{Datum, Groups, SeriesDelta};

/// What became of one PutMetricData attempt (a label of `sidetrace_cloudwatch_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Ok,
    /// A retryable failure; the request is tried again.
    Retried,
    /// Refused in a way retrying cannot fix; its data is dropped.
    PermanentError,
    /// Still failing when the retry budget ran out; its data goes out with the next publish.
    RetryExhausted,
}

impl PublishOutcome {
    pub const ALL: [PublishOutcome; 4] = [
        PublishOutcome::Ok,
        PublishOutcome::Retried,
        PublishOutcome::PermanentError,
        PublishOutcome::RetryExhausted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PublishOutcome::Ok => "ok",
            PublishOutcome::Retried => "retried",
            PublishOutcome::PermanentError => "permanent_error",
            PublishOutcome::RetryExhausted => "retry_exhausted",
        }
    }
}

/// CloudWatch's own counters beside the shared exporter ones.
#[derive(Debug, Default)]
pub struct CloudwatchStats {
    requests: Counters<{ PublishOutcome::ALL.len() }>,
    datums: Counters<1>,
}

impl CloudwatchStats {
    pub fn request(&self, outcome: PublishOutcome) {
        self.requests.add(outcome as usize, 1);
    }

    pub fn requests(&self, outcome: PublishOutcome) -> u64 {
        self.requests.get(outcome as usize)
    }

    pub fn datums_sent(&self, n: u64) {
        self.datums.add(0, n);
    }

    pub fn datums(&self) -> u64 {
        self.datums.get(0)
    }
}

impl Stats for CloudwatchStats {
    fn render(&self, o: &mut String) {
        family(
            o,
            "sidetrace_cloudwatch_requests_total",
            "counter",
            "PutMetricData attempts by outcome.",
            PublishOutcome::ALL
                .iter()
                .map(|r| (format!("outcome=\"{}\"", r.label()), self.requests(*r))),
        );
        family(
            o,
            "sidetrace_cloudwatch_sent_datums_total",
            "counter",
            "Metric datums CloudWatch accepted.",
            [(String::new(), self.datums())],
        );
    }
}

/// The CloudWatch exporter's task and its stop signal (it publishes once more when stopped).
#[derive(Debug)]
pub struct Publisher {
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    pub stats: Arc<ExporterStats>,
}

/// Starts the CloudWatch exporter on its own task (AWS config from the SDK's default chain).
pub async fn start(c: &CloudwatchConfig, shared: &Shared) -> Publisher {
    let env = |v: &str| std::env::var(v).ok();
    let sdk =
        crate::exporters::aws::sdk_config(crate::config::aws_region(&env), c.request_timeout).await;
    info!(
        exporter = "cloudwatch",
        namespace = %c.namespace,
        interval_ms = c.interval.as_millis() as u64,
        region = sdk.region().map_or("(from the SDK chain)", |r| r.as_ref()),
        "CloudWatch exporter ready (PutMetricData with Values/Counts)."
    );
    let versions = shared.span_metrics.config().service_version;
    let dimension_sets = c
        .dimension_sets
        .clone()
        .unwrap_or_else(|| DimensionSet::auto(versions));
    if !versions && dimension_sets.iter().any(|d| d.version) {
        warn!(
            exporter = "cloudwatch",
            "cloudwatch.dimension_sets names Version but span_metrics.service_version is off: every Version is \"unknown\"."
        );
    }
    let settings = CloudwatchSettings {
        namespace: c.namespace.clone(),
        interval: c.interval,
        dimension_sets,
        retry: RetryPolicy {
            max_elapsed: c.retry_max_elapsed,
            ..RetryPolicy::default()
        },
    };
    let stats = ExporterStats::new("cloudwatch");
    let cloudwatch = Arc::new(CloudwatchStats::default());
    shared.registry.register(cloudwatch.clone());
    let exporter = CloudwatchExporter::new(
        CloudwatchClient::new(&sdk),
        settings,
        shared.span_metrics.clone(),
        stats.clone(),
        cloudwatch,
    );
    let (stop, stop_rx) = watch::channel(false);
    Publisher {
        stop,
        task: tokio::spawn(exporter.run(stop_rx)),
        stats,
    }
}

/// How the exporter publishes.
#[derive(Debug, Clone)]
pub struct CloudwatchSettings {
    pub namespace: String,
    pub interval: Duration,
    /// Each span is counted once in every set (per operation, the service roll-up, ...).
    pub dimension_sets: Vec<DimensionSet>,
    pub retry: RetryPolicy,
}

/// The finest series span metrics give: (service, version — empty unless enabled —, operation).
type FineKey = (Box<str>, Box<str>, Box<str>);
/// A CloudWatch series: its dimension set and the (service, version, operation) values, empty
/// where the set does not carry the dimension.
type SeriesKey = (DimensionSet, Box<str>, Box<str>, Box<str>);

/// Cumulative counts of one CloudWatch series.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    latency: Vec<(u16, u64)>,
    requests: u64,
    errors: u64,
    faults: u64,
    throttles: u64,
}

/// Span metrics merged into CloudWatch series (kinds and status classes folded together, since
/// only Service and Operation are dimensions), as cumulative counts.
fn cumulative(snapshot: &Snapshot, groups: &Groups) -> Vec<(FineKey, Totals)> {
    let mut out: Vec<(FineKey, Totals)> = Vec::new();
    let mut latency = Histogram::default();
    for s in &snapshot.series {
        let l = &s.labels;
        let same = out.last().is_some_and(|((svc, ver, op), _)| {
            *svc == l.service && *ver == l.version && *op == l.operation
        });
        if !same {
            if let Some((_, t)) = out.last_mut() {
                t.latency = groups.fold(&latency);
            }
            latency = Histogram::default();
            out.push((
                (l.service.clone(), l.version.clone(), l.operation.clone()),
                Totals::default(),
            ));
        }
        let h = s.histogram();
        let t = &mut out.last_mut().expect("pushed above").1;
        t.requests += h.total;
        match l.status {
            StatusClass::Ok => {}
            StatusClass::Error => t.errors += h.total,
            StatusClass::Fault => t.faults += h.total,
            StatusClass::Throttle => {
                t.errors += h.total;
                t.throttles += h.total;
            }
        }
        latency.add(&h);
    }
    if let Some((_, t)) = out.last_mut() {
        t.latency = groups.fold(&latency);
    }
    out
}

/// Every span's totals projected onto each dimension set: a series of a coarser set (the
/// `[Service]` roll-up) sums the finer series it covers, latency groups included.
fn project(fine: &[(FineKey, Totals)], sets: &[DimensionSet]) -> Vec<(SeriesKey, Totals)> {
    let mut out: Vec<(SeriesKey, Totals)> = Vec::new();
    let mut index: HashMap<SeriesKey, usize> = HashMap::new();
    let empty = || Box::<str>::from("");
    for set in sets {
        for ((service, version, operation), t) in fine {
            let key = (
                *set,
                service.clone(),
                if set.version {
                    version.clone()
                } else {
                    empty()
                },
                if set.operation {
                    operation.clone()
                } else {
                    empty()
                },
            );
            match index.get(&key) {
                Some(&i) => out[i].1.add(t),
                None => {
                    index.insert(key.clone(), out.len());
                    out.push((key, t.clone()));
                }
            }
        }
    }
    out
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.latency = datums::merge(&self.latency, &other.latency);
        self.requests += other.requests;
        self.errors += other.errors;
        self.faults += other.faults;
        self.throttles += other.throttles;
    }
}

/// CloudWatch: dimension values are 1–1,024 ASCII characters with at least one that is not
/// whitespace (one bad value would fail the whole request): other characters become `_`.
pub fn dimension_value(text: &str) -> String {
    let mut v: String = text
        .chars()
        .take(1024)
        .map(|c| if (' '..='~').contains(&c) { c } else { '_' })
        .collect();
    if v.trim().is_empty() {
        v = "unknown".into();
    }
    v
}

fn dimensions(key: &SeriesKey) -> Vec<(&'static str, String)> {
    let (set, service, version, operation) = key;
    let mut d = vec![("Service", dimension_value(service))];
    if set.operation {
        d.push(("Operation", dimension_value(operation)));
    }
    // A span without service.version is Version "unknown" (dimension_value of ""), never a
    // series without Version that would collide with the set that has none.
    if set.version {
        d.push(("Version", dimension_value(version)));
    }
    d
}

fn minus(current: &Totals, before: Option<&Totals>, key: &SeriesKey) -> SeriesDelta {
    let zero = Totals::default();
    let b = before.unwrap_or(&zero);
    SeriesDelta {
        dimensions: dimensions(key),
        latency: datums::delta(&current.latency, &b.latency),
        requests: current.requests.saturating_sub(b.requests),
        errors: current.errors.saturating_sub(b.errors),
        faults: current.faults.saturating_sub(b.faults),
        throttles: current.throttles.saturating_sub(b.throttles),
    }
}

/// How one request ended after its retries.
enum Sent {
    Ok,
    Permanent,
    Exhausted,
}

/// The exporter's state on its own task.
#[derive(Debug)]
pub struct CloudwatchExporter {
    client: CloudwatchClient,
    settings: CloudwatchSettings,
    span_metrics: SpanMetrics,
    stats: Arc<ExporterStats>,
    cloudwatch: Arc<CloudwatchStats>,
    published: HashMap<SeriesKey, Totals>,
    seed: u64,
}

impl CloudwatchExporter {
    pub fn new(
        client: CloudwatchClient,
        settings: CloudwatchSettings,
        span_metrics: SpanMetrics,
        stats: Arc<ExporterStats>,
        cloudwatch: Arc<CloudwatchStats>,
    ) -> Self {
        CloudwatchExporter {
            client,
            settings,
            span_metrics,
            stats,
            cloudwatch,
            published: HashMap::new(),
            seed: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// Publishes every interval until `stop` turns true, then once more (the final partial
    /// interval, so a drained agent leaves nothing unpublished).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let interval = self.settings.interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = tick.tick() => self.publish(false).await,
                _ = &mut stopped => break,
            }
        }
        self.publish(true).await;
    }

    /// Sends what span metrics recorded since the last successful publish. `last`: at shutdown,
    /// where data that cannot be sent is counted as dropped instead of carried over.
    pub async fn publish(&mut self, last: bool) {
        let groups = Groups::get();
        // Merging thousands of series takes milliseconds: off the runtime's workers.
        let span_metrics = self.span_metrics.clone();
        let sets = self.settings.dimension_sets.clone();
        let current = tokio::task::spawn_blocking(move || {
            project(&cumulative(&span_metrics.snapshot(), groups), &sets)
        })
        .await
        .unwrap_or_default();
        let deltas: Vec<SeriesDelta> = current
            .iter()
            .map(|(key, totals)| minus(totals, self.published.get(key), key))
            .collect();
        let per_series: Vec<Vec<Datum>> = deltas
            .iter()
            .map(|d| datums::series_datums(d, groups))
            .collect();
        let timestamp = SystemTime::now();
        let requests = datums::pack(per_series, &self.settings.namespace);
        // Spans are counted once, in the first set (every set covers every span).
        let first = self.settings.dimension_sets.first().copied();
        for (request, members) in requests {
            let spans: u64 = members
                .iter()
                .filter(|i| Some(current[**i].0.0) == first)
                .map(|i| deltas[*i].requests)
                .sum();
            let commit = match self.send(&request, timestamp).await {
                Sent::Ok => {
                    self.cloudwatch.datums_sent(request.len() as u64);
                    self.stats.sent(spans);
                    true
                }
                Sent::Permanent => {
                    self.stats.dropped(DropReason::PermanentError, spans);
                    true
                }
                Sent::Exhausted if last => {
                    self.stats.dropped(DropReason::RetryExhausted, spans);
                    true
                }
                Sent::Exhausted => false,
            };
            if commit {
                for i in members {
                    let (key, totals) = &current[i];
                    self.published.insert(key.clone(), totals.clone());
                }
            }
        }
    }

    async fn send(&mut self, request: &[Datum], timestamp: SystemTime) -> Sent {
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let mut backoff = Backoff::new(self.settings.retry.clone(), self.seed);
        let (m, client, namespace) = (&self.cloudwatch, &self.client, &self.settings.namespace);
        let result = retry::deliver(
            &mut backoff,
            "cloudwatch",
            request.len() as u64,
            || client.put(namespace, request, timestamp),
            |_| m.request(PublishOutcome::Retried),
        )
        .await;
        match result {
            Ok(()) => {
                m.request(PublishOutcome::Ok);
                Sent::Ok
            }
            Err(DropReason::PermanentError) => {
                m.request(PublishOutcome::PermanentError);
                Sent::Permanent
            }
            Err(_) => {
                m.request(PublishOutcome::RetryExhausted);
                warn!(
                    exporter = "cloudwatch",
                    datums = request.len(),
                    "The span metrics not yet published go out with the next publish."
                );
                Sent::Exhausted
            }
        }
    }
}

#[cfg(test)]
mod tests;
