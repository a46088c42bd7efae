//! Lists the components and starts and stops them in order: exporters first, then the listeners
//! are bound, the dispatcher, receivers and admin started. On shutdown receivers stop admitting,
//! the pipeline drains into the exporters, CloudWatch publishes its last interval, admin stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub mod config;

pub use config::Config;

use crate::admin::{self, AdminState};
use crate::exporters::cloudwatch::{self, Publisher};
use crate::exporters::{
    self, ExporterFamilies, ExporterKind, LocalStore, Running, Shared, console, local, xray,
};
use crate::pipeline::memory::{self, MemoryGuard};
use crate::pipeline::sampler::{self, SamplingStats};
use crate::pipeline::spool::{Replay, Spool};
use crate::pipeline::{self, InFlight, Pipeline, PipelineStats, Queue, ReceiverStats};
use crate::proxy;
use crate::receivers::connections::Connections;
use crate::receivers::decode::decode_request;
use crate::receivers::{otlp_grpc, otlp_http, xray_udp};
use crate::telemetry::Registry;
use crate::telemetry::span_metrics::SpanMetrics;

/// Where a running agent listens (ports resolved when configured as 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    /// UDP: segment documents from the X-Ray SDKs.
    pub xray_udp: SocketAddr,
    /// TCP: the X-Ray sampling API proxy.
    pub xray_proxy: SocketAddr,
    pub admin: SocketAddr,
}

/// A started agent. Drop does not stop it: call [`Agent::shutdown`].
#[derive(Debug)]
pub struct Agent {
    pub addrs: BoundAddrs,
    /// Every component's stats, as `/metrics` renders them.
    pub registry: Arc<Registry>,
    pub store: Option<Arc<LocalStore>>,
    pub span_metrics: SpanMetrics,
    ready: Arc<AtomicBool>,
    queue: Arc<Queue>,
    in_flight: Arc<InFlight>,
    stop_receivers: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    receivers: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
    /// The batch exporters' tasks, which end once the dispatcher closed their inputs.
    exporter_tasks: Vec<JoinHandle<()>>,
    exporter_stats: Arc<ExporterFamilies>,
    pipeline_stats: Arc<PipelineStats>,
    cloudwatch: Option<Publisher>,
    spool: Option<Arc<Spool>>,
    drain_timeout: Duration,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Xray(#[from] xray::BuildError),
    #[error(transparent)]
    Otlp(#[from] crate::exporters::otlp::BuildError),
    #[error(transparent)]
    Kafka(#[from] crate::exporters::kafka::BuildError),
    #[error("cannot open the persistent queue in {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The Kafka receiver (`kafka.receive`), a receiver like the listeners but with no address.
#[cfg(feature = "kafka")]
fn start_kafka_receiver(
    config: &Config,
    context: crate::exporters::kafka::KafkaContext,
    pipeline: &Arc<Pipeline>,
    registry: &Registry,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let stats = Arc::new(crate::receivers::kafka::KafkaReceiverStats::default());
    registry.register(stats.clone());
    crate::receivers::kafka::start(
        &config.kafka,
        context,
        pipeline.clone(),
        config.receivers.max_request_bytes,
        stats,
        stop,
    )
    .map_err(|e| StartError::Kafka(crate::exporters::kafka::BuildError::Client(e)))
}

#[cfg(not(feature = "kafka"))]
fn start_kafka_receiver(
    _: &Config,
    _: crate::exporters::kafka::KafkaContext,
    _: &Arc<Pipeline>,
    _: &Registry,
    _: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    Err(StartError::Kafka(
        crate::exporters::kafka::BuildError::NotBuilt,
    ))
}

/// The Kafka clients' context: with MSK IAM, the region and credentials of the SDK's chain.
#[cfg(feature = "kafka")]
async fn kafka_context(
    config: &Config,
    sdk: &mut Option<aws_config::SdkConfig>,
) -> Result<crate::exporters::kafka::KafkaContext, StartError> {
    use crate::exporters::kafka::{BuildError, config::SaslMechanism, msk_iam, msk_iam::MskIam};
    if config.kafka.sasl_mechanism != Some(SaslMechanism::AwsMskIam) {
        return Ok(Default::default());
    }
    let sdk = aws_sdk(config, sdk).await;
    let fail = |e: String| StartError::Kafka(BuildError::Client(e));
    let (region, credentials) = msk_iam::region_and_credentials(&sdk).map_err(fail)?;
    let iam = MskIam::start(credentials, region).await.map_err(fail)?;
    Ok(crate::exporters::kafka::KafkaContext { iam: Some(iam) })
}

#[cfg(not(feature = "kafka"))]
async fn kafka_context(
    _: &Config,
    _: &mut Option<aws_config::SdkConfig>,
) -> Result<crate::exporters::kafka::KafkaContext, StartError> {
    Ok(crate::exporters::kafka::KafkaContext)
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// The X-Ray daemon's two ports: UDP for segments and TCP for the sampling proxy, on one
/// address unless `xray_proxy_addr` says otherwise. Port 0 (tests) means one free port for
/// both, so a few tries cover the case where TCP has that port taken.
async fn bind_daemon_ports(
    config: &Config,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), StartError> {
    let udp_addr = config.bind_addr(config.xray_udp.xray_udp_addr);
    let proxy_addr = config
        .xray_proxy
        .xray_proxy_addr
        .map(|a| config.bind_addr(a));
    let mut tries = 0;
    loop {
        tries += 1;
        let udp = xray_udp::bind(udp_addr).map_err(|source| StartError::Bind {
            what: "X-Ray UDP",
            addr: udp_addr,
            source,
        })?;
        let tcp_addr = match proxy_addr {
            Some(a) => a,
            None => udp.local_addr().expect("bound socket has an address"),
        };
        match tokio::net::TcpListener::bind(tcp_addr).await {
            Ok(l) => return Ok((udp, l)),
            Err(_) if udp_addr.port() == 0 && proxy_addr.is_none() && tries < 10 => continue,
            Err(source) => {
                return Err(StartError::Bind {
                    what: "X-Ray sampling proxy (TCP)",
                    addr: tcp_addr,
                    source,
                });
            }
        }
    }
}

/// Queues what the persistent queue held at start, waiting for room; stops (leaving the rest in
/// the spool) when the agent drains.
async fn replay_spooled(pipeline: Arc<Pipeline>, replay: Vec<Replay>) {
    let mut left = replay.into_iter();
    for r in left.by_ref() {
        // One request in memory at a time, read off the runtime's workers.
        let (r, payload) = match tokio::task::spawn_blocking(move || {
            let p = r.read();
            (r, p)
        })
        .await
        {
            Ok((r, Ok(p))) => (r, p),
            Ok((r, Err(e))) => {
                // Checked at open; a file changed since. Left in the spool (not marked done).
                warn!(error = %e, "Persistent queue: a request could not be read back; left for the next start.");
                std::mem::forget(r);
                continue;
            }
            Err(_) => continue,
        };
        let mut batch = match decode_request(payload, r.protocol) {
            Ok(d) => d.batch,
            Err(e) => {
                // It decoded when it was admitted: only a bug could get here. Marked done.
                warn!(error = %e, "Persistent queue: a replayed request does not decode; skipped.");
                continue;
            }
        };
        batch.ticket = r.ticket;
        loop {
            match pipeline.requeue(r.protocol, batch) {
                Ok(()) => break,
                Err(Some(b)) => {
                    batch = b;
                    tokio::time::sleep(REPLAY_RETRY).await;
                }
                Err(None) => {
                    std::mem::forget(left);
                    return;
                }
            }
        }
    }
    info!("Persistent queue: replay done.");
}

/// How long the replay waits for room in a full queue before it tries again.
const REPLAY_RETRY: Duration = Duration::from_millis(10);

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The AWS SDK configuration, loaded once (region, credentials and endpoints from the SDK's chain).
async fn aws_sdk(
    config: &Config,
    slot: &mut Option<aws_config::SdkConfig>,
) -> aws_config::SdkConfig {
    if slot.is_none() {
        let region = crate::config::aws_region(&|v| std::env::var(v).ok());
        *slot = Some(exporters::aws::sdk_config(region, config.xray.request_timeout).await);
    }
    slot.clone().expect("just loaded")
}

impl Agent {
    /// Binds every listener and starts serving; `/readyz` turns 200 when this returns.
    pub async fn start(config: &Config, exporters: &[ExporterKind]) -> Result<Agent, StartError> {
        let registry = Arc::new(Registry::default());
        let memory = Arc::new(MemoryGuard::new(config.pipeline.memory_limit as u64));
        // The first reading before any listener is bound, so a limit is in force from the start.
        memory.observe(memory::resident_bytes());
        let receiver_stats = Arc::new(ReceiverStats::default());
        let queue = Arc::new(Queue::new(
            config.pipeline.queue_max_spans,
            config.pipeline.queue_max_bytes,
        ));
        let span_metrics = SpanMetrics::new(config.span_metrics.clone());
        let (spool, replay) = match config.queue.dir.is_empty() {
            true => (None, Vec::new()),
            false => {
                let (s, r) = Spool::open(&config.queue).map_err(|source| StartError::Spool {
                    dir: config.queue.dir.clone(),
                    source,
                })?;
                info!(dir = %config.queue.dir, fsync = if config.queue.fsync_always { "always" } else { "interval" }, fsync_interval_ms = config.queue.fsync_interval.as_millis() as u64, max_disk_bytes = config.queue.max_disk_bytes, "Persistent queue on: requests are acknowledged once on disk.");
                registry.register(s.stats());
                (Some(s), r)
            }
        };
        let mut p = Pipeline::new(
            queue.clone(),
            receiver_stats.clone(),
            span_metrics.clone(),
            memory.clone(),
        );
        p.spool = spool.clone();
        let pipeline = Arc::new(p);
        let pipeline_stats = Arc::new(PipelineStats::default());
        let sampling_stats = Arc::new(SamplingStats::default());
        registry.register(receiver_stats);
        registry.register(queue.clone());

        // Exporters, in the order each gets a batch. Each input holds at most 1/16 of the
        // queue's bytes (1 MiB by default): a kept batch pins its whole request buffer, so a
        // quarter cost ~8 MB of peak RSS with every span exported (BENCHMARKS.md, "Component
        // seam"); a few requests are enough to keep an exporter busy.
        let shared = Shared {
            registry: registry.clone(),
            span_metrics: span_metrics.clone(),
            input_bytes: (config.pipeline.queue_max_bytes / 16).max(1),
        };
        let mut store = None;
        let mut cloudwatch = None;
        let mut sdk: Option<aws_config::SdkConfig> = None;
        let kafka_context = if config.kafka.receive || exporters.contains(&ExporterKind::Kafka) {
            kafka_context(config, &mut sdk).await?
        } else {
            Default::default()
        };
        let mut running: Vec<Running> = Vec::with_capacity(exporters.len());
        let mut xray_input = None;
        // The span accounting of every exporter, batch-fed or not.
        let mut exporter_stats_list = Vec::new();
        for kind in exporters {
            match kind {
                ExporterKind::Local => {
                    let (s, r) = local::start(&config.local, &shared);
                    store = Some(s);
                    running.push(r);
                }
                ExporterKind::Console => running.push(console::start(&config.console, &shared)),
                ExporterKind::Otlp => running.push(crate::exporters::otlp::start(
                    &config.otlp,
                    &shared,
                    |bytes| {
                        decode_request(bytes, crate::model::Protocol::Grpc)
                            .ok()
                            .map(|d| d.batch)
                    },
                )?),
                ExporterKind::Kafka => running.push(crate::exporters::kafka::start(
                    &config.kafka,
                    kafka_context.clone(),
                    &shared,
                )?),
                ExporterKind::Xray => {
                    let sdk = aws_sdk(config, &mut sdk).await;
                    let r = xray::start(&config.xray, &sdk, &shared)?;
                    // Segments mode relays X-Ray SDK documents as they are; OTLP mode sends their views.
                    if r.input.relays_xray_documents() {
                        xray_input = Some(r.input.clone());
                    }
                    running.push(r);
                }
                ExporterKind::Cloudwatch if !config.span_metrics.enabled => warn!(
                    exporter = "cloudwatch",
                    "span_metrics.enabled is false; the CloudWatch exporter has nothing to send and is not started."
                ),
                ExporterKind::Cloudwatch => {
                    let p = cloudwatch::start(&config.cloudwatch, &shared).await;
                    exporter_stats_list.push(p.stats.clone());
                    cloudwatch = Some(p);
                }
            }
        }
        exporter_stats_list.extend(running.iter().map(|r| r.stats.clone()));
        let exporter_stats = Arc::new(ExporterFamilies(exporter_stats_list));
        registry.register(exporter_stats.clone());
        registry.register(pipeline_stats.clone());
        registry.register(sampling_stats.clone());
        registry.register(memory.clone());

        let grpc_listener = bind(
            "OTLP/gRPC",
            config.bind_addr(config.receivers.otlp_grpc_addr),
        )
        .await?;
        let http_listener = bind(
            "OTLP/HTTP",
            config.bind_addr(config.receivers.otlp_http_addr),
        )
        .await?;
        let (udp_socket, proxy_listener) = bind_daemon_ports(config).await?;
        let admin_listener = bind("admin", config.bind_addr(config.admin.admin_addr)).await?;
        let addrs = BoundAddrs {
            otlp_grpc: grpc_listener
                .local_addr()
                .expect("bound socket has an address"),
            otlp_http: http_listener
                .local_addr()
                .expect("bound socket has an address"),
            xray_udp: udp_socket
                .local_addr()
                .expect("bound socket has an address"),
            xray_proxy: proxy_listener
                .local_addr()
                .expect("bound socket has an address"),
            admin: admin_listener
                .local_addr()
                .expect("bound socket has an address"),
        };

        // Only built when the rules are polled: an SDK client pages in ~1 MB of code.
        let rules_client = match config
            .sampling
            .uses_xray_rules(exporters.contains(&ExporterKind::Xray))
        {
            true => Some(aws_sdk_xray::Client::new(&aws_sdk(config, &mut sdk).await)),
            false => None,
        };
        let sampler = sampler::config::build(&config.sampling, rules_client, sampling_stats);
        let (inputs, exporter_tasks): (Vec<_>, Vec<_>) =
            running.into_iter().map(|r| (r.input, r.task)).unzip();
        let in_flight = Arc::new(InFlight::default());
        let dispatcher = tokio::spawn(pipeline::run_dispatcher(
            queue.clone(),
            sampler,
            inputs,
            in_flight.clone(),
        ));

        if !replay.is_empty() {
            tokio::spawn(replay_spooled(pipeline.clone(), replay));
        }

        let (stop_receivers, stop_rx) = watch::channel(false);
        let (stop_admin, admin_stop_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));

        let max = config.receivers.max_request_bytes;
        let connections = |receiver| {
            let c = Connections::new(
                receiver,
                config.receivers.max_connections,
                config.receivers.connection_idle_timeout,
            );
            registry.register(c.clone());
            c
        };
        let grpc = otlp_grpc::start(
            grpc_listener,
            pipeline.clone(),
            max,
            connections("otlp_grpc"),
            stopped(stop_rx.clone()),
        );
        info!(listener = "otlp_grpc", addr = %addrs.otlp_grpc, "Listening for OTLP/gRPC.");
        let http = otlp_http::start(
            http_listener,
            pipeline.clone(),
            max,
            connections("otlp_http"),
            stopped(stop_rx.clone()),
        );
        info!(listener = "otlp_http", addr = %addrs.otlp_http, "Listening for OTLP/HTTP on /v1/traces.");
        let udp_stats = Arc::new(xray_udp::UdpStats::for_socket(&udp_socket));
        registry.register(udp_stats.clone());
        let udp = xray_udp::start(
            udp_socket,
            xray_input,
            pipeline.clone(),
            udp_stats,
            stopped(stop_rx.clone()),
        );
        info!(listener = "xray_udp", addr = %addrs.xray_udp, "Listening for X-Ray SDK segments (UDP).");
        // The SDKs' sampling calls go to X-Ray with the agent's credentials when it exports there.
        let upstream = match exporters.contains(&ExporterKind::Xray) {
            true => proxy::Upstream::xray(&aws_sdk(config, &mut sdk).await),
            false => None,
        };
        let proxy_stats = Arc::new(proxy::ProxyStats::default());
        registry.register(proxy_stats.clone());
        let proxy = proxy::start(
            proxy_listener,
            upstream.unwrap_or(proxy::Upstream::Local),
            proxy_stats,
            connections("xray_proxy"),
            stopped(stop_rx.clone()),
        );
        info!(listener = "xray_proxy", addr = %addrs.xray_proxy, "Serving the X-Ray sampling API (TCP): POST /GetSamplingRules, /SamplingTargets.");
        let mut receivers = vec![grpc, http, udp, proxy];
        if config.kafka.receive {
            receivers.push(start_kafka_receiver(
                config,
                kafka_context,
                &pipeline,
                &registry,
                stopped(stop_rx),
            )?);
        }

        // Runs until the admin server stops, so /metrics keeps reporting memory while draining.
        let relief: Vec<memory::Relief> = match store.clone() {
            Some(store) => vec![Box::new(move || {
                let evicted = store.shed_half();
                info!(
                    evicted,
                    "Memory pressure: the local store gave back half of its traces."
                );
            })],
            None => Vec::new(),
        };
        tokio::spawn(memory::watch(memory, relief, admin_stop_rx.clone()));
        let admin_state = AdminState {
            registry: registry.clone(),
            ready: ready.clone(),
            store: store.clone(),
            span_metrics: span_metrics.clone(),
            started: tokio::time::Instant::now(),
        };
        let admin = admin::start(admin_listener, admin_state, stopped(admin_stop_rx));
        info!(listener = "admin", addr = %addrs.admin, "Serving /healthz, /readyz, /metrics, /api/traces, /api/metrics and the UI.");

        ready.store(true, Ordering::Release);
        Ok(Agent {
            addrs,
            registry,
            store,
            span_metrics,
            ready,
            queue,
            in_flight,
            stop_receivers,
            stop_admin,
            receivers,
            admin,
            dispatcher,
            exporter_tasks,
            exporter_stats,
            pipeline_stats,
            cloudwatch,
            spool,
            drain_timeout: config.pipeline.drain_timeout,
        })
    }

    /// Drains and stops: readyz 503, receivers stop admitting, queued spans go to the exporters
    /// within the drain deadline, and what could not be delivered is logged and counted.
    /// Returns the number of spans dropped at the deadline.
    pub async fn shutdown(self) -> u64 {
        self.ready.store(false, Ordering::Release);
        // Close first: requests still in flight are refused with a retryable status from now on.
        self.queue.close();
        let _ = self.stop_receivers.send(true);
        let queued = self.queue.queued_spans();
        info!(
            queued_spans = queued,
            deadline_ms = self.drain_timeout.as_millis() as u64,
            "Draining."
        );
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        for r in self.receivers {
            let _ = tokio::time::timeout_at(deadline, r).await;
        }
        // The dispatcher ends once it handed everything on and closed the inputs; each exporter
        // then flushes and ends.
        let mut tasks = vec![self.dispatcher];
        tasks.extend(self.exporter_tasks);
        let mut late = false;
        for task in &mut tasks {
            late = late || tokio::time::timeout_at(deadline, &mut *task).await.is_err();
        }
        let lost = match late {
            false => 0,
            true => {
                // The spool stops first: what the aborted tasks held stays in it, not marked
                // done, and is replayed at the next start.
                if let Some(s) = &self.spool {
                    s.close();
                }
                for task in &tasks {
                    task.abort();
                }
                let lost = pipeline::count_undelivered(
                    &self.queue,
                    &self.in_flight,
                    &self.exporter_stats,
                    &self.pipeline_stats,
                );
                warn!(
                    dropped_spans = lost,
                    reason = "drain_deadline",
                    "Drain deadline passed; spans not delivered."
                );
                lost
            }
        };
        // Receivers are stopped, so span metrics are final: publish the last interval.
        if let Some(Publisher { stop, mut task, .. }) = self.cloudwatch {
            let _ = stop.send(true);
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                warn!(
                    exporter = "cloudwatch",
                    "Drain deadline passed before the last span metrics were published."
                );
            }
        }
        if let Some(s) = &self.spool {
            s.close();
        }
        let _ = self.stop_admin.send(true);
        let _ = self.admin.await;
        info!(dropped_spans = lost, "Stopped.");
        lost
    }
}
