//! The HTTP client the AWS SDK clients use: the SDK's own default (hyper + rustls/aws-lc, proxy
//! from the environment), built on the first request instead of when the config loads.
//!
//! Building it loads the system's root certificates, ~17 ms here (every file under
//! /etc/ssl/certs), which would otherwise sit between start and `/readyz`: the SDK asks for a
//! connector while `aws_config::load` runs. The listeners now come up first and the roots load
//! on a blocking thread when the first AWS call is made.

use std::sync::{Arc, OnceLock};

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// The SDK's default HTTPS client, as `aws-smithy-runtime` builds it for BehaviorVersion
/// 2025-08-07 and later (its connectors are cached per settings, so calls share one pool).
fn sdk_default() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut b =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

/// An HTTP client whose connectors are made on their first request.
#[derive(Debug, Clone)]
pub struct LazyClient {
    inner: SharedHttpClient,
}

impl LazyClient {
    pub fn new() -> Self {
        LazyClient {
            inner: sdk_default(),
        }
    }
}

impl Default for LazyClient {
    fn default() -> Self {
        LazyClient::new()
    }
}

impl HttpClient for LazyClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(LazyConnector {
            inner: self.inner.clone(),
            settings: settings.clone(),
            components: components.clone(),
            connector: Arc::default(),
        })
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct LazyConnector {
    inner: SharedHttpClient,
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
    connector: Arc<OnceLock<SharedHttpConnector>>,
}

impl HttpConnector for LazyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if let Some(c) = self.connector.get() {
            return c.call(request);
        }
        // The first call builds the connector on a blocking thread: loading the roots must not
        // hold up the worker that also answers receivers and `/readyz`.
        let (inner, settings, components) = (
            self.inner.clone(),
            self.settings.clone(),
            self.components.clone(),
        );
        let slot = self.connector.clone();
        HttpConnectorFuture::new(async move {
            let built =
                tokio::task::spawn_blocking(move || inner.http_connector(&settings, &components))
                    .await
                    .map_err(|e| ConnectorError::other(e.into(), None))?;
            let c = slot.get_or_init(|| built).clone();
            c.call(request).await
        })
    }
}
