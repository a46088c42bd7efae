//! The sidetrace command line: run the agent (default), healthcheck, config check|default, loadgen.

#![deny(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use sidetrace::agent::config::KeyInfo;
use sidetrace::agent::{Agent, Config};
use sidetrace::config::{EXIT_CONFIG, env_name, flag_name};
use tracing::{error, info};

// mimalloc roughly halves allocation cost on the decode and export paths (reference/performance.md).
// `--features system-allocator` keeps the C library's malloc, so heap profilers (heaptrack) see
// every allocation.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory resident before returning it to the system. Its v3
/// default is 1 s, which at ~150 MB/s of request bytes kept ~18 MB of peak RSS in the AWS-mode
/// benchmark: 10 ms took that peak from 56 to 38 MB for ~5 % of throughput (BENCHMARKS.md, "Memory").
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    const PURGE_DELAY_MS: std::ffi::c_long = 10;
    // mimalloc.h (v3): the 16th entry of `mi_option_e`; the Rust binding does not name it.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores one integer option; it is read when memory is purged.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

#[cfg(feature = "system-allocator")]
fn tune_allocator() {}

#[derive(Parser, Debug)]
#[command(
    name = "sidetrace",
    version,
    about = "A small, fast tracing agent: OTLP in; local UI, X-Ray and CloudWatch out.",
    // `sidetrace --flag` runs the agent; a subcommand takes only its own flags.
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The agent's flags: `--config`, `--set`, and one per config key declared as a flag, whose help,
/// env twin and default come from that key's declaration. Flags beat the environment.
#[derive(Debug, Default, Clone)]
struct Flags {
    config: Option<PathBuf>,
    /// (key, value) for each key flag given.
    pairs: Vec<(&'static str, String)>,
    set: Vec<String>,
}

/// The flag of one config key: `--otlp-grpc-addr <ADDR>`, its help from the declaration.
fn key_arg(key: &KeyInfo) -> Arg {
    let arg = Arg::new(flag_name(key.name))
        .long(flag_name(key.name))
        .help(format!(
            "{} [env: {}] [default: {}]",
            key.help.trim_end_matches('.'),
            env_name(key.name),
            match key.default.trim_matches('"') {
                "" => "none",
                d => d,
            }
        ));
    if key.unit == "BOOL" {
        arg.action(ArgAction::SetTrue)
    } else {
        arg.value_name(key.unit)
    }
}

fn config_arg() -> Arg {
    Arg::new("config")
        .long("config")
        .env("SIDETRACE_CONFIG")
        .hide_env(true)
        .value_parser(clap::value_parser!(PathBuf))
        .value_name("FILE")
        .help("TOML config file [env: SIDETRACE_CONFIG]")
}

fn key_pairs(m: &ArgMatches, keys: impl Iterator<Item = KeyInfo>) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    for k in keys {
        let id = flag_name(k.name);
        if k.unit == "BOOL" {
            if m.get_flag(&id) {
                pairs.push((k.name, "true".to_string()));
            }
        } else if let Some(v) = m.get_one::<String>(&id) {
            pairs.push((k.name, v.clone()));
        }
    }
    pairs
}

impl FromArgMatches for Flags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Flags {
            config: m.get_one::<PathBuf>("config").cloned(),
            pairs: key_pairs(m, Config::keys().into_iter().filter(|k| k.flag)),
            set: m
                .get_many::<String>("set")
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Flags::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for Flags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let keys = Config::keys();
        let mut every = String::from(
            "Set any config key, e.g. --set local.max_traces=500 (repeatable). Every key, with its default and env twin:\n",
        );
        for k in &keys {
            every.push_str(&format!(
                "  {} = {}  [env: {}]\n      {}\n",
                k.name,
                k.default,
                env_name(k.name),
                k.help
            ));
        }
        let mut cmd = cmd.arg(config_arg());
        for k in keys.iter().filter(|k| k.flag) {
            cmd = cmd.arg(key_arg(k));
        }
        cmd.arg(
            Arg::new("set")
                .long("set")
                .value_name("KEY=VALUE")
                .action(ArgAction::Append)
                .help("Set any config key, e.g. --set local.max_traces=500 (repeatable; --help lists every key)")
                .long_help(every),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Flags::augment_args(cmd)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the default).
    Run(Flags),
    /// Exit 0 if the local agent answers /healthz, 1 otherwise (for container health checks).
    Healthcheck(HealthcheckArgs),
    /// Validate or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Send realistic OTLP trace load and report spans/s and latency (a final JSON line).
    Loadgen(LoadgenArgs),
    /// Print an Amazon MSK IAM token made as the agent makes them (AWS_REGION and the SDK's
    /// credentials chain), to check access from where the agent will run
    #[cfg(feature = "kafka")]
    MskIamToken,
}

/// Where the agent to check listens: the flag, else the config file and `SIDETRACE_ADMIN_ADDR`.
#[derive(Debug, Default, Clone)]
struct HealthcheckArgs(Flags);

impl FromArgMatches for HealthcheckArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(HealthcheckArgs(Flags {
            config: m.get_one::<PathBuf>("config").cloned(),
            pairs: key_pairs(m, admin_key().into_iter()),
            set: Vec::new(),
        }))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = HealthcheckArgs::from_arg_matches(m)?;
        Ok(())
    }
}

fn admin_key() -> Option<KeyInfo> {
    Config::keys().into_iter().find(|k| k.name == "admin_addr")
}

impl Args for HealthcheckArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd.arg(config_arg());
        match admin_key() {
            Some(k) => cmd.arg(key_arg(&k)),
            None => cmd,
        }
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        HealthcheckArgs::augment_args(cmd)
    }
}

#[derive(Args, Debug)]
struct LoadgenArgs {
    /// grpc, http (OTLP/HTTP protobuf), or xray-udp (X-Ray SDK segments, ~1 KB per datagram)
    #[arg(long, default_value = "grpc")]
    protocol: String,
    /// Agent address [default: 127.0.0.1:4317 for grpc, 127.0.0.1:4318 for http]
    #[arg(long)]
    target: Option<String>,
    #[arg(long, default_value_t = 512)]
    spans_per_request: usize,
    #[arg(long, default_value_t = 8)]
    spans_per_trace: usize,
    /// Concurrent request streams (closed loop: each sends as soon as its last answer came)
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Open loop: send this many spans per second on a fixed schedule instead
    #[arg(long)]
    rate: Option<f64>,
    /// How long to run, e.g. 10s
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Stop after this many requests
    #[arg(long)]
    requests: Option<u64>,
    /// Fraction of traces that carry an error (the uniform mix)
    #[arg(long, default_value_t = 0.02)]
    error_ratio: f64,
    /// uniform (--error-ratio of traces fail whole) or realistic (3 % 5xx with an exception,
    /// 6 % 4xx, 4 % failed database calls, 2 % throttled calls)
    #[arg(long, default_value = "uniform")]
    error_mix: String,
    /// Extra attributes per span on top of 8 semantic-convention ones
    #[arg(long, default_value_t = 2)]
    attributes: usize,
    /// Random W3C trace IDs instead of X-Ray-compatible ones (epoch in the first 32 bits)
    #[arg(long)]
    random_ids: bool,
    /// gzip request bodies
    #[arg(long)]
    gzip: bool,
    /// Mark requests as a forwarding sidetrace does (span metrics already recorded), to load
    /// an agent as a gateway
    #[arg(long)]
    span_metrics_recorded: bool,
    /// services (7-span traces: a frontend calls two backends, one calls a database) or chain
    /// (--spans-per-trace spans of one service, what the benchmarks send)
    #[arg(long, default_value = "services")]
    topology: String,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a TOML config file (`-`: standard input); lists every problem, exits 64 when invalid.
    Check { file: PathBuf },
    /// Print the full default configuration, with comments.
    Default,
}

/// Writes to stdout, ignoring a closed pipe (`sidetrace loadgen | head -1` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn load_config(flags: &Flags) -> Result<Config, ExitCode> {
    let mut pairs: Vec<(&str, String)> = flags.pairs.clone();
    for kv in &flags.set {
        match kv.split_once('=') {
            Some((k, v)) => pairs.push((k.trim(), v.to_string())),
            None => {
                eprintln!("sidetrace: --set needs KEY=VALUE, got {kv:?}");
                return Err(ExitCode::from(EXIT_CONFIG as u8));
            }
        }
    }
    Config::load(flags.config.as_deref(), &env, &pairs).map_err(|problems| {
        eprintln!("sidetrace: invalid configuration:");
        for p in problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(EXIT_CONFIG as u8)
    })
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config(ConfigCommand::Default)) => {
            out!("{}", Config::default_toml().trim_end());
            ExitCode::SUCCESS
        }
        Some(Command::Config(ConfigCommand::Check { file })) => check_config(&file),
        Some(Command::Healthcheck(HealthcheckArgs(flags))) => match load_config(&flags) {
            Ok(c) => healthcheck(c.admin.admin_addr),
            Err(code) => code,
        },
        Some(Command::Loadgen(args)) => loadgen(args),
        #[cfg(feature = "kafka")]
        Some(Command::MskIamToken) => msk_iam_token(),
        Some(Command::Run(flags)) => match load_config(&flags) {
            Ok(c) => run(c),
            Err(code) => code,
        },
        None => match load_config(&cli.flags) {
            Ok(c) => run(c),
            Err(code) => code,
        },
    }
}

#[cfg(feature = "kafka")]
fn msk_iam_token() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidetrace msk-iam-token: {e}");
            return ExitCode::FAILURE;
        }
    };
    let made = runtime.block_on(async {
        let region = sidetrace::config::aws_region(&|v| std::env::var(v).ok());
        let sdk = sidetrace::exporters::aws::sdk_config(region, Duration::from_secs(5)).await;
        let (region, credentials) =
            sidetrace::exporters::kafka::msk_iam::region_and_credentials(&sdk)?;
        let creds = credentials.get().await?;
        sidetrace::exporters::kafka::msk_iam::token(&creds, &region, std::time::SystemTime::now())
    });
    match made {
        Ok((token, _)) => {
            out!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sidetrace msk-iam-token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let loaded = if file.as_os_str() == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("sidetrace config check: cannot read standard input: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        Config::parse_toml(&text, "(stdin)")
    } else {
        Config::load(Some(file), &|_| None, &[])
    };
    match loaded {
        Ok(_) => {
            out!("{}: valid", shown(file));
            ExitCode::SUCCESS
        }
        Err(problems) => {
            out!("{}: {} problem(s)", shown(file), problems.len());
            for p in problems {
                out!("  - {p}");
            }
            ExitCode::from(EXIT_CONFIG as u8)
        }
    }
}

fn shown(file: &std::path::Path) -> String {
    if file.as_os_str() == "-" {
        "(stdin)".into()
    } else {
        file.display().to_string()
    }
}

fn loadgen(a: LoadgenArgs) -> ExitCode {
    let duration = match sidetrace::config::parse_duration(&a.duration) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sidetrace loadgen: --duration: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let error_mix = match a.error_mix.as_str() {
        "uniform" => sidetrace::workload::ErrorMix::Uniform,
        "realistic" => sidetrace::workload::ErrorMix::Realistic,
        other => {
            eprintln!("sidetrace loadgen: --error-mix: {other:?} is not uniform or realistic");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let topology = match a.topology.as_str() {
        "services" => sidetrace::workload::Topology::Services,
        "chain" => sidetrace::workload::Topology::Chain,
        other => {
            eprintln!("sidetrace loadgen: --topology: {other:?} is not services or chain");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let default_port = match a.protocol.as_str() {
        "http" => 4318,
        "xray-udp" => 2000,
        _ => 4317,
    };
    let spec = sidetrace::loadgen::LoadSpec {
        target: a
            .target
            .unwrap_or_else(|| format!("127.0.0.1:{default_port}")),
        protocol: a.protocol,
        spans_per_request: a.spans_per_request.max(1),
        spans_per_trace: a.spans_per_trace,
        streams: a.streams,
        rate: a.rate,
        duration,
        max_requests: a.requests,
        error_ratio: a.error_ratio,
        error_mix,
        extra_attributes: a.attributes,
        xray_ids: !a.random_ids,
        gzip: a.gzip,
        metrics_recorded: a.span_metrics_recorded,
        topology,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidetrace loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sidetrace::loadgen::run(spec)) {
        Ok(r) => {
            let failed: u64 = r.failures.values().sum();
            out!(
                "{} {} loop: {:.0} spans/s over {:.1}s, {} requests ok, {} failed {:?}; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                r.protocol,
                r.mode,
                r.spans_per_sec,
                r.duration_s,
                r.requests_ok,
                failed,
                r.failures,
                r.latency_p50_ms,
                r.latency_p99_ms,
                r.latency_p999_ms
            );
            out!("{}", serde_json::to_string(&r).unwrap_or_default());
            if r.requests_ok == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("sidetrace loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// This process's cgroup memory limit, if it has one (a container's, a systemd unit's).
fn container_limit() -> Option<sidetrace::pipeline::memory::ContainerLimit> {
    use sidetrace::pipeline::memory::{CGROUP_ROOT, container_limit};
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    container_limit(std::path::Path::new(CGROUP_ROOT), &cgroups)
}

/// A plain HTTP/1.0 GET with a short timeout: no runtime, no shell needed in the image.
fn healthcheck(mut addr: SocketAddr) -> ExitCode {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut buf = Vec::new();
        s.take(4096).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => {
            ExitCode::SUCCESS
        }
        Ok(text) => {
            eprintln!(
                "sidetrace healthcheck: {addr} answered {:?}",
                text.lines().next().unwrap_or("")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sidetrace healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut config: Config) -> ExitCode {
    sidetrace::telemetry::init_logging(config.agent.log_format);
    let memory_limit = config.apply_container_limit(container_limit());
    let (exporters, why) = config.resolve_exporters(&env);
    let names: Vec<&str> = exporters.iter().map(|e| e.label()).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidetrace: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        info!(version = env!("CARGO_PKG_VERSION"), exporters = %names.join(","), "Starting sidetrace: {why}.");
        match config.pipeline.memory_limit {
            0 => info!("{memory_limit}."),
            bytes => info!(
                memory_limit_bytes = bytes,
                queue_max_bytes = config.pipeline.queue_max_bytes,
                sampling_max_held_bytes = config.sampling.max_held_bytes,
                "{memory_limit}; above 80 % of it receivers refuse (retryable)."
            ),
        }
        let shutdown = shutdown_signal();
        let agent = match Agent::start(&config, &exporters).await {
            Ok(a) => a,
            Err(e) => {
                error!(error = %e, "Cannot start.");
                return ExitCode::FAILURE;
            }
        };
        if exporters.contains(&sidetrace::exporters::ExporterKind::Local) {
            info!(url = %format!("http://{}/", agent.addrs.admin), "Local mode: recent traces are in the UI and at /api/traces.");
        }
        let signal = shutdown.await;
        info!(signal, "Shutdown requested.");
        agent.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Registers for SIGTERM and SIGINT now (before the agent starts, so one sent during start-up
/// is a clean shutdown once it is up, not the default death) and waits for either later.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}
