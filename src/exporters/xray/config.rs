//! The `xray.*` keys.

use std::time::Duration;

use crate::config::{Key, Section};

/// The X-Ray daemon's concurrency and 1 s idle flush (aws-xray-daemon cfg.go).
pub const DEFAULT_XRAY_CONCURRENCY: usize = 8;
pub const DEFAULT_XRAY_IDLE_FLUSH: Duration = Duration::from_secs(1);
/// Per-attempt timeout of one PutTraceSegments call.
pub const DEFAULT_XRAY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one batch may keep being retried; the bounded queue pushes back meanwhile.
pub const DEFAULT_XRAY_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(300);

/// Settings of the X-Ray exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct XrayConfig {
    pub mode: XrayMode,
    pub concurrency: usize,
    pub idle_flush: Duration,
    pub request_timeout: Duration,
    pub retry_max_elapsed: Duration,
    /// Attribute keys written as annotations (indexed, searchable in X-Ray).
    pub indexed_attributes: Vec<String>,
    pub index_all_attributes: bool,
    /// Reject trace IDs whose first 32 bits are not a recent epoch second (the Collector's old rule).
    pub require_epoch_trace_ids: bool,
}

/// How spans reach X-Ray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrayMode {
    /// Segment documents through PutTraceSegments (works in every account).
    Segments,
    /// OTLP/HTTP signed with SigV4 to the X-Ray OTLP endpoint (needs Transaction Search).
    Otlp,
}

impl Default for XrayConfig {
    fn default() -> Self {
        XrayConfig {
            mode: XrayMode::Segments,
            concurrency: DEFAULT_XRAY_CONCURRENCY,
            idle_flush: DEFAULT_XRAY_IDLE_FLUSH,
            request_timeout: DEFAULT_XRAY_REQUEST_TIMEOUT,
            retry_max_elapsed: DEFAULT_XRAY_RETRY_MAX_ELAPSED,
            indexed_attributes: Vec::new(),
            index_all_attributes: false,
            require_epoch_trace_ids: false,
        }
    }
}

type K = Key<XrayConfig>;

impl Section for XrayConfig {
    const KEYS: &'static [K] = &[
        K::custom(
            "xray.mode",
            "X-Ray: segments (PutTraceSegments, every account) or otlp (OTLP + SigV4 to xray.<region>.amazonaws.com/v1/traces, needs Transaction Search).",
            |c, v| {
                c.mode = match v.trim().to_ascii_lowercase().as_str() {
                    "segments" => XrayMode::Segments,
                    "otlp" => XrayMode::Otlp,
                    _ => return Err(format!("{v:?} is not segments or otlp")),
                };
                Ok(())
            },
            |c| match c.mode {
                XrayMode::Segments => "\"segments\"".into(),
                XrayMode::Otlp => "\"otlp\"".into(),
            },
        ),
        K::count(
            "xray.concurrency",
            "X-Ray: PutTraceSegments calls in flight at once (50 documents each).",
            |c| &mut c.concurrency,
        ),
        K::duration(
            "xray.idle_flush",
            "X-Ray: send a partial batch once its oldest document waited this long.",
            |c| &mut c.idle_flush,
        ),
        K::duration(
            "xray.request_timeout",
            "X-Ray: timeout of one PutTraceSegments attempt.",
            |c| &mut c.request_timeout,
        ),
        K::duration(
            "xray.retry_max_elapsed",
            "X-Ray: retry throttling, 5xx, 408, timeouts and connection errors for at most this long per batch.",
            |c| &mut c.retry_max_elapsed,
        ),
        K::list(
            "xray.indexed_attributes",
            "X-Ray: attribute keys written as annotations (searchable); the rest go to metadata.",
            |c| &mut c.indexed_attributes,
        ),
        K::bool(
            "xray.index_all_attributes",
            "X-Ray: make every scalar attribute an annotation (at most 50 per document).",
            |c| &mut c.index_all_attributes,
        ),
        K::bool(
            "xray.require_epoch_trace_ids",
            "X-Ray: reject trace IDs whose first 32 bits are not a recent epoch second (counted as rejected).",
            |c| &mut c.require_epoch_trace_ids,
        ),
    ];
}
