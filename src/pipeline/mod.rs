//! The pipeline between receivers and exporters: admission (the hot path, on the receiving task)
//! into the bounded queue, then the dispatcher (sampler → each exporter's input) behind it.

pub mod admission;
pub mod dispatcher;
pub mod memory;
pub mod queue;
pub mod sampler;
pub mod xray_rules;

pub use admission::{Admitted, Pipeline, RETRY_AFTER, ReceiverStats, Refusal};
pub use dispatcher::{InFlight, PipelineStats, TICK, count_undelivered, run_dispatcher};
pub use memory::MemoryGuard;
pub use queue::{PushError, Queue};
pub use sampler::Sampler;
