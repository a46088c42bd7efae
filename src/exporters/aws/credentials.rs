//! Credentials for the requests sidetrace signs itself. `SdkConfig::credentials_provider()` does
//! not cache (SDK clients cache in their runtime), and the ECS task-role provider is an HTTP
//! call, so calls share one cached copy, refreshed before it expires.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

/// Refresh this long before the credentials expire (the SDKs use 5 minutes too).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// Credentials without an expiry (environment keys, profiles) are read again this often.
const REREAD_EVERY: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
pub struct CachedCredentials {
    provider: SharedCredentialsProvider,
    cached: Arc<Mutex<Option<(Credentials, SystemTime)>>>,
}

impl CachedCredentials {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        CachedCredentials {
            provider,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The cached credentials while they are fresh, else newly provided ones.
    pub async fn get(&self) -> Result<Credentials, String> {
        let now = SystemTime::now();
        if let Some((c, read_at)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && fresh(c, *read_at, now)
        {
            return Ok(c.clone());
        }
        // Two callers may both refresh at expiry; harmless, and no lock is held across the call.
        let c = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| e.to_string())?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((c.clone(), now));
        Ok(c)
    }
}

fn fresh(c: &Credentials, read_at: SystemTime, now: SystemTime) -> bool {
    match c.expiry() {
        Some(expiry) => now + REFRESH_BEFORE_EXPIRY < expiry,
        None => now.duration_since(read_at).is_ok_and(|d| d < REREAD_EVERY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_reused_until_near_their_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expiring = |in_secs| {
            Credentials::new(
                "AKID",
                "secret",
                None,
                Some(now + Duration::from_secs(in_secs)),
                "test",
            )
        };
        assert!(fresh(&expiring(3600), now, now));
        assert!(!fresh(&expiring(200), now, now), "refreshed 5 min ahead");
        let keys = Credentials::new("AKID", "secret", None, None, "env");
        assert!(fresh(&keys, now, now + Duration::from_secs(60)));
        assert!(!fresh(&keys, now, now + Duration::from_secs(1000)));
    }
}
