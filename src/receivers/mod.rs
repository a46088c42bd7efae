//! Receivers: OTLP over gRPC and HTTP (protobuf and JSON). They decode and hand off to the
//! pipeline; here are their shared settings, the metered request body and the one gunzip.

pub mod connections;
pub mod decode;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod otlp_json;
pub mod xray_udp;

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::config::{Key, Section};
use crate::pipeline::memory::ReadTicket;

/// OTLP spec: default gRPC port, on loopback (the Collector's default since v0.104).
pub const DEFAULT_OTLP_GRPC_ADDR: &str = "127.0.0.1:4317";
/// OTLP spec: default HTTP port.
pub const DEFAULT_OTLP_HTTP_ADDR: &str = "127.0.0.1:4318";
/// gRPC's customary 4 MiB message cap, applied after decompression to both OTLP protocols.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// HTTP/2 (OTLP/gRPC, and OTLP/HTTP over h2): most bytes of a request's header list, on both
/// receivers (h2's own default is 16 MB).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Where the receivers listen and how large a request they take.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiversConfig {
    pub otlp_grpc_addr: std::net::SocketAddr,
    pub otlp_http_addr: std::net::SocketAddr,
    pub max_request_bytes: usize,
    /// Per OTLP receiver (and the X-Ray sampling proxy).
    pub max_connections: usize,
    pub connection_idle_timeout: std::time::Duration,
}

impl Default for ReceiversConfig {
    fn default() -> Self {
        let addr = |s: &str| s.parse().expect("default address parses");
        ReceiversConfig {
            otlp_grpc_addr: addr(DEFAULT_OTLP_GRPC_ADDR),
            otlp_http_addr: addr(DEFAULT_OTLP_HTTP_ADDR),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_connections: connections::DEFAULT_MAX_CONNECTIONS,
            connection_idle_timeout: connections::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

type K = Key<ReceiversConfig>;

impl Section for ReceiversConfig {
    const KEYS: &'static [K] = &[
        K::addr("otlp_grpc_addr", "OTLP/gRPC listen address.", |c| {
            &mut c.otlp_grpc_addr
        })
        .flag(),
        K::addr(
            "otlp_http_addr",
            "OTLP/HTTP listen address (POST /v1/traces, protobuf or JSON, gzip).",
            |c| &mut c.otlp_http_addr,
        )
        .flag(),
        K::count(
            "max_request_bytes",
            "Largest OTLP request accepted, after decompression (bytes; KiB/MiB suffixes allowed).",
            |c| &mut c.max_request_bytes,
        ),
        K::count(
            "max_connections",
            "Most connections open at once on each OTLP receiver and the X-Ray sampling port; at the cap the longest-idle one is closed for a new one.",
            |c| &mut c.max_connections,
        ),
        K::duration(
            "connection_idle_timeout",
            "A connection that sends nothing this long is closed (slowloris; the client reconnects on its next export).",
            |c| &mut c.connection_idle_timeout,
        ),
    ];
}

/// A request body whose data frames are counted against the agent's read budget as they
/// arrive; past the budget it ends with [`OverReadBudget`] and the receiver answers with the
/// retryable memory-limit refusal.
#[derive(Debug)]
pub struct Metered<B> {
    inner: B,
    ticket: Arc<ReadTicket>,
    grpc: Option<GrpcPrefix>,
}

/// gRPC framing: tonic reserves a message's whole declared length as soon as it has read the
/// 5-byte prefix, so that length is what must be taken from the budget, before tonic sees it.
#[derive(Debug, Default)]
struct GrpcPrefix {
    head: [u8; 5],
    seen: usize,
    /// Bytes of the current message already taken from the budget and not yet arrived.
    prepaid: u64,
}

impl<B> Metered<B> {
    /// Counts data bytes as they arrive (OTLP/HTTP).
    pub fn new(inner: B, ticket: Arc<ReadTicket>) -> Self {
        Metered {
            inner,
            ticket,
            grpc: None,
        }
    }

    /// Counts each gRPC message's declared length when its prefix arrives (OTLP/gRPC).
    pub fn grpc(inner: B, ticket: Arc<ReadTicket>) -> Self {
        Metered {
            inner,
            ticket,
            grpc: Some(GrpcPrefix::default()),
        }
    }

    /// The bytes of `data` to take from the budget now.
    fn charge(&mut self, data: &[u8]) -> u64 {
        let Some(g) = &mut self.grpc else {
            return data.len() as u64;
        };
        let mut charge = 0u64;
        let mut rest = data;
        while !rest.is_empty() {
            if g.prepaid > 0 {
                let n = (rest.len() as u64).min(g.prepaid);
                g.prepaid -= n;
                rest = &rest[n as usize..];
                continue;
            }
            let n = (5 - g.seen).min(rest.len());
            g.head[g.seen..g.seen + n].copy_from_slice(&rest[..n]);
            g.seen += n;
            rest = &rest[n..];
            charge += n as u64;
            if g.seen == 5 {
                let len = u32::from_be_bytes([g.head[1], g.head[2], g.head[3], g.head[4]]);
                g.seen = 0;
                g.prepaid = u64::from(len);
                charge += u64::from(len);
            }
        }
        charge
    }
}

/// The body error a [`Metered`] body ends with when the read budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("the agent's read budget is spent")]
pub struct OverReadBudget;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = this.charge(d);
                    if n > 0 && !this.ticket.take(n) {
                        return Poll::Ready(Some(Err(OverReadBudget.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a compressed body could not be inflated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    #[error("decompressed body exceeds the {0}-byte limit")]
    TooLarge(usize),
    #[error("invalid gzip body: {0}")]
    Corrupt(String),
}

/// Gunzips a body, stopping as soon as the output would pass `cap` bytes (gzip bombs cost
/// at most `cap` of memory). The one place that decompresses untrusted input.
pub fn gunzip_capped(input: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(cap));
    let mut reader = flate2::read::MultiGzDecoder::new(input).take(cap as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Corrupt(e.to_string()))?;
    if out.len() > cap {
        return Err(InflateError::TooLarge(cap));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn grpc_bodies_are_charged_their_declared_length_when_the_prefix_arrives() {
        let guard = Arc::new(crate::pipeline::MemoryGuard::new(0));
        let mut m = Metered::grpc((), Arc::new(ReadTicket::new(guard)));
        let mut msg = vec![0u8, 0, 0, 0, 100];
        msg.extend([7u8; 100]);
        // The prefix split across frames; the first frame that completes it pays for the message.
        assert_eq!(m.charge(&msg[..3]), 3);
        assert_eq!(m.charge(&msg[3..10]), 2 + 100);
        assert_eq!(m.charge(&msg[10..]), 0, "already paid");
        // A second message in the same frame as the end of nothing else.
        let mut two = vec![0u8, 0, 0, 0, 1, 9];
        two.extend([0u8, 0, 0, 0, 2, 1, 2]);
        assert_eq!(m.charge(&two), 5 + 1 + 5 + 2);
        let mut h = Metered::new((), m.ticket.clone());
        assert_eq!(h.charge(&[1, 2, 3]), 3, "HTTP bodies pay as they arrive");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_within_the_cap() {
        assert_eq!(gunzip_capped(&gzip(b"hello"), 5).unwrap(), b"hello");
    }

    #[test]
    fn bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100 << 10);
        assert_eq!(
            gunzip_capped(&bomb, 1 << 20),
            Err(InflateError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(
            gunzip_capped(b"not gzip", 100),
            Err(InflateError::Corrupt(_))
        ));
    }
}
