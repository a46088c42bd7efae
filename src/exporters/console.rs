//! Console exporter: one compact line per finished trace on stdout, for local development.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Key, Section};
use crate::exporters::{Export, ExporterStats, Running, Shared};
use crate::model::{Batch, TraceId, hex};

/// How long the console waits after a trace's last span for stragglers before printing it.
pub const DEFAULT_CONSOLE_GRACE: Duration = Duration::from_secs(1);

/// The `console.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleConfig {
    pub grace: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            grace: DEFAULT_CONSOLE_GRACE,
        }
    }
}

impl Section for ConsoleConfig {
    const KEYS: &'static [Key<Self>] = &[Key::<Self>::duration(
        "console.grace",
        "Console: wait this long after a trace's root span for late spans before printing it.",
        |c| &mut c.grace,
    )];
}

/// Most traces the console follows at once; beyond it the oldest is printed as it stands.
pub const MAX_PENDING_TRACES: usize = 10_000;

#[derive(Debug)]
struct Pending {
    spans: u32,
    error: bool,
    start: u64,
    end: u64,
    /// (is parentless, start, service, name) of the best root candidate so far.
    root: Option<(bool, u64, String, String)>,
    last_seen: Instant,
}

/// Follows traces as their spans arrive and prints each once no span came for `grace`.
pub struct Console {
    pending: HashMap<TraceId, Pending>,
    order: VecDeque<TraceId>,
    grace: Duration,
    out: Box<dyn Write + Send>,
    stats: Arc<ExporterStats>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Console {
    pub fn new(grace: Duration, out: Box<dyn Write + Send>) -> Self {
        Console {
            pending: HashMap::new(),
            order: VecDeque::new(),
            grace,
            out,
            stats: ExporterStats::new("console"),
        }
    }

    /// The span accounting of the `console` exporter.
    pub fn exporter_stats(&self) -> Arc<ExporterStats> {
        self.stats.clone()
    }

    pub fn stdout(grace: Duration) -> Self {
        Console::new(grace, Box::new(std::io::stdout()))
    }

    pub fn observe(&mut self, batch: &Batch, now: Instant) {
        for s in &batch.spans {
            if !self.pending.contains_key(&s.trace_id) {
                if self.pending.len() >= MAX_PENDING_TRACES
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.print(&oldest);
                }
                self.order.push_back(s.trace_id);
            }
            let p = self.pending.entry(s.trace_id).or_insert_with(|| Pending {
                spans: 0,
                error: false,
                start: u64::MAX,
                end: 0,
                root: None,
                last_seen: now,
            });
            p.spans += 1;
            p.error |= s.is_error();
            p.start = p.start.min(s.start_unix_nano);
            p.end = p.end.max(s.end_unix_nano);
            p.last_seen = now;
            // Prefer a parentless span; among equals, the earliest start (the local root).
            let better = match &p.root {
                None => true,
                Some((parentless, start, ..)) => {
                    (!s.has_parent() && !parentless)
                        || (s.has_parent() != *parentless && s.start_unix_nano < *start)
                }
            };
            if better {
                p.root = Some((
                    !s.has_parent(),
                    s.start_unix_nano,
                    batch.service_name(s).to_owned(),
                    batch.span_name(s).to_owned(),
                ));
            }
        }
    }

    /// Prints the traces that have been quiet for the grace period.
    pub fn flush_due(&mut self, now: Instant) {
        while let Some(id) = self.order.front().copied() {
            match self.pending.get(&id) {
                None => {
                    self.order.pop_front();
                }
                Some(p) if now.duration_since(p.last_seen) >= self.grace => {
                    self.order.pop_front();
                    self.print(&id);
                }
                // Traces quiet the longest are not always first in order; a later tick gets them.
                Some(_) => break,
            }
        }
    }

    pub fn flush_all(&mut self) {
        while let Some(id) = self.order.pop_front() {
            self.print(&id);
        }
        let _ = self.out.flush();
    }

    fn print(&mut self, id: &TraceId) {
        let Some(p) = self.pending.remove(id) else {
            return;
        };
        let (service, name) = p.root.map(|(_, _, s, n)| (s, n)).unwrap_or_default();
        let mark = if p.error { "  ERROR" } else { "" };
        let _ = writeln!(
            self.out,
            "{}  {}  {}  {}  {} span{}{}",
            hex(id),
            if service.is_empty() { "-" } else { &service },
            if name.is_empty() { "-" } else { &name },
            format_duration(p.end.saturating_sub(p.start)),
            p.spans,
            if p.spans == 1 { "" } else { "s" },
            mark
        );
    }
}

/// Starts the `console` exporter: a line per finished trace on stdout.
pub fn start(c: &ConsoleConfig, shared: &Shared) -> Running {
    let console = Console::stdout(c.grace);
    let stats = console.exporter_stats();
    crate::exporters::spawn(console, stats, shared.input_bytes)
}

impl Export for Console {
    async fn export(&mut self, batch: &Batch, now: Instant) {
        self.observe(batch, now);
        self.stats.sent(batch.spans.len() as u64);
    }

    async fn tick(&mut self, now: Instant) {
        self.flush_due(now);
    }

    async fn shutdown(&mut self) {
        self.flush_all();
    }
}

/// "850µs", "12.3ms", "1.20s".
pub fn format_duration(nanos: u64) -> String {
    if nanos < 1_000_000 {
        format!("{}µs", nanos / 1_000)
    } else if nanos < 1_000_000_000 {
        format!("{:.1}ms", nanos as f64 / 1e6)
    } else {
        format!("{:.2}s", nanos as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(850_000), "850µs");
        assert_eq!(format_duration(12_300_000), "12.3ms");
        assert_eq!(format_duration(1_200_000_000), "1.20s");
    }

    #[tokio::test(start_paused = true)]
    async fn prints_a_trace_once_quiet_for_the_grace_period() {
        use crate::proto::*;
        use prost::Message;
        let span = |id: u8, parent: Option<u8>, status: i32, name: &str| Span {
            trace_id: vec![7; 16].into(),
            span_id: vec![id; 8].into(),
            parent_span_id: parent.map(|p| vec![p; 8].into()).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: 1_000_000 * u64::from(id),
            end_time_unix_nano: 50_000_000,
            status: Some(Status {
                code: status,
                message: String::new(),
            }),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("cart".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(2, Some(1), 2, "db"), span(1, None, 0, "GET /cart")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = crate::receivers::decode::decode_request(
            req.encode_to_vec().into(),
            crate::model::Protocol::Grpc,
        )
        .unwrap()
        .batch;
        let sink = Sink::default();
        let mut c = Console::new(Duration::from_secs(1), Box::new(sink.clone()));
        c.observe(&batch, Instant::now());
        c.flush_due(Instant::now());
        assert!(sink.0.lock().unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        c.flush_due(Instant::now());
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "{}  cart  GET /cart  49.0ms  2 spans  ERROR\n",
                "07".repeat(16)
            )
        );
    }
}
