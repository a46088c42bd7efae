//! Exporters: where batches go after the queue. Each kind is one file (or folder) here.

pub mod aws_http;
pub mod cloudwatch;
pub mod console;
pub mod local_store;
pub mod retry;
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
    Xray,
    /// Span metrics to CloudWatch: fed by snapshots on its own task, not by batches.
    Cloudwatch,
}

impl ExporterKind {
    pub const ALL: [ExporterKind; 4] = [
        ExporterKind::Local,
        ExporterKind::Console,
        ExporterKind::Xray,
        ExporterKind::Cloudwatch,
    ];

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

/// One running exporter. An enum rather than a trait object: the set is closed and known.
#[derive(Debug)]
pub enum Exporter {
    Local(Arc<LocalStore>),
    Console(Console),
    Xray(Box<xray::XrayExporter>),
    XrayOtlp(Box<xray::otlp_sigv4::OtlpSigv4Exporter>),
}

impl Exporter {
    pub fn kind(&self) -> ExporterKind {
        match self {
            Exporter::Local(_) => ExporterKind::Local,
            Exporter::Console(_) => ExporterKind::Console,
            Exporter::Xray(_) | Exporter::XrayOtlp(_) => ExporterKind::Xray,
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
            Exporter::Xray(x) => x.export(batch, now).await,
            Exporter::XrayOtlp(x) => x.export(batch, now).await,
        }
    }

    /// Periodic work (the console prints traces whose grace period is over).
    pub async fn tick(&mut self, now: Instant) {
        match self {
            Exporter::Console(console) => console.flush_due(now),
            Exporter::Xray(x) => x.tick(now).await,
            Exporter::XrayOtlp(x) => x.tick(now).await,
            Exporter::Local(_) => {}
        }
    }

    /// Final flush at shutdown.
    pub async fn shutdown(&mut self) {
        match self {
            Exporter::Console(console) => console.flush_all(),
            Exporter::Xray(x) => x.shutdown().await,
            Exporter::XrayOtlp(x) => x.shutdown().await,
            Exporter::Local(_) => {}
        }
    }
}
