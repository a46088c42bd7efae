//! The second way into X-Ray: OTLP/HTTP protobuf signed with SigV4 to
//! `https://xray.<region>.amazonaws.com/v1/traces` (accounts with Transaction Search), through
//! the shared OTLP splicer and sender, within the endpoint's limits: 10,000 spans and 5 MB per
//! request, 200 KB per span (CloudWatch OTLP endpoint documentation).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::exporters::otlp::{HttpSender, Limits, Request, Splicer};
use crate::exporters::retry::{self, Backoff, RetryPolicy, Sends};
use crate::exporters::{Export, ExporterStats};
use crate::model::Batch;

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

/// The OTLP + SigV4 X-Ray exporter.
#[derive(Debug)]
pub struct OtlpModeExporter {
    sender: Arc<HttpSender>,
    splicer: Splicer,
    retry: RetryPolicy,
    stats: Arc<ExporterStats>,
    sends: Sends,
    full: Vec<Request>,
}

impl OtlpModeExporter {
    pub fn new(
        sender: HttpSender,
        idle_flush: Duration,
        concurrency: usize,
        retry: RetryPolicy,
        stats: Arc<ExporterStats>,
    ) -> Self {
        OtlpModeExporter {
            sender: Arc::new(sender),
            splicer: Splicer::new(Limits {
                max_spans: MAX_SPANS_PER_REQUEST,
                max_bytes: MAX_REQUEST_BYTES,
                max_span_bytes: MAX_SPAN_BYTES,
                idle: idle_flush,
            }),
            retry,
            stats,
            sends: Sends::new(concurrency),
            full: Vec::new(),
        }
    }

    /// Sends every request that filled up, waiting (backpressure) only for a free call slot.
    async fn send_full(&mut self) {
        for request in std::mem::take(&mut self.full) {
            self.send(request).await;
        }
    }

    async fn send(&mut self, Request { body, spans }: Request) {
        let (sender, stats, policy) = (self.sender.clone(), self.stats.clone(), self.retry.clone());
        self.sends
            .spawn(move |seed| async move {
                let mut backoff = Backoff::new(policy, seed);
                let result = retry::deliver(
                    &mut backoff,
                    "xray",
                    spans,
                    || sender.attempt(body.clone()),
                    |reason| stats.retried(reason),
                )
                .await;
                stats.pending_add(-(spans as i64));
                match result {
                    Ok(rejected) => {
                        let rejected = rejected.min(spans);
                        stats.rejected("otlp_partial_success", rejected);
                        stats.sent(spans - rejected);
                    }
                    Err(reason) => stats.dropped(reason, spans),
                }
            })
            .await;
    }
}

impl Export for OtlpModeExporter {
    async fn export(&mut self, batch: &Batch, now: Instant) {
        let added = self.splicer.add(batch, now, &mut self.full);
        self.stats.rejected("span_too_large", added.too_large);
        self.stats.pending_add(added.spans as i64);
        self.send_full().await;
    }

    async fn tick(&mut self, now: Instant) {
        if self.splicer.is_due(now)
            && let Some(r) = self.splicer.take()
        {
            self.send(r).await;
        }
    }

    async fn shutdown(&mut self) {
        if let Some(r) = self.splicer.take() {
            self.send(r).await;
        }
        self.sends.wait_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DropReason, Protocol};
    use crate::receivers::decode::decode_request;
    use crate::workload::{Rng, Shape, request};
    use prost::Message;

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
        let mut x = OtlpModeExporter::new(sender, Duration::from_secs(60), 4, retry, stats.clone());
        x.export(&batch, Instant::now()).await;
        // Two full requests went out; the remainder waits for more spans or the idle timer.
        assert_eq!(x.splicer.pending_spans(), 5_000);
        x.shutdown().await;
        // Nothing listens on port 9 and the retry budget is zero: all 25,000 are counted as dropped.
        assert_eq!(stats.dropped_spans(DropReason::RetryExhausted), 25_000);
        assert_eq!(stats.pending(), 0);
    }
}
