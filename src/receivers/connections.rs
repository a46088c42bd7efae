//! Connection caps for the OTLP receivers: at most `max_connections` open per receiver, and a
//! connection that sends nothing for `connection_idle_timeout` is closed (slowloris, forgotten
//! keep-alives). At the cap, the connection idle the longest makes room for a new one, so idle
//! clients never lock out active ones.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::telemetry::{Counters, Stats, family};

/// Collector receivers have no cap; a sidecar sees a handful of connections and a gateway a few
/// hundred, each costing buffers the read budget does not see.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// OTLP SDKs export every few seconds on one kept-alive connection, so only a silent client
/// waits this long; it reconnects on its next export.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// At the cap, a connection idle this long may be closed for a new one (a client between two
/// requests is not idle yet).
const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);
/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why a connection was closed by the agent, as the `reason` label says.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Idle,
    Evicted,
    Refused,
}

impl Closed {
    const ALL: [Closed; 3] = [Closed::Idle, Closed::Evicted, Closed::Refused];

    fn label(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
        }
    }
}

/// One open connection's state, shared by its stream and the receiver's list.
#[derive(Debug)]
struct Activity {
    /// Milliseconds since [`Connections::epoch`] when bytes last arrived.
    last_read_ms: AtomicU64,
    close: AtomicBool,
    /// The reader to wake when the connection is to close.
    waker: Mutex<Option<Waker>>,
}

impl Activity {
    fn close(&self) {
        self.close.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

/// The open connections of one receiver.
#[derive(Debug)]
pub struct Connections {
    receiver: &'static str,
    max: usize,
    idle_timeout: Duration,
    epoch: Instant,
    open: Mutex<Vec<Arc<Activity>>>,
    closed: Counters<3>,
}

impl Connections {
    pub fn new(receiver: &'static str, max: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Connections {
            receiver,
            max: max.max(1),
            idle_timeout,
            epoch: Instant::now(),
            open: Mutex::new(Vec::new()),
            closed: Counters::default(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a newly accepted connection, or refuses it (`None`: drop it, which closes it) when
    /// the receiver is at its cap and no open connection has been idle long enough to close.
    pub fn admit<IO>(self: &Arc<Self>, io: IO) -> Option<Tracked<IO>> {
        let now = self.now_ms();
        let activity = Arc::new(Activity {
            last_read_ms: AtomicU64::new(now),
            close: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        let mut open = self.list();
        let live = open
            .iter()
            .filter(|a| !a.close.load(Ordering::Acquire))
            .count();
        if live >= self.max {
            let idlest = open
                .iter()
                .filter(|a| !a.close.load(Ordering::Acquire))
                .min_by_key(|a| a.last_read_ms.load(Ordering::Relaxed));
            match idlest {
                Some(a)
                    if now.saturating_sub(a.last_read_ms.load(Ordering::Relaxed))
                        >= MIN_IDLE_TO_EVICT.as_millis() as u64 =>
                {
                    // It leaves once its task sees the close; until then the list holds one more.
                    a.close();
                    self.closed.add(Closed::Evicted as usize, 1);
                }
                _ => {
                    drop(open);
                    self.closed.add(Closed::Refused as usize, 1);
                    tracing::debug!(
                        receiver = self.receiver,
                        max = self.max,
                        "Connection refused: at max_connections."
                    );
                    return None;
                }
            }
        }
        open.push(activity.clone());
        drop(open);
        Some(Tracked {
            io,
            activity,
            connections: self.clone(),
        })
    }

    /// Closes the connections that sent nothing for the idle timeout.
    fn sweep(&self) {
        let limit = self
            .now_ms()
            .saturating_sub(self.idle_timeout.as_millis() as u64);
        for a in self.list().iter() {
            if a.last_read_ms.load(Ordering::Relaxed) < limit && !a.close.load(Ordering::Acquire) {
                a.close();
                self.closed.add(Closed::Idle as usize, 1);
            }
        }
    }

    /// Sweeps for idle connections every second until `stop` resolves.
    pub async fn sweep_until(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY.min(self.idle_timeout));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep(),
                () = &mut stop => return,
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.list().len()
    }
}

impl Stats for Connections {
    fn render(&self, o: &mut String) {
        let r = self.receiver;
        family(
            o,
            "sidetrace_receiver_connections",
            "gauge",
            "Connections open on the receiver.",
            [(format!("receiver=\"{r}\""), self.open() as u64)],
        );
        family(
            o,
            "sidetrace_receiver_connections_max",
            "gauge",
            "The receiver's max_connections.",
            [(format!("receiver=\"{r}\""), self.max as u64)],
        );
        family(
            o,
            "sidetrace_receiver_connections_closed_total",
            "counter",
            "Connections the agent closed: idle past connection_idle_timeout, evicted (the idlest, to make room at max_connections), or refused (at max_connections, none idle).",
            Closed::ALL.map(|c| {
                (
                    format!("receiver=\"{r}\",reason=\"{}\"", c.label()),
                    self.closed.get(c as usize),
                )
            }),
        );
    }
}

/// A connection counted by its receiver: reads note activity, and once the receiver closes it
/// reads end (EOF), so the server drops it whatever protocol state it was in.
#[derive(Debug)]
pub struct Tracked<IO> {
    io: IO,
    activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl<IO> Tracked<IO> {
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO> Drop for Tracked<IO> {
    fn drop(&mut self) {
        let mut open = self.connections.list();
        if let Some(i) = open.iter().position(|a| Arc::ptr_eq(a, &self.activity)) {
            open.swap_remove(i);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.activity.close.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let now = this.connections.now_ms();
                this.activity.last_read_ms.store(now, Ordering::Relaxed);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                *this
                    .activity
                    .waker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
                // A close between the check above and storing the waker must not be missed.
                if this.activity.close.load(Ordering::Acquire) {
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Tracked<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
