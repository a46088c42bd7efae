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
    ];
}
