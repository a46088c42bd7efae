//! The PutMetricData call through aws-sdk-cloudwatch (pinned to 1.99.0, which speaks the awsQuery
//! protocol), with errors classified where they are born.

use std::time::SystemTime;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use super::datums::{Datum, Unit};
use crate::exporters::retry::{ExportError, classify_sdk_error};

/// A cheap-to-clone CloudWatch client with the SDK's own retries off (sidetrace owns retries).
#[derive(Debug, Clone)]
pub struct CloudwatchClient {
    client: aws_sdk_cloudwatch::Client,
}

fn to_sdk(d: &Datum, timestamp: DateTime) -> MetricDatum {
    let dims = d
        .dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(*name).value(value).build())
        .collect();
    let b = MetricDatum::builder()
        .metric_name(d.metric)
        .set_dimensions(Some(dims))
        .timestamp(timestamp)
        .unit(match d.unit {
            Unit::Milliseconds => StandardUnit::Milliseconds,
            Unit::Count => StandardUnit::Count,
        });
    if d.counts.is_empty() {
        b.value(d.values.first().copied().unwrap_or(0.0)).build()
    } else {
        b.set_values(Some(d.values.clone()))
            .set_counts(Some(d.counts.clone()))
            .build()
    }
}

impl CloudwatchClient {
    /// Uses region, credentials and endpoint (`AWS_ENDPOINT_URL[_CLOUDWATCH]`) from the SDK config.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        CloudwatchClient {
            client: aws_sdk_cloudwatch::Client::new(config),
        }
    }

    /// Sends one request's datums, all stamped with `timestamp`.
    pub async fn put(
        &self,
        namespace: &str,
        datums: &[Datum],
        timestamp: SystemTime,
    ) -> Result<(), ExportError> {
        let ts = DateTime::from(timestamp);
        self.client
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(datums.iter().map(|d| to_sdk(d, ts)).collect()))
            .send()
            .await
            .map(drop)
            .map_err(classify_sdk_error)
    }
}
