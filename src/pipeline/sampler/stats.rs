//! What the sampler decided, by policy and service (`sidetrace_sampling_*`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Policy, Verdict};

/// Counters the sampler keeps; read by `/metrics`.
#[derive(Debug, Default)]
pub struct SamplingStats {
    /// [kept, dropped] × policy, for traces and for spans.
    pub(super) traces: [[std::sync::atomic::AtomicU64; 6]; 2],
    pub(super) spans: [[std::sync::atomic::AtomicU64; 6]; 2],
    /// Traces decided before their grace period ended because of the open-trace or byte caps.
    pub early: std::sync::atomic::AtomicU64,
    pub open_traces: std::sync::atomic::AtomicU64,
    pub held_bytes: std::sync::atomic::AtomicU64,
    /// Per service (capped): (kept traces, all traces).
    per_service: Mutex<HashMap<String, (u64, u64)>>,
}

/// Services tracked for the effective-ratio gauge before the rest count as `other`.
pub const MAX_SERVICES_TRACKED: usize = 200;

impl SamplingStats {
    pub(super) fn record(&self, v: Verdict, spans: u64, service: &str, new_trace: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let d = usize::from(!v.keep);
        self.spans[d][v.policy as usize].fetch_add(spans, Relaxed);
        if new_trace {
            self.traces[d][v.policy as usize].fetch_add(1, Relaxed);
            let mut m = self.per_service.lock().unwrap_or_else(|e| e.into_inner());
            // Looked up by &str first: a String per decided trace was an allocation on the
            // dispatcher's busiest path.
            let key = if m.len() < MAX_SERVICES_TRACKED || m.contains_key(service) {
                service
            } else {
                "other"
            };
            let e = match m.get_mut(key) {
                Some(e) => e,
                None => m.entry(key.to_owned()).or_default(),
            };
            e.0 += u64::from(v.keep);
            e.1 += 1;
        }
    }

    pub fn traces(&self, keep: bool, policy: Policy) -> u64 {
        self.traces[usize::from(!keep)][policy as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn spans(&self, keep: bool, policy: Policy) -> u64 {
        self.spans[usize::from(!keep)][policy as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl crate::telemetry::Stats for SamplingStats {
    fn render(&self, o: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        for (name, what, c) in [
            (
                "sidetrace_sampling_traces_total",
                "Traces decided, by decision and policy.",
                &self.traces,
            ),
            (
                "sidetrace_sampling_spans_total",
                "Spans kept or dropped by sampling, by decision and policy.",
                &self.spans,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {what}\n# TYPE {name} counter");
            for (d, decision) in ["kept", "dropped"].iter().enumerate() {
                for p in Policy::ALL {
                    let _ = writeln!(
                        o,
                        "{name}{{decision=\"{decision}\",policy=\"{}\"}} {}",
                        p.label(),
                        c[d][p as usize].load(Relaxed)
                    );
                }
            }
        }
        let _ = writeln!(
            o,
            "# HELP sidetrace_sampling_early_decisions_total Traces decided before their grace period ended, to stay within the hold caps.\n# TYPE sidetrace_sampling_early_decisions_total counter\nsidetrace_sampling_early_decisions_total {}",
            self.early.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP sidetrace_sampling_open_traces Traces held awaiting a decision.\n# TYPE sidetrace_sampling_open_traces gauge\nsidetrace_sampling_open_traces {}",
            self.open_traces.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP sidetrace_sampling_held_bytes Bytes held for undecided traces.\n# TYPE sidetrace_sampling_held_bytes gauge\nsidetrace_sampling_held_bytes {}",
            self.held_bytes.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP sidetrace_sampling_effective_ratio Kept traces / all traces, per service.\n# TYPE sidetrace_sampling_effective_ratio gauge"
        );
        let m = self.per_service.lock().unwrap_or_else(|e| e.into_inner());
        let mut services: Vec<_> = m.iter().collect();
        services.sort();
        for (s, (kept, all)) in services {
            let esc = s
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                o,
                "sidetrace_sampling_effective_ratio{{service=\"{esc}\"}} {}",
                *kept as f64 / (*all).max(1) as f64
            );
        }
    }
}
