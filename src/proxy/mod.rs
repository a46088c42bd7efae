//! The X-Ray daemon's sampling API on TCP (same address as the UDP port by default): the X-Ray
//! SDKs ask it for centralised sampling rules and targets. Unlike the daemon, which forwards any
//! path and method with the task's credentials, only the two sampling calls are accepted; every
//! other request gets 404, so the port can never be used to call other X-Ray APIs.
//!
//! With AWS (the X-Ray exporter runs), each call is re-signed with SigV4 and forwarded to the
//! X-Ray endpoint, and the answer returned unchanged. In local mode the proxy answers itself
//! with a rule that samples everything, so a developer sees every trace.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Key, Section};
use crate::exporters::aws::signed::{self, Signer};
use crate::exporters::aws::{CachedCredentials, xray_base_url};
use crate::telemetry::{Counters, Stats, family};

/// Request bodies accepted: GetSamplingRules sends `{"NextToken": …}`; SamplingTargets one
/// statistics document per rule (~200 bytes each; X-Ray takes at most 25 per call).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Upstream answers read (a rules page is a few kB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Upstream call timeout: the SDKs poll again later and keep their last rules meanwhile.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Upstream calls in flight at once; more wait (up to the timeout) rather than pile up.
const MAX_IN_FLIGHT: usize = 4;
/// How long a GetSamplingRules answer is reused for the same request: several SDK processes in
/// one task poll at once. Targets are never cached (each answer is for one SDK's statistics).
const RULES_CACHE_TTL: Duration = Duration::from_secs(10);

/// The `xray_proxy_addr` key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    /// TCP address of the sampling proxy; `None`: the X-Ray UDP address (the daemon's default).
    pub xray_proxy_addr: Option<SocketAddr>,
}

impl Section for ProxyConfig {
    const KEYS: &'static [Key<Self>] = &[Key::<Self>::custom(
        "xray_proxy_addr",
        "X-Ray sampling API proxy for the X-Ray SDKs (TCP); empty: the xray_udp_addr address.",
        |c, v| {
            c.xray_proxy_addr = if v.trim().is_empty() {
                None
            } else {
                Some(crate::config::parse::parse_addr(v)?)
            };
            Ok(())
        },
        |c| {
            crate::config::parse::toml_string(
                &c.xray_proxy_addr.map(|a| a.to_string()).unwrap_or_default(),
            )
        },
    )
    .flag()
    .with_value_name("ADDR")];
}

/// The two calls the proxy serves (a label of `sidetrace_xray_proxy_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Rules,
    Targets,
}

impl Call {
    const ALL: [Call; 2] = [Call::Rules, Call::Targets];

    fn path(self) -> &'static str {
        match self {
            Call::Rules => "/GetSamplingRules",
            Call::Targets => "/SamplingTargets",
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded; X-Ray's answer (whatever its status) returned.
    Forwarded,
    /// Answered from the short rules cache.
    Cached,
    /// Answered locally with the sample-everything rule (local mode).
    Local,
    /// The upstream call failed or timed out (502 / 504).
    UpstreamError,
    /// Too many calls in flight for the whole timeout (503).
    Busy,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Forwarded,
        Outcome::Cached,
        Outcome::Local,
        Outcome::UpstreamError,
        Outcome::Busy,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Cached => "cached",
            Outcome::Local => "local",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Busy => "busy",
        }
    }
}

/// `sidetrace_xray_proxy_requests_total{call, outcome}` and the refusals.
#[derive(Debug, Default)]
pub struct ProxyStats {
    requests: [Counters<{ Outcome::ALL.len() }>; Call::ALL.len()],
    /// [unknown path or method, body too large].
    refused: Counters<2>,
}

impl ProxyStats {
    fn count(&self, call: Call, outcome: Outcome) {
        self.requests[call as usize].add(outcome as usize, 1);
    }
}

impl Stats for ProxyStats {
    fn render(&self, o: &mut String) {
        family(
            o,
            "sidetrace_xray_proxy_requests_total",
            "counter",
            "X-Ray SDK sampling calls on the proxy, by call and outcome.",
            Call::ALL.iter().flat_map(|c| {
                Outcome::ALL.iter().map(move |out| {
                    (
                        format!("call=\"{}\",outcome=\"{}\"", &c.path()[1..], out.label()),
                        self.requests[*c as usize].get(*out as usize),
                    )
                })
            }),
        );
        family(
            o,
            "sidetrace_xray_proxy_refused_total",
            "counter",
            "Requests the proxy refused: any other path or method (404), or a body over the cap (413).",
            [
                ("reason=\"not_found\"".to_owned(), self.refused.get(0)),
                ("reason=\"too_large\"".to_owned(), self.refused.get(1)),
            ],
        );
    }
}

/// Where answers come from.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// X-Ray, with the agent's credentials.
    Xray(Box<Forward>),
    /// No AWS: answer with a rule that samples everything.
    Local,
}

/// X-Ray at `base_url` (`https://xray.<region>.amazonaws.com`, or `AWS_ENDPOINT_URL[_XRAY]`).
#[derive(Debug, Clone)]
pub struct Forward {
    base_url: String,
    signer: Signer,
}

impl Upstream {
    /// Forwards to X-Ray with the SDK configuration's region and credentials.
    pub fn xray(sdk: &aws_config::SdkConfig) -> Option<Upstream> {
        let region = sdk.region()?.to_string();
        let credentials = sdk.credentials_provider()?;
        let env = |v: &str| std::env::var(v).ok();
        Some(Upstream::Xray(Box::new(Forward {
            base_url: xray_base_url(&region, &env),
            signer: Signer {
                credentials: CachedCredentials::new(credentials),
                region,
                service: "xray",
            },
        })))
    }
}

#[derive(Debug)]
struct ProxyState {
    upstream: Upstream,
    stats: Arc<ProxyStats>,
    in_flight: Semaphore,
    /// GetSamplingRules answers by request body: (when, status, content type, body).
    rules_cache: Mutex<Vec<(Bytes, Instant, Cached)>>,
}

#[derive(Debug, Clone)]
struct Cached {
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// The proxy's routes: the two sampling calls, 404 for anything else.
pub fn router(upstream: Upstream, stats: Arc<ProxyStats>) -> Router {
    let state = Arc::new(ProxyState {
        upstream,
        stats,
        in_flight: Semaphore::new(MAX_IN_FLIGHT),
        rules_cache: Mutex::new(Vec::new()),
    });
    Router::new()
        // Another method on these paths is refused like any other request (404, not 405).
        .route(Call::Rules.path(), post(rules).fallback(not_found))
        .route(Call::Targets.path(), post(targets).fallback(not_found))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Serves until `stop` resolves.
pub fn start(
    listener: tokio::net::TcpListener,
    upstream: Upstream,
    stats: Arc<ProxyStats>,
    connections: Arc<crate::receivers::connections::Connections>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    if matches!(upstream, Upstream::Local) {
        info!(
            listener = "xray_proxy",
            "No AWS: the X-Ray sampling proxy answers with a rule that samples every request."
        );
    }
    tokio::spawn(crate::receivers::otlp_http::serve(
        listener,
        router(upstream, stats),
        connections,
        stop,
    ))
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn not_found(State(s): State<Arc<ProxyState>>) -> Response {
    s.stats.refused.add(0, 1);
    json_error(
        StatusCode::NOT_FOUND,
        "only POST /GetSamplingRules and POST /SamplingTargets are served here",
    )
}

/// The body extractor fails once a body passes [`MAX_REQUEST_BYTES`].
fn too_large(s: &ProxyState, e: &axum::extract::rejection::BytesRejection) -> Response {
    s.stats.refused.add(1, 1);
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body over {MAX_REQUEST_BYTES} bytes: {e}"),
    )
}

async fn rules(
    State(s): State<Arc<ProxyState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    handle(&s, Call::Rules, body).await
}

async fn targets(
    State(s): State<Arc<ProxyState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    handle(&s, Call::Targets, body).await
}

async fn handle(
    s: &ProxyState,
    call: Call,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return too_large(s, &e),
    };
    let Upstream::Xray(to) = &s.upstream else {
        s.stats.count(call, Outcome::Local);
        return match call {
            Call::Rules => local_rules(),
            Call::Targets => local_targets(&body),
        };
    };
    if call == Call::Rules
        && let Some(hit) = s.cached(&body)
    {
        s.stats.count(call, Outcome::Cached);
        return ok_response(hit);
    }
    s.forward(to, call, body).await
}

fn ok_response(c: Cached) -> Response {
    let mut r = (StatusCode::OK, c.body).into_response();
    if let Some(ct) = c.content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

impl ProxyState {
    fn cached(&self, body: &Bytes) -> Option<Cached> {
        let mut cache = self.rules_cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        cache.retain(|(_, at, _)| now.duration_since(*at) < RULES_CACHE_TTL);
        cache
            .iter()
            .find(|(k, _, _)| k == body)
            .map(|(_, _, c)| c.clone())
    }

    async fn forward(&self, to: &Forward, call: Call, body: Bytes) -> Response {
        let Forward { base_url, signer } = to;
        let deadline = Instant::now() + UPSTREAM_TIMEOUT;
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, self.in_flight.acquire()).await
        else {
            self.stats.count(call, Outcome::Busy);
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sampling proxy busy: too many calls to X-Ray in flight",
            );
        };
        let result = tokio::time::timeout_at(deadline, send(base_url, signer, call, &body)).await;
        let (status, cached) = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(message)) => {
                self.stats.count(call, Outcome::UpstreamError);
                warn!(listener = "xray_proxy", call = call.path(), error = %message, "X-Ray sampling call failed.");
                return json_error(StatusCode::BAD_GATEWAY, &message);
            }
            Err(_) => {
                self.stats.count(call, Outcome::UpstreamError);
                warn!(
                    listener = "xray_proxy",
                    call = call.path(),
                    "X-Ray sampling call timed out."
                );
                return json_error(StatusCode::GATEWAY_TIMEOUT, "X-Ray did not answer in time");
            }
        };
        self.stats.count(call, Outcome::Forwarded);
        if call == Call::Rules && status == StatusCode::OK {
            let mut cache = self.rules_cache.lock().unwrap_or_else(|e| e.into_inner());
            // A handful of distinct pages at most; a flood of distinct tokens must not grow it.
            if cache.len() >= 16 {
                cache.remove(0);
            }
            cache.push((body, Instant::now(), cached.clone()));
        }
        let mut r = ok_response(cached);
        *r.status_mut() = status;
        r
    }
}

/// One signed POST; the status and body come back as X-Ray sent them.
async fn send(
    base_url: &str,
    signer: &Signer,
    call: Call,
    body: &Bytes,
) -> Result<(StatusCode, Cached), String> {
    let answer = signed::post(
        &format!("{base_url}{}", call.path()),
        "application/json",
        body.clone(),
        Some(signer),
        UPSTREAM_TIMEOUT,
        MAX_RESPONSE_BYTES,
    )
    .await
    .map_err(|e| e.to_string())?;
    let status = StatusCode::from_u16(answer.status).map_err(|e| e.to_string())?;
    let content_type = answer.headers.get(header::CONTENT_TYPE).cloned();
    Ok((
        status,
        Cached {
            content_type,
            body: answer.body,
        },
    ))
}

/// One default rule: every request sampled (rate 1.0), as a developer wants locally.
fn local_rules() -> Response {
    let body = serde_json::json!({
        "SamplingRuleRecords": [{
            "SamplingRule": {
                "RuleName": "Default",
                "RuleARN": "arn:aws:xray:local:000000000000:sampling-rule/Default",
                "ResourceARN": "*", "Priority": 10000, "FixedRate": 1.0, "ReservoirSize": 0,
                "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
                "URLPath": "*", "Version": 1, "Attributes": {}
            },
            "CreatedAt": 0.0, "ModifiedAt": 0.0
        }]
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A target of rate 1.0 for every rule the SDK reports on.
fn local_targets(body: &[u8]) -> Response {
    let request: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("SamplingTargets body is not JSON: {e}"),
            );
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let targets: Vec<serde_json::Value> = request["SamplingStatisticsDocuments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("RuleName").cloned())
        .map(|name| {
            serde_json::json!({
                "RuleName": name, "FixedRate": 1.0, "ReservoirQuota": 0,
                "ReservoirQuotaTTL": now + 3600.0, "Interval": 10
            })
        })
        .collect();
    let body = serde_json::json!({
        "SamplingTargetDocuments": targets,
        "LastRuleModification": 0.0,
        "UnprocessedStatistics": []
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
