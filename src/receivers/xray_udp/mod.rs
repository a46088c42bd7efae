//! The X-Ray daemon's UDP port: segment documents from the X-Ray SDKs, one per datagram, relayed
//! byte for byte to the X-Ray exporter (the SDK already sampled them, so the pipeline's sampler
//! does not see them), and viewed as spans by the rest of the pipeline. Bad datagrams are counted by reason and logged at a bounded rate.

pub mod datagram;
pub mod span_view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Key, Section};
use crate::exporters::Input;
use crate::exporters::xray::RequestBody;
use crate::model::{Protocol, RawDocument};
use crate::pipeline::Pipeline;
use crate::receivers::decode::decode_request;
use crate::telemetry::{Counters, Stats, family};
use datagram::{MAX_DATAGRAM_BYTES, Reject};
use span_view::SpanViews;

/// The X-Ray daemon's default address (aws-xray-daemon cfg.go `Socket.UDPAddress`).
pub const DEFAULT_XRAY_UDP_ADDR: &str = "127.0.0.1:2000";
/// Socket receive buffer asked for: ~60 full datagrams of slack while the task is busy. The
/// kernel caps it at `net.core.rmem_max`; the startup log says what was granted.
pub const RECV_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Datagrams read per wake-up before handing them on (one hand-off per burst, not per datagram).
const BURST: usize = 64;
/// How long a burst's documents wait for room in the X-Ray exporter's input. While they wait
/// the exporter gets the CPU, and datagrams not yet read wait in (or are dropped and counted
/// by) the kernel instead of being parsed only to be spilled: without the wait, at saturation,
/// 2.7 k/s of 580 k/s offered were relayed. While X-Ray is down every wait times out, so the
/// receiver reads (and spills, with span views) one burst per wait.
const ROOM_WAIT: Duration = Duration::from_millis(20);
/// At most one warning per reason in this interval (a hostile sender must not flood the log).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The `xray_udp_addr` key.
#[derive(Debug, Clone, PartialEq)]
pub struct XrayUdpConfig {
    pub xray_udp_addr: SocketAddr,
}

impl Default for XrayUdpConfig {
    fn default() -> Self {
        XrayUdpConfig {
            xray_udp_addr: DEFAULT_XRAY_UDP_ADDR
                .parse()
                .expect("default address parses"),
        }
    }
}

impl Section for XrayUdpConfig {
    const KEYS: &'static [Key<Self>] = &[Key::<Self>::addr(
        "xray_udp_addr",
        "X-Ray daemon address for the X-Ray SDKs: UDP segment documents (relayed to X-Ray as sent).",
        |c| &mut c.xray_udp_addr,
    )
    .flag()];
}

/// Why a document that parsed was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spill {
    /// The X-Ray exporter's input was full (the daemon's "spillover").
    InputFull,
    /// No X-Ray exporter relays documents, and the pipeline refused their span views (queue
    /// or memory full, or draining).
    PipelineFull,
}

impl Spill {
    pub const ALL: [Spill; 2] = [Spill::InputFull, Spill::PipelineFull];

    pub fn label(self) -> &'static str {
        match self {
            Spill::InputFull => "input_full",
            Spill::PipelineFull => "pipeline_full",
        }
    }
}

/// The daemon's own counters, under sidetrace names. Every datagram read is accepted, rejected
/// or spilled; segments sent are the X-Ray exporter's counters.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// The socket's inode, to find its kernel drop count in `/proc/net/udp{,6}`.
    inode: Option<u64>,
    received: Counters<1>,
    accepted: Counters<1>,
    in_progress: Counters<1>,
    rejected: Counters<{ Reject::ALL.len() }>,
    spilled: Counters<{ Spill::ALL.len() }>,
}

impl UdpStats {
    pub fn for_socket(socket: &UdpSocket) -> Self {
        UdpStats {
            inode: socket_inode(socket),
            ..UdpStats::default()
        }
    }

    /// Datagrams the kernel dropped because the socket's receive buffer was full (Linux only).
    pub fn kernel_dropped(&self) -> Option<u64> {
        let inode = self.inode?.to_string();
        ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|path| {
            let table = std::fs::read_to_string(path).ok()?;
            table.lines().skip(1).find_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                // Columns: sl local rem st queues tr retrnsmt uid timeout inode ref pointer drops.
                (cols.get(9) == Some(&inode.as_str())).then(|| cols.last()?.parse().ok())?
            })
        })
    }

    pub fn received(&self) -> u64 {
        self.received.get(0)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.get(0)
    }

    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected.get(r as usize)
    }

    pub fn spilled(&self, s: Spill) -> u64 {
        self.spilled.get(s as usize)
    }
}

impl Stats for UdpStats {
    fn render(&self, o: &mut String) {
        family(
            o,
            "sidetrace_xray_udp_segments_received_total",
            "counter",
            "Datagrams read from the X-Ray daemon port.",
            [(String::new(), self.received())],
        );
        if let Some(dropped) = self.kernel_dropped() {
            family(
                o,
                "sidetrace_xray_udp_kernel_dropped_total",
                "counter",
                "Datagrams the kernel dropped before the agent read them (socket receive buffer full).",
                [(String::new(), dropped)],
            );
        }
        family(
            o,
            "sidetrace_xray_udp_segments_accepted_total",
            "counter",
            "Documents handed on: to the X-Ray exporter as sent, or (without one) as spans to the pipeline.",
            [(String::new(), self.accepted())],
        );
        family(
            o,
            "sidetrace_xray_udp_in_progress_segments_total",
            "counter",
            "Accepted documents marked in_progress (sent again when their segment ends; no span view).",
            [(String::new(), self.in_progress.get(0))],
        );
        family(
            o,
            "sidetrace_xray_udp_segments_rejected_total",
            "counter",
            "Datagrams refused as malformed, by reason.",
            Reject::ALL
                .iter()
                .map(|r| (format!("reason=\"{}\"", r.label()), self.rejected(*r))),
        );
        family(
            o,
            "sidetrace_xray_udp_segments_spilled_total",
            "counter",
            "Well-formed documents dropped because there was no room for them, by reason.",
            Spill::ALL
                .iter()
                .map(|s| (format!("reason=\"{}\"", s.label()), self.spilled(*s))),
        );
    }
}

/// Binds the UDP socket with a large receive buffer.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: an unprivileged process gets at most rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    let socket = UdpSocket::from_std(socket.into())?;
    info!(
        receiver = "xray_udp",
        recv_buffer_bytes = granted,
        "X-Ray UDP receive buffer."
    );
    Ok(socket)
}

/// The socket's inode, from its `/proc/self/fd` link (`socket:[12345]`).
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Logs a rejection at most once per reason every [`WARN_EVERY`].
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: [Option<Instant>; Reject::ALL.len()],
}

impl RateLimitedLog {
    fn reject(&mut self, r: Reject, from: SocketAddr, now: Instant, stats: &UdpStats) {
        let slot = &mut self.last[r as usize];
        if slot.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *slot = Some(now);
            warn!(
                receiver = "xray_udp",
                reason = r.label(),
                from = %from,
                rejected_total = stats.rejected(r),
                "X-Ray datagram rejected (further ones are counted, logged at most every 10 s)."
            );
        }
    }
}

/// Reads datagrams until `stop` resolves. Documents go to `xray` (the X-Ray exporter that
/// relays them) when one runs, and their span views to `pipeline` for span metrics and the
/// other exporters.
pub fn start(
    socket: UdpSocket,
    xray: Option<Input>,
    pipeline: Arc<Pipeline>,
    stats: Arc<UdpStats>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(stop);
        // One byte more than a UDP payload can be, so a cut datagram is seen as too large.
        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
        let mut log = RateLimitedLog::default();
        let mut views = SpanViews::default();
        let mut services = Services::default();
        loop {
            let first = tokio::select! {
                _ = &mut stop => break,
                r = socket.recv_from(&mut buf) => r,
            };
            let mut docs = Vec::new();
            let mut parsed = 0u64;
            let (mut next, mut reads) = (Some(first), 0);
            while let Some(r) = next.take() {
                reads += 1;
                match r {
                    Ok((n, from)) => {
                        stats.received.add(0, 1);
                        match datagram::parse(&buf[..n]) {
                            Ok(d) => {
                                parsed += 1;
                                stats
                                    .in_progress
                                    .add(0, u64::from(d.segment.in_progress == Some(true)));
                                let service = services.learn(from, &d.segment);
                                views.add(&d.segment, service.as_deref());
                                if xray.is_some() {
                                    docs.push(RawDocument {
                                        id: d.id().to_owned(),
                                        escaped: RequestBody::escape(d.json),
                                    });
                                }
                            }
                            Err(r) => {
                                stats.rejected.add(r as usize, 1);
                                log.reject(r, from, Instant::now(), &stats);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!(receiver = "xray_udp", error = %e, "X-Ray UDP read failed.");
                        break;
                    }
                }
                if reads < BURST {
                    next = Some(socket.try_recv_from(&mut buf));
                }
            }
            if parsed == 0 {
                continue;
            }
            let viewed = views.is_empty() || admit_views(&pipeline, &mut views);
            match &xray {
                Some(input) => match input.send_documents(docs, Instant::now() + ROOM_WAIT).await {
                    Ok(()) => stats.accepted.add(0, parsed),
                    Err(_) => stats.spilled.add(Spill::InputFull as usize, parsed),
                },
                None if viewed => stats.accepted.add(0, parsed),
                None => stats.spilled.add(Spill::PipelineFull as usize, parsed),
            }
        }
    })
}

/// The service each sender last named in a segment. An X-Ray SDK sends from one socket per
/// process, so this names the service of the independent subsegments it streams (which carry
/// no service name) once one of its segments has been seen.
#[derive(Debug, Default)]
struct Services(std::collections::HashMap<SocketAddr, String>);

impl Services {
    /// Senders remembered; past it the map starts over (a sidecar sees a handful).
    const MAX: usize = 1024;

    fn learn(&mut self, from: SocketAddr, seg: &datagram::Segment<'_>) -> Option<String> {
        if seg.kind.as_deref() == Some("subsegment") {
            return self.0.get(&from).cloned();
        }
        let name = seg.name.as_deref()?;
        if self.0.get(&from).map(String::as_str) != Some(name) {
            if self.0.len() >= Self::MAX {
                self.0.clear();
            }
            self.0.insert(from, name.to_owned());
        }
        None
    }
}

/// Admits one burst's span views like an OTLP request (the receiver counters count them under
/// `protocol="xray_udp"`); false when the pipeline refused them.
fn admit_views(pipeline: &Pipeline, views: &mut SpanViews) -> bool {
    let body = views.take_encoded();
    if pipeline.precheck(Protocol::XrayUdp, body.len()).is_err() {
        return false;
    }
    match decode_request(body.into(), Protocol::XrayUdp) {
        Ok(decoded) => pipeline.admit(Protocol::XrayUdp, decoded).is_ok(),
        // The view is built from checked documents; a failure here is a bug, not bad input.
        Err(e) => {
            warn!(receiver = "xray_udp", error = %e, "X-Ray span view did not decode.");
            false
        }
    }
}
