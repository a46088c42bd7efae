//! Exporters: where batches go after the queue. Each kind is one file (or folder) here.

pub mod console;
pub mod local_store;
pub mod xray;

use std::sync::Arc;

use tokio::time::Instant;

use crate::model::Batch;
use crate::telemetry::Metrics;

pub use console::Console;
pub use local_store::LocalStore;

/// The exporters sidetrace knows, as named in the `exporters` setting and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExporterKind {
    Local,
    Console,
}

impl ExporterKind {
    pub const ALL: [ExporterKind; 2] = [ExporterKind::Local, ExporterKind::Console];

    pub fn label(self) -> &'static str {
        match self {
            ExporterKind::Local => "local",
            ExporterKind::Console => "console",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "local" => Ok(ExporterKind::Local),
            "console" => Ok(ExporterKind::Console),
            n @ ("xray" | "cloudwatch" | "otlp") => {
                Err(format!("the {n} exporter is not part of this build yet"))
            }
            n => Err(format!("unknown exporter {n:?} (known: local, console)")),
        }
    }
}

/// One running exporter. An enum rather than a trait object: the set is closed and known.
#[derive(Debug)]
pub enum Exporter {
    Local(Arc<LocalStore>),
    Console(Console),
}

impl Exporter {
    pub fn kind(&self) -> ExporterKind {
        match self {
            Exporter::Local(_) => ExporterKind::Local,
            Exporter::Console(_) => ExporterKind::Console,
        }
    }

    /// Hands one batch to the exporter. Awaiting here is the exporter's backpressure.
    pub async fn export(&mut self, batch: &Batch, metrics: &Metrics, now: Instant) {
        let kind = self.kind() as usize;
        match self {
            Exporter::Local(store) => store.insert(batch, metrics, kind),
            Exporter::Console(console) => {
                console.observe(batch, now);
                metrics.spans_exported(kind, batch.spans.len() as u64);
            }
        }
    }

    /// Periodic work (the console prints traces whose grace period is over).
    pub fn tick(&mut self, now: Instant) {
        if let Exporter::Console(console) = self {
            console.flush_due(now);
        }
    }

    /// Final flush at shutdown.
    pub async fn shutdown(&mut self) {
        if let Exporter::Console(console) = self {
            console.flush_all();
        }
    }
}
