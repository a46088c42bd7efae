//! Kafka in (the gateway side of `--exporters kafka`, and of the Collector's `kafka` exporter):
//! OTLP `TracesData` messages consumed as a member of `kafka.group_id`, each read through the
//! same validating walk as an OTLP request and admitted to the pipeline. At least once: a
//! message's offset is stored for commit only after the pipeline took it (or the persistent
//! queue wrote it). A full pipeline holds the messages (pausing the partitions if that lasts),
//! and nothing is skipped for it; a message that does not decode is counted, logged and
//! skipped, and never stops the consumer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::exporters::kafka::{KafkaConfig, KafkaContext};
use crate::model::{Protocol, RequestOutcome, SPAN_METRICS_HEADER};
use crate::pipeline::Pipeline;
use crate::receivers::decode::decode_parts;
use crate::telemetry::{Stats, family};

/// At most how long a refused batch waits before it is offered again (it is offered sooner,
/// as soon as the queue has room for it).
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Refused this long, the receiver pauses its partitions. Not at once: a pause drops what
/// librdkafka prefetched, and pausing at every brief full queue left a gateway idle most of the
/// time (~5 k messages/s at 20 % CPU).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Messages already fetched are taken together, up to these, as one batch for the pipeline.
const GATHER_MESSAGES: usize = 1024;
const GATHER_BYTES: usize = 256 << 10;

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
    context: KafkaContext,
    pipeline: Arc<Pipeline>,
    max_request_bytes: usize,
    stats: Arc<KafkaReceiverStats>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, String> {
    let mut cc = rdkafka::ClientConfig::new();
    for (k, v) in c.consumer_settings() {
        cc.set(k, v);
    }
    let consumer: StreamConsumer<KafkaContext> =
        cc.create_with_context(context).map_err(|e| e.to_string())?;
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
                    // With it, what librdkafka already holds: one batch for the pipeline, not one
                    // per message (a message is often one trace of a few spans).
                    let mut bytes = m.payload_len();
                    let mut msgs = vec![m];
                    while msgs.len() < GATHER_MESSAGES && bytes < GATHER_BYTES {
                        match ready(&consumer) {
                            Some(Ok(m)) => {
                                bytes += m.payload_len();
                                msgs.push(m);
                            }
                            Some(Err(e)) => {
                                warn!(receiver = "kafka", error = %e, "Kafka consumer error.");
                                break;
                            }
                            None => break,
                        }
                    }
                    if !take(
                        &consumer,
                        &msgs,
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

/// The next message if librdkafka already has one, without waiting.
fn ready(consumer: &StreamConsumer<KafkaContext>) -> Option<KafkaResult<BorrowedMessage<'_>>> {
    let mut next = std::pin::pin!(consumer.recv());
    match next.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(m) => Some(m),
        Poll::Pending => None,
    }
}

fn recorded(m: &BorrowedMessage<'_>) -> bool {
    m.headers().is_some_and(|h| {
        h.iter()
            .any(|h| h.key == SPAN_METRICS_HEADER && h.value == Some(b"recorded".as_slice()))
    })
}

/// Admits messages, in runs that agree on whether their span metrics were recorded, each run as
/// one batch. False when the agent is stopping (offsets not stored are read again later).
async fn take(
    consumer: &StreamConsumer<KafkaContext>,
    msgs: &[BorrowedMessage<'_>],
    pipeline: &Pipeline,
    max_request_bytes: usize,
    stats: &KafkaReceiverStats,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    for run in msgs.chunk_by(|a, b| recorded(a) == recorded(b)) {
        if !take_run(consumer, run, pipeline, max_request_bytes, stats, stop).await {
            return false;
        }
        for m in run {
            // Committed with the next automatic commit, on a rebalance, or at close.
            if let Err(e) = consumer.store_offset_from_message(m) {
                warn!(receiver = "kafka", error = %e, "Offset not stored; the message may be read again.");
            }
        }
    }
    true
}

/// Admits one run of messages as one batch, waiting for room while the pipeline refuses it
/// (pausing the partitions if that lasts). Bad messages are counted, logged and left out.
async fn take_run(
    consumer: &StreamConsumer<KafkaContext>,
    run: &[BorrowedMessage<'_>],
    pipeline: &Pipeline,
    max_request_bytes: usize,
    stats: &KafkaReceiverStats,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let mut good: Vec<&BorrowedMessage<'_>> = Vec::with_capacity(run.len());
    for m in run {
        let len = m.payload_len();
        if len > max_request_bytes {
            bad(m, stats, format!("{len} bytes, over max_request_bytes"));
        } else {
            good.push(m);
        }
    }
    let mut paused = None;
    let mut refused_since = None;
    let admitted = loop {
        // One copy of every payload into one buffer, each walked on its own.
        let mut buf = Vec::with_capacity(good.iter().map(|m| m.payload_len()).sum());
        let mut parts = Vec::with_capacity(good.len());
        for m in &good {
            let payload = m.payload().unwrap_or_default();
            parts.push(buf.len()..buf.len() + payload.len());
            buf.extend_from_slice(payload);
        }
        let (mut decoded, results) = decode_parts(buf.into(), &parts, Protocol::Kafka);
        if results.iter().any(Result::is_err) {
            // Left out, and read again without their bytes: the persistent queue keeps the
            // buffer as one request, which must hold only what was accepted.
            let mut i = 0;
            good.retain(|m| {
                let r = &results[i];
                i += 1;
                if let Err(e) = r {
                    pipeline
                        .stats
                        .request(Protocol::Kafka, RequestOutcome::Malformed);
                    bad(m, stats, e.to_string());
                }
                r.is_ok()
            });
            continue;
        }
        if good.is_empty() {
            break true;
        }
        decoded.metrics_recorded = recorded(good[0]);
        let (spans, bytes) = (decoded.batch.spans.len(), decoded.batch.size_bytes());
        match pipeline.admit_durable(Protocol::Kafka, decoded).await {
            Ok(_) => {
                stats
                    .messages
                    .fetch_add(good.len() as u64, Ordering::Relaxed);
                break true;
            }
            Err(_) => {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if paused.is_none() && since.elapsed() >= PAUSE_AFTER {
                    // Refused for a while: stop fetching. Pausing drops what librdkafka
                    // prefetched for these partitions; these messages are held here and
                    // offered again, then consumption goes on after them.
                    let assignment = consumer.assignment().ok();
                    if let Some(a) = &assignment {
                        let _ = consumer.pause(a);
                    }
                    stats.pauses.fetch_add(1, Ordering::Relaxed);
                    paused = Some(assignment);
                }
                // Woken when the queue has room for it. A refusal that is not the queue's (the
                // memory limit, the persistent queue full) finds room at once: only the timer
                // paces those, or this would spin, walking the batch again and again.
                let queue_full = !pipeline.queue.fits(spans, bytes);
                tokio::select! {
                    _ = &mut *stop => break false,
                    _ = pipeline.queue.wait_for_room(spans, bytes), if queue_full => {}
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                }
            }
        }
    };
    if let Some(Some(a)) = paused {
        let _ = consumer.resume(&a);
    }
    admitted
}

fn bad(m: &BorrowedMessage<'_>, stats: &KafkaReceiverStats, why: String) {
    stats.bad.fetch_add(1, Ordering::Relaxed);
    warn!(receiver = "kafka", topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %why, "Kafka message is not an OTLP TracesData; skipped.");
}
