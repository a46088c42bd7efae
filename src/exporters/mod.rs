//! Exporters: where kept batches go after the sampler. Each is a folder (or file) here that owns
//! its config, builder and stats; each runs on its own task behind its own bounded input, so the
//! slow ones (JSON, HTTP to AWS, retries) never run on the receivers' or each other's time.

pub mod aws;
pub mod batching;
pub mod cloudwatch;
pub mod console;
pub mod kafka;
pub mod local;
pub mod otlp;
pub mod retry;
pub mod stats;
pub mod xray;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::model::{Batch, RawDocument};
use crate::telemetry::Registry;
use crate::telemetry::span_metrics::SpanMetrics;

pub use console::Console;
pub use local::LocalStore;
pub use stats::{ExporterFamilies, ExporterStats};

/// How often an exporter gets its periodic tick (console grace, partial-batch flushes).
pub const TICK: Duration = Duration::from_millis(50);

/// The exporters sidetrace knows, as named in the `exporters` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExporterKind {
    Local,
    Console,
    Xray,
    /// Span metrics to CloudWatch: fed by snapshots on its own task, not by batches.
    Cloudwatch,
    /// OTLP/HTTP to any OTLP endpoint (a gateway, a Collector, a vendor).
    Otlp,
    /// OTLP `TracesData` messages to a Kafka topic (the Collector's `kafka` exporter format).
    Kafka,
}

impl ExporterKind {
    pub fn label(self) -> &'static str {
        match self {
            ExporterKind::Local => "local",
            ExporterKind::Console => "console",
            ExporterKind::Xray => "xray",
            ExporterKind::Cloudwatch => "cloudwatch",
            ExporterKind::Otlp => "otlp",
            ExporterKind::Kafka => "kafka",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "local" => Ok(ExporterKind::Local),
            "console" => Ok(ExporterKind::Console),
            "xray" => Ok(ExporterKind::Xray),
            "cloudwatch" => Ok(ExporterKind::Cloudwatch),
            "otlp" => Ok(ExporterKind::Otlp),
            "kafka" => Ok(ExporterKind::Kafka),
            n => Err(format!(
                "unknown exporter {n:?} (known: xray, cloudwatch, otlp, kafka, local, console)"
            )),
        }
    }
}

/// An exporter of batches. Its methods run on the exporter's own task, one at a time; awaiting
/// in them holds up only this exporter (and, once its input is full, the dispatcher).
pub trait Export: Send + 'static {
    /// Takes one kept batch.
    fn export(&mut self, batch: &Batch, now: Instant) -> impl Future<Output = ()> + Send;

    /// Takes documents that arrived already translated (X-Ray SDKs over UDP); only the X-Ray
    /// exporter is given any.
    fn export_documents(
        &mut self,
        _docs: Vec<RawDocument>,
        _now: Instant,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Periodic work, every [`TICK`].
    fn tick(&mut self, _now: Instant) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The final flush once the input is closed and empty.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What every exporter's builder gets from the agent.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Where each exporter registers its stats for `/metrics`.
    pub registry: Arc<Registry>,
    /// The span metrics of 100 % of spans (the CloudWatch exporter publishes them).
    pub span_metrics: SpanMetrics,
    /// Each batch exporter's input budget, in bytes.
    pub input_bytes: usize,
}

/// A started batch exporter: the dispatcher feeds `input`; `task` ends after its final flush.
#[derive(Debug)]
pub struct Running {
    pub input: Input,
    pub task: JoinHandle<()>,
    pub stats: Arc<ExporterStats>,
}

/// What an input carries: batches from the dispatcher, or documents from the X-Ray UDP receiver.
#[derive(Debug)]
enum Work {
    Batch(Arc<Batch>),
    Documents(Vec<RawDocument>),
}

type Item = (Work, OwnedSemaphorePermit);

/// The feeding end of one exporter's input: bounded in bytes, so a stalled exporter costs at
/// most its input's budget of memory before it pushes back. Cloned for a second feeder (the
/// X-Ray UDP receiver); the exporter stops once every clone is dropped.
#[derive(Debug, Clone)]
pub struct Input {
    tx: mpsc::UnboundedSender<Item>,
    room: Arc<Semaphore>,
    capacity_bytes: u32,
    stats: Arc<ExporterStats>,
    /// Takes X-Ray SDK documents as they are (the X-Ray exporter in segments mode), so it is
    /// not given their span views too.
    relays_xray_documents: bool,
}

impl Input {
    /// Marks this input as the one X-Ray SDK documents are relayed to.
    pub fn relaying_xray_documents(mut self) -> Self {
        self.relays_xray_documents = true;
        self
    }

    pub fn relays_xray_documents(&self) -> bool {
        self.relays_xray_documents
    }

    /// Whether this exporter takes `batch` (every batch, except X-Ray SDK span views for the
    /// exporter that relays their documents).
    pub fn wants(&self, batch: &Batch) -> bool {
        !(self.relays_xray_documents && batch.protocol == crate::model::Protocol::XrayUdp)
    }

    /// Waits until the batch fits in the input (the exporter's backpressure), then hands it over.
    pub async fn send(&self, batch: Arc<Batch>) {
        // A batch larger than the whole budget takes all of it rather than never fitting.
        let need = u32::try_from(batch.size_bytes())
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity_bytes);
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(permit) = self.room.clone().acquire_many_owned(need).await else {
            return;
        };
        let spans = batch.spans.len() as i64;
        self.stats.pending_add(spans);
        if self.tx.send((Work::Batch(batch), permit)).is_err() {
            // The exporter's task has ended (it only does at shutdown or if it panicked).
            self.stats.pending_add(-spans);
            self.stats
                .dropped(crate::model::DropReason::DrainDeadline, spans as u64);
        }
    }
}

impl Input {
    /// Hands documents over once they fit, waiting at most until `deadline`; gives them back
    /// when the input is still full then (a UDP sender cannot be asked to wait for long).
    pub async fn send_documents(
        &self,
        docs: Vec<RawDocument>,
        deadline: Instant,
    ) -> Result<(), Vec<RawDocument>> {
        let bytes: usize = docs.iter().map(|d| d.escaped.len() + d.id.len()).sum();
        let need = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity_bytes);
        let wait = self.room.clone().acquire_many_owned(need);
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, wait).await else {
            return Err(docs);
        };
        let n = docs.len() as i64;
        self.stats.pending_add(n);
        match self.tx.send((Work::Documents(docs), permit)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.pending_add(-n);
                match e.0.0 {
                    Work::Documents(d) => Err(d),
                    Work::Batch(_) => Err(Vec::new()),
                }
            }
        }
    }
}

/// Starts an exporter on its own task behind an input of `capacity_bytes`; the task ends after
/// the input is closed (the [`Input`] dropped) and the exporter's final flush.
pub fn spawn<E: Export>(exporter: E, stats: Arc<ExporterStats>, capacity_bytes: usize) -> Running {
    let (input, task) = spawn_task(exporter, stats.clone(), capacity_bytes);
    Running { input, task, stats }
}

fn spawn_task<E: Export>(
    mut exporter: E,
    stats: Arc<ExporterStats>,
    capacity_bytes: usize,
) -> (Input, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
    let capacity_bytes = u32::try_from(capacity_bytes).unwrap_or(u32::MAX).max(1);
    let input = Input {
        tx,
        room: Arc::new(Semaphore::new(capacity_bytes as usize)),
        capacity_bytes,
        stats: stats.clone(),
        relays_xray_documents: false,
    };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = rx.recv() => {
                    let Some((work, permit)) = item else { break };
                    // Counted as pending until the exporter took the work over: an abort at the
                    // drain deadline may count it twice, never not at all.
                    let n = match work {
                        Work::Batch(batch) => {
                            exporter.export(&batch, Instant::now()).await;
                            batch.spans.len()
                        }
                        Work::Documents(docs) => {
                            let n = docs.len();
                            exporter.export_documents(docs, Instant::now()).await;
                            n
                        }
                    };
                    stats.pending_add(-(n as i64));
                    drop(permit);
                }
                _ = tick.tick() => exporter.tick(Instant::now()).await,
            }
        }
        exporter.shutdown().await;
    });
    (input, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    /// An exporter that blocks on every batch until released.
    struct Gate(Arc<Semaphore>, Arc<std::sync::Mutex<Vec<usize>>>);

    impl Export for Gate {
        async fn export(&mut self, batch: &Batch, _now: Instant) {
            let _ = self.0.acquire().await.map(|p| p.forget());
            self.1.lock().unwrap().push(batch.spans.len());
        }
    }

    fn batch(bytes: usize) -> Batch {
        Batch {
            protocol: Protocol::Grpc,
            buf: vec![0u8; bytes].into(),
            resources: vec![],
            scopes: vec![],
            spans: vec![],
            ticket: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_full_input_pushes_back_and_closing_it_stops_the_task() {
        let gate = Arc::new(Semaphore::new(0));
        let seen = Arc::default();
        let stats = ExporterStats::new("test");
        let (input, task) = spawn_task(Gate(gate.clone(), Arc::clone(&seen)), stats, 1000);
        input.send(Arc::new(batch(600))).await;
        // The exporter holds the first batch; a second that does not fit must wait.
        let second =
            tokio::time::timeout(Duration::from_millis(50), input.send(Arc::new(batch(600))));
        assert!(second.await.is_err(), "the input is full");
        gate.add_permits(1);
        tokio::time::timeout(Duration::from_secs(5), input.send(Arc::new(batch(600))))
            .await
            .expect("room once the first batch is done");
        gate.add_permits(10);
        drop(input);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
