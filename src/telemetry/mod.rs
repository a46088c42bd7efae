//! What sidetrace measures: counter primitives, the Prometheus text writer and the registry that
//! `/metrics` renders (each component registers the stats it owns), span metrics, and the logs.

pub mod span_metrics;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters indexed by a small enum; one atomic per label value, no lock, no allocation.
#[derive(Debug)]
pub struct Counters<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Counters<N> {
    pub fn add(&self, index: usize, n: u64) {
        if n > 0 {
            self.0[index].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, index: usize) -> u64 {
        self.0[index].load(Ordering::Relaxed)
    }
}

/// A component's self-metrics, rendered into `/metrics` in the Prometheus text format.
pub trait Stats: Send + Sync + std::fmt::Debug {
    /// Appends this component's metric families (each family whole, with its header).
    fn render(&self, out: &mut String);
}

/// Every registered component's stats, rendered in registration order.
#[derive(Debug, Default)]
pub struct Registry {
    parts: Mutex<Vec<Arc<dyn Stats>>>,
}

impl Registry {
    pub fn register(&self, stats: Arc<dyn Stats>) {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats);
    }

    /// The Prometheus text exposition (version 0.0.4) of every registered component.
    pub fn render(&self) -> String {
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = String::with_capacity(8 * 1024);
        for p in parts {
            p.render(&mut out);
        }
        out
    }
}

/// Writes one counter or gauge family whose samples are `(label set, value)`; `labels` is the
/// text inside the braces (empty for an unlabelled sample).
pub fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    header(out, name, kind, help);
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Prometheus label-value escaping: backslash, quote and newline.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `# HELP` and `# TYPE` lines that open a metric family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Log output format: human text (default) or one JSON object per line (for containers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber: `RUST_LOG`, else `OTEL_LOG_LEVEL`, else `info`; logs go to stderr
/// so that stdout carries only the console exporter's trace lines.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::env::var("OTEL_LOG_LEVEL")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
