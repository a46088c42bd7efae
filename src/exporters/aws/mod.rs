//! What the AWS exporters share: the SDK configuration (region, credentials and endpoints from
//! the SDK's default chain, its retries off: sidetrace owns retries) and one HTTP client.

pub mod http;

use std::time::Duration;

pub use http::LazyClient;

/// The one HTTP client of every AWS SDK client (one connection pool, root certificates loaded
/// once, on first use).
pub fn http_client() -> LazyClient {
    static CLIENT: std::sync::OnceLock<LazyClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(Default::default).clone()
}

/// Loads region, credentials and endpoint the SDK's way: environment (`AWS_REGION`,
/// `AWS_ENDPOINT_URL[_XRAY]`, keys), profile files, web identity, ECS task role, instance profile.
pub async fn sdk_config(
    region: Option<String>,
    request_timeout: Duration,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(request_timeout)
                .build(),
        );
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    loader.load().await
}
