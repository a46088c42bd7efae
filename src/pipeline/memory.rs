//! The memory limit, in the manner of the Collector's `memory_limiter`: a watcher samples the
//! process's resident memory every [`CHECK_INTERVAL`]; above the soft limit (the limit less a
//! spike allowance) receivers refuse new requests with the retryable status until it falls
//! again (mimalloc returns freed pages to the system on its own, after a short delay). The
//! budgets that hold spans (queue, sampling hold, local store) are sized from the same limit in
//! `config`, and request bodies being read count against a read budget ([`ReadTicket`]), so
//! the resident check is a backstop for what no budget counts (allocator retention, buffers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// How often resident memory is read under a limit: short, because at 400k spans/s a second is
/// ~150 MB of requests; one read of `/proc/self/status` costs ~10 µs.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// Without a limit the reading only feeds the `/metrics` gauges: an idle agent wakes once a second.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// The soft limit leaves this fraction of the limit for spikes (the Collector's default, 20 %).
const SPIKE_PERCENT: u64 = 20;

/// Request-body bytes that may be in memory while being read, across every connection, when no
/// limit is set (eight maximum-size requests). With a limit: an eighth of it. Without this bound
/// a flood of concurrent requests is read into memory before any check can refuse it (measured:
/// 188 MB under a 48 MiB limit at ten times saturation).
pub const DEFAULT_READ_BUDGET: u64 = 32 << 20;

/// Shared state: the receivers read [`MemoryGuard::refusing`] on every request (one relaxed load).
#[derive(Debug, Default)]
pub struct MemoryGuard {
    /// Bytes; 0 = no limit.
    limit: u64,
    soft: u64,
    refusing: AtomicBool,
    /// Last resident size read, and the highest seen (bytes).
    rss: AtomicU64,
    peak: AtomicU64,
    /// Checks that found the process above the soft limit / above the limit.
    over_soft: AtomicU64,
    over_limit: AtomicU64,
    /// Request-body bytes being read now, and their cap.
    reading: AtomicU64,
    read_budget: u64,
}

impl MemoryGuard {
    pub fn new(limit: u64) -> Self {
        let read_budget = if limit == 0 {
            DEFAULT_READ_BUDGET
        } else {
            limit / 8
        };
        Self::with_read_budget(limit, read_budget)
    }

    pub fn with_read_budget(limit: u64, read_budget: u64) -> Self {
        MemoryGuard {
            limit,
            soft: limit - limit * SPIKE_PERCENT / 100,
            read_budget,
            ..MemoryGuard::default()
        }
    }

    /// Request-body bytes being read now.
    pub fn reading(&self) -> u64 {
        self.reading.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether receivers should refuse new requests now.
    #[inline]
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Takes one resident-size reading: decides whether to refuse, and returns whether the
    /// process is above the limit itself.
    pub fn observe(&self, rss: u64) -> bool {
        self.rss.store(rss, Ordering::Relaxed);
        self.peak.fetch_max(rss, Ordering::Relaxed);
        if self.limit == 0 {
            return false;
        }
        let over_soft = rss > self.soft;
        if over_soft {
            self.over_soft.fetch_add(1, Ordering::Relaxed);
        }
        self.refusing.store(over_soft, Ordering::Relaxed);
        let over = rss > self.limit;
        if over {
            self.over_limit.fetch_add(1, Ordering::Relaxed);
        }
        over
    }
}

impl crate::telemetry::Stats for MemoryGuard {
    fn render(&self, o: &mut String) {
        use std::fmt::Write as _;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "# HELP sidetrace_memory_resident_bytes Resident memory of the agent at the last check.\n# TYPE sidetrace_memory_resident_bytes gauge\nsidetrace_memory_resident_bytes {}",
            r(&self.rss)
        );
        let _ = writeln!(
            o,
            "# HELP sidetrace_memory_resident_peak_bytes Highest resident memory seen by the checks.\n# TYPE sidetrace_memory_resident_peak_bytes gauge\nsidetrace_memory_resident_peak_bytes {}",
            r(&self.peak)
        );
        let _ = writeln!(
            o,
            "# HELP sidetrace_memory_limit_bytes The configured memory limit (0: none); receivers refuse above 80 % of it.\n# TYPE sidetrace_memory_limit_bytes gauge\nsidetrace_memory_limit_bytes {}",
            self.limit
        );
        let _ = writeln!(
            o,
            "# HELP sidetrace_memory_checks_over_total Memory checks that found the agent above the soft limit (refusing) or above the limit.\n# TYPE sidetrace_memory_checks_over_total counter\nsidetrace_memory_checks_over_total{{level=\"soft\"}} {}\nsidetrace_memory_checks_over_total{{level=\"limit\"}} {}",
            r(&self.over_soft),
            r(&self.over_limit)
        );
    }
}

/// One request's share of the read budget: bytes are taken as body frames arrive and given back
/// when the request is answered (drop).
#[derive(Debug)]
pub struct ReadTicket {
    guard: Arc<MemoryGuard>,
    taken: AtomicU64,
    refused: AtomicBool,
}

impl ReadTicket {
    pub fn new(guard: Arc<MemoryGuard>) -> Self {
        ReadTicket {
            guard,
            taken: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        }
    }

    /// Takes `n` more bytes; false (and remembered) when the budget cannot take them. A
    /// request is never refused while nothing else is being read, so one request larger than
    /// the budget still gets through.
    pub fn take(&self, n: u64) -> bool {
        let g = &self.guard;
        let prev = g.reading.fetch_add(n, Ordering::AcqRel);
        let mine = self.taken.load(Ordering::Relaxed);
        if prev + n > g.read_budget && prev > mine {
            g.reading.fetch_sub(n, Ordering::AcqRel);
            self.refused.store(true, Ordering::Relaxed);
            return false;
        }
        self.taken.fetch_add(n, Ordering::Relaxed);
        true
    }

    /// Whether the body was cut short because the read budget was spent.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ReadTicket {
    fn drop(&mut self) {
        self.guard
            .reading
            .fetch_sub(*self.taken.get_mut(), Ordering::AcqRel);
    }
}

/// Resident memory of this process in bytes, from `VmRSS` in `/proc/self/status` (0 where
/// there is none). About 10 µs a read.
pub fn resident_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Where the cgroup hierarchy is mounted (v2 at the root, v1 per controller below it).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The share of the container's limit the agent takes when no `memory_limit` is given: 75 %
/// leaves room for what RSS does not show (page cache and kernel memory count against the
/// cgroup), so the agent refuses before the OOM killer fires.
pub const CONTAINER_SHARE_PERCENT: u64 = 75;
/// Above this a cgroup "limit" is the kernel's no-limit value (v1 prints 2^63 less a page).
const NO_LIMIT: u64 = 1 << 60;

/// A memory limit found in this process's cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerLimit {
    pub bytes: u64,
    /// The file it was read from (for the startup log).
    pub file: std::path::PathBuf,
}

/// The cgroup memory limit over this process: the smallest `memory.max` (v2) or
/// `memory.limit_in_bytes` (v1) from its cgroup up to the mount root. Every level is tried
/// because a container often sees its own cgroup at the mount root (cgroup namespace or bind
/// mount) while `/proc/self/cgroup` still names the host's path.
pub fn container_limit(root: &std::path::Path, proc_self_cgroup: &str) -> Option<ContainerLimit> {
    let mut best: Option<ContainerLimit> = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (base, file) = if id == "0" && controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        if path.split('/').any(|c| c == "..") {
            continue;
        }
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            let at = dir.join(file);
            let value = std::fs::read_to_string(&at).ok();
            if let Some(bytes) = value.and_then(|v| v.trim().parse::<u64>().ok())
                && bytes < NO_LIMIT
                && best.as_ref().is_none_or(|b| bytes < b.bytes)
            {
                best = Some(ContainerLimit { bytes, file: at });
            }
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    best
}

/// Checks resident memory until `stop`: every [`CHECK_INTERVAL`] under a limit, and once a
/// second without one (for the resident-memory gauges).
/// What the watcher may free while the agent refuses for memory: caches such as the local
/// store, which would otherwise stay full after a burst and keep the agent refusing for good.
pub type Relief = Box<dyn Fn() + Send + Sync>;
/// How often reliefs run while refusing: long enough for freed pages to leave RSS first.
const RELIEF_INTERVAL: Duration = Duration::from_secs(1);

pub async fn watch(guard: Arc<MemoryGuard>, relief: Vec<Relief>, mut stop: watch::Receiver<bool>) {
    let every = if guard.limit == 0 {
        GAUGE_INTERVAL
    } else {
        CHECK_INTERVAL
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_refusing = false;
    let mut relieved = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        guard.observe(resident_bytes());
        let refusing = guard.refusing();
        if refusing && relieved.elapsed() >= RELIEF_INTERVAL {
            relieved = tokio::time::Instant::now();
            relief.iter().for_each(|r| r());
        }
        if refusing != was_refusing {
            was_refusing = refusing;
            if refusing {
                warn!(
                    resident_bytes = guard.rss.load(Ordering::Relaxed),
                    limit_bytes = guard.limit,
                    "Memory above 80 % of memory_limit: refusing new spans (retryable) until it falls."
                );
            } else {
                info!(
                    resident_bytes = guard.rss.load(Ordering::Relaxed),
                    "Memory back under the soft limit: accepting spans again."
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Stats;

    #[test]
    fn refuses_above_the_soft_limit_and_reports_the_hard_one() {
        let g = MemoryGuard::new(100 << 20);
        assert!(!g.observe(79 << 20));
        assert!(!g.refusing());
        assert!(!g.observe(81 << 20), "over soft, under hard");
        assert!(g.refusing());
        assert!(g.observe(101 << 20));
        assert!(g.refusing());
        assert!(!g.observe(50 << 20));
        assert!(!g.refusing(), "accepts again once memory falls");
        let mut o = String::new();
        g.render(&mut o);
        assert!(
            o.contains("sidetrace_memory_resident_peak_bytes 105906176"),
            "{o}"
        );
        assert!(o.contains("level=\"soft\"} 2"), "{o}");
        assert!(o.contains("level=\"limit\"} 1"), "{o}");
    }

    #[test]
    fn the_read_budget_refuses_bytes_beyond_it_and_is_given_back() {
        let g = Arc::new(MemoryGuard::with_read_budget(0, 100));
        let a = ReadTicket::new(g.clone());
        assert!(a.take(150), "alone, a request may exceed the budget");
        assert!(a.take(10));
        let b = ReadTicket::new(g.clone());
        assert!(!b.take(1), "the budget is spent");
        assert!(b.refused() && !a.refused());
        assert_eq!(g.reading(), 160);
        drop(a);
        assert_eq!(g.reading(), 0, "given back when the request ends");
        let c = ReadTicket::new(g.clone());
        assert!(c.take(60) && c.take(40));
        assert!(c.take(1), "alone again: over the budget is allowed");
        assert_eq!(g.reading(), 101);
        drop((b, c));
        assert_eq!(g.reading(), 0);
    }

    #[test]
    fn no_limit_never_refuses() {
        let g = MemoryGuard::new(0);
        assert!(!g.observe(u64::MAX / 2));
        assert!(!g.refusing());
    }

    #[test]
    fn reads_this_process_resident_size() {
        let rss = resident_bytes();
        if cfg!(target_os = "linux") {
            assert!(rss > 1 << 20, "{rss}");
        }
    }

    /// A fake cgroup tree under a temporary directory: (relative file, contents).
    fn fake_root(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("sidetrace-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (file, text) in files {
            let at = root.join(file);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, text).unwrap();
        }
        root
    }

    #[test]
    fn the_container_limit_is_the_smallest_on_the_cgroup_path() {
        // cgroup v2 in a namespace: the container's own limit is at the mount root.
        let root = fake_root("v2", &[("memory.max", "67108864\n")]);
        let found = container_limit(&root, "0::/\n").unwrap();
        assert_eq!(
            (found.bytes, found.file.clone()),
            (64 << 20, root.join("memory.max"))
        );
        // v2 on a host: the process's cgroup and a parent; the parent's smaller limit applies.
        let root = fake_root(
            "v2-nested",
            &[
                ("app.slice/memory.max", "1073741824"),
                ("app.slice/web/memory.max", "max"),
            ],
        );
        let found = container_limit(&root, "0::/app.slice/web\n").unwrap();
        assert_eq!(found.bytes, 1 << 30);
        // v1 (docker with the host's cgroup namespace): /proc/self/cgroup names a path that is
        // not in the container's mount, whose root holds the container's limit.
        let root = fake_root(
            "v1",
            &[
                ("memory/memory.limit_in_bytes", "134217728\n"),
                ("memory.max", "max"),
            ],
        );
        let text = "5:cpuacct,cpu:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(container_limit(&root, text).unwrap().bytes, 128 << 20);
        // No limit: v2 "max", v1's 2^63 less a page, no file at all, a path that climbs out.
        let root = fake_root(
            "none",
            &[
                ("memory.max", "max\n"),
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ],
        );
        assert_eq!(container_limit(&root, "4:memory:/\n0::/\n"), None);
        assert_eq!(container_limit(&root.join("absent"), "0::/\n"), None);
        assert_eq!(container_limit(&root, "0::/../../etc\n"), None);
        assert_eq!(container_limit(&root, "garbage"), None);
    }
}
