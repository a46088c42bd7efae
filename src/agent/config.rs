//! The whole configuration: every component's section, mounted here in the order `config
//! default` prints them. Adding a component's settings is one line in [`sections`].

use std::net::SocketAddr;
use std::path::Path;

use crate::admin::AdminConfig;
use crate::config::{Key, Keys, Mounted, Problem, Section, env_name, flatten_toml};
use crate::exporters::ExporterKind;
use crate::exporters::cloudwatch::CloudwatchConfig;
use crate::exporters::console::ConsoleConfig;
use crate::exporters::kafka::KafkaConfig;
use crate::exporters::local::LocalConfig;
use crate::exporters::otlp::OtlpConfig;
use crate::exporters::xray::XrayConfig;
use crate::pipeline::MIN_MEMORY_LIMIT;
use crate::pipeline::PipelineConfig;
use crate::pipeline::memory::{CONTAINER_SHARE_PERCENT, ContainerLimit};
use crate::pipeline::sampler::config::SamplingConfig;
use crate::pipeline::spool::SpoolConfig;
use crate::proxy::ProxyConfig;
use crate::receivers::ReceiversConfig;
use crate::receivers::xray_udp::XrayUdpConfig;
use crate::telemetry::LogFormat;
use crate::telemetry::span_metrics::SpanMetricsConfig;

/// Which exporters to run: `auto` decides from the environment at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExporterChoice {
    Auto,
    List(Vec<ExporterKind>),
}

/// The agent's own keys: which exporters, how to bind, how to log.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub listen_all: bool,
    pub exporters: ExporterChoice,
    pub log_format: LogFormat,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen_all: false,
            exporters: ExporterChoice::Auto,
            log_format: LogFormat::Text,
        }
    }
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

type K = Key<AgentConfig>;

impl Section for AgentConfig {
    const KEYS: &'static [K] = &[
        K::bool(
            "listen_all",
            "Bind every listener on 0.0.0.0 (same ports) for bridge networking and containers.",
            |c| &mut c.listen_all,
        )
        .flag(),
        K::custom(
            "exporters",
            "auto (xray,cloudwatch when an AWS region is set, else local,console) or a comma list of: xray, cloudwatch, otlp, kafka, local, console.",
            |c, v| {
                c.exporters = parse_exporters(v)?;
                Ok(())
            },
            |c| match &c.exporters {
                ExporterChoice::Auto => "\"auto\"".into(),
                ExporterChoice::List(l) => crate::config::parse::toml_string(
                    &l.iter().map(|e| e.label()).collect::<Vec<_>>().join(","),
                ),
            },
        )
        .with_value_name("LIST")
        .flag(),
        K::custom(
            "log_format",
            "Log format on stderr: text or json.",
            |c, v| {
                c.log_format = match v.trim().to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(format!("{v:?} is not text or json")),
                };
                Ok(())
            },
            |c| match c.log_format {
                LogFormat::Text => "\"text\"".into(),
                LogFormat::Json => "\"json\"".into(),
            },
        )
        .with_value_name("FORMAT")
        .flag(),
    ];
}

/// The whole configuration of one agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub agent: AgentConfig,
    pub receivers: ReceiversConfig,
    pub xray_udp: XrayUdpConfig,
    pub xray_proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub pipeline: PipelineConfig,
    pub queue: SpoolConfig,
    pub sampling: SamplingConfig,
    pub local: LocalConfig,
    pub console: ConsoleConfig,
    pub xray: XrayConfig,
    pub otlp: OtlpConfig,
    pub kafka: KafkaConfig,
    pub span_metrics: SpanMetricsConfig,
    pub cloudwatch: CloudwatchConfig,
}

/// Every section, in the order `config default` prints its keys.
fn sections() -> [&'static dyn Keys<Config>; 15] {
    [
        &Mounted::<Config, ReceiversConfig> {
            part: |c| &mut c.receivers,
        },
        &Mounted::<Config, XrayUdpConfig> {
            part: |c| &mut c.xray_udp,
        },
        &Mounted::<Config, ProxyConfig> {
            part: |c| &mut c.xray_proxy,
        },
        &Mounted::<Config, AdminConfig> {
            part: |c| &mut c.admin,
        },
        &Mounted::<Config, AgentConfig> {
            part: |c| &mut c.agent,
        },
        &Mounted::<Config, PipelineConfig> {
            part: |c| &mut c.pipeline,
        },
        &Mounted::<Config, SpoolConfig> {
            part: |c| &mut c.queue,
        },
        &Mounted::<Config, LocalConfig> {
            part: |c| &mut c.local,
        },
        &Mounted::<Config, ConsoleConfig> {
            part: |c| &mut c.console,
        },
        &Mounted::<Config, SamplingConfig> {
            part: |c| &mut c.sampling,
        },
        &Mounted::<Config, XrayConfig> {
            part: |c| &mut c.xray,
        },
        &Mounted::<Config, OtlpConfig> {
            part: |c| &mut c.otlp,
        },
        &Mounted::<Config, KafkaConfig> {
            part: |c| &mut c.kafka,
        },
        &Mounted::<Config, SpanMetricsConfig> {
            part: |c| &mut c.span_metrics,
        },
        &Mounted::<Config, CloudwatchConfig> {
            part: |c| &mut c.cloudwatch,
        },
    ]
}

/// One documented key, as `--help` and `config default` list it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub name: &'static str,
    pub help: &'static str,
    /// The kind of value: ADDR, BOOL, N, DURATION, LIST or VALUE.
    pub unit: &'static str,
    /// Also a command-line flag.
    pub flag: bool,
    /// The default as a TOML literal.
    pub default: String,
}

impl Config {
    /// Every key of every section, in `config default` order.
    pub fn keys() -> Vec<KeyInfo> {
        let mut defaults = Config::default();
        sections()
            .iter()
            .flat_map(|s| s.list())
            .map(|(name, help, unit, flag)| KeyInfo {
                name,
                help,
                unit,
                flag,
                default: Config::show(&mut defaults, name).unwrap_or_default(),
            })
            .collect()
    }

    fn show(&mut self, name: &str) -> Option<String> {
        sections().iter().find_map(|s| s.show(self, name))
    }

    /// Sets one key from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        sections()
            .iter()
            .find_map(|s| s.set(self, key, value))
            .unwrap_or_else(|| Err("unknown key".into()))
    }

    /// Applies a TOML document; every problem is collected, none stops the others.
    pub fn apply_toml(&mut self, text: &str, source: &str, problems: &mut Vec<Problem>) {
        let flat = match flatten_toml(text) {
            Ok(f) => f,
            Err(e) => {
                problems.push(Problem {
                    key: "(file)".into(),
                    source: source.into(),
                    message: format!("not valid TOML: {e}"),
                });
                return;
            }
        };
        for (key, text) in flat {
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
        // The X-Ray SDKs' variable, so the agent listens where they send; SIDETRACE_* still win.
        if let Some(value) = env(DAEMON_ADDRESS_VAR).filter(|v| !v.trim().is_empty()) {
            match parse_daemon_address(&value) {
                Ok((udp, tcp)) => {
                    self.xray_udp.xray_udp_addr = udp;
                    self.xray_proxy.xray_proxy_addr = (tcp != udp).then_some(tcp);
                }
                Err(message) => problems.push(Problem {
                    key: "xray_udp_addr".into(),
                    source: DAEMON_ADDRESS_VAR.into(),
                    message,
                }),
            }
        }
        // The OTLP exporter specification's variables; SIDETRACE_OTLP_* still win.
        for (key, var, message) in self.otlp.apply_otel_env(env) {
            problems.push(Problem {
                key: key.into(),
                source: var.into(),
                message,
            });
        }
        let names: Vec<&str> = sections()
            .iter()
            .flat_map(|s| s.list())
            .map(|k| k.0)
            .collect();
        for name in names {
            let var = env_name(name);
            if let Some(value) = env(&var).filter(|v| !v.is_empty())
                && let Err(message) = self.set(name, &value)
            {
                problems.push(Problem {
                    key: name.into(),
                    source: var,
                    message,
                });
            }
        }
    }

    /// Loads defaults < file < env (`AWS_XRAY_DAEMON_ADDRESS` and `OTEL_EXPORTER_OTLP_*`, then
    /// `SIDETRACE_*`) < flags, or
    /// every problem found.
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

    /// Resolves `memory_limit = auto` against the container's cgroup limit (`found`) and
    /// returns the startup log's sentence on where the limit came from.
    pub fn apply_container_limit(&mut self, found: Option<ContainerLimit>) -> String {
        let p = &mut self.pipeline;
        if !p.memory_limit_auto {
            return match p.memory_limit {
                0 => "No memory limit (memory_limit = none)".into(),
                n => format!("Memory limit {} MiB, set by memory_limit", n >> 20),
            };
        }
        let Some(found) = found else {
            return "No memory limit: no container (cgroup) limit found and memory_limit not set"
                .into();
        };
        let share = (u128::from(found.bytes) * u128::from(CONTAINER_SHARE_PERCENT) / 100) as u64;
        p.memory_limit = (share as usize).max(MIN_MEMORY_LIMIT);
        p.memory_limit_auto = false;
        let why = format!(
            "Memory limit {} MiB: {CONTAINER_SHARE_PERCENT} % of the container's {} MiB ({})",
            p.memory_limit >> 20,
            found.bytes >> 20,
            found.file.display()
        );
        self.fit_memory_limit();
        why
    }

    /// Caps the budgets that hold spans to shares of `memory_limit`, leaving the rest for the
    /// agent itself (~12 MB), requests being read, and the allocator; a budget set lower stays.
    pub fn fit_memory_limit(&mut self) {
        let limit = self.pipeline.memory_limit;
        if limit == 0 {
            return;
        }
        let p = &mut self.pipeline;
        p.queue_max_bytes = p.queue_max_bytes.min(limit / 4);
        self.sampling.max_held_bytes = self.sampling.max_held_bytes.min(limit / 8);
        self.local.max_bytes = self.local.max_bytes.min(limit / 4);
    }

    /// The address a listener binds: `listen_all` moves loopback listeners to 0.0.0.0.
    pub fn bind_addr(&self, addr: SocketAddr) -> SocketAddr {
        if self.agent.listen_all && addr.ip().is_loopback() {
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
        match &self.agent.exporters {
            ExporterChoice::List(list) => (list.clone(), "set by the exporters setting".into()),
            ExporterChoice::Auto => match crate::config::aws_region(env) {
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

    /// The full default configuration as commented TOML (`sidetrace config default`): the
    /// top-level keys first (TOML puts them before any table), then each section.
    pub fn default_toml() -> String {
        let mut out = String::from(
            "# sidetrace configuration. Every key is optional; shown here with its default.\n\
             # Precedence: defaults < this file < environment (SIDETRACE_<KEY>) < command-line flags.\n",
        );
        let keys = Config::keys();
        let (top, nested): (Vec<_>, Vec<_>) = keys.iter().partition(|k| !k.name.contains('.'));
        let mut section = "";
        for key in top.into_iter().chain(nested) {
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

/// The X-Ray SDKs' daemon address variable.
pub const DAEMON_ADDRESS_VAR: &str = "AWS_XRAY_DAEMON_ADDRESS";

/// `AWS_XRAY_DAEMON_ADDRESS` as the SDKs read it: `host:port` (UDP and TCP), or
/// `tcp:host:port udp:host:port` in either order. Returns (UDP, TCP).
pub fn parse_daemon_address(text: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let resolve = |hp: &str| -> Result<SocketAddr, String> {
        use std::net::ToSocketAddrs;
        let bad = || format!("{hp:?} is not host:port (as in 127.0.0.1:2000)");
        // A name (the SDKs allow `localhost:2000`) is resolved once, at start.
        hp.to_socket_addrs()
            .map_err(|_| bad())?
            .find(SocketAddr::is_ipv4)
            .or_else(|| hp.to_socket_addrs().ok()?.next())
            .ok_or_else(bad)
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    match parts.as_slice() {
        [one] if !one.starts_with("tcp:") && !one.starts_with("udp:") => {
            let a = resolve(one)?;
            Ok((a, a))
        }
        [a, b] => {
            let (mut udp, mut tcp) = (None, None);
            for p in [a, b] {
                if let Some(hp) = p.strip_prefix("udp:") {
                    udp = Some(resolve(hp)?);
                } else if let Some(hp) = p.strip_prefix("tcp:") {
                    tcp = Some(resolve(hp)?);
                }
            }
            match (udp, tcp) {
                (Some(u), Some(t)) => Ok((u, t)),
                _ => Err(format!(
                    "{text:?}: expected \"tcp:host:port udp:host:port\""
                )),
            }
        }
        _ => Err(format!(
            "{text:?}: expected host:port or \"tcp:host:port udp:host:port\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::{parse_bool, parse_bytes, parse_duration};
    use crate::exporters::cloudwatch::config::parse_namespace;
    use crate::pipeline::DEFAULT_QUEUE_MAX_BYTES;
    use crate::telemetry::span_metrics::parse_buckets;

    #[test]
    fn the_x_ray_sdks_daemon_address_is_honoured() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            parse_daemon_address("127.0.0.1:2100").unwrap(),
            (a("127.0.0.1:2100"), a("127.0.0.1:2100"))
        );
        assert_eq!(
            parse_daemon_address("tcp:127.0.0.1:2101 udp:127.0.0.1:2102").unwrap(),
            (a("127.0.0.1:2102"), a("127.0.0.1:2101"))
        );
        assert_eq!(
            parse_daemon_address("udp:127.0.0.1:2102 tcp:127.0.0.1:2101").unwrap(),
            (a("127.0.0.1:2102"), a("127.0.0.1:2101"))
        );
        assert_eq!(
            parse_daemon_address("localhost:2000").unwrap().0.port(),
            2000
        );
        for bad in ["2000", "tcp:127.0.0.1:1", "udp:1.2.3.4:1 x", "a b c"] {
            assert!(parse_daemon_address(bad).is_err(), "{bad}");
        }
        let env = |v: &str| {
            (v == DAEMON_ADDRESS_VAR).then(|| "tcp:127.0.0.1:2201 udp:127.0.0.1:2202".to_owned())
        };
        let c = Config::load(None, &env, &[]).unwrap();
        assert_eq!(c.xray_udp.xray_udp_addr, a("127.0.0.1:2202"));
        assert_eq!(c.xray_proxy.xray_proxy_addr, Some(a("127.0.0.1:2201")));
        // SIDETRACE_* and flags win over the SDK variable.
        let c = Config::load(None, &env, &[("xray_udp_addr", "127.0.0.1:2300".into())]).unwrap();
        assert_eq!(c.xray_udp.xray_udp_addr, a("127.0.0.1:2300"));
    }
    use std::time::Duration;

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
        for key in Config::keys() {
            assert!(Config::default_toml().contains(&env_name(key.name)));
        }
    }

    #[test]
    fn a_memory_limit_caps_the_span_budgets() {
        let env = |k: &str| (k == "SIDETRACE_MEMORY_LIMIT").then(|| "24MiB".to_string());
        let c = Config::load(None, &env, &[("queue_max_bytes", "2MiB".into())]).unwrap();
        assert_eq!(c.pipeline.memory_limit, 24 << 20);
        assert_eq!(
            c.pipeline.queue_max_bytes,
            2 << 20,
            "a budget set lower stays"
        );
        assert_eq!(c.sampling.max_held_bytes, 3 << 20);
        assert_eq!(c.local.max_bytes, 6 << 20);

        let c = Config::load(None, &no_env, &[]).unwrap();
        assert_eq!(c.pipeline.memory_limit, 0);
        assert_eq!(
            c.pipeline.queue_max_bytes, DEFAULT_QUEUE_MAX_BYTES,
            "no limit: defaults"
        );

        let e = Config::load(None, &no_env, &[("memory_limit", "8MiB".into())]).unwrap_err();
        assert!(e[0].message.contains("16MiB"), "{e:?}");
    }

    #[test]
    fn without_a_memory_limit_the_container_limit_applies() {
        let cgroup = || {
            Some(ContainerLimit {
                bytes: 64 << 20,
                file: "/sys/fs/cgroup/memory.max".into(),
            })
        };
        let mut c = Config::load(None, &no_env, &[]).unwrap();
        let why = c.apply_container_limit(cgroup());
        assert_eq!(c.pipeline.memory_limit, 48 << 20, "75 % of 64 MiB");
        assert_eq!(
            c.pipeline.queue_max_bytes,
            12 << 20,
            "budgets follow the limit"
        );
        assert!(
            why.contains("48 MiB") && why.contains("/sys/fs/cgroup/memory.max"),
            "{why}"
        );

        let mut c = Config::load(None, &no_env, &[]).unwrap();
        assert!(c.apply_container_limit(None).contains("no container"));
        assert_eq!(c.pipeline.memory_limit, 0);
        for (set, want) in [("none", 0), ("0", 0), ("32MiB", 32 << 20)] {
            let mut c = Config::load(None, &no_env, &[("memory_limit", set.into())]).unwrap();
            let why = c.apply_container_limit(cgroup());
            assert_eq!(c.pipeline.memory_limit, want, "{set}: the setting wins");
            assert!(why.contains("memory_limit"), "{why}");
        }
        let mut c = Config::load(None, &no_env, &[("memory_limit", "auto".into())]).unwrap();
        c.apply_container_limit(cgroup());
        assert_eq!(c.pipeline.memory_limit, 48 << 20);
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
        assert_eq!(c.admin.admin_addr.port(), 1); // file
        assert_eq!(c.receivers.otlp_http_addr.port(), 3); // env beats file
        assert_eq!(c.receivers.otlp_grpc_addr.port(), 5); // flag beats env
        assert_eq!(c.local.max_traces, 5);
        assert_eq!(c.local.max_bytes, 1 << 20);
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

    #[test]
    fn every_key_is_read_from_toml_env_and_set_and_shown_by_config_default() {
        let default = Config::default_toml();
        let keys = Config::keys();
        assert!(keys.len() >= 40, "{}", keys.len());
        let mut names: Vec<&str> = keys.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), keys.len(), "a key is declared twice");
        for k in &keys {
            // config default shows it, with its env twin, and parses back to the default.
            let (_, short) = k.name.rsplit_once('.').unwrap_or(("", k.name));
            assert!(
                default.contains(&format!("\n{short} = {}\n", k.default)),
                "{}",
                k.name
            );
            assert!(
                default.contains(&format!("(env: {})", env_name(k.name))),
                "{}",
                k.name
            );
            // The TOML literal, as text, is what env and --set take.
            let text = flatten_toml(&format!("v = {}", k.default)).unwrap()[0]
                .1
                .clone();
            let var = env_name(k.name);
            let env = |v: &str| (v == var && !text.is_empty()).then(|| text.clone());
            let from_env = Config::load(None, &env, &[]).unwrap_or_else(|e| panic!("{e:?}"));
            let from_set = Config::load(None, &no_env, &[(k.name, text.clone())])
                .unwrap_or_else(|e| panic!("{}: {e:?}", k.name));
            assert_eq!(from_env, Config::default(), "{}", k.name);
            assert_eq!(from_set, Config::default(), "{}", k.name);
        }
        // And a changed value reaches the typed field through each path.
        let env = |v: &str| (v == "SIDETRACE_XRAY_CONCURRENCY").then(|| "3".to_string());
        assert_eq!(Config::load(None, &env, &[]).unwrap().xray.concurrency, 3);
        let c = Config::load(None, &no_env, &[("console.grace", "250ms".into())]).unwrap();
        assert_eq!(c.console.grace, Duration::from_millis(250));
        let c = Config::parse_toml("[sampling]\nkeep_errors = false\n", "t").unwrap();
        assert!(!c.sampling.keep_errors);
    }
}
