//! Export outcomes and the retry policy every AWS exporter shares: full-jitter exponential
//! backoff, bounded in time, honouring a server's retry hint.

use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::model::DropReason;

/// Error codes AWS uses for throttling (aws-runtime's `THROTTLING_ERRORS` plus X-Ray's own).
pub(crate) const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// How one export call failed, classified where the error is born (the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Throttling, 5xx, 408, timeouts, connection errors: try again later.
    #[error("retryable ({reason}): {message}")]
    Retryable {
        /// A bounded label: `throttled`, `server_error`, `timeout`, `connection`, `credentials`.
        reason: &'static str,
        message: String,
        /// The server's hint, when it gave one.
        after: Option<Duration>,
    },
    /// Anything else: sending the same request again cannot succeed.
    #[error("permanent ({code}): {message}")]
    Permanent { code: String, message: String },
}

/// A `Retry-After` header in seconds, when the server sent one.
fn retry_after(response: &HttpResponse) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Classifies an AWS SDK error (any service): throttling, 5xx, 408, timeouts and connection
/// failures are retryable; the rest is permanent.
pub fn classify_sdk_error<E>(err: SdkError<E, HttpResponse>) -> ExportError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = aws_smithy_types::error::display::DisplayErrorContext(&err).to_string();
    let retry = |reason, after| ExportError::Retryable {
        reason,
        message: message.clone(),
        after,
    };
    match &err {
        SdkError::TimeoutError(_) => retry("timeout", None),
        SdkError::DispatchFailure(d) if d.is_timeout() => retry("timeout", None),
        SdkError::DispatchFailure(_) => retry("connection", None),
        // Credentials that cannot be resolved yet (e.g. the ECS endpoint at start-up) show up here.
        SdkError::ConstructionFailure(_) => retry("credentials", None),
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            if status >= 500 || status == 408 || status == 429 {
                retry("server_error", None)
            } else {
                ExportError::Permanent {
                    code: format!("http_{status}"),
                    message,
                }
            }
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or("Unknown").to_owned();
            if status == 429 || THROTTLING_CODES.contains(&code.as_str()) {
                retry("throttled", retry_after(s.raw()))
            } else if status >= 500 || status == 408 {
                retry("server_error", retry_after(s.raw()))
            } else {
                ExportError::Permanent { code, message }
            }
        }
        _ => retry("connection", None),
    }
}

/// An error with its causes (`client error (Connect): invalid peer certificate: UnknownIssuer`):
/// the outer text alone rarely says what to fix.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Some errors repeat their cause in their own text.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff And Jitter"),
/// as the X-Ray daemon uses, bounded by a total time budget.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Give up (and count the spans dropped) once retrying would pass this much time.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// The state of one request's retries.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    started: Instant,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(policy: RetryPolicy, seed: u64) -> Self {
        Backoff {
            policy,
            started: Instant::now(),
            attempt: 0,
            rng: seed | 1,
        }
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next delay, or `None` when the time budget would be exceeded. A server hint is
    /// clamped into [base, cap] so a bad hint can neither hammer nor stall us.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Option<Duration> {
        let ceiling = self
            .policy
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.policy.cap);
        self.attempt += 1;
        let delay = match hint {
            Some(h) => h.clamp(self.policy.base, self.policy.cap),
            None => ceiling.mul_f64(self.random_unit()),
        };
        (self.started.elapsed() + delay <= self.policy.max_elapsed).then_some(delay)
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// At most `concurrency` sends in flight, each on its own task with its own jitter seed; the
/// exporter waits for a free slot (that wait is its backpressure) and, at shutdown, for all.
#[derive(Debug)]
pub struct Sends {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    concurrency: u32,
    seed: u64,
}

impl Sends {
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Sends {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency)),
            concurrency: concurrency as u32,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Waits for a free slot, then runs `send(seed)` on its own task.
    pub async fn spawn<F, Fut>(&mut self, send: F)
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let fut = send(self.seed);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }

    /// Waits until every send has finished.
    pub async fn wait_all(&self) {
        let _ = self.permits.acquire_many(self.concurrency).await;
    }
}

/// The one retry loop of every exporter: runs `attempt` until it succeeds, fails permanently,
/// or the backoff's time budget is spent, calling `on_retry` before each retry. The error says
/// which drop reason the request's `items` (spans, or datums) come under; what the caller then
/// does with them (drop, or carry over) is its own.
pub async fn deliver<T, F, Fut>(
    backoff: &mut Backoff,
    exporter: &'static str,
    items: u64,
    mut attempt: F,
    mut on_retry: impl FnMut(&'static str),
) -> Result<T, DropReason>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ExportError>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(ExportError::Retryable {
                reason,
                message,
                after,
            }) => match backoff.next_delay(after) {
                Some(delay) => {
                    on_retry(reason);
                    debug!(exporter, reason, attempt = backoff.attempts(), delay_ms = delay.as_millis() as u64, error = %message, "Export failed; retrying.");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    warn!(exporter, reason, items, error = %message, "Export kept failing; retry budget spent.");
                    return Err(DropReason::RetryExhausted);
                }
            },
            Err(ExportError::Permanent { code, message }) => {
                warn!(exporter, code = %code, items, error = %message, "Destination refused the request; dropping it.");
                return Err(DropReason::PermanentError);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_grow_under_the_cap_and_stop_at_the_budget() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(5),
        };
        let mut b = Backoff::new(policy, 42);
        let mut total = Duration::ZERO;
        let mut n = 0;
        while let Some(d) = b.next_delay(None) {
            assert!(d <= Duration::from_secs(1));
            let ceiling = Duration::from_millis(100) * (1 << n.min(16));
            assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
            tokio::time::advance(d).await;
            total += d;
            n += 1;
        }
        assert!(total <= Duration::from_secs(5));
        assert!(n > 5, "several retries fit in the budget");
    }

    #[tokio::test(start_paused = true)]
    async fn hints_are_clamped() {
        let mut b = Backoff::new(RetryPolicy::default(), 1);
        assert_eq!(
            b.next_delay(Some(Duration::ZERO)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(10))
        );
    }
}
