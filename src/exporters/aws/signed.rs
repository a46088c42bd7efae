//! One signed POST to an AWS endpoint (or an unsigned one, for OTLP destinations that are not
//! AWS): what the X-Ray client, the OTLP sender and the sampling proxy share. Each classifies the
//! answer in its own protocol's terms; failures before an answer are classified here.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use crate::exporters::aws::{CachedCredentials, HttpsClient, https_client};
use crate::exporters::retry::{ExportError, with_causes};

/// Who signs, for which region and SigV4 service name.
#[derive(Debug, Clone)]
pub struct Signer {
    pub credentials: CachedCredentials,
    pub region: String,
    pub service: &'static str,
}

/// An answer, whatever its status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The server's `Retry-After`, in seconds.
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs)
    }
}

/// POSTs `body` (signed when `signer` is set) over the shared client; the call and the reading
/// of at most `max_response` bytes of answer each get `timeout`.
pub async fn post(
    url: &str,
    content_type: &str,
    body: Bytes,
    signer: Option<&Signer>,
    timeout: Duration,
    max_response: usize,
) -> Result<Answer, ExportError> {
    post_with(
        None,
        url,
        content_type,
        &[],
        body,
        signer,
        timeout,
        max_response,
    )
    .await
}

/// [`post`] with extra request headers (signed with the rest), over `client` when given (its
/// own TLS settings) or the shared one.
#[allow(clippy::too_many_arguments)]
pub async fn post_with(
    client: Option<&HttpsClient>,
    url: &str,
    content_type: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
    body: Bytes,
    signer: Option<&Signer>,
    timeout: Duration,
    max_response: usize,
) -> Result<Answer, ExportError> {
    let retry = |reason, message: String| ExportError::Retryable {
        reason,
        message,
        after: None,
    };
    let permanent = |code: &str, message: String| ExportError::Permanent {
        code: code.into(),
        message,
    };
    let mut req = http::Request::post(url)
        .header("content-type", content_type)
        .body(Full::new(body.clone()))
        .map_err(|e| permanent("bad_url", e.to_string()))?;
    for (name, value) in headers {
        req.headers_mut().append(name.clone(), value.clone());
    }
    if let Some(signer) = signer {
        // Credentials that cannot be had yet (the ECS endpoint at start-up) are worth a retry.
        let creds = signer
            .credentials
            .get()
            .await
            .map_err(|e| retry("credentials", e))?;
        sign_request(
            &mut req,
            &body,
            &creds,
            &signer.region,
            signer.service,
            SystemTime::now(),
        )
        .map_err(|e| permanent("signing", e))?;
    }
    // The shared client, built on first use (TLS roots load then).
    let shared;
    let client = match client {
        Some(c) => c,
        None => {
            shared = https_client().map_err(|e| permanent("tls", e.to_string()))?;
            &shared
        }
    };
    let resp = match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => return Err(retry("timeout", "request timed out".into())),
        Ok(Err(e)) => return Err(retry("connection", with_causes(&e))),
        Ok(Ok(r)) => r,
    };
    let (parts, incoming) = resp.into_parts();
    let read = Limited::new(incoming, max_response).collect();
    let body = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return Err(retry("connection", format!("response body not read: {e}"))),
        Err(_) => return Err(retry("timeout", "response body not read in time".into())),
    };
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
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
