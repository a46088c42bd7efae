//! TLS for the OTLP exporter: the system's roots or a given CA (`OTEL_EXPORTER_OTLP_CERTIFICATE`),
//! and a client certificate for mutual TLS (`…_CLIENT_CERTIFICATE`, `…_CLIENT_KEY`). One rustls
//! configuration, loaded at start so that a bad file stops the agent with its name; each backend
//! gets a connector from it (HTTP/1.1 for OTLP/HTTP, HTTP/2 by ALPN for OTLP/gRPC).

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{ConfigBuilderExt, FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::exporters::aws::HttpsClient;

/// Where the trust and the identity come from (PEM file paths; empty means not set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Trusted CA certificates; replaces the system's roots, as the SDKs' exporters do.
    pub ca: String,
    pub client_certificate: String,
    pub client_key: String,
}

/// A loaded client TLS configuration.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Reads the files (or the system's roots when no CA is given). Errors name the file.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if files.ca.is_empty() {
            builder
                .with_native_roots()
                .map_err(|e| format!("system root certificates: {e}"))?
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(&files.ca)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", files.ca))?;
            }
            builder.with_root_certificates(roots)
        };
        let config = match (
            files.client_certificate.is_empty(),
            files.client_key.is_empty(),
        ) {
            (true, true) => builder.with_no_client_auth(),
            (false, false) => {
                let chain = read_certs(&files.client_certificate)?;
                let key = PrivateKeyDer::from_pem_file(&files.client_key)
                    .map_err(|e| format!("{}: no private key read ({e})", files.client_key))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate and key: {e}"))?
            }
            _ => {
                return Err(
                    "a client certificate needs its key, and a key its certificate: set both"
                        .into(),
                );
            }
        };
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// An HTTP/1.1 client (https, and http as well); `server_name` is what the server's
    /// certificate must name when the URL holds an address (a `dns+https:` backend).
    pub fn http_client(&self, server_name: Option<&str>) -> Result<HttpsClient, String> {
        let connector = self.connector(server_name, false, None)?;
        Ok(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        )
    }

    /// A connector for a gRPC channel: TLS for https URLs with `h2` by ALPN, as gRPC requires.
    pub fn grpc_connector(
        &self,
        server_name: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<HttpsConnector<HttpConnector>, String> {
        self.connector(server_name, true, Some(connect_timeout))
    }

    fn connector(
        &self,
        server_name: Option<&str>,
        h2: bool,
        connect_timeout: Option<Duration>,
    ) -> Result<HttpsConnector<HttpConnector>, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(connect_timeout);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_or_http();
        let builder = match server_name {
            Some(name) => {
                let name = ServerName::try_from(name.to_owned())
                    .map_err(|_| format!("{name:?} is not a TLS server name"))?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        Ok(match h2 {
            true => builder.enable_http2().wrap_connector(http),
            false => builder.enable_http1().wrap_connector(http),
        })
    }
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate in it"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("sidetrace-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let missing = dir.join("missing.pem").display().to_string();
        let err = Tls::load(&TlsFiles {
            ca: missing.clone(),
            ..TlsFiles::default()
        })
        .unwrap_err();
        assert!(err.contains(&missing), "{err}");
        let ca = not_pem.display().to_string();
        let err = Tls::load(&TlsFiles {
            ca: ca.clone(),
            ..TlsFiles::default()
        })
        .unwrap_err();
        assert!(err.contains(&ca) && err.contains("no PEM"), "{err}");
        let err = Tls::load(&TlsFiles {
            client_certificate: ca,
            ..TlsFiles::default()
        })
        .unwrap_err();
        assert!(err.contains("set both"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
