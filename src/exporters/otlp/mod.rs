//! OTLP out: [`splice`] builds new requests from the received span bytes, [`send`] posts them
//! over HTTP (signed with SigV4 when the destination is AWS) and [`grpc`] over gRPC, [`tls`]
//! holds the CA and client certificate, [`exporter`] batches, sends and retries, [`balance`]
//! spreads traces over several backends by trace ID. Used by the `otlp` exporter and by
//! `xray.mode=otlp`.

pub mod balance;
pub mod config;
pub mod exporter;
pub mod grpc;
pub mod send;
pub mod splice;
pub mod tls;

use std::sync::Arc;

use tracing::info;

pub use config::{OtlpConfig, OtlpProtocol};
pub use exporter::{OtlpExporter, OtlpSettings};
pub use grpc::GrpcSender;
pub use send::{HttpSender, PartialSuccess, Signer};
pub use tls::{Tls, TlsFiles};

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

/// A sender for one backend URL. `server_name` is the name its certificate must hold when the
/// URL has an address in its place (`dns+https:` backends).
pub fn make_sender(
    url: &str,
    server_name: Option<&str>,
    grpc: bool,
    tls: Option<&Tls>,
    timeout: std::time::Duration,
    headers: &[(http::HeaderName, http::HeaderValue)],
    gzip: bool,
) -> Result<Sender, String> {
    if grpc {
        let connector = match tls {
            Some(t) if url.starts_with("https://") => Some(t.grpc_connector(server_name, timeout)?),
            _ => None,
        };
        return GrpcSender::new(url.to_owned(), timeout, headers, gzip, connector)
            .map(Sender::Grpc);
    }
    let sender = match tls {
        Some(t) => HttpSender::with_client(url.to_owned(), timeout, t.http_client(server_name)?),
        None => HttpSender::new(url.to_owned(), timeout, None).map_err(|e| e.to_string())?,
    };
    Ok(Sender::Http(sender.otlp(headers.to_vec(), gzip)))
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
    Tls(String),
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
    let grpc = c.protocol == OtlpProtocol::Grpc;
    // The spec's gRPC endpoint has no path and may have no scheme; OTLP/HTTP needs one (checked
    // below, where the single endpoint is used).
    let url = match grpc {
        true => c.grpc_url(),
        false => c.endpoint.clone(),
    };
    let targets: Vec<balance::Target> = c
        .endpoints
        .iter()
        .filter_map(|e| balance::Target::parse(e).ok())
        .collect();
    // TLS settings load once, at start, when anything will use them: a bad file stops the agent.
    let wants_tls = c.tls != TlsFiles::default()
        || match targets.is_empty() {
            true => url.starts_with("https://"),
            false => targets.iter().any(balance::Target::is_https),
        };
    let tls = match wants_tls {
        true => Some(Tls::load(&c.tls).map_err(BuildError::Tls)?),
        false => None,
    };
    if !targets.is_empty() {
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
                grpc,
                tls,
                reindex,
            },
            stats.clone(),
            balance_stats,
        );
        return Ok(crate::exporters::spawn(b, stats, shared.input_bytes));
    }
    if !url.contains("://") {
        return Err(BuildError::Endpoint(format!(
            "{url:?} has no http:// or https:// (only OTLP/gRPC takes host:port)"
        )));
    }
    let sender = make_sender(&url, None, grpc, tls.as_ref(), c.timeout, &headers, c.gzip)
        .map_err(BuildError::Endpoint)?;
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
    info!(exporter = "otlp", url = sender.url(), protocol, gzip = c.gzip, headers = ?header_names, ca = %c.tls.ca, client_certificate = %c.tls.client_certificate, "OTLP exporter ready.");
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
