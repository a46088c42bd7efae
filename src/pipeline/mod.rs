//! The pipeline between receivers and exporters: admission (the hot path, on the receiving task)
//! into the bounded queue, then the dispatcher (sampler → each exporter's input) behind it.

pub mod admission;
pub mod dispatcher;
pub mod memory;
pub mod queue;
pub mod sampler;
pub mod spool;

pub use admission::{Admitted, Pipeline, RETRY_AFTER, ReceiverStats, Refusal};
pub use dispatcher::{InFlight, PipelineStats, TICK, count_undelivered, run_dispatcher};
pub use memory::MemoryGuard;
pub use queue::{PushError, Queue};
pub use sampler::Sampler;

use std::time::Duration;

use crate::config::{Key, Section, parse_bytes};

/// Queue budget in spans (about 2 s of a busy service at 30k spans/s).
pub const DEFAULT_QUEUE_MAX_SPANS: usize = 65_536;
/// Queue budget in bytes: keeps the agent's peak memory in a sidecar's range.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// The smallest memory limit accepted: below it the agent's own idle size would refuse everything.
pub const MIN_MEMORY_LIMIT: usize = 16 * 1024 * 1024;
/// Drain deadline on SIGTERM: below ECS's default 30 s stopTimeout.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// The pipeline's budgets and its drain deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub queue_max_spans: usize,
    pub queue_max_bytes: usize,
    /// Resident memory the agent stays under (0: none); sizes the span budgets.
    pub memory_limit: usize,
    /// No `memory_limit` given: the agent takes a share of the container's cgroup limit at start.
    pub memory_limit_auto: bool,
    pub drain_timeout: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_max_spans: DEFAULT_QUEUE_MAX_SPANS,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            memory_limit: 0,
            memory_limit_auto: true,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

type K = Key<PipelineConfig>;

impl Section for PipelineConfig {
    const KEYS: &'static [K] = &[
        K::count(
            "queue_max_spans",
            "Pipeline queue budget in spans; beyond it receivers answer with a retryable refusal.",
            |c| &mut c.queue_max_spans,
        ),
        K::count(
            "queue_max_bytes",
            "Pipeline queue budget in bytes.",
            |c| &mut c.queue_max_bytes,
        ),
        K::custom(
            "memory_limit",
            "Resident memory to stay under (e.g. 64MiB, at least 16MiB); auto: 75 % of the container's cgroup memory limit, if any; none: no limit. Above 80 % of it receivers refuse with a retryable status; the queue, sampling hold and local store budgets are capped at 1/4, 1/8 and 1/4 of it.",
            |c, v| {
                let (limit, auto) = match v.trim() {
                    "auto" => (0, true),
                    "none" => (0, false),
                    v => (parse_bytes(v)?, false),
                };
                if limit != 0 && limit < MIN_MEMORY_LIMIT {
                    return Err("must be auto, none (or 0), or at least 16MiB".into());
                }
                c.memory_limit = limit;
                c.memory_limit_auto = auto;
                Ok(())
            },
            |c| match (c.memory_limit_auto, c.memory_limit) {
                (true, 0) => crate::config::parse::toml_string("auto"),
                (false, 0) => crate::config::parse::toml_string("none"),
                (_, limit) => limit.to_string(),
            },
        )
        .with_value_name("BYTES")
        .flag(),
        K::duration(
            "drain_timeout",
            "On SIGTERM/SIGINT, how long queued spans may take to reach the exporters.",
            |c| &mut c.drain_timeout,
        ),
    ];
}
