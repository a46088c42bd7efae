//! The Kafka exporter's task: kept spans spliced into OTLP `TracesData` messages (one per trace,
//! keyed by its trace ID, by default), produced with librdkafka. A span counts as sent only when
//! its message's delivery report is OK; failed messages are produced again with backoff until
//! `kafka.retry_max_elapsed`, and then dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::time::Instant;
use tracing::warn;

use super::config::KafkaConfig;
use crate::exporters::kafka::KafkaContext;
use crate::exporters::otlp::{Limits, Request, Splicer};
use crate::exporters::retry::{Backoff, RetryPolicy, Sends};
use crate::exporters::{Export, ExporterStats};
use crate::model::{Batch, DropReason, SPAN_METRICS_HEADER, Ticket, hex};
use crate::telemetry::{Stats, family};

/// Batches being delivered at once, each waiting on its messages' delivery reports: enough to
/// cover the broker's round trip and linger at line rate (8 capped one core at ~250 k spans/s
/// with a message per trace). Their bytes are librdkafka's, bounded by kafka.max_buffered_bytes.
const IN_FLIGHT_BATCHES: usize = 64;

/// The exporter's own counters, beside the span accounting every exporter keeps.
#[derive(Debug, Default)]
pub struct KafkaStats {
    messages: AtomicU64,
    split_traces: AtomicU64,
}

impl Stats for KafkaStats {
    fn render(&self, o: &mut String) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            o,
            "sidetrace_kafka_messages_sent_total",
            "counter",
            "Kafka messages whose delivery report was OK.",
            [(String::new(), g(&self.messages))],
        );
        family(
            o,
            "sidetrace_kafka_split_traces_total",
            "counter",
            "Traces larger than kafka.max_message_bytes, sent as several messages with the same key.",
            [(String::new(), g(&self.split_traces))],
        );
    }
}

/// One message: its key (the trace ID in lowercase hex, or none) and `TracesData` bytes.
struct Message {
    key: Option<String>,
    body: Bytes,
    spans: u64,
}

/// Produces kept spans to one topic.
pub struct KafkaExporter {
    producer: FutureProducer<KafkaContext>,
    /// `x-sidetrace-span-metrics: recorded` when this agent recorded the spans' metrics, so a
    /// sidetrace consuming them does not record them again.
    headers: Option<OwnedHeaders>,
    topic: Arc<str>,
    by_trace: bool,
    limits: Limits,
    /// Whole batches, when messages are not per trace.
    splicer: Splicer,
    retry: RetryPolicy,
    stats: Arc<ExporterStats>,
    kafka: Arc<KafkaStats>,
    sends: Sends,
}

impl std::fmt::Debug for KafkaExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaExporter")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaExporter {
    pub fn new(
        c: &KafkaConfig,
        context: KafkaContext,
        metrics_recorded: bool,
        stats: Arc<ExporterStats>,
        kafka: Arc<KafkaStats>,
    ) -> Result<Self, String> {
        let mut cc = rdkafka::ClientConfig::new();
        for (k, v) in c.producer_settings() {
            cc.set(k, v);
        }
        let producer: FutureProducer<KafkaContext> =
            cc.create_with_context(context).map_err(|e| e.to_string())?;
        let limits = Limits {
            max_spans: usize::MAX,
            max_bytes: c.max_message_bytes,
            max_span_bytes: c.max_message_bytes,
            idle: c.linger.max(Duration::from_millis(50)),
        };
        Ok(KafkaExporter {
            producer,
            headers: metrics_recorded.then(|| {
                OwnedHeaders::new().insert(Header {
                    key: SPAN_METRICS_HEADER,
                    value: Some("recorded"),
                })
            }),
            topic: c.topic.as_str().into(),
            by_trace: c.partition_traces_by_id,
            limits,
            splicer: Splicer::new(limits),
            retry: RetryPolicy {
                max_elapsed: c.retry_max_elapsed,
                ..RetryPolicy::default()
            },
            stats,
            kafka,
            sends: Sends::new(IN_FLIGHT_BATCHES),
        })
    }

    /// One message per trace: the batch's spans grouped by trace ID (in their order within a
    /// trace), each group spliced into its own `TracesData`.
    fn per_trace(&self, batch: &Batch, now: Instant) -> (Vec<Message>, u64) {
        let mut order: Vec<u32> = (0..batch.spans.len() as u32).collect();
        order.sort_by_key(|&i| batch.spans[i as usize].trace_id);
        let mut messages = Vec::new();
        let mut too_large = 0;
        let mut splicer = Splicer::new(self.limits);
        let mut full = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let trace = batch.spans[order[i] as usize].trace_id;
            let mut j = i;
            while j < order.len() && batch.spans[order[j] as usize].trace_id == trace {
                j += 1;
            }
            // Sorted by trace first, then by index: resource and scope runs stay contiguous.
            too_large += splicer
                .add_some(batch, &order[i..j], now, &mut full)
                .too_large;
            full.extend(splicer.take());
            if full.len() > 1 {
                self.kafka.split_traces.fetch_add(1, Ordering::Relaxed);
            }
            let key = hex(&trace);
            messages.extend(full.drain(..).map(|r| Message {
                key: Some(key.clone()),
                body: r.body,
                spans: r.spans,
            }));
            i = j;
        }
        (messages, too_large)
    }

    /// A whole spliced batch as one unkeyed message.
    async fn send_request(&mut self, r: Request) {
        let message = Message {
            key: None,
            body: r.body,
            spans: r.spans,
        };
        self.deliver(vec![message], r.tickets).await;
    }

    /// Delivers `messages` on a send slot (waiting for one: backpressure), holding `tickets`.
    async fn deliver(&mut self, messages: Vec<Message>, tickets: Vec<Ticket>) {
        if messages.is_empty() {
            return;
        }
        let (producer, headers, topic, stats, kafka, policy) = (
            self.producer.clone(),
            self.headers.clone(),
            self.topic.clone(),
            self.stats.clone(),
            self.kafka.clone(),
            self.retry.clone(),
        );
        self.sends
            .spawn(move |seed| async move {
                let mut backoff = Backoff::new(policy, seed);
                let mut todo = messages;
                loop {
                    let failed =
                        produce_all(&producer, &topic, headers.as_ref(), todo, &stats, &kafka)
                            .await;
                    let (retry, permanent): (Vec<_>, Vec<_>) =
                        failed.into_iter().partition(|(_, e)| retryable(e));
                    for (m, e) in &permanent {
                        warn!(exporter = "kafka", spans = m.spans, error = %e, "Broker refused a message; dropping it.");
                        stats.pending_add(-(m.spans as i64));
                        stats.dropped(DropReason::PermanentError, m.spans);
                    }
                    let Some((_, first)) = retry.first() else {
                        break;
                    };
                    match backoff.next_delay(None) {
                        Some(delay) => {
                            stats.retried(reason(first));
                            tokio::time::sleep(delay).await;
                            todo = retry.into_iter().map(|(m, _)| m).collect();
                        }
                        None => {
                            let spans: u64 = retry.iter().map(|(m, _)| m.spans).sum();
                            warn!(exporter = "kafka", spans, error = %first, "Messages kept failing; retry budget spent.");
                            stats.pending_add(-(spans as i64));
                            stats.dropped(DropReason::RetryExhausted, spans);
                            break;
                        }
                    }
                }
                // Delivered or given up: the persistent queue may forget these spans.
                drop(tickets);
            })
            .await;
    }
}

/// Produces every message and waits for all their delivery reports; returns those that failed.
async fn produce_all(
    producer: &FutureProducer<KafkaContext>,
    topic: &str,
    headers: Option<&OwnedHeaders>,
    messages: Vec<Message>,
    stats: &ExporterStats,
    kafka: &KafkaStats,
) -> Vec<(Message, KafkaError)> {
    let mut failed = Vec::new();
    let mut waiting: Vec<(Message, DeliveryFuture)> = Vec::with_capacity(messages.len());
    for mut m in messages {
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(topic).payload(&m.body[..]);
            if let Some(k) = &m.key {
                record = record.key(k.as_str());
            }
            if let Some(h) = headers {
                record = record.headers(h.clone());
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    // librdkafka holds a copy now, and hands it back if delivery fails.
                    m.body = Bytes::new();
                    waiting.push((m, delivery));
                    break;
                }
                // librdkafka's buffer is full (kafka.max_buffered_bytes): wait for reports.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match waiting.is_empty() {
                        true => tokio::time::sleep(Duration::from_millis(5)).await,
                        false => settle(waiting.drain(..), stats, kafka, &mut failed).await,
                    }
                }
                Err((e, _)) => {
                    failed.push((m, e));
                    break;
                }
            }
        }
    }
    settle(waiting.drain(..), stats, kafka, &mut failed).await;
    failed
}

/// Awaits delivery reports: OK counts the message's spans as sent.
async fn settle(
    waiting: impl Iterator<Item = (Message, DeliveryFuture)>,
    stats: &ExporterStats,
    kafka: &KafkaStats,
    failed: &mut Vec<(Message, KafkaError)>,
) {
    for (m, delivery) in waiting {
        match delivery.await {
            Ok(Ok(_)) => {
                stats.pending_add(-(m.spans as i64));
                stats.sent(m.spans);
                kafka.messages.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err((e, owned))) => {
                let body = Bytes::copy_from_slice(owned.payload().unwrap_or_default());
                failed.push((Message { body, ..m }, e));
            }
            // The producer dropped the report without the message: only a shutdown that
            // outlived the flush gets here; its spans are counted as dropped, not retried blind.
            Err(_) => {
                stats.pending_add(-(m.spans as i64));
                stats.dropped(DropReason::RetryExhausted, m.spans);
            }
        }
    }
}

/// Errors that producing again cannot fix: the message itself, or the client's rights.
fn retryable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidTopic
        )
    )
}

/// The retry reason label of a failure.
fn reason(e: &KafkaError) -> &'static str {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::MessageTimedOut | C::RequestTimedOut) => "timeout",
        Some(C::BrokerTransportFailure | C::AllBrokersDown | C::NetworkException) => "connection",
        Some(C::ThrottlingQuotaExceeded) => "throttled",
        _ => "server_error",
    }
}

impl Export for KafkaExporter {
    async fn export(&mut self, batch: &Batch, now: Instant) {
        if self.by_trace {
            let (messages, too_large) = self.per_trace(batch, now);
            self.stats.rejected("span_too_large", too_large);
            let spans: u64 = messages.iter().map(|m| m.spans).sum();
            self.stats.pending_add(spans as i64);
            let tickets = match batch.ticket.is_some() {
                true => vec![batch.ticket.clone()],
                false => Vec::new(),
            };
            self.deliver(messages, tickets).await;
            return;
        }
        let mut full = Vec::new();
        let added = self.splicer.add(batch, now, &mut full);
        self.stats.rejected("span_too_large", added.too_large);
        self.stats.pending_add(added.spans as i64);
        for r in full {
            self.send_request(r).await;
        }
    }

    async fn tick(&mut self, now: Instant) {
        if self.splicer.is_due(now)
            && let Some(r) = self.splicer.take()
        {
            self.send_request(r).await;
        }
    }

    async fn shutdown(&mut self) {
        if let Some(r) = self.splicer.take() {
            self.send_request(r).await;
        }
        self.sends.wait_all().await;
        let producer = self.producer.clone();
        // Anything librdkafka still holds (nothing, once every send above has settled).
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    }
}
