//! Kafka in (the gateway side of `--exporters kafka`, and of the Collector's `kafka` exporter):
//! OTLP `TracesData` messages consumed as a member of `kafka.group_id`, each read through the
//! same validating walk as an OTLP request and admitted to the pipeline. At least once: a
//! message's offset is stored for commit only after the pipeline took it (or the persistent
//! queue wrote it). A full pipeline pauses the partitions, and nothing is skipped for it; a
//! message that does not decode is counted, logged and skipped, and never stops the consumer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::exporters::kafka::KafkaConfig;
use crate::model::{Protocol, RequestOutcome, SPAN_METRICS_HEADER};
use crate::pipeline::Pipeline;
use crate::receivers::decode::decode_request;
use crate::telemetry::{Stats, family};

/// How often a refused message is offered again while the partitions are paused.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// `sidetrace_kafka_receiver_*`.
#[derive(Debug, Default)]
pub struct KafkaReceiverStats {
    messages: AtomicU64,
    bad: AtomicU64,
    pauses: AtomicU64,
}

impl Stats for KafkaReceiverStats {
    fn render(&self, o: &mut String) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, v) in [
            (
                "sidetrace_kafka_receiver_messages_total",
                "Kafka messages admitted to the pipeline (their offsets then committed).",
                g(&self.messages),
            ),
            (
                "sidetrace_kafka_receiver_bad_messages_total",
                "Kafka messages that were not a valid OTLP TracesData (or too large): counted, logged and skipped.",
                g(&self.bad),
            ),
            (
                "sidetrace_kafka_receiver_pauses_total",
                "Times consumption paused because the pipeline was full.",
                g(&self.pauses),
            ),
        ] {
            family(o, name, "counter", help, [(String::new(), v)]);
        }
    }
}

/// Subscribes and starts consuming; runs until `stop` resolves.
pub fn start(
    c: &KafkaConfig,
    pipeline: Arc<Pipeline>,
    max_request_bytes: usize,
    stats: Arc<KafkaReceiverStats>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, String> {
    let mut cc = rdkafka::ClientConfig::new();
    for (k, v) in c.consumer_settings(max_request_bytes) {
        cc.set(k, v);
    }
    let consumer: StreamConsumer = cc.create().map_err(|e| e.to_string())?;
    let topics: Vec<&str> = c.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| e.to_string())?;
    info!(receiver = "kafka", brokers = ?c.brokers, topics = ?c.topics, group_id = %c.group_id, "Consuming spans from Kafka.");
    Ok(tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let msg = tokio::select! {
                _ = &mut stop => break,
                m = consumer.recv() => m,
            };
            match msg {
                Ok(m) => {
                    if !take(
                        &consumer,
                        &m,
                        &pipeline,
                        max_request_bytes,
                        &stats,
                        &mut stop,
                    )
                    .await
                    {
                        break;
                    }
                }
                // A broker down or a topic missing: once a second, not in a tight loop.
                Err(e) => {
                    warn!(receiver = "kafka", error = %e, "Kafka consumer error.");
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        // Dropping the consumer leaves the group and commits the stored offsets (blocking).
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        info!(receiver = "kafka", "Kafka consumer closed.");
    }))
}

/// Admits one message, pausing the partitions while the pipeline refuses it. False when the
/// agent is stopping (the message's offset is then not stored: it is read again later).
async fn take(
    consumer: &StreamConsumer,
    m: &BorrowedMessage<'_>,
    pipeline: &Pipeline,
    max_request_bytes: usize,
    stats: &KafkaReceiverStats,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let payload = m.payload().unwrap_or_default();
    let recorded = m.headers().is_some_and(|h| {
        h.iter()
            .any(|h| h.key == SPAN_METRICS_HEADER && h.value == Some(b"recorded".as_slice()))
    });
    let mut paused = None;
    let admitted = loop {
        if payload.len() > max_request_bytes {
            bad(
                m,
                stats,
                format!("{} bytes, over max_request_bytes", payload.len()),
            );
            break true;
        }
        let decoded = match decode_request(Bytes::copy_from_slice(payload), Protocol::Kafka) {
            Ok(mut d) => {
                d.metrics_recorded = recorded;
                d
            }
            Err(e) => {
                pipeline
                    .stats
                    .request(Protocol::Kafka, RequestOutcome::Malformed);
                bad(m, stats, e.to_string());
                break true;
            }
        };
        match pipeline.admit_durable(Protocol::Kafka, decoded).await {
            Ok(_) => {
                stats.messages.fetch_add(1, Ordering::Relaxed);
                break true;
            }
            Err(_) => {
                if paused.is_none() {
                    // Pausing drops what librdkafka prefetched for these partitions; this
                    // message is held here and offered again, then consumption goes on after it.
                    let assignment = consumer.assignment().ok();
                    if let Some(a) = &assignment {
                        let _ = consumer.pause(a);
                    }
                    stats.pauses.fetch_add(1, Ordering::Relaxed);
                    paused = Some(assignment);
                }
                tokio::select! {
                    _ = &mut *stop => break false,
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                }
            }
        }
    };
    if let Some(Some(a)) = paused {
        let _ = consumer.resume(&a);
    }
    if admitted {
        // Committed with the next automatic commit, on a rebalance, or at close.
        if let Err(e) = consumer.store_offset_from_message(m) {
            warn!(receiver = "kafka", error = %e, "Offset not stored; the message may be read again.");
        }
    }
    admitted
}

fn bad(m: &BorrowedMessage<'_>, stats: &KafkaReceiverStats, why: String) {
    stats.bad.fetch_add(1, Ordering::Relaxed);
    warn!(receiver = "kafka", topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %why, "Kafka message is not an OTLP TracesData; skipped.");
}
