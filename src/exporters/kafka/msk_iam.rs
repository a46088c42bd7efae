//! Amazon MSK IAM authentication (`kafka.sasl_mechanism=AWS_MSK_IAM_OAUTHBEARER`): SASL
//! OAUTHBEARER with a token that is a SigV4-presigned `kafka-cluster:Connect` URL, made the way
//! AWS's own signer libraries (aws-msk-iam-sasl-signer) make it, and handed to librdkafka from
//! its token-refresh callback. The producer and the consumer share this client context.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::ConsumerContext;
use tracing::{info, warn};

use crate::exporters::aws::CachedCredentials;

/// The SigV4 service name MSK IAM signs for.
const SIGNING_NAME: &str = "kafka-cluster";
/// How long a token is good for (the signer libraries' 15 minutes; librdkafka asks for a new
/// one at 80 % of it).
const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// How often the credentials the callback reads are refreshed (the cache itself refreshes
/// 5 minutes before they expire).
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// A token for `region`'s MSK, signed with `creds` at `time`: the URL-safe base64 (unpadded) of
/// `https://kafka.REGION.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-…&User-Agent=…`.
/// Returns it with its expiry, in milliseconds since the epoch.
pub fn token(creds: &Credentials, region: &str, time: SystemTime) -> Result<(String, i64), String> {
    let host = format!("kafka.{region}.amazonaws.com");
    let url = format!("https://{host}/?Action=kafka-cluster%3AConnect");
    let identity = creds.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "GET",
        &url,
        std::iter::once(("host", host.as_str())),
        // The hash of the empty body, as botocore's SigV4QueryAuth signs (not S3's UNSIGNED-PAYLOAD).
        SignableBody::Bytes(b""),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut req = http::Request::get(&url)
        .body(())
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut req);
    // Added after signing, as the signer libraries do: MSK reads it, SigV4 does not cover it.
    let signed = format!(
        "{}&User-Agent=sidetrace%2F{}",
        req.uri(),
        env!("CARGO_PKG_VERSION")
    );
    let signed_at = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    // X-Amz-Date has whole seconds: the expiry is counted from there.
    let expiry_ms = (signed_at.as_secs() + TOKEN_LIFETIME.as_secs()) as i64 * 1000;
    Ok((
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed),
        expiry_ms,
    ))
}

/// The region and credentials MSK IAM signs with: those of the SDK's chain (`AWS_REGION`, the
/// ECS task role, ...), for the agent and for `sidetrace msk-iam-token` alike.
pub fn region_and_credentials(
    sdk: &aws_config::SdkConfig,
) -> Result<(String, CachedCredentials), String> {
    let region = sdk
        .region()
        .ok_or("MSK IAM needs an AWS region (AWS_REGION)")?
        .to_string();
    let provider = sdk
        .credentials_provider()
        .ok_or("MSK IAM found no AWS credentials provider")?;
    Ok((region, CachedCredentials::new(provider)))
}

/// What the token callback needs: the region, and credentials kept fresh by a task of the
/// agent's runtime (librdkafka calls back on its own threads, or inside `recv` on a runtime
/// worker, where waiting on an HTTP call for credentials could stall or deadlock the runtime).
#[derive(Debug, Clone)]
pub struct MskIam {
    region: String,
    latest: Arc<Mutex<Credentials>>,
}

impl MskIam {
    /// Reads credentials once (so the first token does not wait) and keeps them fresh.
    pub async fn start(credentials: CachedCredentials, region: String) -> Result<Self, String> {
        let first = credentials
            .get()
            .await
            .map_err(|e| format!("no AWS credentials for MSK IAM: {e}"))?;
        let latest = Arc::new(Mutex::new(first));
        let keep = Arc::downgrade(&latest);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(slot) = keep.upgrade() else { break };
                match credentials.get().await {
                    Ok(c) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = c,
                    Err(e) => {
                        warn!(error = %e, "AWS credentials for MSK IAM not refreshed; the last ones are used.")
                    }
                }
            }
        });
        Ok(MskIam { region, latest })
    }

    fn token(&self) -> Result<OAuthToken, String> {
        let creds = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (token, lifetime_ms) = token(&creds, &self.region, SystemTime::now())?;
        info!(region = %self.region, "MSK IAM token made (valid 15 minutes).");
        Ok(OAuthToken {
            token,
            // MSK takes the identity from the signature; librdkafka wants a name here.
            principal_name: "sidetrace".to_owned(),
            lifetime_ms,
        })
    }
}

/// The librdkafka client context of the producer and the consumer: logs as the default one
/// does, and answers OAUTHBEARER token requests when MSK IAM is configured.
#[derive(Debug, Clone, Default)]
pub struct KafkaContext {
    pub iam: Option<MskIam>,
}

impl ClientContext for KafkaContext {
    // Only asked for a token when `sasl.mechanism` is OAUTHBEARER.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let Some(iam) = &self.iam else {
            return Err("OAUTHBEARER is only supported as AWS_MSK_IAM_OAUTHBEARER".into());
        };
        iam.token().map_err(|e| {
            // librdkafka asks again in 10 s.
            warn!(error = %e, "MSK IAM token not made.");
            e.into()
        })
    }
}

impl ConsumerContext for KafkaContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_a_presigned_connect_url_for_the_region() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("session".into()), None, "t");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (t, expiry_ms) = token(&creds, "eu-west-1", at).unwrap();
        assert!(
            !t.contains('=') && !t.contains('+') && !t.contains('/'),
            "{t}"
        );
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&t)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=session",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} in {url}");
        }
        assert!(url.ends_with(&format!(
            "&User-Agent=sidetrace%2F{}",
            env!("CARGO_PKG_VERSION")
        )));
        assert_eq!(expiry_ms, 1_700_000_900_000);
    }
}
