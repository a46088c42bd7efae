//! The `otlp.*` keys, and the OpenTelemetry exporter variables (`OTEL_EXPORTER_OTLP_*`) that
//! set them with the meaning the OTLP exporter specification gives them.

use std::time::Duration;

use super::tls::TlsFiles;
use crate::config::parse::toml_string;
use crate::config::{Key, Section, parse_bool};

/// OTLP exporter spec: the default OTLP/HTTP traces URL.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// OTLP exporter spec: 10 s per export.
pub const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at once.
pub const DEFAULT_OTLP_CONCURRENCY: usize = 4;
/// How long one request may keep being retried (the Collector's `retry_on_failure` default).
pub const DEFAULT_OTLP_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(300);

/// How often `dns:` backends are looked up again (ECS Service Connect, Cloud Map, headless services).
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// The wire protocol of the OTLP exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    /// HTTP/2: TLS for `https://` (and, unless `otlp.insecure`, for an endpoint with no scheme).
    Grpc,
}

/// Settings of the OTLP exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The traces URL, `/v1/traces` included.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// `key=value` request headers (values URL-decoded, as the spec's variable carries them).
    pub headers: Vec<String>,
    pub gzip: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    pub idle_flush: Duration,
    pub retry_max_elapsed: Duration,
    /// Several backends, each trace to one of them by its ID (`http(s)://…` or `dns:HOST:PORT`).
    pub endpoints: Vec<String>,
    pub resolve_interval: Duration,
    /// A CA to trust instead of the system's roots, and a client certificate for mutual TLS.
    pub tls: TlsFiles,
    /// OTLP/gRPC to an endpoint written without a scheme: plaintext when true, else TLS (spec).
    pub insecure: bool,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: DEFAULT_OTLP_ENDPOINT.into(),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: Vec::new(),
            gzip: false,
            timeout: DEFAULT_OTLP_TIMEOUT,
            concurrency: DEFAULT_OTLP_CONCURRENCY,
            idle_flush: super::exporter::DEFAULT_IDLE_FLUSH,
            retry_max_elapsed: DEFAULT_OTLP_RETRY_MAX_ELAPSED,
            endpoints: Vec::new(),
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            tls: TlsFiles::default(),
            insecure: false,
        }
    }
}

fn parse_protocol(v: &str) -> Result<OtlpProtocol, String> {
    match v.trim() {
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        "grpc" => Ok(OtlpProtocol::Grpc),
        other => Err(format!("{other:?} is not http/protobuf or grpc")),
    }
}

fn parse_compression(v: &str) -> Result<bool, String> {
    match v.trim() {
        "gzip" => Ok(true),
        "none" | "" => Ok(false),
        other => Err(format!("{other:?} is not gzip or none")),
    }
}

type K = Key<OtlpConfig>;

impl Section for OtlpConfig {
    const KEYS: &'static [K] = &[
        K::custom(
            "otlp.endpoint",
            "OTLP exporter: the traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces).",
            |c, v| {
                let v = v.trim();
                // `host:port` with no scheme is the spec's gRPC form; start() checks the protocol.
                let schemeless = !v.contains("://")
                    && v.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !(v.starts_with("http://") || v.starts_with("https://") || schemeless) {
                    return Err(format!(
                        "{v:?} is not an http:// or https:// URL (or host:port for gRPC)"
                    ));
                }
                c.endpoint = v.into();
                Ok(())
            },
            |c| toml_string(&c.endpoint),
        ),
        K::custom(
            "otlp.protocol",
            "OTLP exporter: http/protobuf or grpc (default endpoint http://localhost:4317).",
            |c, v| {
                c.protocol = parse_protocol(v)?;
                Ok(())
            },
            |c| match c.protocol {
                OtlpProtocol::HttpProtobuf => "\"http/protobuf\"".into(),
                OtlpProtocol::Grpc => "\"grpc\"".into(),
            },
        ),
        K::list(
            "otlp.headers",
            "OTLP exporter: request headers as key=value (values URL-encoded, as in OTEL_EXPORTER_OTLP_HEADERS).",
            |c| &mut c.headers,
        ),
        K::custom(
            "otlp.compression",
            "OTLP exporter: gzip or none.",
            |c, v| {
                c.gzip = parse_compression(v)?;
                Ok(())
            },
            |c| if c.gzip { "\"gzip\"" } else { "\"none\"" }.into(),
        ),
        K::duration(
            "otlp.timeout",
            "OTLP exporter: time for one request and its answer.",
            |c| &mut c.timeout,
        ),
        K::count(
            "otlp.concurrency",
            "OTLP exporter: requests in flight at once.",
            |c| &mut c.concurrency,
        ),
        K::duration(
            "otlp.idle_flush",
            "OTLP exporter: send a partial request once its oldest span waited this long.",
            |c| &mut c.idle_flush,
        ),
        K::duration(
            "otlp.retry_max_elapsed",
            "OTLP exporter: how long one request may keep being retried.",
            |c| &mut c.retry_max_elapsed,
        ),
        K::custom(
            "otlp.endpoints",
            "OTLP exporter: several backends (http(s)://host:port, or dns:HOST:PORT / dns+https:HOST:PORT for one backend per address); each trace goes whole to one of them, by its trace ID. Replaces otlp.endpoint.",
            |c, v| {
                let list: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
                for e in &list {
                    super::balance::Target::parse(e)?;
                }
                c.endpoints = list;
                Ok(())
            },
            |c| {
                let items: Vec<String> = c.endpoints.iter().map(|e| toml_string(e)).collect();
                format!("[{}]", items.join(", "))
            },
        ),
        K::duration(
            "otlp.resolve_interval",
            "OTLP exporter: how often dns: backends are looked up again.",
            |c| &mut c.resolve_interval,
        ),
        K::text(
            "otlp.certificate",
            "OTLP exporter: a PEM file of the CA certificates to trust instead of the system's roots.",
            |c| &mut c.tls.ca,
        ),
        K::text(
            "otlp.client_certificate",
            "OTLP exporter: a PEM certificate (chain) to present for mutual TLS; needs otlp.client_key.",
            |c| &mut c.tls.client_certificate,
        ),
        K::text(
            "otlp.client_key",
            "OTLP exporter: the PEM private key of otlp.client_certificate.",
            |c| &mut c.tls.client_key,
        ),
        K::bool(
            "otlp.insecure",
            "OTLP exporter: plaintext gRPC to an otlp.endpoint written host:port, with no scheme (else TLS).",
            |c| &mut c.insecure,
        ),
    ];
}

impl OtlpConfig {
    /// Applies the OTLP exporter specification's variables (the `TRACES_` form wins over the
    /// general one). Returns (key, variable, problem) for each value that does not parse.
    pub fn apply_otel_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<(&'static str, &'static str, String)> {
        let var = |traces: &'static str, general: &'static str| {
            let get = |n: &'static str| env(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v));
            get(traces).or_else(|| get(general))
        };
        let mut problems = Vec::new();
        if let Some((name, v)) = var(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            match parse_protocol(&v) {
                Ok(p) => self.protocol = p,
                Err(e) => problems.push(("otlp.protocol", name, e)),
            }
        }
        // Spec: the signal-specific URL is used as is; the general one is a base to which
        // OTLP/HTTP appends `v1/traces`.
        if let Some(v) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|v| !v.trim().is_empty())
        {
            self.endpoint = v.trim().into();
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty())
        {
            let base = v.trim();
            self.endpoint = match self.protocol {
                OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                OtlpProtocol::Grpc => base.into(),
            };
        }
        if let Some((name, v)) = var(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            match parse_headers(&v) {
                Ok(_) => {
                    self.headers = v
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                Err(e) => problems.push(("otlp.headers", name, e)),
            }
        }
        if let Some((name, v)) = var(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            match parse_compression(&v) {
                Ok(g) => self.gzip = g,
                Err(e) => problems.push(("otlp.compression", name, e)),
            }
        }
        // Spec: an integer number of milliseconds.
        if let Some((name, v)) = var(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => self.timeout = Duration::from_millis(ms),
                _ => problems.push((
                    "otlp.timeout",
                    name,
                    format!("{v:?} is not a positive number of milliseconds"),
                )),
            }
        }
        // Paths, taken as given (a bad file is reported when the exporter starts).
        type PathOf = fn(&mut TlsFiles) -> &mut String;
        let files: [(&str, &str, PathOf); 3] = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                |t| &mut t.ca,
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                |t| &mut t.client_certificate,
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                |t| &mut t.client_key,
            ),
        ];
        for (traces, general, field) in files {
            if let Some((_, v)) = var(traces, general) {
                *field(&mut self.tls) = v.trim().to_owned();
            }
        }
        if let Some((name, v)) = var(
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
            "OTEL_EXPORTER_OTLP_INSECURE",
        ) {
            match parse_bool(&v) {
                Ok(b) => self.insecure = b,
                Err(e) => problems.push(("otlp.insecure", name, e)),
            }
        }
        problems
    }

    /// The gRPC URL of `otlp.endpoint`: the HTTP default means "not set"; with no scheme, https
    /// unless `otlp.insecure` (the spec's rule for OTEL_EXPORTER_OTLP_INSECURE).
    pub fn grpc_url(&self) -> String {
        match self.endpoint.as_str() {
            DEFAULT_OTLP_ENDPOINT => super::DEFAULT_GRPC_ENDPOINT.to_owned(),
            e if e.contains("://") => e.to_owned(),
            e if self.insecure => format!("http://{e}"),
            e => format!("https://{e}"),
        }
    }

    /// The request headers, parsed.
    pub fn header_values(&self) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
        parse_headers(&self.headers.join(","))
    }
}

/// `key=value,key2=value2` with URL-encoded values (W3C Baggage's format, as the spec says).
pub fn parse_headers(text: &str) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("header {pair:?} is not key=value"))?;
        let name = http::HeaderName::from_bytes(percent_decode(k.trim()).as_bytes())
            .map_err(|_| format!("{:?} is not a header name", k.trim()))?;
        let value = http::HeaderValue::from_str(&percent_decode(v.trim()))
            .map_err(|_| format!("the value of header {name} is not valid in a header"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// `%XX` escapes decoded; anything that is not a valid escape is kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_general_endpoint_is_a_base_and_the_traces_one_is_used_as_is() {
        let mut c = OtlpConfig::default();
        c.apply_otel_env(&env_of(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://gw:4318/",
        )]));
        assert_eq!(c.endpoint, "http://gw:4318/v1/traces");
        let mut c = OtlpConfig::default();
        c.apply_otel_env(&env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://vendor.example/in",
            ),
        ]));
        assert_eq!(c.endpoint, "https://vendor.example/in");
        let mut c = OtlpConfig::default();
        c.apply_otel_env(&env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4317"),
        ]));
        assert_eq!(
            (c.protocol, c.endpoint.as_str()),
            (OtlpProtocol::Grpc, "http://gw:4317")
        );
    }

    #[test]
    fn headers_compression_and_timeout_follow_the_spec() {
        let mut c = OtlpConfig::default();
        let problems = c.apply_otel_env(&env_of(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "general=1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "api-key=a%20b%3Dc, x-team=payments",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        let h = c.header_values().unwrap();
        assert_eq!(h.len(), 2, "the traces variable wins over the general one");
        assert_eq!(
            (h[0].0.as_str(), h[0].1.to_str().unwrap()),
            ("api-key", "a b=c")
        );
        assert_eq!(
            (h[1].0.as_str(), h[1].1.to_str().unwrap()),
            ("x-team", "payments")
        );
        assert!(c.gzip);
        assert_eq!(c.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn tls_variables_and_the_insecure_rule_for_endpoints_with_no_scheme() {
        let mut c = OtlpConfig::default();
        let problems = c.apply_otel_env(&env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "gw.internal:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c/cert.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/c/key.pem"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            c.tls,
            TlsFiles {
                ca: "/traces/ca.pem".into(),
                client_certificate: "/c/cert.pem".into(),
                client_key: "/c/key.pem".into(),
            }
        );
        assert_eq!(
            c.grpc_url(),
            "https://gw.internal:4317",
            "TLS unless insecure"
        );
        c.apply_otel_env(&env_of(&[("OTEL_EXPORTER_OTLP_INSECURE", "true")]));
        assert_eq!(c.grpc_url(), "http://gw.internal:4317");
        c.endpoint = "https://gw.internal:4317".into();
        assert_eq!(
            c.grpc_url(),
            "https://gw.internal:4317",
            "a scheme wins over insecure"
        );
        assert_eq!(OtlpConfig::default().grpc_url(), "http://localhost:4317");
        let problems = c.apply_otel_env(&env_of(&[("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "yes")]));
        assert_eq!(problems[0].1, "OTEL_EXPORTER_OTLP_TRACES_INSECURE");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut c = OtlpConfig::default();
        let problems = c.apply_otel_env(&env_of(&[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ]));
        let names: Vec<&str> = problems.iter().map(|p| p.1).collect();
        assert_eq!(
            names,
            [
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "OTEL_EXPORTER_OTLP_TIMEOUT"
            ]
        );
        assert_eq!(c, OtlpConfig::default(), "nothing bad was taken");
    }
}
