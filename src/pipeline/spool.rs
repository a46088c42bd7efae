//! The persistent queue (opt-in, `queue.dir`): each admitted OTLP request is appended to a
//! segment file and fsynced (group commit) before the client's answer, and marked done once
//! every exporter finished with its spans (sent, rejected or dropped). At start, what was
//! acknowledged but not done is replayed: after `kill -9` nothing acknowledged is lost, and only
//! requests in flight at the kill can arrive twice (counted).
//!
//! Records: `[0xA5][protocol][len u32][crc32 u32][seq u64]` (little-endian) then the request's
//! protobuf bytes. Done marks: `done.log`, one `u64` each, not fsynced (a lost mark only makes a
//! duplicate). A segment is deleted once all its records are done. A record that fails its
//! checksum, or is cut short (a crash mid-write), ends its segment's replay: the rest of that
//! segment is skipped, counted and logged; the agent always starts.
//!
//! Written on a thread of its own: file I/O never runs on the runtime's workers.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use crate::config::parse::toml_string;
use crate::config::{Key, Section};
use crate::model::{Protocol, Ticket};
use crate::telemetry::{Stats, family};

/// Group commit: acknowledged requests wait at most this long for their fsync.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(10);
/// The spool's bound on disk; beyond it receivers refuse with the retryable answer.
pub const DEFAULT_MAX_DISK_BYTES: usize = 256 * 1024 * 1024;
/// A segment is closed (and can be deleted once done) at this size.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const MAGIC: u8 = 0xA5;
const HEADER_BYTES: usize = 18;
/// No OTLP request is larger than the receivers' cap; a longer length is corruption.
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// The `queue.*` keys of the persistent queue.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// Where the spool lives; empty: no persistent queue (memory only).
    pub dir: String,
    /// fsync every record before its answer, instead of every `fsync_interval`.
    pub fsync_always: bool,
    pub fsync_interval: Duration,
    pub max_disk_bytes: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: String::new(),
            fsync_always: false,
            fsync_interval: DEFAULT_FSYNC_INTERVAL,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
        }
    }
}

type K = Key<SpoolConfig>;

impl Section for SpoolConfig {
    const KEYS: &'static [K] = &[
        K::custom(
            "queue.dir",
            "Persistent queue: a directory where requests are written (and fsynced) before they are acknowledged, and replayed from after a crash; empty: memory only.",
            |c, v| {
                c.dir = v.trim().into();
                Ok(())
            },
            |c| toml_string(&c.dir),
        ),
        K::custom(
            "queue.fsync",
            "Persistent queue: interval (group commit every queue.fsync_interval, the answer waits for it) or always (one fsync per request).",
            |c, v| {
                c.fsync_always = match v.trim() {
                    "always" => true,
                    "interval" => false,
                    other => return Err(format!("{other:?} is not interval or always")),
                };
                Ok(())
            },
            |c| toml_string(if c.fsync_always { "always" } else { "interval" }),
        ),
        K::duration(
            "queue.fsync_interval",
            "Persistent queue: the group commit interval.",
            |c| &mut c.fsync_interval,
        ),
        K::count(
            "queue.max_disk_bytes",
            "Persistent queue: its bound on disk; beyond it receivers refuse with a retryable answer.",
            |c| &mut c.max_disk_bytes,
        ),
    ];
}

/// Why a request was not spooled (the receiver answers with a retryable refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    #[error("the persistent queue is full (queue.max_disk_bytes)")]
    Full,
    #[error("the persistent queue cannot write: {0}")]
    Io(String),
}

#[derive(Debug)]
struct Record {
    seq: u64,
    tx: mpsc::Sender<Cmd>,
}

impl Drop for Record {
    fn drop(&mut self) {
        // The writer is gone only at exit; the record is then replayed at the next start.
        let _ = self.tx.send(Cmd::Done(self.seq));
    }
}

enum Cmd {
    Append {
        protocol: Protocol,
        payload: Bytes,
        reply: tokio::sync::oneshot::Sender<Result<Ticket, SpoolError>>,
    },
    Done(u64),
    Stop,
}

/// The spool's counters (`sidetrace_spool_*`).
#[derive(Debug, Default)]
pub struct SpoolStats {
    appended: AtomicU64,
    done: AtomicU64,
    replayed: AtomicU64,
    disk_bytes: AtomicU64,
    refused_full: AtomicU64,
    write_errors: AtomicU64,
    corrupt_bytes: AtomicU64,
    fsyncs: AtomicU64,
}

impl Stats for SpoolStats {
    fn render(&self, o: &mut String) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, v) in [
            (
                "sidetrace_spool_appended_requests_total",
                "counter",
                "Requests written to the persistent queue before their answer.",
                g(&self.appended),
            ),
            (
                "sidetrace_spool_done_requests_total",
                "counter",
                "Spooled requests every exporter finished with.",
                g(&self.done),
            ),
            (
                "sidetrace_spool_replayed_requests_total",
                "counter",
                "Requests replayed at start (acknowledged, not done before the last stop).",
                g(&self.replayed),
            ),
            (
                "sidetrace_spool_disk_bytes",
                "gauge",
                "Bytes of the persistent queue's segment files.",
                g(&self.disk_bytes),
            ),
            (
                "sidetrace_spool_refused_requests_total",
                "counter",
                "Requests refused because the persistent queue was full.",
                g(&self.refused_full),
            ),
            (
                "sidetrace_spool_write_errors_total",
                "counter",
                "Writes or fsyncs of the persistent queue that failed (the requests were refused).",
                g(&self.write_errors),
            ),
            (
                "sidetrace_spool_corrupt_bytes_total",
                "counter",
                "Bytes skipped at start: a record that failed its checksum or was cut short, and the rest of its segment.",
                g(&self.corrupt_bytes),
            ),
            (
                "sidetrace_spool_fsyncs_total",
                "counter",
                "fsyncs of the persistent queue (group commits).",
                g(&self.fsyncs),
            ),
        ] {
            family(o, name, kind, help, [(String::new(), v)]);
        }
    }
}

/// A request found in the spool at start, to be replayed; its ticket marks it done.
#[derive(Debug)]
pub struct Replay {
    pub protocol: Protocol,
    path: Arc<PathBuf>,
    offset: u64,
    len: usize,
    pub ticket: Ticket,
}

impl Replay {
    /// Reads the request's bytes from its segment (blocking file I/O: call it off the runtime).
    pub fn read(&self) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; self.len];
        File::open(self.path.as_path())?.read_exact_at(&mut buf, self.offset)?;
        Ok(buf.into())
    }
}

/// The persistent queue: [`Spool::append`] from the receivers, replay at start.
#[derive(Debug)]
pub struct Spool {
    tx: mpsc::Sender<Cmd>,
    stats: Arc<SpoolStats>,
    max_disk_bytes: u64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One segment file on disk.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Records not yet done.
    live: HashSet<u64>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn protocol_code(p: Protocol) -> u8 {
    Protocol::ALL.iter().position(|q| *q == p).unwrap_or(0) as u8
}

fn protocol_of(code: u8) -> Protocol {
    Protocol::ALL
        .get(code as usize)
        .copied()
        .unwrap_or(Protocol::Grpc)
}

/// Reads a segment's records; returns them and how many bytes at the end could not be read.
/// A record found in a segment: its payload is read again only when it is replayed, so opening
/// a full spool holds one record in memory at a time, not the spool.
#[derive(Debug)]
struct Found {
    seq: u64,
    protocol: Protocol,
    offset: u64,
    len: usize,
}

/// Checks a segment's records (header, length, CRC) in one streaming pass; returns them and
/// how many bytes at the end could not be read.
fn read_segment(path: &Path) -> std::io::Result<(Vec<Found>, u64)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut records = Vec::new();
    let mut payload = Vec::new();
    let mut at = 0u64;
    loop {
        let mut h = [0u8; HEADER_BYTES];
        if r.read_exact(&mut h).is_err() || h[0] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
        let crc = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&h[10..18]);
        if len > MAX_RECORD_BYTES || at + (HEADER_BYTES + len) as u64 > size {
            break;
        }
        payload.resize(len, 0);
        if r.read_exact(&mut payload).is_err() || crc32(&payload) != crc {
            break;
        }
        records.push(Found {
            seq: u64::from_le_bytes(seq_bytes),
            protocol: protocol_of(h[1]),
            offset: at + HEADER_BYTES as u64,
            len,
        });
        at += (HEADER_BYTES + len) as u64;
    }
    Ok((records, size - at))
}

/// CRC-32 (IEEE), as zlib computes it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut h = flate2::Crc::new();
    h.update(bytes);
    h.sum()
}

impl Spool {
    /// Opens (or creates) the spool in `c.dir` and starts its writer; returns what to replay.
    pub fn open(c: &SpoolConfig) -> std::io::Result<(Arc<Spool>, Vec<Replay>)> {
        let dir = PathBuf::from(&c.dir);
        fs::create_dir_all(&dir)?;
        let stats = Arc::new(SpoolStats::default());
        let (tx, rx) = mpsc::channel();
        // Done marks from the last run (a trailing partial mark is ignored).
        let mut done = HashSet::new();
        if let Ok(bytes) = fs::read(dir.join("done.log")) {
            for chunk in bytes.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                done.insert(u64::from_le_bytes(b));
            }
        }
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let p = e.path();
                let first = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()?;
                Some((first, p))
            })
            .collect();
        names.sort();
        let mut segments = BTreeMap::new();
        let mut replay = Vec::new();
        let mut next_seq = names.last().map_or(0, |(first, _)| *first);
        let mut disk = 0;
        let mut kept_done = Vec::new();
        for (first, path) in names {
            let (records, corrupt) = match read_segment(&path) {
                Ok(r) => r,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "Persistent queue: a segment could not be read; skipped.");
                    (Vec::new(), fs::metadata(&path).map_or(0, |m| m.len()))
                }
            };
            if corrupt > 0 {
                stats.corrupt_bytes.fetch_add(corrupt, Ordering::Relaxed);
                warn!(path = %path.display(), skipped_bytes = corrupt, records = records.len(), "Persistent queue: a record failed its checksum or was cut short (a crash mid-write?); the rest of the segment is skipped.");
            }
            let mut live = HashSet::new();
            let shared_path = Arc::new(path.clone());
            for Found {
                seq,
                protocol,
                offset,
                len,
            } in records
            {
                next_seq = next_seq.max(seq + 1);
                if done.contains(&seq) {
                    kept_done.push(seq);
                    continue;
                }
                live.insert(seq);
                replay.push(Replay {
                    protocol,
                    path: shared_path.clone(),
                    offset,
                    len,
                    ticket: Ticket::new(Box::new(Record {
                        seq,
                        tx: tx.clone(),
                    })),
                });
            }
            let bytes = fs::metadata(&path).map_or(0, |m| m.len());
            if live.is_empty() {
                let _ = fs::remove_file(&path);
                continue;
            }
            disk += bytes;
            segments.insert(first, Segment { path, bytes, live });
        }
        // The done marks still needed: those of records in segments that remain.
        let mut marks = Vec::with_capacity(kept_done.len() * 8);
        for seq in kept_done {
            if segments.range(..=seq).next_back().is_some() {
                marks.extend_from_slice(&seq.to_le_bytes());
            }
        }
        let tmp = dir.join("done.log.tmp");
        fs::write(&tmp, &marks)?;
        fs::rename(&tmp, dir.join("done.log"))?;
        let done_log = OpenOptions::new().append(true).open(dir.join("done.log"))?;
        stats.disk_bytes.store(disk, Ordering::Relaxed);
        stats.replayed.store(replay.len() as u64, Ordering::Relaxed);
        if !replay.is_empty() {
            info!(dir = %dir.display(), requests = replay.len(), "Persistent queue: replaying requests acknowledged before the last stop.");
        }
        let writer = Writer {
            dir,
            segments,
            active: None,
            done_log,
            next_seq,
            stats: stats.clone(),
            fsync_always: c.fsync_always,
            interval: c.fsync_interval,
            tx: tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("sidetrace-spool".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            Arc::new(Spool {
                tx,
                stats,
                max_disk_bytes: c.max_disk_bytes as u64,
                writer: Mutex::new(Some(handle)),
            }),
            replay,
        ))
    }

    pub fn stats(&self) -> Arc<SpoolStats> {
        self.stats.clone()
    }

    /// Writes a request; resolves once it is on disk (fsynced), with the ticket that marks it done.
    pub async fn append(&self, protocol: Protocol, payload: Bytes) -> Result<Ticket, SpoolError> {
        let disk = self.stats.disk_bytes.load(Ordering::Relaxed);
        if disk + (payload.len() + HEADER_BYTES) as u64 > self.max_disk_bytes {
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(SpoolError::Full);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.tx.send(Cmd::Append {
            protocol,
            payload,
            reply,
        });
        if sent.is_err() {
            return Err(SpoolError::Io("the spool writer has stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(SpoolError::Io("the spool writer has stopped".into())))
    }

    /// Syncs what is written and stops the writer (also on drop) (at the end of the drain). Requests not done
    /// by then stay in the spool for the next start.
    pub fn close(&self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to: its first seq and file.
    active: Option<(u64, File)>,
    done_log: File,
    next_seq: u64,
    stats: Arc<SpoolStats>,
    fsync_always: bool,
    interval: Duration,
    tx: mpsc::Sender<Cmd>,
}

type Waiting = Vec<(
    tokio::sync::oneshot::Sender<Result<Ticket, SpoolError>>,
    Ticket,
)>;

impl Writer {
    // A thread of its own, not a runtime task: its group-commit deadline is on the std clock.
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut waiting: Waiting = Vec::new();
        // The fsync deadline of the oldest waiting answer (group commit).
        let mut due: Option<std::time::Instant> = None;
        loop {
            let now = std::time::Instant::now();
            let cmd = match due {
                Some(d) if d <= now => None,
                Some(d) => match rx.recv_timeout(d - now) {
                    Ok(c) => Some(c),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                },
            };
            match cmd {
                Some(Cmd::Append {
                    protocol,
                    payload,
                    reply,
                }) => match self.write(protocol, &payload) {
                    Ok(seq) => {
                        let ticket = Ticket::new(Box::new(Record {
                            seq,
                            tx: self.tx.clone(),
                        }));
                        waiting.push((reply, ticket));
                        if self.fsync_always {
                            self.commit(&mut waiting);
                        } else {
                            let at = std::time::Instant::now() + self.interval;
                            due.get_or_insert(at);
                        }
                    }
                    Err(e) => {
                        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "Persistent queue: a write failed; the request is refused.");
                        let _ = reply.send(Err(SpoolError::Io(e.to_string())));
                    }
                },
                Some(Cmd::Done(seq)) => self.done(seq),
                Some(Cmd::Stop) => {
                    self.commit(&mut waiting);
                    break;
                }
                None => {
                    self.commit(&mut waiting);
                    due = None;
                }
            }
        }
        self.commit(&mut waiting);
    }

    /// fsyncs the active segment and the done marks, then answers every waiting request.
    fn commit(&mut self, waiting: &mut Waiting) {
        if waiting.is_empty() {
            return;
        }
        let synced = match &self.active {
            Some((_, f)) => f.sync_data(),
            None => Ok(()),
        };
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let _ = self.done_log.flush();
        for (reply, ticket) in waiting.drain(..) {
            let answer = match &synced {
                Ok(()) => {
                    self.stats.appended.fetch_add(1, Ordering::Relaxed);
                    Ok(ticket)
                }
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    Err(SpoolError::Io(e.to_string()))
                }
            };
            // A receiver that gave up waiting drops its ticket here: the record is marked done.
            let _ = reply.send(answer);
        }
    }

    fn write(&mut self, protocol: Protocol, payload: &[u8]) -> std::io::Result<u64> {
        let seq = self.next_seq;
        let rotate = match &self.active {
            None => true,
            Some((first, _)) => self
                .segments
                .get(first)
                .is_none_or(|s| s.bytes >= SEGMENT_BYTES),
        };
        if rotate {
            if let Some((first, f)) = self.active.take() {
                f.sync_data()?;
                self.delete_if_done(first);
            }
            let path = segment_path(&self.dir, seq);
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            // The new file's directory entry is made durable once, before it holds anything acknowledged.
            File::open(&self.dir).and_then(|d| d.sync_all())?;
            self.segments.insert(
                seq,
                Segment {
                    path,
                    bytes: 0,
                    live: HashSet::new(),
                },
            );
            self.active = Some((seq, f));
        }
        let mut header = [0u8; HEADER_BYTES];
        header[0] = MAGIC;
        header[1] = protocol_code(protocol);
        header[2..6].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[6..10].copy_from_slice(&crc32(payload).to_le_bytes());
        header[10..18].copy_from_slice(&seq.to_le_bytes());
        let Some((first, f)) = self.active.as_mut() else {
            return Err(std::io::Error::other("no active segment"));
        };
        f.write_all(&header)?;
        f.write_all(payload)?;
        let n = (HEADER_BYTES + payload.len()) as u64;
        if let Some(s) = self.segments.get_mut(first) {
            s.bytes += n;
            s.live.insert(seq);
        }
        self.stats.disk_bytes.fetch_add(n, Ordering::Relaxed);
        self.next_seq += 1;
        Ok(seq)
    }

    fn done(&mut self, seq: u64) {
        self.stats.done.fetch_add(1, Ordering::Relaxed);
        let Some((&first, s)) = self.segments.range_mut(..=seq).next_back() else {
            return;
        };
        s.live.remove(&seq);
        // Buffered by the OS, flushed with the next commit; never fsynced (a lost mark is a duplicate).
        let _ = self.done_log.write_all(&seq.to_le_bytes());
        if self.active.as_ref().is_none_or(|(a, _)| *a != first) {
            self.delete_if_done(first);
        }
    }

    fn delete_if_done(&mut self, first: u64) {
        if self.segments.get(&first).is_some_and(|s| s.live.is_empty())
            && let Some(s) = self.segments.remove(&first)
        {
            let _ = fs::remove_file(&s.path);
            self.stats.disk_bytes.fetch_sub(s.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.display().to_string(),
            fsync_interval: Duration::from_millis(1),
            ..SpoolConfig::default()
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sidetrace-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn acknowledged_requests_not_done_are_replayed_and_done_ones_are_not() {
        let dir = temp_dir("replay");
        let (spool, replay) = Spool::open(&config(&dir)).unwrap();
        assert!(replay.is_empty());
        let a = spool
            .append(Protocol::Grpc, Bytes::from_static(b"first"))
            .await
            .unwrap();
        let b = spool
            .append(Protocol::HttpJson, Bytes::from_static(b"second"))
            .await
            .unwrap();
        drop(a);
        spool.close();
        // `b` was never done: as after a crash.
        std::mem::forget(b);
        let (spool, replay) = Spool::open(&config(&dir)).unwrap();
        assert_eq!(replay.len(), 1);
        assert_eq!(
            (replay[0].protocol, &replay[0].read().unwrap()[..]),
            (Protocol::HttpJson, &b"second"[..])
        );
        drop(replay);
        spool.close();
        let (spool, replay) = Spool::open(&config(&dir)).unwrap();
        assert!(replay.is_empty(), "done at the second run");
        spool.close();
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_tail_is_skipped_and_counted_and_the_spool_still_opens() {
        let dir = temp_dir("torn");
        let (spool, _) = Spool::open(&config(&dir)).unwrap();
        let tickets: Vec<Ticket> = futures_join(&spool, 3).await;
        spool.close();
        std::mem::forget(tickets);
        let seg = fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        // A crash mid-write of the third record: half of it is on disk.
        let third_len = HEADER_BYTES + 7;
        bytes.truncate(bytes.len() - third_len / 2);
        fs::write(&seg, &bytes).unwrap();
        let (spool, replay) = Spool::open(&config(&dir)).unwrap();
        assert_eq!(replay.len(), 2);
        assert_eq!(
            spool.stats().corrupt_bytes.load(Ordering::Relaxed),
            (third_len - third_len / 2) as u64
        );
        drop(replay);
        spool.close();
        let (spool, replay) = Spool::open(&config(&dir)).unwrap();
        assert!(replay.is_empty());
        spool.close();
        let _ = fs::remove_dir_all(&dir);
    }

    async fn futures_join(spool: &Spool, n: usize) -> Vec<Ticket> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(
                spool
                    .append(Protocol::Grpc, Bytes::from(format!("record{i}")))
                    .await
                    .unwrap(),
            );
        }
        out
    }

    #[tokio::test]
    async fn a_corrupt_record_ends_its_segment_and_a_full_spool_refuses() {
        let dir = temp_dir("crc");
        let (spool, _) = Spool::open(&config(&dir)).unwrap();
        let tickets = futures_join(&spool, 3).await;
        spool.close();
        std::mem::forget(tickets);
        let seg = segment_path(&dir, 0);
        let mut bytes = fs::read(&seg).unwrap();
        let second_payload = 2 * HEADER_BYTES + 7 + 3;
        bytes[second_payload] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        let (spool, replay) = Spool::open(&config(&dir)).unwrap();
        assert_eq!(replay.len(), 1, "only the record before the corrupt one");
        assert_eq!(&replay[0].read().unwrap()[..], b"record0");
        spool.close();
        let _ = fs::remove_dir_all(&dir);

        let dir = temp_dir("full");
        let (spool, _) = Spool::open(&SpoolConfig {
            max_disk_bytes: 40,
            ..config(&dir)
        })
        .unwrap();
        let _first = spool
            .append(Protocol::Grpc, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(
            spool
                .append(Protocol::Grpc, Bytes::from_static(b"0123456789"))
                .await
                .unwrap_err(),
            SpoolError::Full
        );
        spool.close();
        let _ = fs::remove_dir_all(&dir);
    }
}
