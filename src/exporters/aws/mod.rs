//! What the AWS exporters share: the SDK configuration (region, credentials and endpoints from
//! the SDK's default chain, its retries off: sidetrace owns retries) and one HTTP client.

pub mod credentials;
pub mod http;
pub mod signed;

use std::time::Duration;

pub use credentials::CachedCredentials;
pub use http::LazyClient;

/// The one HTTP client of every AWS SDK client (one connection pool, root certificates loaded
/// once, on first use).
pub fn http_client() -> LazyClient {
    static CLIENT: std::sync::OnceLock<LazyClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(Default::default).clone()
}

/// A plain hyper client for the calls sidetrace signs itself (OTLP to X-Ray, the sampling proxy).
pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// The one HTTPS (or plain HTTP, for local endpoints) client with the system's root
/// certificates, built on first use (loading the roots costs ~1 MB, so an idle agent does not
/// pay it) and shared: one connection pool.
pub fn https_client() -> std::io::Result<HttpsClient> {
    static CLIENT: std::sync::OnceLock<HttpsClient> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let client = build_https_client()?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

fn build_https_client() -> std::io::Result<HttpsClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
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

/// The X-Ray API base URL: `AWS_ENDPOINT_URL_XRAY` / `AWS_ENDPOINT_URL` as the SDKs read them,
/// else the regional endpoint.
pub fn xray_base_url(region: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    ["AWS_ENDPOINT_URL_XRAY", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| env(v).filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("https://xray.{region}.amazonaws.com"))
        .trim_end_matches('/')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_follows_the_sdk_variables() {
        let none = |_: &str| None;
        assert_eq!(
            xray_base_url("eu-west-1", &none),
            "https://xray.eu-west-1.amazonaws.com"
        );
        let set = |v: &str| (v == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:5000/".to_owned());
        assert_eq!(xray_base_url("eu-west-1", &set), "http://127.0.0.1:5000");
    }
}
