//! One typed config: defaults < TOML file < environment (`SIDETRACE_*`) < command-line flags.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::exporters::ExporterKind;
use crate::telemetry::LogFormat;
use crate::telemetry::span_metrics::SpanMetricsConfig;

/// OTLP spec: default gRPC port, on loopback (the Collector's default since v0.104).
pub const DEFAULT_OTLP_GRPC_ADDR: &str = "127.0.0.1:4317";
/// OTLP spec: default HTTP port.
pub const DEFAULT_OTLP_HTTP_ADDR: &str = "127.0.0.1:4318";
/// Admin port, the Collector's health_check extension port.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:13133";
/// gRPC's customary 4 MiB message cap, applied after decompression to both OTLP protocols.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Queue budget in spans (about 2 s of a busy service at 30k spans/s).
pub const DEFAULT_QUEUE_MAX_SPANS: usize = 65_536;
/// Queue budget in bytes: keeps the agent's peak memory in a sidecar's range.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// The smallest memory limit accepted: below it the agent's own idle size would refuse everything.
pub const MIN_MEMORY_LIMIT: usize = 16 * 1024 * 1024;
/// Drain deadline on SIGTERM: below ECS's default 30 s stopTimeout.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Local store caps (local mode is for a developer's machine, so generous but bounded).
pub const DEFAULT_LOCAL_MAX_TRACES: usize = 10_000;
pub const DEFAULT_LOCAL_MAX_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_LOCAL_MAX_SPANS_PER_TRACE: usize = 10_000;
/// How long the console waits after a trace's root span for stragglers before printing it.
pub const DEFAULT_CONSOLE_GRACE: Duration = Duration::from_secs(1);
/// X-Ray exporter defaults: the X-Ray daemon's concurrency and 1 s idle flush (aws-xray-daemon cfg.go).
pub const DEFAULT_XRAY_CONCURRENCY: usize = 8;
pub const DEFAULT_XRAY_IDLE_FLUSH: Duration = Duration::from_secs(1);
/// Per-attempt timeout of one PutTraceSegments call.
pub const DEFAULT_XRAY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one batch may keep being retried; the bounded queue pushes back meanwhile.
pub const DEFAULT_XRAY_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(300);
/// CloudWatch exporter: how often span metrics are published (one minute: CloudWatch's
/// standard resolution, so each datum is one data point per period).
pub const DEFAULT_CLOUDWATCH_INTERVAL: Duration = Duration::from_secs(60);
/// The default CloudWatch namespace.
pub const DEFAULT_CLOUDWATCH_NAMESPACE: &str = "Sidetrace";
/// Per-attempt timeout of one PutMetricData call.
pub const DEFAULT_CLOUDWATCH_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one publish may keep being retried: half the interval, so publishes never pile up.
pub const DEFAULT_CLOUDWATCH_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(30);
/// Exit code for configuration errors (EX_USAGE, as linkerd2-proxy uses).
pub const EXIT_CONFIG: i32 = 64;

/// Which exporters to run: `auto` decides from the environment at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExporterChoice {
    Auto,
    List(Vec<ExporterKind>),
}

/// The whole configuration of one agent.
#[derive(Debug, Clone)]
pub struct Config {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub listen_all: bool,
    pub exporters: ExporterChoice,
    pub max_request_bytes: usize,
    pub queue_max_spans: usize,
    pub queue_max_bytes: usize,
    /// Resident memory the agent stays under (0: none); sizes the span budgets, see
    /// [`Config::fit_memory_limit`].
    pub memory_limit: usize,
    pub drain_timeout: Duration,
    pub log_format: LogFormat,
    pub local_max_traces: usize,
    pub local_max_bytes: usize,
    pub local_max_spans_per_trace: usize,
    pub console_grace: Duration,
    pub xray: XrayConfig,
    pub sampling: SamplingSettings,
    pub span_metrics: SpanMetricsConfig,
    pub cloudwatch: CloudwatchConfig,
}

/// Settings of the CloudWatch exporter (span metrics → PutMetricData).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudwatchConfig {
    pub namespace: String,
    pub interval: Duration,
    pub request_timeout: Duration,
    pub retry_max_elapsed: Duration,
}

impl Default for CloudwatchConfig {
    fn default() -> Self {
        CloudwatchConfig {
            namespace: DEFAULT_CLOUDWATCH_NAMESPACE.into(),
            interval: DEFAULT_CLOUDWATCH_INTERVAL,
            request_timeout: DEFAULT_CLOUDWATCH_REQUEST_TIMEOUT,
            retry_max_elapsed: DEFAULT_CLOUDWATCH_RETRY_MAX_ELAPSED,
        }
    }
}

/// How traces are sampled (see `pipeline::sampler`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingSettings {
    /// A consistent trace-ID ratio in [0, 1]; overrides X-Ray rules.
    pub ratio: Option<f64>,
    /// Use X-Ray centralised rules when exporting to X-Ray and no ratio is set.
    pub xray_rules: bool,
    pub keep_errors: bool,
    pub slow_threshold: Option<Duration>,
    /// `service=duration` or `service:operation=duration`.
    pub slow_thresholds: Vec<(String, Option<String>, Duration)>,
    pub grace: Duration,
    pub max_wait: Duration,
    pub max_open_traces: usize,
    pub max_held_bytes: usize,
    pub decision_cache: usize,
    /// Traces kept per second per service; `None` = unlimited.
    pub rate_limit: Option<f64>,
    /// How often X-Ray sampling targets are fetched and statistics reported.
    pub xray_targets_interval: Duration,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        use crate::pipeline::sampler as s;
        SamplingSettings {
            ratio: None,
            xray_rules: true,
            keep_errors: true,
            slow_threshold: None,
            slow_thresholds: Vec::new(),
            grace: s::DEFAULT_GRACE,
            max_wait: s::DEFAULT_MAX_WAIT,
            max_open_traces: s::DEFAULT_MAX_OPEN_TRACES,
            max_held_bytes: s::DEFAULT_MAX_HELD_BYTES,
            decision_cache: s::DEFAULT_DECISION_CACHE,
            rate_limit: None,
            xray_targets_interval: crate::pipeline::xray_rules::TARGETS_INTERVAL,
        }
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a number between 0 and 1")),
    }
}

fn parse_slow_list(text: &str) -> Result<Vec<(String, Option<String>, Duration)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (key, d) = e
                .rsplit_once('=')
                .ok_or_else(|| format!("{e:?} is not service[:operation]=duration"))?;
            let d = parse_duration(d)?;
            Ok(match key.split_once(':') {
                Some((svc, op)) => (svc.trim().to_owned(), Some(op.trim().to_owned()), d),
                None => (key.trim().to_owned(), None, d),
            })
        })
        .collect()
}

/// Settings of the X-Ray exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct XrayConfig {
    pub mode: XrayMode,
    pub concurrency: usize,
    pub idle_flush: Duration,
    pub request_timeout: Duration,
    pub retry_max_elapsed: Duration,
    /// Attribute keys written as annotations (indexed, searchable in X-Ray).
    pub indexed_attributes: Vec<String>,
    pub index_all_attributes: bool,
    /// Reject trace IDs whose first 32 bits are not a recent epoch second (the Collector's old rule).
    pub require_epoch_trace_ids: bool,
}

/// How spans reach X-Ray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrayMode {
    /// Segment documents through PutTraceSegments (works in every account).
    Segments,
    /// OTLP/HTTP signed with SigV4 to the X-Ray OTLP endpoint (needs Transaction Search).
    Otlp,
}

impl Default for XrayConfig {
    fn default() -> Self {
        XrayConfig {
            mode: XrayMode::Segments,
            concurrency: DEFAULT_XRAY_CONCURRENCY,
            idle_flush: DEFAULT_XRAY_IDLE_FLUSH,
            request_timeout: DEFAULT_XRAY_REQUEST_TIMEOUT,
            retry_max_elapsed: DEFAULT_XRAY_RETRY_MAX_ELAPSED,
            indexed_attributes: Vec::new(),
            index_all_attributes: false,
            require_epoch_trace_ids: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let addr = |s: &str| s.parse().expect("default address parses");
        Config {
            otlp_grpc_addr: addr(DEFAULT_OTLP_GRPC_ADDR),
            otlp_http_addr: addr(DEFAULT_OTLP_HTTP_ADDR),
            admin_addr: addr(DEFAULT_ADMIN_ADDR),
            listen_all: false,
            exporters: ExporterChoice::Auto,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            queue_max_spans: DEFAULT_QUEUE_MAX_SPANS,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            memory_limit: 0,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            log_format: LogFormat::Text,
            local_max_traces: DEFAULT_LOCAL_MAX_TRACES,
            local_max_bytes: DEFAULT_LOCAL_MAX_BYTES,
            local_max_spans_per_trace: DEFAULT_LOCAL_MAX_SPANS_PER_TRACE,
            console_grace: DEFAULT_CONSOLE_GRACE,
            xray: XrayConfig::default(),
            sampling: SamplingSettings::default(),
            span_metrics: SpanMetricsConfig::default(),
            cloudwatch: CloudwatchConfig::default(),
        }
    }
}

/// One documented setting. Its env twin is `SIDETRACE_` + the key upper-cased, dots as `_`.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every setting, in the order `config default` prints them.
pub const KEYS: &[Key] = &[
    Key {
        name: "otlp_grpc_addr",
        default: "\"127.0.0.1:4317\"",
        help: "OTLP/gRPC listen address.",
    },
    Key {
        name: "otlp_http_addr",
        default: "\"127.0.0.1:4318\"",
        help: "OTLP/HTTP listen address (POST /v1/traces, protobuf or JSON, gzip).",
    },
    Key {
        name: "admin_addr",
        default: "\"127.0.0.1:13133\"",
        help: "Admin address: /healthz, /readyz, /metrics, /api/traces and the local UI.",
    },
    Key {
        name: "listen_all",
        default: "false",
        help: "Bind every listener on 0.0.0.0 (same ports) for bridge networking and containers.",
    },
    Key {
        name: "exporters",
        default: "\"auto\"",
        help: "auto (xray,cloudwatch when an AWS region is set, else local,console) or a comma list of: xray, cloudwatch, local, console.",
    },
    Key {
        name: "max_request_bytes",
        default: "4194304",
        help: "Largest OTLP request accepted, after decompression (bytes; KiB/MiB suffixes allowed).",
    },
    Key {
        name: "queue_max_spans",
        default: "65536",
        help: "Pipeline queue budget in spans; beyond it receivers answer with a retryable refusal.",
    },
    Key {
        name: "queue_max_bytes",
        default: "16777216",
        help: "Pipeline queue budget in bytes.",
    },
    Key {
        name: "memory_limit",
        default: "0",
        help: "Resident memory to stay under (e.g. 64MiB; 0: none, at least 16MiB). Above 80 % of it receivers refuse with a retryable status; the queue, sampling hold and local store budgets are capped at 1/4, 1/8 and 1/4 of it.",
    },
    Key {
        name: "drain_timeout",
        default: "\"25s\"",
        help: "On SIGTERM/SIGINT, how long queued spans may take to reach the exporters.",
    },
    Key {
        name: "log_format",
        default: "\"text\"",
        help: "Log format on stderr: text or json.",
    },
    Key {
        name: "sampling_ratio",
        default: "\"\"",
        help: "Keep this fraction (0-1) of traces, chosen consistently by trace ID in every agent; unset: X-Ray rules in AWS mode, everything locally.",
    },
    Key {
        name: "local.max_traces",
        default: "10000",
        help: "Local store: most traces kept (oldest evicted first).",
    },
    Key {
        name: "local.max_bytes",
        default: "67108864",
        help: "Local store: approximate memory cap in bytes.",
    },
    Key {
        name: "local.max_spans_per_trace",
        default: "10000",
        help: "Local store: most spans kept for one trace.",
    },
    Key {
        name: "console.grace",
        default: "\"1s\"",
        help: "Console: wait this long after a trace's root span for late spans before printing it.",
    },
    Key {
        name: "sampling.xray_rules",
        default: "true",
        help: "In AWS mode without sampling_ratio, apply the account's X-Ray sampling rules (default rule: 1 trace/s + 5%); false keeps everything.",
    },
    Key {
        name: "sampling.keep_errors",
        default: "true",
        help: "Keep every trace with an error, fault or throttle, whatever the ratio or rules said.",
    },
    Key {
        name: "sampling.slow_threshold",
        default: "\"\"",
        help: "Keep every trace whose entry span takes longer than this (e.g. 1s); empty: off.",
    },
    Key {
        name: "sampling.slow_thresholds",
        default: "\"\"",
        help: "Per service or operation: \"checkout=500ms,checkout:GET /cart=200ms\".",
    },
    Key {
        name: "sampling.grace",
        default: "\"2s\"",
        help: "Hold a trace this long after its entry span for late spans before deciding (at most 30s).",
    },
    Key {
        name: "sampling.max_wait",
        default: "\"30s\"",
        help: "Decide traces whose entry span never arrives after this long.",
    },
    Key {
        name: "sampling.max_open_traces",
        default: "100000",
        help: "Most traces held undecided; beyond it the oldest are decided early (counted).",
    },
    Key {
        name: "sampling.max_held_bytes",
        default: "4194304",
        help: "Most bytes of requests held for undecided traces; beyond it the oldest are decided early.",
    },
    Key {
        name: "sampling.decision_cache",
        default: "200000",
        help: "Trace decisions remembered so late spans follow them (4 bytes each).",
    },
    Key {
        name: "sampling.rate_limit",
        default: "0",
        help: "Most traces kept per second per service (0: no limit), a safety valve against a noisy service.",
    },
    Key {
        name: "sampling.xray_targets_interval",
        default: "\"10s\"",
        help: "How often X-Ray sampling targets are fetched and rule statistics reported.",
    },
    Key {
        name: "xray.mode",
        default: "\"segments\"",
        help: "X-Ray: segments (PutTraceSegments, every account) or otlp (OTLP + SigV4 to xray.<region>.amazonaws.com/v1/traces, needs Transaction Search).",
    },
    Key {
        name: "xray.concurrency",
        default: "8",
        help: "X-Ray: PutTraceSegments calls in flight at once (50 documents each).",
    },
    Key {
        name: "xray.idle_flush",
        default: "\"1s\"",
        help: "X-Ray: send a partial batch once its oldest document waited this long.",
    },
    Key {
        name: "xray.request_timeout",
        default: "\"5s\"",
        help: "X-Ray: timeout of one PutTraceSegments attempt.",
    },
    Key {
        name: "xray.retry_max_elapsed",
        default: "\"5m\"",
        help: "X-Ray: retry throttling, 5xx, 408, timeouts and connection errors for at most this long per batch.",
    },
    Key {
        name: "xray.indexed_attributes",
        default: "[]",
        help: "X-Ray: attribute keys written as annotations (searchable); the rest go to metadata.",
    },
    Key {
        name: "xray.index_all_attributes",
        default: "false",
        help: "X-Ray: make every scalar attribute an annotation (at most 50 per document).",
    },
    Key {
        name: "xray.require_epoch_trace_ids",
        default: "false",
        help: "X-Ray: reject trace IDs whose first 32 bits are not a recent epoch second (counted as rejected).",
    },
    Key {
        name: "span_metrics.enabled",
        default: "true",
        help: "Span metrics: latency histograms and counters from every span, before sampling (/metrics, /api/metrics, CloudWatch).",
    },
    Key {
        name: "span_metrics.max_series_per_service",
        default: "500",
        help: "Span metrics: series kept per service; further label sets share the service's _overflow series.",
    },
    Key {
        name: "span_metrics.max_services",
        default: "100",
        help: "Span metrics: services tracked; further services share the _overflow service.",
    },
    Key {
        name: "span_metrics.service_version",
        default: "false",
        help: "Span metrics: add the resource's service.version as a label and CloudWatch dimension (compare a canary with the stable version).",
    },
    Key {
        name: "span_metrics.buckets",
        default: "\"0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60\"",
        help: "Span metrics: Prometheus histogram bucket bounds (le), in seconds, ascending.",
    },
    Key {
        name: "cloudwatch.namespace",
        default: "\"Sidetrace\"",
        help: "CloudWatch: namespace of the span metrics (Latency, Requests, Errors, Faults, Throttles).",
    },
    Key {
        name: "cloudwatch.interval",
        default: "\"60s\"",
        help: "CloudWatch: how often span metrics are published with PutMetricData.",
    },
    Key {
        name: "cloudwatch.request_timeout",
        default: "\"5s\"",
        help: "CloudWatch: timeout of one PutMetricData attempt.",
    },
    Key {
        name: "cloudwatch.retry_max_elapsed",
        default: "\"30s\"",
        help: "CloudWatch: how long a publish is retried; what is still unsent goes out with the next interval.",
    },
];

/// The environment variable that sets a key.
pub fn env_name(key: &str) -> String {
    format!("SIDETRACE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// A problem with one setting, named by its key and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.source, self.message)
    }
}

/// Parses "25s", "1500ms", "2m" into a Duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(
        t.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 25s or 2m"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text:?} needs a unit: ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Parses a byte size: plain bytes or with a KiB/MiB/GiB (or KB/MB/GB) suffix.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: usize = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size in bytes"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(format!("unknown size unit {u:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_count(text: &str) -> Result<usize, String> {
    let n = parse_bytes(text)?;
    if n == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(n)
    }
}

/// OTel's rule for booleans: only "true" (any case) is true; "false" is false; anything else is an error here.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

/// Bucket bounds in seconds: positive, finite, strictly ascending, at most 200.
fn parse_buckets(text: &str) -> Result<Vec<f64>, String> {
    let mut out: Vec<f64> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let b: f64 = part
            .parse()
            .map_err(|_| format!("{part:?} is not a number of seconds"))?;
        if !(b.is_finite() && b > 0.0) {
            return Err(format!("{part:?}: bounds must be positive seconds"));
        }
        if out.last().is_some_and(|last| *last >= b) {
            return Err("bounds must be strictly ascending".into());
        }
        out.push(b);
    }
    if out.is_empty() || out.len() > crate::telemetry::span_metrics::render::MAX_BUCKETS {
        return Err("needs 1 to 200 bounds".into());
    }
    Ok(out)
}

/// CloudWatch: a namespace is 1–255 characters and may not start with `:` (PutMetricData model).
fn parse_namespace(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > 255 || t.starts_with(':') {
        return Err(format!(
            "{text:?} is not a CloudWatch namespace (1-255 characters, not starting with ':')"
        ));
    }
    Ok(t.to_owned())
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:4317"))
}

fn parse_exporters(text: &str) -> Result<ExporterChoice, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok(ExporterChoice::Auto);
    }
    let mut list = Vec::new();
    for name in t.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = ExporterKind::from_name(name)?;
        if !list.contains(&kind) {
            list.push(kind);
        }
    }
    if list.is_empty() {
        return Err("needs at least one exporter, or auto".into());
    }
    Ok(ExporterChoice::List(list))
}

impl Config {
    /// Sets one key from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "otlp_grpc_addr" => self.otlp_grpc_addr = parse_addr(value)?,
            "otlp_http_addr" => self.otlp_http_addr = parse_addr(value)?,
            "admin_addr" => self.admin_addr = parse_addr(value)?,
            "listen_all" => self.listen_all = parse_bool(value)?,
            "exporters" => self.exporters = parse_exporters(value)?,
            "max_request_bytes" => self.max_request_bytes = parse_count(value)?,
            "queue_max_spans" => self.queue_max_spans = parse_count(value)?,
            "queue_max_bytes" => self.queue_max_bytes = parse_count(value)?,
            "memory_limit" => {
                let limit = parse_bytes(value)?;
                if limit != 0 && limit < MIN_MEMORY_LIMIT {
                    return Err("must be 0 (none) or at least 16MiB".into());
                }
                self.memory_limit = limit;
            }
            "drain_timeout" => self.drain_timeout = parse_duration(value)?,
            "log_format" => {
                self.log_format = match value.trim().to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(format!("{value:?} is not text or json")),
                }
            }
            "local.max_traces" => self.local_max_traces = parse_count(value)?,
            "local.max_bytes" => self.local_max_bytes = parse_count(value)?,
            "local.max_spans_per_trace" => self.local_max_spans_per_trace = parse_count(value)?,
            "console.grace" => self.console_grace = parse_duration(value)?,
            "sampling_ratio" => {
                self.sampling.ratio = if value.trim().is_empty() {
                    None
                } else {
                    Some(parse_ratio(value)?)
                }
            }
            "sampling.xray_rules" => self.sampling.xray_rules = parse_bool(value)?,
            "sampling.keep_errors" => self.sampling.keep_errors = parse_bool(value)?,
            "sampling.slow_threshold" => {
                self.sampling.slow_threshold = if value.trim().is_empty() || value.trim() == "off" {
                    None
                } else {
                    Some(parse_duration(value)?)
                }
            }
            "sampling.slow_thresholds" => self.sampling.slow_thresholds = parse_slow_list(value)?,
            "sampling.grace" => {
                let d = parse_duration(value)?;
                if d > crate::pipeline::sampler::MAX_GRACE {
                    return Err("must be at most 30s".into());
                }
                self.sampling.grace = d;
            }
            "sampling.max_wait" => self.sampling.max_wait = parse_duration(value)?,
            "sampling.max_open_traces" => self.sampling.max_open_traces = parse_count(value)?,
            "sampling.max_held_bytes" => self.sampling.max_held_bytes = parse_count(value)?,
            "sampling.decision_cache" => self.sampling.decision_cache = parse_count(value)?,
            "sampling.rate_limit" => {
                let r: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{value:?} is not a number of traces per second"))?;
                self.sampling.rate_limit = (r > 0.0).then_some(r);
            }
            "sampling.xray_targets_interval" => {
                self.sampling.xray_targets_interval = parse_duration(value)?
            }
            "xray.mode" => {
                self.xray.mode = match value.trim().to_ascii_lowercase().as_str() {
                    "segments" => XrayMode::Segments,
                    "otlp" => XrayMode::Otlp,
                    _ => return Err(format!("{value:?} is not segments or otlp")),
                }
            }
            "xray.concurrency" => self.xray.concurrency = parse_count(value)?,
            "xray.idle_flush" => self.xray.idle_flush = parse_duration(value)?,
            "xray.request_timeout" => self.xray.request_timeout = parse_duration(value)?,
            "xray.retry_max_elapsed" => self.xray.retry_max_elapsed = parse_duration(value)?,
            "xray.indexed_attributes" => {
                self.xray.indexed_attributes = value
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect()
            }
            "xray.index_all_attributes" => self.xray.index_all_attributes = parse_bool(value)?,
            "span_metrics.enabled" => self.span_metrics.enabled = parse_bool(value)?,
            "span_metrics.max_series_per_service" => {
                self.span_metrics.max_series_per_service = parse_count(value)?
            }
            "span_metrics.max_services" => self.span_metrics.max_services = parse_count(value)?,
            "span_metrics.service_version" => {
                self.span_metrics.service_version = parse_bool(value)?
            }
            "span_metrics.buckets" => self.span_metrics.buckets_seconds = parse_buckets(value)?,
            "cloudwatch.namespace" => self.cloudwatch.namespace = parse_namespace(value)?,
            "cloudwatch.interval" => {
                let d = parse_duration(value)?;
                if d < Duration::from_secs(1) {
                    return Err("must be at least 1s".into());
                }
                self.cloudwatch.interval = d;
            }
            "cloudwatch.request_timeout" => {
                self.cloudwatch.request_timeout = parse_duration(value)?
            }
            "cloudwatch.retry_max_elapsed" => {
                self.cloudwatch.retry_max_elapsed = parse_duration(value)?
            }
            "xray.require_epoch_trace_ids" => {
                self.xray.require_epoch_trace_ids = parse_bool(value)?
            }
            _ => return Err("unknown key".into()),
        }
        Ok(())
    }

    /// Applies a TOML document; every problem is collected, none stops the others.
    pub fn apply_toml(&mut self, text: &str, source: &str, problems: &mut Vec<Problem>) {
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem {
                    key: "(file)".into(),
                    source: source.into(),
                    message: format!("not valid TOML: {}", e.message()),
                });
                return;
            }
        };
        let mut flat = Vec::new();
        flatten("", &table, &mut flat);
        for (key, value) in flat {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if let Err(message) = self.set(&key, &text) {
                problems.push(Problem {
                    key,
                    source: source.into(),
                    message,
                });
            }
        }
    }

    /// Applies `SIDETRACE_*` variables for every key (an empty value means unset, as in OTel).
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<Problem>) {
        for key in KEYS {
            let var = env_name(key.name);
            if let Some(value) = env(&var).filter(|v| !v.is_empty())
                && let Err(message) = self.set(key.name, &value)
            {
                problems.push(Problem {
                    key: key.name.into(),
                    source: var,
                    message,
                });
            }
        }
    }

    /// Loads defaults < file < env < flags, or every problem found.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &[(&str, String)],
    ) -> Result<Config, Vec<Problem>> {
        let mut config = Config::default();
        let mut problems = Vec::new();
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => config.apply_toml(&text, &path.display().to_string(), &mut problems),
                Err(e) => problems.push(Problem {
                    key: "(file)".into(),
                    source: path.display().to_string(),
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        config.apply_env(env, &mut problems);
        for (key, value) in flags {
            if let Err(message) = config.set(key, value) {
                problems.push(Problem {
                    key: (*key).into(),
                    source: format!("--{}", key.replace('_', "-")),
                    message,
                });
            }
        }
        if problems.is_empty() {
            config.fit_memory_limit();
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Checks a TOML document alone (no environment, no flags), as `config check -` does.
    pub fn parse_toml(text: &str, source: &str) -> Result<Config, Vec<Problem>> {
        let mut config = Config::default();
        let mut problems = Vec::new();
        config.apply_toml(text, source, &mut problems);
        if problems.is_empty() {
            config.fit_memory_limit();
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Caps the budgets that hold spans to shares of `memory_limit`, leaving the rest for the
    /// agent itself (~12 MB), requests being read, and the allocator; a budget set lower stays.
    pub fn fit_memory_limit(&mut self) {
        let limit = self.memory_limit;
        if limit == 0 {
            return;
        }
        self.queue_max_bytes = self.queue_max_bytes.min(limit / 4);
        self.sampling.max_held_bytes = self.sampling.max_held_bytes.min(limit / 8);
        self.local_max_bytes = self.local_max_bytes.min(limit / 4);
    }

    /// The address a listener binds: `listen_all` moves loopback listeners to 0.0.0.0.
    pub fn bind_addr(&self, addr: SocketAddr) -> SocketAddr {
        if self.listen_all && addr.ip().is_loopback() {
            SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port())
        } else {
            addr
        }
    }

    /// The exporters to run, and a sentence saying why (for the startup log).
    pub fn resolve_exporters(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Vec<ExporterKind>, String) {
        match &self.exporters {
            ExporterChoice::List(list) => (list.clone(), "set by the exporters setting".into()),
            ExporterChoice::Auto => match aws_region(env) {
                Some(r) => (
                    vec![ExporterKind::Xray, ExporterKind::Cloudwatch],
                    format!("AWS region {r} is set; sending traces to X-Ray and span metrics to CloudWatch"),
                ),
                None => (
                    vec![ExporterKind::Local, ExporterKind::Console],
                    "no AWS region is set (AWS_REGION / AWS_DEFAULT_REGION); keeping traces locally".into(),
                ),
            },
        }
    }

    /// The full default configuration as commented TOML (`sidetrace config default`).
    pub fn default_toml() -> String {
        let mut out = String::from(
            "# sidetrace configuration. Every key is optional; shown here with its default.\n\
             # Precedence: defaults < this file < environment (SIDETRACE_<KEY>) < command-line flags.\n",
        );
        let mut section = "";
        for key in KEYS {
            let (sec, name) = key.name.rsplit_once('.').unwrap_or(("", key.name));
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec;
            }
            out.push_str(&format!(
                "\n# {} (env: {})\n{name} = {}\n",
                key.help,
                env_name(key.name),
                key.default
            ));
        }
        out
    }
}

/// The AWS region from the SDK's variables, when one is set.
pub fn aws_region(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|v| env(v).filter(|r| !r.is_empty()))
}

fn flatten<'a>(prefix: &str, table: &'a toml::Table, out: &mut Vec<(String, &'a toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn default_toml_round_trips_to_defaults() {
        let mut c = Config::default();
        let mut problems = vec![];
        c.apply_toml(&Config::default_toml(), "default", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
        for key in KEYS {
            assert!(Config::default_toml().contains(&env_name(key.name)));
        }
    }

    #[test]
    fn a_memory_limit_caps_the_span_budgets() {
        let env = |k: &str| (k == "SIDETRACE_MEMORY_LIMIT").then(|| "24MiB".to_string());
        let c = Config::load(None, &env, &[("queue_max_bytes", "2MiB".into())]).unwrap();
        assert_eq!(c.memory_limit, 24 << 20);
        assert_eq!(c.queue_max_bytes, 2 << 20, "a budget set lower stays");
        assert_eq!(c.sampling.max_held_bytes, 3 << 20);
        assert_eq!(c.local_max_bytes, 6 << 20);

        let c = Config::load(None, &no_env, &[]).unwrap();
        assert_eq!(c.memory_limit, 0);
        assert_eq!(
            c.queue_max_bytes, DEFAULT_QUEUE_MAX_BYTES,
            "no limit: defaults"
        );

        let e = Config::load(None, &no_env, &[("memory_limit", "8MiB".into())]).unwrap_err();
        assert!(e[0].message.contains("16MiB"), "{e:?}");
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("sidetrace-cfg-{}", std::process::id()));
        std::fs::write(&dir, "admin_addr = \"127.0.0.1:1\"\notlp_http_addr = \"127.0.0.1:2\"\n[local]\nmax_traces = 5\n").unwrap();
        let env = |k: &str| match k {
            "SIDETRACE_OTLP_HTTP_ADDR" => Some("127.0.0.1:3".to_string()),
            "SIDETRACE_OTLP_GRPC_ADDR" => Some("127.0.0.1:4".to_string()),
            "SIDETRACE_LOCAL_MAX_BYTES" => Some("1MiB".to_string()),
            _ => None,
        };
        let c = Config::load(
            Some(&dir),
            &env,
            &[("otlp_grpc_addr", "127.0.0.1:5".into())],
        )
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(c.admin_addr.port(), 1); // file
        assert_eq!(c.otlp_http_addr.port(), 3); // env beats file
        assert_eq!(c.otlp_grpc_addr.port(), 5); // flag beats env
        assert_eq!(c.local_max_traces, 5);
        assert_eq!(c.local_max_bytes, 1 << 20);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut c = Config::default();
        let mut p = vec![];
        c.apply_toml(
            "otlp_grpc_addr = \"nope\"\nbogus = 1\ndrain_timeout = \"10\"\nexporters = [\"local\", \"carrier-pigeon\"]\n[local]\nmax_traces = 0\n",
            "f.toml",
            &mut p,
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), 5, "{p:?}");
        for k in [
            "otlp_grpc_addr",
            "bogus",
            "drain_timeout",
            "exporters",
            "local.max_traces",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn auto_without_region_is_local_mode() {
        let (ex, why) = Config::default().resolve_exporters(&no_env);
        assert_eq!(ex, vec![ExporterKind::Local, ExporterKind::Console]);
        assert!(why.contains("no AWS region"));
    }

    #[test]
    fn auto_with_region_is_aws_mode() {
        let env = |k: &str| (k == "AWS_DEFAULT_REGION").then(|| "eu-west-1".to_string());
        let (ex, why) = Config::default().resolve_exporters(&env);
        assert_eq!(ex, vec![ExporterKind::Xray, ExporterKind::Cloudwatch]);
        assert!(why.contains("eu-west-1"));
    }

    #[test]
    fn units_parse() {
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_bytes("4MiB").unwrap(), 4 << 20);
        assert!(parse_bytes("4XB").is_err());
        assert!(parse_bool("yes").is_err());
        assert_eq!(parse_buckets("0.5, 1,2.5").unwrap(), vec![0.5, 1.0, 2.5]);
        assert!(parse_buckets("1,0.5").is_err());
        assert!(parse_buckets("0,1").is_err());
        assert!(parse_buckets("").is_err());
        assert!(parse_namespace(":x").is_err());
        assert_eq!(parse_namespace(" Shop ").unwrap(), "Shop");
    }

    #[test]
    fn span_metrics_and_cloudwatch_keys_have_env_twins() {
        let env = |k: &str| match k {
            "SIDETRACE_SPAN_METRICS_MAX_SERIES_PER_SERVICE" => Some("20".to_string()),
            "SIDETRACE_CLOUDWATCH_INTERVAL" => Some("5s".to_string()),
            "SIDETRACE_CLOUDWATCH_NAMESPACE" => Some("Shop".to_string()),
            "SIDETRACE_SPAN_METRICS_BUCKETS" => Some("0.1,1".to_string()),
            _ => None,
        };
        let c = Config::load(None, &env, &[]).unwrap();
        assert_eq!(c.span_metrics.max_series_per_service, 20);
        assert_eq!(c.span_metrics.buckets_seconds, vec![0.1, 1.0]);
        assert_eq!(c.cloudwatch.interval, Duration::from_secs(5));
        assert_eq!(c.cloudwatch.namespace, "Shop");
        assert!(Config::load(None, &no_env, &[("cloudwatch.interval", "10ms".into())]).is_err());
    }
}
