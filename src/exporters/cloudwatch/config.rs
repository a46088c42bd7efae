//! The `cloudwatch.*` keys.

use std::time::Duration;

use crate::config::{Key, Section};

/// How often span metrics are published (one minute: CloudWatch's standard resolution, so each
/// datum is one data point per period).
pub const DEFAULT_CLOUDWATCH_INTERVAL: Duration = Duration::from_secs(60);
/// The default CloudWatch namespace.
pub const DEFAULT_CLOUDWATCH_NAMESPACE: &str = "Sidetrace";
/// Per-attempt timeout of one PutMetricData call.
pub const DEFAULT_CLOUDWATCH_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one publish may keep being retried: half the interval, so publishes never pile up.
pub const DEFAULT_CLOUDWATCH_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(30);

/// The dimensions of one set of CloudWatch series: Service always, Operation and Version when
/// chosen. Percentiles cannot be combined across series afterwards, so a service-wide p99 (what
/// an alarm or a deployment rollback watches) needs its own `[Service]` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DimensionSet {
    pub operation: bool,
    pub version: bool,
}

impl DimensionSet {
    pub const SERVICE: DimensionSet = DimensionSet {
        operation: false,
        version: false,
    };

    /// The `auto` sets: per operation and the service roll-up; with versions on, each carries
    /// Version and a `[Service]` roll-up over all versions stays beside them.
    pub fn auto(versions: bool) -> Vec<DimensionSet> {
        let mut sets = vec![DimensionSet {
            operation: true,
            version: versions,
        }];
        if versions {
            sets.push(DimensionSet {
                operation: false,
                version: true,
            });
        }
        sets.push(DimensionSet::SERVICE);
        sets
    }

    fn show(&self) -> String {
        let mut names = vec!["Service"];
        if self.operation {
            names.push("Operation");
        }
        if self.version {
            names.push("Version");
        }
        names.join(",")
    }
}

/// `Service,Operation;Service`: sets separated by `;`, dimension names by `,`.
pub fn parse_dimension_sets(text: &str) -> Result<Option<Vec<DimensionSet>>, String> {
    if text.trim() == "auto" {
        return Ok(None);
    }
    let mut sets: Vec<DimensionSet> = Vec::new();
    for set in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (mut service, mut d) = (false, DimensionSet::SERVICE);
        for name in set.split(',').map(str::trim) {
            let seen = match name {
                "Service" => std::mem::replace(&mut service, true),
                "Operation" => std::mem::replace(&mut d.operation, true),
                "Version" => std::mem::replace(&mut d.version, true),
                other => {
                    return Err(format!(
                        "unknown dimension {other:?} in {set:?} (Service, Operation, Version)"
                    ));
                }
            };
            if seen {
                return Err(format!("{name} twice in {set:?}"));
            }
        }
        if !service {
            return Err(format!("{set:?} has no Service: every set needs it"));
        }
        if !sets.contains(&d) {
            sets.push(d);
        }
    }
    if sets.is_empty() {
        return Err("no dimension set: use auto or e.g. \"Service,Operation;Service\"".into());
    }
    Ok(Some(sets))
}

/// Settings of the CloudWatch exporter (span metrics → PutMetricData).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudwatchConfig {
    pub namespace: String,
    pub interval: Duration,
    pub request_timeout: Duration,
    pub retry_max_elapsed: Duration,
    /// `None`: [`DimensionSet::auto`].
    pub dimension_sets: Option<Vec<DimensionSet>>,
}

impl Default for CloudwatchConfig {
    fn default() -> Self {
        CloudwatchConfig {
            namespace: DEFAULT_CLOUDWATCH_NAMESPACE.into(),
            interval: DEFAULT_CLOUDWATCH_INTERVAL,
            request_timeout: DEFAULT_CLOUDWATCH_REQUEST_TIMEOUT,
            retry_max_elapsed: DEFAULT_CLOUDWATCH_RETRY_MAX_ELAPSED,
            dimension_sets: None,
        }
    }
}

/// CloudWatch: a namespace is 1–255 characters and may not start with `:` (PutMetricData model).
pub fn parse_namespace(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > 255 || t.starts_with(':') {
        return Err(format!(
            "{text:?} is not a CloudWatch namespace (1-255 characters, not starting with ':')"
        ));
    }
    Ok(t.to_owned())
}

type K = Key<CloudwatchConfig>;

impl Section for CloudwatchConfig {
    const KEYS: &'static [K] = &[
        K::custom(
            "cloudwatch.namespace",
            "CloudWatch: namespace of the span metrics (Latency, Requests, Errors, Faults, Throttles).",
            |c, v| {
                c.namespace = parse_namespace(v)?;
                Ok(())
            },
            |c| crate::config::parse::toml_string(&c.namespace),
        ),
        K::custom(
            "cloudwatch.interval",
            "CloudWatch: how often span metrics are published with PutMetricData.",
            |c, v| {
                let d = crate::config::parse_duration(v)?;
                if d < Duration::from_secs(1) {
                    return Err("must be at least 1s".into());
                }
                c.interval = d;
                Ok(())
            },
            |c| crate::config::parse::toml_string(&crate::config::parse::show_duration(c.interval)),
        ),
        K::duration(
            "cloudwatch.request_timeout",
            "CloudWatch: timeout of one PutMetricData attempt.",
            |c| &mut c.request_timeout,
        ),
        K::duration(
            "cloudwatch.retry_max_elapsed",
            "CloudWatch: how long a publish is retried; what is still unsent goes out with the next interval.",
            |c| &mut c.retry_max_elapsed,
        ),
        K::custom(
            "cloudwatch.dimension_sets",
            "CloudWatch: dimension sets published, e.g. \"Service,Operation;Service\"; auto: [Service, Operation] and the [Service] roll-up (with span_metrics.service_version, Version is added to both and [Service] stays).",
            |c, v| {
                c.dimension_sets = parse_dimension_sets(v)?;
                Ok(())
            },
            |c| {
                let text = match &c.dimension_sets {
                    None => "auto".to_string(),
                    Some(sets) => sets
                        .iter()
                        .map(DimensionSet::show)
                        .collect::<Vec<_>>()
                        .join(";"),
                };
                crate::config::parse::toml_string(&text)
            },
        ),
    ];
}
