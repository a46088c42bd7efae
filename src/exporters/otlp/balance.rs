//! Trace-ID load balancing over several OTLP backends (`otlp.endpoints`): every span of a trace
//! goes to the backend its trace ID ranks highest (rendezvous hashing, the same on every sidecar),
//! so a gateway tier sees whole traces. Adding or removing one of N backends moves about 1/N of
//! the traces. A backend that keeps failing is marked down for a while and what it held is sent
//! to the backends that now own those traces: nothing accepted is dropped for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::exporters::otlp::{Limits, Request, Sender, Splicer};
use crate::exporters::retry::{self, Backoff, RetryPolicy, Sends};
use crate::exporters::{Export, ExporterStats};
use crate::model::{Batch, DropReason, SpanInfo, Ticket};
use crate::telemetry::{Stats, family};

/// How long a backend that failed stays out of the ring.
pub const DOWN_FOR: Duration = Duration::from_secs(10);
/// Attempts on a backend, over about a second, before its request goes to the trace's next owner.
const BACKEND_RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(100),
    cap: Duration::from_millis(500),
    max_elapsed: Duration::from_secs(1),
};

/// One configured entry: a fixed URL, or a DNS name resolved to one backend per address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Url(String),
    /// `dns:` (plaintext) or `dns+https:` (TLS, the certificate checked against `host`).
    Dns {
        host: String,
        port: u16,
        https: bool,
    },
}

impl Target {
    /// `http(s)://host:port[/path]` (`/v1/traces` when no path is given), `dns:HOST:PORT` or
    /// `dns+https:HOST:PORT`.
    pub fn parse(text: &str) -> Result<Target, String> {
        let t = text.trim();
        let dns = t
            .strip_prefix("dns:")
            .map(|r| (r, false))
            .or_else(|| t.strip_prefix("dns+https:").map(|r| (r, true)));
        if let Some((rest, https)) = dns {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{t:?}: dns:HOST:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("{t:?}: {port:?} is not a port"))?;
            if host.is_empty() {
                return Err(format!("{t:?}: no host"));
            }
            return Ok(Target::Dns {
                host: host.into(),
                port,
                https,
            });
        }
        let Some(after) = t
            .strip_prefix("http://")
            .or_else(|| t.strip_prefix("https://"))
        else {
            return Err(format!(
                "{t:?} is not an http(s):// URL, dns:HOST:PORT or dns+https:HOST:PORT"
            ));
        };
        Ok(Target::Url(if after.contains('/') {
            t.into()
        } else {
            format!("{t}/v1/traces")
        }))
    }

    /// Whether it is reached over TLS.
    pub fn is_https(&self) -> bool {
        match self {
            Target::Url(u) => u.starts_with("https://"),
            Target::Dns { https, .. } => *https,
        }
    }
}

/// `scheme://authority` of a URL (what a gRPC channel takes).
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// A backend's rank for a trace: the highest wins (rendezvous hashing). Only the trace ID and
/// the backend's URL go in, so every sidecar ranks alike.
pub fn score(trace_id: &[u8; 16], backend_key: u64) -> u64 {
    let hi = u64::from_be_bytes(trace_id[..8].try_into().unwrap_or([0; 8]));
    let lo = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8]));
    mix(hi ^ mix(lo ^ backend_key))
}

/// The backend's key: FNV-1a of its URL.
pub fn backend_key(url: &str) -> u64 {
    url.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which of `keys` owns `trace_id`.
pub fn owner(trace_id: &[u8; 16], keys: &[u64]) -> Option<usize> {
    (0..keys.len()).max_by_key(|&i| score(trace_id, keys[i]))
}

/// One backend's counters (`sidetrace_otlp_backend_*{backend}`).
#[derive(Debug, Default)]
pub struct BackendStats {
    url: String,
    sent: AtomicU64,
    retries: AtomicU64,
    rerouted: AtomicU64,
    up: AtomicU64,
}

/// The backends' counters, those of backends gone included until they are forgotten.
#[derive(Debug, Default)]
pub struct BalanceStats {
    backends: std::sync::Mutex<Vec<Arc<BackendStats>>>,
    rerouted_traces: AtomicU64,
    split_traces: AtomicU64,
}

impl Stats for BalanceStats {
    fn render(&self, o: &mut String) {
        let list = self.backends.lock().map(|l| l.clone()).unwrap_or_default();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let label = |b: &BackendStats| format!("backend=\"{}\"", b.url.replace('"', ""));
        for (name, kind, help, get) in [
            (
                "sidetrace_otlp_backend_sent_spans_total",
                "counter",
                "Spans each load-balanced OTLP backend took.",
                (|b: &BackendStats| &b.sent) as fn(&BackendStats) -> &AtomicU64,
            ),
            (
                "sidetrace_otlp_backend_retries_total",
                "counter",
                "Failed attempts on each backend that were retried.",
                |b| &b.retries,
            ),
            (
                "sidetrace_otlp_backend_rerouted_spans_total",
                "counter",
                "Spans a backend failed to take, sent to the traces' next owner instead.",
                |b| &b.rerouted,
            ),
            (
                "sidetrace_otlp_backend_up",
                "gauge",
                "1 while a backend is in the ring, 0 while it is marked down.",
                |b| &b.up,
            ),
        ] {
            family(
                o,
                name,
                kind,
                help,
                list.iter().map(|b| (label(b), g(get(b)))),
            );
        }
        family(
            o,
            "sidetrace_otlp_rerouted_traces_total",
            "counter",
            "Traces in requests sent to another backend after a failure: they may arrive at two backends in parts.",
            [(String::new(), g(&self.rerouted_traces))],
        );
        family(
            o,
            "sidetrace_otlp_split_traces_total",
            "counter",
            "Moves of a trace to another backend than its earlier spans went to (a backend joined, left or failed between them): such traces arrive in parts. Counted once per move, for traces seen in the last 30-60 s.",
            [(String::new(), g(&self.split_traces))],
        );
    }
}

/// How long a trace's owner is remembered, per generation (an entry lives one to two of these):
/// about as long as a gateway holds a trace before deciding.
const SPLIT_WINDOW: Duration = Duration::from_secs(30);
/// Traces remembered per generation; a full one starts the next early. 7/8 of 65,536: the most a
/// map of 65,536 buckets holds before it doubles (so ~1.1 MB per generation at most).
const SPLIT_CAP: usize = 57_344;

/// Where recent traces went, to count exactly the traces whose spans went to two backends (a
/// backend joined, left, or failed between their spans). Two generations bound its memory.
#[derive(Debug)]
struct RecentOwners {
    current: HashMap<u64, u64>,
    previous: HashMap<u64, u64>,
    since: Instant,
}

impl RecentOwners {
    fn new(now: Instant) -> Self {
        RecentOwners {
            current: HashMap::new(),
            previous: HashMap::new(),
            since: now,
        }
    }

    /// Records that `trace` went to `backend`; true when it had gone to another before.
    fn moved(&mut self, trace: &[u8; 16], backend: u64, now: Instant) -> bool {
        if now.duration_since(self.since) >= SPLIT_WINDOW || self.current.len() >= SPLIT_CAP {
            self.previous = std::mem::take(&mut self.current);
            self.since = now;
        }
        // W3C trace IDs end in random bytes: the low half, with the high half mixed in, is key enough.
        let id = mix(u64::from_ne_bytes(trace[..8].try_into().unwrap_or([0; 8])))
            ^ u64::from_ne_bytes(trace[8..].try_into().unwrap_or([0; 8]));
        let before = match self.current.insert(id, backend) {
            Some(b) => Some(b),
            None => self.previous.get(&id).copied(),
        };
        before.is_some_and(|b| b != backend)
    }
}

/// A request a backend could not take, back for its traces' next owners.
struct Reroute {
    url: String,
    request: Request,
}

struct Backend {
    url: String,
    key: u64,
    splicer: Splicer,
    sender: Arc<Sender>,
    stats: Arc<BackendStats>,
    down_until: Option<Instant>,
}

/// Rebuilds a batch's span index from a spliced request (the receivers' decoder, handed in by
/// the agent so that exporters do not reach back up into receivers).
pub type Reindex = fn(bytes::Bytes) -> Option<Batch>;

/// How backends are reached.
#[derive(Debug, Clone)]
pub struct BalanceSettings {
    pub targets: Vec<Target>,
    pub resolve_interval: Duration,
    pub limits: Limits,
    pub concurrency: usize,
    pub timeout: Duration,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub gzip: bool,
    /// OTLP/gRPC to each backend (`http(s)://host:port`), else OTLP/HTTP.
    pub grpc: bool,
    /// Loaded when a backend is https or a CA / client certificate is set.
    pub tls: Option<super::Tls>,
    pub reindex: Reindex,
}

/// The load-balancing `otlp` exporter.
pub struct Balancer {
    settings: BalanceSettings,
    backends: Vec<Backend>,
    next_resolve: Option<Instant>,
    stats: Arc<ExporterStats>,
    balance: Arc<BalanceStats>,
    sends: Sends,
    reroute_tx: mpsc::UnboundedSender<Reroute>,
    reroute_rx: mpsc::UnboundedReceiver<Reroute>,
    recent: RecentOwners,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field(
                "backends",
                &self.backends.iter().map(|b| &b.url).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Balancer {
    pub fn new(
        settings: BalanceSettings,
        stats: Arc<ExporterStats>,
        balance: Arc<BalanceStats>,
    ) -> Self {
        let (reroute_tx, reroute_rx) = mpsc::unbounded_channel();
        Balancer {
            sends: Sends::new(settings.concurrency.max(1)),
            settings,
            backends: Vec::new(),
            next_resolve: None,
            stats,
            balance,
            reroute_tx,
            reroute_rx,
            recent: RecentOwners::new(Instant::now()),
        }
    }

    /// The backends' URLs now: fixed ones, and one per address of each DNS name (with the name
    /// its certificate must hold, for `dns+https:`).
    async fn resolve(&self) -> Vec<(String, Option<String>)> {
        let mut urls = Vec::new();
        for t in &self.settings.targets {
            match t {
                Target::Url(u) if self.settings.grpc => urls.push((origin(u).to_owned(), None)),
                Target::Url(u) => urls.push((u.clone(), None)),
                Target::Dns { host, port, https } => {
                    let lookup = tokio::net::lookup_host((host.as_str(), *port));
                    let scheme = if *https { "https" } else { "http" };
                    let name = https.then(|| host.clone());
                    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                        Ok(Ok(addrs)) => {
                            for a in addrs {
                                let url = match self.settings.grpc {
                                    true => format!("{scheme}://{a}"),
                                    false => format!("{scheme}://{a}/v1/traces"),
                                };
                                urls.push((url, name.clone()));
                            }
                        }
                        Ok(Err(e)) => {
                            warn!(exporter = "otlp", host = %host, error = %e, "Backend name not resolved; keeping the last answer.")
                        }
                        Err(_) => {
                            warn!(exporter = "otlp", host = %host, "Backend name lookup timed out; keeping the last answer.")
                        }
                    }
                }
            }
        }
        urls.sort();
        urls.dedup();
        urls
    }

    /// Re-resolves when due; backends that left give back what they held (rerouted next).
    async fn refresh(&mut self, now: Instant) {
        if self.next_resolve.is_some_and(|t| now < t) {
            return;
        }
        self.next_resolve = Some(now + self.settings.resolve_interval);
        let urls = self.resolve().await;
        let dns = self
            .settings
            .targets
            .iter()
            .any(|t| matches!(t, Target::Dns { .. }));
        if urls.is_empty() && dns {
            // A failed lookup keeps the backends we have.
            return;
        }
        let current: HashSet<&str> = self.backends.iter().map(|b| b.url.as_str()).collect();
        let wanted: HashSet<&str> = urls.iter().map(|(u, _)| u.as_str()).collect();
        if current == wanted {
            return;
        }
        let mut gone = Vec::new();
        self.backends.retain_mut(|b| {
            let keep = wanted.contains(b.url.as_str());
            if !keep && let Some(r) = b.splicer.take() {
                gone.push(r);
            }
            keep
        });
        for (url, server_name) in urls {
            if self.backends.iter().any(|b| b.url == url) {
                continue;
            }
            let s = &self.settings;
            let sender = super::make_sender(
                &url,
                server_name.as_deref(),
                s.grpc,
                s.tls.as_ref(),
                s.timeout,
                &s.headers,
                s.gzip,
            );
            let sender = match sender {
                Ok(s) => s,
                Err(e) => {
                    warn!(exporter = "otlp", url = %url, error = %e, "Backend not usable.");
                    continue;
                }
            };
            let stats = Arc::new(BackendStats {
                url: url.clone(),
                up: AtomicU64::new(1),
                ..BackendStats::default()
            });
            self.backends.push(Backend {
                key: backend_key(&url),
                url,
                splicer: Splicer::new(self.settings.limits),
                sender: Arc::new(sender),
                stats,
                down_until: None,
            });
        }
        self.backends.sort_by(|a, b| a.url.cmp(&b.url));
        if let Ok(mut list) = self.balance.backends.lock() {
            *list = self.backends.iter().map(|b| b.stats.clone()).collect();
        }
        info!(exporter = "otlp", backends = ?self.backends.iter().map(|b| &b.url).collect::<Vec<_>>(), "Load-balancing backends.");
        // What the backends that left held goes to the new owners (in `take_reroutes`).
        for request in gone {
            let _ = self.reroute_tx.send(Reroute {
                url: String::new(),
                request,
            });
        }
    }

    /// Sends each span to its trace's owner among the backends that are up (all of them, when
    /// none is); `hold` are tickets the spans' requests still need.
    async fn route(&mut self, batch: &Batch, hold: &[Ticket], now: Instant) {
        while self.backends.is_empty() {
            // No backend known (DNS not answering): wait; the queue pushes back meanwhile.
            self.next_resolve = None;
            self.refresh(now).await;
            if self.backends.is_empty() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        for b in &mut self.backends {
            if b.down_until.is_some_and(|t| now >= t) {
                b.down_until = None;
                b.stats.up.store(1, Ordering::Relaxed);
            }
        }
        let up: Vec<usize> = (0..self.backends.len())
            .filter(|&i| self.backends[i].down_until.is_none())
            .collect();
        let ring: Vec<usize> = if up.is_empty() {
            (0..self.backends.len()).collect()
        } else {
            up
        };
        let keys: Vec<u64> = ring.iter().map(|&i| self.backends[i].key).collect();
        let mut parts: Vec<Vec<SpanInfo>> = vec![Vec::new(); self.backends.len()];
        // Spans of one trace tend to come together: rank and remember once per run of them.
        let mut last: Option<([u8; 16], usize)> = None;
        let mut split = 0;
        for s in &batch.spans {
            let o = match last {
                Some((t, o)) if t == s.trace_id => o,
                _ => {
                    let Some(o) = owner(&s.trace_id, &keys) else {
                        continue;
                    };
                    split += u64::from(self.recent.moved(&s.trace_id, keys[o], now));
                    last = Some((s.trace_id, o));
                    o
                }
            };
            parts[ring[o]].push(s.clone());
        }
        if split > 0 {
            self.balance
                .split_traces
                .fetch_add(split, Ordering::Relaxed);
        }
        let mut full = Vec::new();
        for (i, spans) in parts.into_iter().enumerate() {
            if spans.is_empty() {
                continue;
            }
            let part = Batch {
                protocol: batch.protocol,
                buf: batch.buf.clone(),
                resources: batch.resources.clone(),
                scopes: batch.scopes.clone(),
                spans,
                ticket: batch.ticket.clone(),
            };
            let b = &mut self.backends[i];
            let added = b.splicer.add_holding(&part, hold, now, &mut full);
            self.stats.rejected("span_too_large", added.too_large);
            self.stats.pending_add(-(added.too_large as i64));
            for r in full.drain(..) {
                self.send(i, r).await;
            }
        }
    }

    async fn send(&mut self, i: usize, request: Request) {
        let b = &self.backends[i];
        let (sender, stats, bstats, url, tx) = (
            b.sender.clone(),
            self.stats.clone(),
            b.stats.clone(),
            b.url.clone(),
            self.reroute_tx.clone(),
        );
        self.sends
            .spawn(move |seed| async move {
                let mut backoff = Backoff::new(BACKEND_RETRY, seed);
                let wire = sender.encode(request.body.clone());
                let spans = request.spans;
                let result = retry::deliver(
                    &mut backoff,
                    "otlp",
                    spans,
                    || sender.attempt(wire.clone()),
                    |reason| {
                        stats.retried(reason);
                        bstats.retries.fetch_add(1, Ordering::Relaxed);
                    },
                )
                .await;
                match result {
                    Ok(partial) => {
                        stats.pending_add(-(spans as i64));
                        let rejected = partial.rejected.min(spans);
                        if rejected > 0 {
                            warn!(exporter = "otlp", backend = %url, rejected, message = %partial.message, "Backend accepted the request in part.");
                        }
                        stats.rejected("otlp_partial_success", rejected);
                        stats.sent(spans - rejected);
                        bstats.sent.fetch_add(spans - rejected, Ordering::Relaxed);
                    }
                    // Still pending: its traces' next owner gets it.
                    Err(DropReason::RetryExhausted) => {
                        bstats.rerouted.fetch_add(spans, Ordering::Relaxed);
                        let _ = tx.send(Reroute { url, request });
                    }
                    Err(reason) => {
                        stats.pending_add(-(spans as i64));
                        stats.dropped(reason, spans);
                    }
                }
            })
            .await;
    }

    /// Marks the failed backend down and routes its request's spans again.
    async fn reroute(&mut self, request: Request, now: Instant) {
        let Request {
            body,
            tickets,
            spans,
        } = request;
        let request = Request {
            body: bytes::Bytes::new(),
            tickets: Vec::new(),
            spans,
        };
        let Some(batch) = (self.settings.reindex)(body) else {
            // Spliced from spans that decoded: only a bug could get here.
            warn!(
                exporter = "otlp",
                spans = request.spans,
                "A spliced request does not decode; dropped."
            );
            self.stats.pending_add(-(request.spans as i64));
            self.stats.dropped(DropReason::Undecodable, request.spans);
            return;
        };
        let traces: HashSet<[u8; 16]> = batch.spans.iter().map(|s| s.trace_id).collect();
        self.balance
            .rerouted_traces
            .fetch_add(traces.len() as u64, Ordering::Relaxed);
        self.route(&batch, &tickets, now).await;
    }

    async fn take_reroutes(&mut self, now: Instant) {
        while let Ok(Reroute { url, request }) = self.reroute_rx.try_recv() {
            if let Some(b) = self.backends.iter_mut().find(|b| b.url == url)
                && b.down_until.is_none()
            {
                warn!(exporter = "otlp", backend = %url, down_for_s = DOWN_FOR.as_secs(), "Backend failed; its traces go to the next owners for a while.");
                b.down_until = Some(now + DOWN_FOR);
                b.stats.up.store(0, Ordering::Relaxed);
            }
            self.reroute(request, now).await;
        }
    }
}

impl Export for Balancer {
    async fn export(&mut self, batch: &Batch, now: Instant) {
        self.refresh(now).await;
        self.take_reroutes(now).await;
        self.stats.pending_add(batch.spans.len() as i64);
        self.route(batch, &[], now).await;
    }

    async fn tick(&mut self, now: Instant) {
        self.refresh(now).await;
        self.take_reroutes(now).await;
        for i in 0..self.backends.len() {
            if self.backends[i].splicer.is_due(now)
                && let Some(r) = self.backends[i].splicer.take()
            {
                self.send(i, r).await;
            }
        }
    }

    async fn shutdown(&mut self) {
        // Until every send is answered or rerouted to a backend that took it.
        loop {
            for i in 0..self.backends.len() {
                if let Some(r) = self.backends[i].splicer.take() {
                    self.send(i, r).await;
                }
            }
            self.sends.wait_all().await;
            if self.reroute_rx.is_empty() {
                break;
            }
            self.take_reroutes(Instant::now()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(n: usize) -> Vec<[u8; 16]> {
        let mut rng = crate::workload::Rng::new(9);
        (0..n)
            .map(|_| {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
                t[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
                t
            })
            .collect()
    }

    #[test]
    fn recent_owners_count_a_trace_once_per_move_and_forget_after_two_windows() {
        let t0 = Instant::now();
        let mut r = RecentOwners::new(t0);
        let trace = [7u8; 16];
        assert!(!r.moved(&trace, 1, t0), "first seen");
        assert!(!r.moved(&trace, 1, t0), "same owner");
        assert!(r.moved(&trace, 2, t0), "owner changed");
        assert!(!r.moved(&trace, 2, t0), "counted once");
        // Still known one window later (from the previous generation)...
        let t1 = t0 + SPLIT_WINDOW;
        assert!(r.moved(&trace, 3, t1));
        // ...and forgotten after two windows with no span.
        let t3 = t1 + SPLIT_WINDOW * 2;
        assert!(!r.moved(&[9u8; 16], 1, t3 - SPLIT_WINDOW));
        assert!(!r.moved(&trace, 1, t3));
    }

    #[test]
    fn adding_or_removing_one_of_n_backends_moves_about_one_nth_of_the_traces() {
        let urls: Vec<String> = (1..=5)
            .map(|i| format!("http://10.0.0.{i}:4318/v1/traces"))
            .collect();
        let keys: Vec<u64> = urls.iter().map(|u| backend_key(u)).collect();
        let ids = traces(20_000);
        let four = &keys[..4];
        let before: Vec<u64> = ids.iter().map(|t| four[owner(t, four).unwrap()]).collect();
        // Spread: each of four gets about a quarter.
        for k in four {
            let n = before.iter().filter(|o| *o == k).count();
            assert!((4_500..5_500).contains(&n), "{n} of 20,000 on one of four");
        }
        // A fifth joins: only traces it now owns move, about a fifth of them.
        let after: Vec<u64> = ids.iter().map(|t| keys[owner(t, &keys).unwrap()]).collect();
        let moved: Vec<usize> = (0..ids.len()).filter(|&i| before[i] != after[i]).collect();
        assert!(
            moved.iter().all(|&i| after[i] == keys[4]),
            "moves go to the new backend only"
        );
        assert!(
            (3_500..4_500).contains(&moved.len()),
            "{} moved",
            moved.len()
        );
        // One of four leaves: exactly its traces move, about a quarter.
        let three = [keys[0], keys[1], keys[3]];
        let left: Vec<u64> = ids
            .iter()
            .map(|t| three[owner(t, &three).unwrap()])
            .collect();
        for i in 0..ids.len() {
            assert_eq!(before[i] != left[i], before[i] == keys[2]);
        }
    }

    #[test]
    fn targets_parse_as_urls_or_dns_names() {
        assert_eq!(
            Target::parse("http://gw:4318").unwrap(),
            Target::Url("http://gw:4318/v1/traces".into())
        );
        assert_eq!(
            Target::parse("https://gw/custom").unwrap(),
            Target::Url("https://gw/custom".into())
        );
        assert_eq!(
            Target::parse("dns:gateway.internal:4318").unwrap(),
            Target::Dns {
                host: "gateway.internal".into(),
                port: 4318,
                https: false
            }
        );
        let tls = Target::parse("dns+https:gateway.internal:4317").unwrap();
        assert_eq!(
            tls,
            Target::Dns {
                host: "gateway.internal".into(),
                port: 4317,
                https: true
            }
        );
        assert!(tls.is_https() && !Target::parse("http://gw:1").unwrap().is_https());
        assert!(Target::parse("dns:gateway.internal").is_err());
        assert!(Target::parse("gw:4318").is_err());
    }
}
