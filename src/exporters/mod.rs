//! Exporters: where kept batches go after the sampler. Each is a folder (or file) here that owns
//! its config, builder and stats; each runs on its own task behind its own bounded input, so the
//! slow ones (JSON, HTTP to AWS, retries) never run on the receivers' or each other's time.

pub mod aws;
pub mod batching;
pub mod cloudwatch;
pub mod console;
pub mod local_store;
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

use crate::model::Batch;
use crate::telemetry::Registry;
use crate::telemetry::span_metrics::SpanMetrics;

pub use console::Console;
pub use local_store::LocalStore;
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
}

impl ExporterKind {
    pub fn label(self) -> &'static str {
        match self {
            ExporterKind::Local => "local",
            ExporterKind::Console => "console",
            ExporterKind::Xray => "xray",
            ExporterKind::Cloudwatch => "cloudwatch",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "local" => Ok(ExporterKind::Local),
            "console" => Ok(ExporterKind::Console),
            "xray" => Ok(ExporterKind::Xray),
            "cloudwatch" => Ok(ExporterKind::Cloudwatch),
            n @ "otlp" => Err(format!("the {n} exporter is not part of this build yet")),
            n => Err(format!(
                "unknown exporter {n:?} (known: xray, cloudwatch, local, console)"
            )),
        }
    }
}

/// An exporter of batches. Its methods run on the exporter's own task, one at a time; awaiting
/// in them holds up only this exporter (and, once its input is full, the dispatcher).
pub trait Export: Send + 'static {
    /// Takes one kept batch.
    fn export(&mut self, batch: &Batch, now: Instant) -> impl Future<Output = ()> + Send;

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

type Item = (Arc<Batch>, OwnedSemaphorePermit);

/// The dispatcher's end of one exporter's input: bounded in bytes, so a stalled exporter costs
/// at most its input's budget of memory before it pushes back.
#[derive(Debug)]
pub struct Input {
    tx: mpsc::UnboundedSender<Item>,
    room: Arc<Semaphore>,
    capacity_bytes: u32,
    stats: Arc<ExporterStats>,
}

impl Input {
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
        if self.tx.send((batch, permit)).is_err() {
            // The exporter's task has ended (it only does at shutdown or if it panicked).
            self.stats.pending_add(-spans);
            self.stats
                .dropped(crate::model::DropReason::DrainDeadline, spans as u64);
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
    };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = rx.recv() => {
                    let Some((batch, permit)) = item else { break };
                    exporter.export(&batch, Instant::now()).await;
                    // Counted as pending until the exporter took the batch over: an abort at the
                    // drain deadline may count a batch twice, never not at all.
                    stats.pending_add(-(batch.spans.len() as i64));
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
