//! OTLP out: [`splice`] builds new requests from the received span bytes, [`send`] posts them
//! over HTTP (signed with SigV4 when the destination is AWS), [`exporter`] batches, sends and
//! retries them, [`balance`] spreads traces over several backends by trace ID. Used by the `otlp`
//! exporter and by `xray.mode=otlp`. (OTLP/gRPC sending is still to come.)

pub mod balance;
pub mod config;
pub mod exporter;
pub mod grpc;
pub mod send;
pub mod splice;

use std::sync::Arc;

use tracing::info;

pub use config::{OtlpConfig, OtlpProtocol};
pub use exporter::{OtlpExporter, OtlpSettings};
pub use grpc::GrpcSender;
pub use send::{HttpSender, PartialSuccess, Signer};

/// One destination, over OTLP/HTTP or OTLP/gRPC.
#[derive(Debug, Clone)]
pub enum Sender {
    Http(HttpSender),
    Grpc(GrpcSender),
}

impl Sender {
    pub fn url(&self) -> &str {
        match self {
            Sender::Http(h) => h.url(),
            Sender::Grpc(g) => g.url(),
        }
    }

    /// The body as it is handed to [`Sender::attempt`] (gzip for HTTP here; gRPC compresses itself).
    pub fn encode(&self, body: bytes::Bytes) -> bytes::Bytes {
        match self {
            Sender::Http(h) => h.encode(body),
            Sender::Grpc(_) => body,
        }
    }

    pub async fn attempt(
        &self,
        body: bytes::Bytes,
    ) -> Result<PartialSuccess, crate::exporters::retry::ExportError> {
        match self {
            Sender::Http(h) => h.attempt(body).await,
            Sender::Grpc(g) => g.attempt(body).await,
        }
    }
}

/// OTLP exporter spec: the default OTLP/gRPC endpoint.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
pub use splice::{Limits, Request, Splicer};

use crate::exporters::retry::RetryPolicy;
use crate::exporters::{ExporterStats, Running, Shared};

/// Why the OTLP exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("otlp.endpoint: {0}")]
    Endpoint(String),
    #[error("otlp.headers: {0}")]
    Headers(String),
    #[error("cannot set up TLS for the OTLP exporter: {0}")]
    Tls(std::io::Error),
}

/// Starts the `otlp` exporter: to one endpoint, or balanced by trace ID over `otlp.endpoints`.
pub fn start(
    c: &OtlpConfig,
    shared: &Shared,
    reindex: balance::Reindex,
) -> Result<Running, BuildError> {
    let mut headers = c.header_values().map_err(BuildError::Headers)?;
    // A gateway that gets these spans does not record their span metrics again.
    if shared.span_metrics.config().enabled {
        headers.push((
            http::HeaderName::from_static(crate::model::SPAN_METRICS_HEADER),
            http::HeaderValue::from_static("recorded"),
        ));
    }
    let limits = Limits {
        max_spans: exporter::DEFAULT_MAX_SPANS_PER_REQUEST,
        max_bytes: exporter::DEFAULT_MAX_REQUEST_BYTES,
        max_span_bytes: exporter::DEFAULT_MAX_REQUEST_BYTES,
        idle: c.idle_flush,
    };
    if !c.endpoints.is_empty() {
        let targets = c
            .endpoints
            .iter()
            .filter_map(|e| balance::Target::parse(e).ok())
            .collect();
        info!(exporter = "otlp", endpoints = ?c.endpoints, resolve_interval_s = c.resolve_interval.as_secs(), "OTLP exporter ready, balancing traces over several backends by trace ID.");
        let stats = ExporterStats::new("otlp");
        let balance_stats = Arc::new(balance::BalanceStats::default());
        shared.registry.register(balance_stats.clone());
        let b = balance::Balancer::new(
            balance::BalanceSettings {
                targets,
                resolve_interval: c.resolve_interval,
                limits,
                concurrency: c.concurrency,
                timeout: c.timeout,
                headers,
                gzip: c.gzip,
                grpc: c.protocol == OtlpProtocol::Grpc,
                reindex,
            },
            stats.clone(),
            balance_stats,
        );
        return Ok(crate::exporters::spawn(b, stats, shared.input_bytes));
    }
    let sender = match c.protocol {
        OtlpProtocol::HttpProtobuf => Sender::Http(
            HttpSender::new(c.endpoint.clone(), c.timeout, None)
                .map_err(BuildError::Tls)?
                .otlp(headers, c.gzip),
        ),
        OtlpProtocol::Grpc => {
            // The spec's gRPC endpoint has no path; the HTTP default means "not set".
            let url = match c.endpoint.as_str() {
                config::DEFAULT_OTLP_ENDPOINT => DEFAULT_GRPC_ENDPOINT.to_owned(),
                e => e.to_owned(),
            };
            Sender::Grpc(
                GrpcSender::new(url, c.timeout, &headers, c.gzip).map_err(BuildError::Endpoint)?,
            )
        }
    };
    let protocol = match c.protocol {
        OtlpProtocol::HttpProtobuf => "http/protobuf",
        OtlpProtocol::Grpc => "grpc",
    };
    // Header names only: their values are often credentials.
    let header_names: Vec<String> = c
        .headers
        .iter()
        .filter_map(|h| h.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect();
    info!(exporter = "otlp", url = sender.url(), protocol, gzip = c.gzip, headers = ?header_names, "OTLP exporter ready.");
    let stats = ExporterStats::new("otlp");
    let settings = OtlpSettings {
        name: "otlp",
        limits,
        concurrency: c.concurrency.max(1),
        retry: RetryPolicy {
            max_elapsed: c.retry_max_elapsed,
            ..RetryPolicy::default()
        },
    };
    let exporter = OtlpExporter::new(sender, settings, stats.clone());
    Ok(crate::exporters::spawn(
        exporter,
        Arc::clone(&stats),
        shared.input_bytes,
    ))
}
