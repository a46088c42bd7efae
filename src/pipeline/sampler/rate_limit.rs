//! `sampling.rate_limit`: a token bucket per service, so a noisy service cannot take every kept
//! trace.

use tokio::time::Instant;

/// One service's tokens: up to `max(rate, 1)`, refilled at `rate` per second.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            tokens: rate.max(1.0),
            at: now,
        }
    }

    /// Takes a token for one more kept trace; false when the service is over its rate.
    pub(super) fn take(&mut self, rate: f64, now: Instant) -> bool {
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
