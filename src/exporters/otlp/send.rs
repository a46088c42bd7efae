//! Sends OTLP/HTTP protobuf requests, signed with SigV4 when the destination is AWS: one attempt
//! at a time, its failure classified as the OTLP spec says (429, 408 and 5xx are retryable).

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;

use crate::exporters::aws::HttpsClient;
use crate::exporters::retry::ExportError;
use crate::proto::ExportTraceServiceResponse;

/// Who signs, for which region and SigV4 service name.
#[derive(Debug, Clone)]
pub struct Signer {
    pub credentials: crate::exporters::aws::CachedCredentials,
    pub region: String,
    pub service: &'static str,
}

/// One OTLP/HTTP destination.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: HttpsClient,
    url: String,
    timeout: Duration,
    signer: Option<Signer>,
}

impl HttpSender {
    /// An HTTPS (or plain HTTP) client for `url` with the system's root certificates.
    pub fn new(url: String, timeout: Duration, signer: Option<Signer>) -> std::io::Result<Self> {
        Ok(HttpSender {
            client: crate::exporters::aws::https_client()?,
            url,
            timeout,
            signer,
        })
    }

    /// One POST (signed when a signer is set); `Ok` carries the partial-success rejected count.
    pub async fn attempt(&self, body: Bytes) -> Result<u64, ExportError> {
        let retry = |reason, message: String, after| ExportError::Retryable {
            reason,
            message,
            after,
        };
        let mut req = http::Request::post(&self.url)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(body.clone()))
            .map_err(|e| ExportError::Permanent {
                code: "bad_url".into(),
                message: e.to_string(),
            })?;
        if let Some(signer) = &self.signer {
            let creds = signer
                .credentials
                .get()
                .await
                .map_err(|e| retry("credentials", e, None))?;
            sign_request(
                &mut req,
                &body,
                &creds,
                &signer.region,
                signer.service,
                SystemTime::now(),
            )
            .map_err(|e| ExportError::Permanent {
                code: "signing".into(),
                message: e,
            })?;
        }
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => return Err(retry("timeout", "request timed out".into(), None)),
            Ok(Err(e)) => return Err(retry("connection", e.to_string(), None)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let bytes = match tokio::time::timeout(self.timeout, resp.into_body().collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => return Err(retry("connection", "response body not read".into(), None)),
        };
        match status {
            200..=299 => Ok(ExportTraceServiceResponse::decode(bytes)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_spans.max(0) as u64)),
            429 => Err(retry("throttled", format!("HTTP {status}"), after)),
            408 | 500..=599 => Err(retry("server_error", format!("HTTP {status}"), after)),
            _ => Err(ExportError::Permanent {
                code: format!("http_{status}"),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }
}

/// Signs a request with SigV4 (adds `x-amz-date`, the `x-amz-security-token` when present, and
/// `authorization`).
pub fn sign_request<B>(
    req: &mut http::Request<B>,
    body: &[u8],
    creds: &aws_credential_types::Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), String> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let uri = req.uri().to_string();
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}
