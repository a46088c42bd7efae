//! Kafka out, compatible with the OpenTelemetry Collector's `kafka` exporter: OTLP `TracesData`
//! protobuf messages on topic `otlp_spans`, one per trace keyed by its trace ID, produced with
//! librdkafka. [`config`] holds the `kafka.*` keys; the producer is built only with the `kafka`
//! cargo feature (librdkafka is a C build of minutes that the default build does not pay).

pub mod config;
#[cfg(feature = "kafka")]
pub mod exporter;
#[cfg(feature = "kafka")]
pub mod msk_iam;

pub use config::KafkaConfig;
#[cfg(feature = "kafka")]
pub use msk_iam::KafkaContext;
/// Without the `kafka` feature there is no client to give a context to.
#[cfg(not(feature = "kafka"))]
#[derive(Debug, Clone, Default)]
pub struct KafkaContext;

use crate::exporters::{Running, Shared};

/// Why the Kafka exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("kafka: {0}")]
    Client(String),
    #[error(
        "this sidetrace was built without Kafka; build it with `cargo build --release --features kafka`"
    )]
    NotBuilt,
}

/// Starts the `kafka` exporter.
#[cfg(feature = "kafka")]
pub fn start(
    c: &KafkaConfig,
    context: KafkaContext,
    shared: &Shared,
) -> Result<Running, BuildError> {
    use std::sync::Arc;

    let stats = crate::exporters::ExporterStats::new("kafka");
    let kafka = Arc::new(exporter::KafkaStats::default());
    shared.registry.register(kafka.clone());
    let recorded = shared.span_metrics.config().enabled;
    let e = exporter::KafkaExporter::new(c, context, recorded, stats.clone(), kafka)
        .map_err(BuildError::Client)?;
    tracing::info!(exporter = "kafka", brokers = ?c.brokers, topic = %c.topic, compression = c.compression.name(), by_trace = c.partition_traces_by_id, tls = c.tls, sasl = c.sasl_mechanism.map_or("none", config::SaslMechanism::name), "Kafka exporter ready.");
    Ok(crate::exporters::spawn(e, stats, shared.input_bytes))
}

/// Without the `kafka` feature: a clear refusal at start.
#[cfg(not(feature = "kafka"))]
pub fn start(_: &KafkaConfig, _: KafkaContext, _: &Shared) -> Result<Running, BuildError> {
    Err(BuildError::NotBuilt)
}
