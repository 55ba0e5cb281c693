//! What this container has and uses: capacity from the process's own cgroup
//! limits (else the host's cores and RAM), CPU usage and memory usage from
//! the same cgroups (else from /proc). Read by admission, readiness and
//! metrics.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasmbox_admission::Resources;
use wasmbox_isolation::fs::{self, Hierarchy};

/// This process's cgroup directory in `h`, if it has one.
fn own_dir(h: Hierarchy<'_>) -> Option<PathBuf> {
    fs::own_cgroup(h).ok()
}

fn read_u64(p: PathBuf) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Where a number came from, for the startup log.
#[derive(Debug, Clone)]
pub struct Detected {
    pub capacity: Resources,
    pub cpu_source: String,
    pub memory_source: String,
}

/// Capacity from cgroup limits (v2 `cpu.max`/`memory.max`, v1
/// `cpu.cfs_quota_us`/`memory.limit_in_bytes`), else the host.
pub fn detect_capacity() -> Detected {
    let v2 = own_dir(Hierarchy::V2);
    let mut cpu = None;
    let mut cpu_source = String::new();
    if let Some(d) = &v2 {
        if let Ok(s) = std::fs::read_to_string(d.join("cpu.max")) {
            let mut it = s.split_whitespace();
            if let (Some(q), Some(p)) = (
                it.next().and_then(|q| q.parse::<u64>().ok()),
                it.next().and_then(|p| p.parse::<u64>().ok()),
            ) {
                cpu = Some(q * 1000 / p.max(1));
                cpu_source = format!("{}/cpu.max", d.display());
            }
        }
    }
    if cpu.is_none() {
        if let Some(d) = own_dir(Hierarchy::V1("cpu")) {
            if let (Some(q), Some(p)) = (
                std::fs::read_to_string(d.join("cpu.cfs_quota_us"))
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .filter(|q| *q > 0),
                read_u64(d.join("cpu.cfs_period_us")),
            ) {
                cpu = Some(q as u64 * 1000 / p.max(1));
                cpu_source = format!("{}/cpu.cfs_quota_us", d.display());
            }
        }
    }
    let cpu = cpu.unwrap_or_else(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as u64;
        cpu_source = format!("{n} host cores");
        n * 1000
    });

    const UNLIMITED: u64 = 1 << 60;
    let mut mem = None;
    let mut memory_source = String::new();
    if let Some(d) = &v2 {
        if let Some(b) = read_u64(d.join("memory.max")).filter(|b| *b < UNLIMITED) {
            mem = Some(b >> 20);
            memory_source = format!("{}/memory.max", d.display());
        }
    }
    if mem.is_none() {
        if let Some(d) = own_dir(Hierarchy::V1("memory")) {
            if let Some(b) = read_u64(d.join("memory.limit_in_bytes")).filter(|b| *b < UNLIMITED) {
                mem = Some(b >> 20);
                memory_source = format!("{}/memory.limit_in_bytes", d.display());
            }
        }
    }
    let mem = mem.unwrap_or_else(|| {
        let kb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(1 << 20);
        memory_source = "host RAM (/proc/meminfo)".into();
        kb >> 10
    });
    Detected {
        capacity: Resources {
            cpu_millis: cpu,
            memory_mb: mem,
        },
        cpu_source,
        memory_source,
    }
}

/// Reads cumulative CPU time of the container.
#[derive(Debug, Clone)]
pub enum CpuClock {
    /// cgroup2 `cpu.stat` `usage_usec`.
    V2(PathBuf),
    /// cgroup v1 `cpuacct.usage` (ns).
    V1(PathBuf),
    /// This process only: /proc/self/stat utime + stime.
    Process,
}

impl CpuClock {
    pub fn detect() -> CpuClock {
        if let Some(d) = own_dir(Hierarchy::V2) {
            let p = d.join("cpu.stat");
            if std::fs::read_to_string(&p).is_ok_and(|s| s.contains("usage_usec")) {
                return CpuClock::V2(p);
            }
        }
        if let Some(d) = own_dir(Hierarchy::V1("cpuacct")) {
            let p = d.join("cpuacct.usage");
            if p.exists() {
                return CpuClock::V1(p);
            }
        }
        CpuClock::Process
    }

    pub fn read(&self) -> Option<Duration> {
        match self {
            CpuClock::V2(p) => {
                let s = std::fs::read_to_string(p).ok()?;
                let us: u64 = s
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))?
                    .trim()
                    .parse()
                    .ok()?;
                Some(Duration::from_micros(us))
            }
            CpuClock::V1(p) => read_u64(p.clone()).map(Duration::from_nanos),
            CpuClock::Process => {
                let s = std::fs::read_to_string("/proc/self/stat").ok()?;
                let after = &s[s.rfind(')')? + 2..];
                let f: Vec<&str> = after.split(' ').collect();
                // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
                let ticks: u64 =
                    f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
                Some(Duration::from_millis(ticks * 10))
            }
        }
    }
}

/// CPU utilisation in cores: delta CPU time over delta wall time, averaged
/// over the last `window` samples (the reference: 50 ms, 5 samples).
pub struct CpuMeter {
    clock: CpuClock,
    last: Option<(Instant, Duration)>,
    samples: std::collections::VecDeque<f64>,
    window: usize,
}

impl CpuMeter {
    pub fn new(clock: CpuClock, window: usize) -> Self {
        CpuMeter {
            clock,
            last: None,
            samples: Default::default(),
            window: window.max(1),
        }
    }

    /// Takes a sample; returns the windowed mean in cores.
    pub fn sample(&mut self) -> f64 {
        let now = Instant::now();
        if let Some(cpu) = self.clock.read() {
            if let Some((t0, c0)) = self.last {
                let wall = (now - t0).as_secs_f64();
                if wall > 0.0 {
                    self.samples
                        .push_back(cpu.saturating_sub(c0).as_secs_f64() / wall);
                    if self.samples.len() > self.window {
                        self.samples.pop_front();
                    }
                }
            }
            self.last = Some((now, cpu));
        }
        self.mean()
    }

    pub fn mean(&self) -> f64 {
        if self.samples.is_empty() {
            0.0
        } else {
            self.samples.iter().sum::<f64>() / self.samples.len() as f64
        }
    }
}

/// Memory in use by the container, in bytes, as its working set (what the
/// kubelet evicts on): cgroup2 memory.current + memory.swap.current, v1
/// memory.usage_in_bytes, each less the inactive file cache (page cache the
/// kernel reclaims first: counted whole, reading or writing files would
/// make the server "not ready"), else this process's RSS.
pub fn memory_used() -> u64 {
    if let Some(d) = own_dir(Hierarchy::V2) {
        if let Some(cur) = read_u64(d.join("memory.current")) {
            let swap = read_u64(d.join("memory.swap.current")).unwrap_or(0);
            let inactive = stat_field(&d.join("memory.stat"), "inactive_file");
            return (cur + swap).saturating_sub(inactive);
        }
    }
    if let Some(d) = own_dir(Hierarchy::V1("memory")) {
        if let Some(b) = read_u64(d.join("memory.usage_in_bytes")) {
            return b.saturating_sub(stat_field(&d.join("memory.stat"), "total_inactive_file"));
        }
    }
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// One `key value` line of a cgroup `memory.stat` file (0 if absent).
fn stat_field(path: &std::path::Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The open-file limit this process may raise its soft limit to (the hard
/// limit), if known.
pub fn open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, Resource};
    getrlimit(Resource::Nofile).maximum
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does):
/// each connection takes a descriptor, and containers often start with a
/// soft limit of 1,024. Returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    limit.current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stat_fields_are_read_by_exact_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.stat");
        std::fs::write(
            &p,
            "inactive_file_x 7\ninactive_file 4096\ntotal_inactive_file 8192\n",
        )
        .unwrap();
        assert_eq!(stat_field(&p, "inactive_file"), 4096);
        assert_eq!(stat_field(&p, "total_inactive_file"), 8192);
        assert_eq!(stat_field(&p, "active_file"), 0);
        assert_eq!(stat_field(&dir.path().join("absent"), "inactive_file"), 0);
    }

    #[test]
    fn capacity_and_usage_are_readable_here() {
        let d = detect_capacity();
        assert!(
            d.capacity.cpu_millis >= 1000 && d.capacity.memory_mb >= 64,
            "{d:?}"
        );
        assert!(CpuClock::detect().read().is_some());
        assert!(memory_used() > 0);
    }

    #[test]
    fn the_meter_sees_a_busy_thread() {
        let mut m = CpuMeter::new(CpuClock::Process, 5);
        m.sample();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            std::hint::black_box(0u64);
        }
        let cores = m.sample();
        // Not 1.0: on a loaded machine the spinning thread gets a fraction
        // of a core; a meter that reads nothing fails.
        assert!(cores > 0.1, "{cores}");
    }
}
