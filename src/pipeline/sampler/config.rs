//! The `sampling_ratio` and `sampling.*` keys.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;

use crate::config::{Key, Section, parse_duration};
use crate::exporters::xray::rules::{self, Rules};
use crate::pipeline::sampler::{
    DEFAULT_DECISION_CACHE, DEFAULT_GRACE, DEFAULT_MAX_HELD_BYTES, DEFAULT_MAX_OPEN_TRACES,
    DEFAULT_MAX_WAIT, MAX_GRACE,
};
use crate::pipeline::sampler::{Head, Policies, Sampler, SamplingStats, SlowThresholds};

/// How traces are sampled (see `pipeline::sampler`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
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

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            ratio: None,
            xray_rules: true,
            keep_errors: true,
            slow_threshold: None,
            slow_thresholds: Vec::new(),
            grace: DEFAULT_GRACE,
            max_wait: DEFAULT_MAX_WAIT,
            max_open_traces: DEFAULT_MAX_OPEN_TRACES,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            decision_cache: DEFAULT_DECISION_CACHE,
            rate_limit: None,
            xray_targets_interval: rules::TARGETS_INTERVAL,
        }
    }
}

impl SamplingConfig {
    /// Whether the account's X-Ray rules decide at the head: no ratio, `sampling.xray_rules`
    /// on, and the X-Ray exporter running.
    pub fn uses_xray_rules(&self, xray_exporter: bool) -> bool {
        self.ratio.is_none() && self.xray_rules && xray_exporter
    }
}

/// Builds the sampler: a ratio; the account's X-Ray rules, polled on their own task with
/// `xray` (given when [`SamplingConfig::uses_xray_rules`]); or keep all.
pub fn build(
    s: &SamplingConfig,
    xray: Option<aws_sdk_xray::Client>,
    stats: Arc<SamplingStats>,
) -> Sampler {
    let head = if let Some(r) = s.ratio {
        info!(ratio = r, "Sampling: consistent trace-ID ratio.");
        Head::Ratio(r)
    } else if let Some(client) = xray.filter(|_| s.uses_xray_rules(true)) {
        let rules = Arc::new(Mutex::new(Rules::fallback(tokio::time::Instant::now())));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 ^ u64::from(std::process::id()));
        tokio::spawn(rules::poll(
            client,
            rules.clone(),
            rules::client_id(seed),
            s.xray_targets_interval,
        ));
        info!(
            targets_interval_ms = s.xray_targets_interval.as_millis() as u64,
            "Sampling: X-Ray centralised rules (GetSamplingRules every 5 min, targets and statistics on an interval)."
        );
        Head::Rules(rules)
    } else {
        Head::All
    };
    let mut slow = SlowThresholds {
        default: s.slow_threshold,
        ..SlowThresholds::default()
    };
    for (svc, op, d) in &s.slow_thresholds {
        match op {
            Some(op) => slow.by_operation.insert((svc.clone(), op.clone()), *d),
            None => slow.by_service.insert(svc.clone(), *d),
        };
    }
    Sampler::new(
        Policies {
            head,
            slow,
            config: s.clone(),
        },
        stats,
    )
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

fn show_opt_duration(d: Option<Duration>) -> String {
    crate::config::parse::toml_string(
        &d.map(crate::config::parse::show_duration)
            .unwrap_or_default(),
    )
}

type K = Key<SamplingConfig>;

impl Section for SamplingConfig {
    const KEYS: &'static [K] = &[
        K::custom(
            "sampling_ratio",
            "Keep this fraction (0-1) of traces, chosen consistently by trace ID in every agent; unset: X-Ray rules in AWS mode, everything locally.",
            |c, v| {
                c.ratio = if v.trim().is_empty() { None } else { Some(parse_ratio(v)?) };
                Ok(())
            },
            |c| crate::config::parse::toml_string(&c.ratio.map(|r| r.to_string()).unwrap_or_default()),
        )
        .with_value_name("RATIO")
        .flag(),
        K::bool(
            "sampling.xray_rules",
            "In AWS mode without sampling_ratio, apply the account's X-Ray sampling rules (default rule: 1 trace/s + 5%); false keeps everything.",
            |c| &mut c.xray_rules,
        ),
        K::bool(
            "sampling.keep_errors",
            "Keep every trace with an error, fault or throttle, whatever the ratio or rules said.",
            |c| &mut c.keep_errors,
        ),
        K::custom(
            "sampling.slow_threshold",
            "Keep every trace whose entry span takes longer than this (e.g. 1s); empty: off.",
            |c, v| {
                c.slow_threshold = if v.trim().is_empty() || v.trim() == "off" {
                    None
                } else {
                    Some(parse_duration(v)?)
                };
                Ok(())
            },
            |c| show_opt_duration(c.slow_threshold),
        ),
        K::custom(
            "sampling.slow_thresholds",
            "Per service or operation: \"checkout=500ms,checkout:GET /cart=200ms\".",
            |c, v| {
                c.slow_thresholds = parse_slow_list(v)?;
                Ok(())
            },
            |c| {
                let items: Vec<String> = c
                    .slow_thresholds
                    .iter()
                    .map(|(svc, op, d)| {
                        let d = crate::config::parse::show_duration(*d);
                        match op {
                            Some(op) => format!("{svc}:{op}={d}"),
                            None => format!("{svc}={d}"),
                        }
                    })
                    .collect();
                crate::config::parse::toml_string(&items.join(","))
            },
        ),
        K::custom(
            "sampling.grace",
            "Hold a trace this long after its entry span for late spans before deciding (at most 30s).",
            |c, v| {
                let d = parse_duration(v)?;
                if d > MAX_GRACE {
                    return Err("must be at most 30s".into());
                }
                c.grace = d;
                Ok(())
            },
            |c| crate::config::parse::toml_string(&crate::config::parse::show_duration(c.grace)),
        ),
        K::duration(
            "sampling.max_wait",
            "Decide traces whose entry span never arrives after this long.",
            |c| &mut c.max_wait,
        ),
        K::count(
            "sampling.max_open_traces",
            "Most traces held undecided; beyond it the oldest are decided early (counted).",
            |c| &mut c.max_open_traces,
        ),
        K::count(
            "sampling.max_held_bytes",
            "Most bytes of requests held for undecided traces; beyond it the oldest are decided early.",
            |c| &mut c.max_held_bytes,
        ),
        K::count(
            "sampling.decision_cache",
            "Trace decisions remembered so late spans follow them (4 bytes each).",
            |c| &mut c.decision_cache,
        ),
        K::custom(
            "sampling.rate_limit",
            "Most traces kept per second per service (0: no limit), a safety valve against a noisy service.",
            |c, v| {
                let r: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{v:?} is not a number of traces per second"))?;
                c.rate_limit = (r > 0.0).then_some(r);
                Ok(())
            },
            |c| c.rate_limit.map_or("0".into(), |r| r.to_string()),
        ),
        K::duration(
            "sampling.xray_targets_interval",
            "How often X-Ray sampling targets are fetched and rule statistics reported.",
            |c| &mut c.xray_targets_interval,
        ),
    ];
}
