//! The second way into X-Ray: OTLP/HTTP protobuf signed with SigV4 to
//! `https://xray.<region>.amazonaws.com/v1/traces` (accounts with Transaction Search), through
//! the shared OTLP splicer and sender, within the endpoint's limits: 10,000 spans and 5 MB per
//! request, 200 KB per span (CloudWatch OTLP endpoint documentation).

use std::time::Duration;

use crate::exporters::otlp::{Limits, OtlpSettings};
use crate::exporters::retry::RetryPolicy;

/// Endpoint limits (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch-OTLPEndpoint.html).
pub const MAX_SPANS_PER_REQUEST: usize = 10_000;
pub const MAX_REQUEST_BYTES: usize = 5_000_000;
pub const MAX_SPAN_BYTES: usize = 200_000;
/// The SigV4 service name of the X-Ray OTLP endpoint.
pub const SIGNING_SERVICE: &str = "xray";

/// The traces URL: `AWS_ENDPOINT_URL_XRAY` / `AWS_ENDPOINT_URL` (base URLs, as the SDKs read
/// them) with `/v1/traces` appended, else the regional endpoint.
pub fn traces_url(region: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    format!(
        "{}/v1/traces",
        crate::exporters::aws::xray_base_url(region, env)
    )
}

/// The OTLP exporter's settings for the X-Ray endpoint.
pub fn settings(idle_flush: Duration, concurrency: usize, retry: RetryPolicy) -> OtlpSettings {
    OtlpSettings {
        name: "xray",
        limits: Limits {
            max_spans: MAX_SPANS_PER_REQUEST,
            max_bytes: MAX_REQUEST_BYTES,
            max_span_bytes: MAX_SPAN_BYTES,
            idle: idle_flush,
        },
        concurrency,
        retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::otlp::{HttpSender, OtlpExporter};
    use crate::exporters::{Export, ExporterStats};
    use crate::model::{DropReason, Protocol};
    use crate::receivers::decode::decode_request;
    use crate::workload::{Rng, Shape, request};
    use prost::Message;
    use tokio::time::Instant;

    #[test]
    fn urls_follow_the_sdk_variables() {
        assert_eq!(
            traces_url("eu-west-1", &|_| None),
            "https://xray.eu-west-1.amazonaws.com/v1/traces"
        );
        let env = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:5000/".to_string());
        assert_eq!(
            traces_url("eu-west-1", &env),
            "http://127.0.0.1:5000/v1/traces"
        );
    }

    #[tokio::test]
    async fn every_span_is_counted_when_the_endpoint_is_gone() {
        let req = request(
            &mut Rng::new(4),
            &Shape {
                spans: 25_000,
                extra_attributes: 0,
                ..Shape::default()
            },
        );
        let batch = decode_request(req.encode_to_vec().into(), Protocol::Grpc)
            .unwrap()
            .batch;
        let stats = ExporterStats::new("xray");
        let sender = HttpSender::new(
            "http://127.0.0.1:9/v1/traces".into(),
            Duration::from_millis(100),
            None,
        )
        .unwrap();
        let retry = RetryPolicy {
            max_elapsed: Duration::ZERO,
            ..RetryPolicy::default()
        };
        let mut x = OtlpExporter::new(
            crate::exporters::otlp::Sender::Http(sender),
            settings(Duration::from_secs(60), 4, retry),
            stats.clone(),
        );
        x.export(&batch, Instant::now()).await;
        // Two full requests went out; the remainder waits for more spans or the idle timer.
        assert_eq!(x.pending_spans(), 5_000);
        x.shutdown().await;
        // Nothing listens on port 9 and the retry budget is zero: all 25,000 are counted as dropped.
        assert_eq!(stats.dropped_spans(DropReason::RetryExhausted), 25_000);
        assert_eq!(stats.pending(), 0);
    }
}
