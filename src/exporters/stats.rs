//! The counters every exporter keeps: each span it is handed ends in exactly one of sent,
//! rejected{code} or dropped{reason}, and what it still holds is pending.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::DropReason;
use crate::telemetry::{Counters, Stats, escape_label, family};

/// Distinct rejection codes kept per exporter before further ones count as `other`
/// (codes come from outside, so the label set must stay bounded).
pub const MAX_REJECTION_CODES: usize = 32;

const DROPS: usize = DropReason::ALL.len();

/// The retryable failures' reasons (`ExportError::Retryable`), labels of
/// `sidetrace_exporter_retries_total`: the X-Ray daemon's `BackendConnectionErrors`, by kind.
pub const RETRY_REASONS: [&str; 5] = [
    "throttled",
    "server_error",
    "timeout",
    "connection",
    "credentials",
];

/// One exporter's span accounting, shared by its task, its senders and `/metrics`.
#[derive(Debug)]
pub struct ExporterStats {
    name: &'static str,
    sent: Counters<1>,
    dropped: Counters<DROPS>,
    /// Spans the destination refused, by the destination's own error code.
    rejected: Mutex<BTreeMap<String, u64>>,
    /// Attempts that failed and were retried, by [`RETRY_REASONS`] (the last slot: any other).
    retries: Counters<{ RETRY_REASONS.len() + 1 }>,
    /// Spans the exporter holds (queued for it, batched or being sent): counted as lost if the
    /// drain deadline passes.
    pending: AtomicI64,
}

impl ExporterStats {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(ExporterStats {
            name,
            sent: Counters::default(),
            dropped: Counters::default(),
            rejected: Mutex::default(),
            retries: Counters::default(),
            pending: AtomicI64::new(0),
        })
    }

    /// The `exporter` label.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn sent(&self, n: u64) {
        self.sent.add(0, n);
    }

    /// One failed attempt that will be retried.
    pub fn retried(&self, reason: &str) {
        let i = RETRY_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(RETRY_REASONS.len());
        self.retries.add(i, 1);
    }

    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped.add(reason as usize, n);
    }

    /// Spans the destination refused (e.g. X-Ray `UnprocessedTraceSegments`), by its error code.
    pub fn rejected(&self, code: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut map = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        let key = if map.len() < MAX_REJECTION_CODES || map.contains_key(code) {
            code
        } else {
            "other"
        };
        *map.entry(key.to_owned()).or_default() += n;
    }

    pub fn pending_add(&self, n: i64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// Spans the exporter still holds.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn sent_spans(&self) -> u64 {
        self.sent.get(0)
    }

    pub fn dropped_spans(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason as usize)
    }

    pub fn rejected_spans(&self, code: &str) -> u64 {
        let map = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        map.get(code).copied().unwrap_or(0)
    }
}

/// The `sidetrace_exporter_*` families over every running exporter (a family is written whole,
/// so one value renders them all).
#[derive(Debug, Default)]
pub struct ExporterFamilies(pub Vec<Arc<ExporterStats>>);

impl ExporterFamilies {
    /// Spans all exporters still hold.
    pub fn pending(&self) -> u64 {
        self.0.iter().map(|e| e.pending()).sum()
    }
}

impl Stats for ExporterFamilies {
    fn render(&self, o: &mut String) {
        let label = |e: &ExporterStats| format!("exporter=\"{}\"", e.name);
        family(
            o,
            "sidetrace_exporter_sent_spans_total",
            "counter",
            "Spans delivered by each exporter.",
            self.0.iter().map(|e| (label(e), e.sent_spans())),
        );
        family(
            o,
            "sidetrace_exporter_dropped_spans_total",
            "counter",
            "Spans an exporter could not deliver, by reason.",
            self.0.iter().flat_map(|e| {
                DropReason::ALL.iter().map(move |r| {
                    (
                        format!("{},reason=\"{}\"", label(e), r.label()),
                        e.dropped_spans(*r),
                    )
                })
            }),
        );
        let rejected: Vec<(String, u64)> = self
            .0
            .iter()
            .flat_map(|e| {
                let map = e.rejected.lock().unwrap_or_else(|p| p.into_inner());
                map.iter()
                    .map(|(code, v)| (format!("{},code=\"{}\"", label(e), escape_label(code)), *v))
                    .collect::<Vec<_>>()
            })
            .collect();
        family(
            o,
            "sidetrace_exporter_rejected_spans_total",
            "counter",
            "Spans the destination refused, by its error code.",
            rejected,
        );
        family(
            o,
            "sidetrace_exporter_retries_total",
            "counter",
            "Failed attempts that were retried, by reason (throttling, 5xx/408, timeouts, connection errors, credentials).",
            self.0.iter().flat_map(|e| {
                RETRY_REASONS
                    .iter()
                    .chain(["other"].iter())
                    .enumerate()
                    .map(move |(i, r)| (format!("{},reason=\"{r}\"", label(e)), e.retries.get(i)))
            }),
        );
        family(
            o,
            "sidetrace_exporter_pending_spans",
            "gauge",
            "Spans an exporter holds in its input, its batches or in flight.",
            self.0.iter().map(|e| (label(e), e.pending())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_codes_are_bounded() {
        let s = ExporterStats::new("xray");
        for i in 0..40 {
            s.rejected(&format!("code{i}"), 1);
        }
        s.rejected("code0", 1);
        assert_eq!(s.rejected_spans("code0"), 2, "a known code keeps counting");
        assert_eq!(s.rejected_spans("other"), 8);
        let mut text = String::new();
        ExporterFamilies(vec![s]).render(&mut text);
        assert!(text.contains(
            "sidetrace_exporter_rejected_spans_total{exporter=\"xray\",code=\"other\"} 8\n"
        ));
    }
}
