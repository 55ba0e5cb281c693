//! wasmbox benchmarks: the subcommands, and what they share (starting a
//! `wasmbox serve`, loading a function in process, the machine line).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
// The same memcpy and memmove as the server's (crates/memcopy), so that
// in-process figures are the server's.
use wasmbox_memcopy as _;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use wasmbox_runtime::{EngineConfig, EpochTicker, Function, Registry, RegistryConfig, WasmEngine};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// The core request path (issue #2's benchmark).
    Core {
        /// Shorter runs (for smoke tests).
        #[arg(long)]
        quick: bool,
        /// Where to write the markdown report.
        #[arg(long, default_value = "bench/results/core.md")]
        out: PathBuf,
    },
    /// Admission overhead and mixed load through the queue (issue #4's benchmark).
    Admission {
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "bench/results/admission.md")]
        out: PathBuf,
    },
    /// CPU isolation cost per mode vs the reference's per-request cgroup
    /// lifecycle, and quota accuracy (issue #3's benchmark).
    Isolation {
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "bench/results/isolation.md")]
        out: PathBuf,
    },
    /// wasmbox side by side with its peers: wasmtime run/serve, native
    /// processes, the re-enacted reference; density; Wasm vs native (#5).
    Compare {
        /// Under 3 minutes, smaller workloads.
        #[arg(long)]
        quick: bool,
        /// Seconds, tiny workloads: only checks that every table fills (CI).
        #[arg(long, conflicts_with = "quick")]
        smoke: bool,
        #[arg(long, default_value = "bench/results/compare.md")]
        out: PathBuf,
    },
    /// Only the density part of `compare`: N functions in one wasmbox.
    Density {
        #[arg(long, default_value_t = 10_000)]
        functions: usize,
        /// `wasmtime serve` processes to measure one-process-per-function with.
        #[arg(long, default_value_t = 4)]
        processes: usize,
        /// Also (0: skip) this many distinct wasi:http handler components and
        /// as many preview-1 modules, all loaded: idle RSS per loaded
        /// function of each kind and their ratio (issue 14). `--functions 0`
        /// runs only this part.
        #[arg(long, default_value_t = 0)]
        components: usize,
    },
    /// A well-behaved tenant alone and next to a hostile one (abandoned
    /// sleepers, CPU hogs) on one server (issue #11's benchmark).
    Containment {
        /// Under a minute.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "bench/results/containment.md")]
        out: PathBuf,
    },
    /// A synthetic Azure-Functions-like trace of many functions, replayed
    /// open-loop, without and with an abusive function (issue #11).
    Trace {
        /// Under two minutes.
        #[arg(long)]
        quick: bool,
        /// Seed of the trace generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mean CPU demand as a fraction of capacity.
        #[arg(long, default_value_t = 0.7)]
        load: f64,
        #[arg(long, default_value = "bench/results/trace.md")]
        out: PathBuf,
    },
    /// Saturation with mixed, partly hostile traffic; what the server holds
    /// before, at peak and after.
    Soak {
        /// How long to hold the server at saturation.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value = "bench/results/soak.md")]
        out: PathBuf,
    },
    /// What guest build settings (stack size, SIMD) change per call, in
    /// process (the README's "Writing fast functions").
    GuestBuild {
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "bench/results/guest_build.md")]
        out: PathBuf,
    },
    /// The HTTP ceiling: a bare hyper server answering hello's bytes with no
    /// Wasm, until killed (compare starts it as its own process).
    BareHyper {
        #[arg(long)]
        port: u16,
    },
    /// Two wasmbox builds measured alternately on the same hello rows (for a
    /// change's before and after from one run).
    Ab {
        /// The first build's `wasmbox` binary (e.g. before the change).
        #[arg(long)]
        a: PathBuf,
        /// The second build's (e.g. after).
        #[arg(long)]
        b: PathBuf,
        /// How many times each build runs every row.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per cell.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value = "bench/results/ab.md")]
        out: PathBuf,
    },
    /// Every benchmark in turn: core, isolation, admission, guest-build,
    /// compare.
    All {
        #[arg(long)]
        quick: bool,
    },
}

mod ab;
mod admission;
mod bare_hyper;
mod client;
mod compare;
mod containment;
mod core_bench;
mod density;
mod density_component;
mod guest_build;
mod hello_http;
mod isolation;
mod load;
mod mixed_quotas;
mod peers;
mod plots;
mod reference;
mod scaling;
mod server_ctl;
mod soak;
mod stats;
mod trace;
mod trace_plan;
mod trace_report;
mod workload;

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Core { quick, out } => core_bench::run(quick, &out),
        Cmd::Isolation { quick, out } => isolation::run(quick, &out),
        Cmd::Admission { quick, out } => admission::run(quick, &out),
        Cmd::Containment { quick, out } => containment::run(quick, &out),
        Cmd::Trace {
            quick,
            seed,
            load,
            out,
        } => trace::run(quick, seed, load, &out),
        Cmd::Soak { seconds, out } => soak::run(seconds, &out),
        Cmd::Compare { quick, smoke, out } => compare::run(scale(quick, smoke), &out),
        Cmd::Density {
            functions,
            processes,
            components,
        } => density::print(functions, processes, components),
        Cmd::GuestBuild { quick, out } => guest_build::run(quick, &out),
        Cmd::BareHyper { port } => bare_hyper::serve(port),
        Cmd::Ab {
            a,
            b,
            rounds,
            seconds,
            out,
        } => ab::run(
            &ab::Builds {
                a: &a,
                b: &b,
                rounds,
                seconds,
            },
            &out,
        ),
        Cmd::All { quick } => {
            let results = repo_root().join("bench/results");
            core_bench::run(quick, &results.join("core.md"))?;
            isolation::run(quick, &results.join("isolation.md"))?;
            admission::run(quick, &results.join("admission.md"))?;
            guest_build::run(quick, &results.join("guest_build.md"))?;
            compare::run(scale(quick, false), &results.join("compare.md"))
        }
    }
}

fn scale(quick: bool, smoke: bool) -> compare::Scale {
    match (quick, smoke) {
        (_, true) => compare::Scale::Smoke,
        (true, _) => compare::Scale::Quick,
        _ => compare::Scale::Full,
    }
}

pub(crate) struct Lat {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) n: u64,
}

pub(crate) fn lat(h: &Histogram<u64>) -> Lat {
    Lat {
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        n: h.len(),
    }
}

/// One function loaded in process, on its own engine with an epoch ticker
/// (as in the server), for benchmarks that invoke it directly.
pub(crate) struct InProcess {
    pub(crate) engine: WasmEngine,
    pub(crate) function: Arc<Function>,
    pub(crate) _ticker: EpochTicker,
}

impl InProcess {
    pub(crate) fn load(config: EngineConfig, path: &Path) -> anyhow::Result<Self> {
        let engine = WasmEngine::new(config).map_err(anyhow::Error::msg)?;
        let ticker = EpochTicker::start(&engine)?;
        let registry = Registry::new(
            engine.clone(),
            RegistryConfig {
                max_loaded: 64,
                ..RegistryConfig::new(path.parent().unwrap_or(Path::new(".")).to_path_buf())
            },
        )
        .map_err(anyhow::Error::msg)?;
        let function = registry.load_path(path)?;
        Ok(InProcess {
            engine,
            function,
            _ticker: ticker,
        })
    }
}

/// `concurrency` clients send `GET /hello` back to back for `dur`; request
/// i carries `resources(i)` as (cpu_quota, Memory-Request). Returns latency,
/// requests/s, and how many answers were not a 200 with hello's 20 bytes.
pub(crate) async fn http_load_with(
    port: u16,
    concurrency: usize,
    dur: Duration,
    resources: fn(usize) -> (u64, u64),
) -> anyhow::Result<(Lat, f64, u64)> {
    let target = load::HttpTarget {
        port,
        path: "/hello".into(),
        resources: Arc::new(resources),
        expect: load::Expect::Len(20),
    };
    let r = load::http(&target, concurrency, dur).await?;
    Ok((lat(&r.latency), r.rate, r.bad))
}

/// For a server the bench waits to finish its prewarm before measuring:
/// the prewarm at normal priority, so that wait does not starve behind
/// whatever else the host runs (at the default, idle, it yields to every
/// other process). Nothing is measured until that first scan is over; the
/// later scans (every 10 s, of files that do not change meanwhile) find
/// nothing to load.
pub(crate) const PREWARM_NOW: [&str; 2] = ["--prewarm-priority", "normal"];

pub(crate) struct ServerProc {
    child: Child,
    pub(crate) port: u16,
    /// The admin listener (`--admin-listen`): `/-/metrics` is there, not on
    /// the serving port.
    pub(crate) admin_port: u16,
}

impl ServerProc {
    /// `wasmbox serve` of the bundled functions, once `/hello` answers and
    /// the startup compile of the rest is over ([`ServerProc::until_prewarmed`]).
    pub(crate) fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = PREWARM_NOW.to_vec();
        args.extend_from_slice(extra);
        let server = Self::start(&repo_root().join("functions"), &args, "/hello")?;
        server.until_prewarmed()?;
        Ok(server)
    }

    /// Waits until the server's prewarm has finished its first scan of the
    /// functions directory (`wasmbox_prewarm_scans_total` on the admin
    /// listener; servers started with `--prewarm-poll 0` never do, so do
    /// not wait for those). Until then the server compiles every file
    /// there, the large ones in compile children that take a core each
    /// (over the bundled directory about 25 s on 2 cores, for the Python
    /// and JavaScript components), and a figure measured meanwhile measures
    /// that compile as much as the server.
    pub(crate) fn until_prewarmed(&self) -> anyhow::Result<()> {
        let limit = Duration::from_secs(300);
        let t = Instant::now();
        loop {
            if self.prewarm_scans().is_some_and(|n| n >= 1.0) {
                return Ok(());
            }
            if t.elapsed() > limit {
                bail!("the server's prewarm did not finish a scan within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `wasmbox_prewarm_scans_total` from the admin listener; `None` when
    /// the metrics do not answer or (older builds) do not have it.
    fn prewarm_scans(&self) -> Option<f64> {
        let body = http_get(self.admin_port, "/-/metrics")?;
        body.lines().find_map(|l| {
            l.strip_prefix("wasmbox_prewarm_scans_total ")?
                .trim()
                .parse::<f64>()
                .ok()
        })
    }

    /// Whether this build counts its prewarm scans (builds before the
    /// counter do not, and [`ServerProc::until_prewarmed`] would wait for
    /// them in vain): read from the first metrics that answer.
    pub(crate) fn counts_prewarm_scans(&self) -> anyhow::Result<bool> {
        let limit = Duration::from_secs(30);
        let t = Instant::now();
        loop {
            if let Some(body) = http_get(self.admin_port, "/-/metrics") {
                return Ok(body.contains("\nwasmbox_prewarm_scans_total "));
            }
            if t.elapsed() > limit {
                bail!("no metrics from the admin port within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server process has ended.
    pub(crate) fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// `wasmbox serve --functions dir extra..`, once `ready_path` answers 200.
    /// The binary is the `wasmbox` next to this one (same build profile).
    pub(crate) fn start(dir: &Path, extra: &[&str], ready_path: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?.with_file_name("wasmbox");
        if !exe.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p wasmbox`",
                exe.display()
            );
        }
        Self::start_exe(&exe, dir, extra, ready_path)
    }

    /// [`ServerProc::start`] of the wasmbox binary at `exe`, at its default
    /// log level (as it runs when deployed: a quieter level once hid a cost
    /// every deployed server paid, wasmtime-wasi's spans).
    pub(crate) fn start_exe(
        exe: &Path,
        dir: &Path,
        extra: &[&str],
        ready_path: &str,
    ) -> anyhow::Result<Self> {
        let [port, admin_port] = free_ports()?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--admin-listen",
                &format!("127.0.0.1:{admin_port}"),
            ])
            .arg("--functions")
            .arg(dir)
            .args(extra)
            .stderr(Stdio::inherit())
            .spawn()
            .context("start wasmbox")?;
        if let Err(e) = wait_http_ok(port, ready_path, Duration::from_secs(60), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context("wasmbox did not come up"));
        }
        Ok(ServerProc {
            child,
            port,
            admin_port,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` different loopback ports that were free a moment ago: all bound at
/// once, so the kernel cannot hand out one port twice (as separate calls of
/// [`free_port`] can).
pub(crate) fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    for _ in 0..N {
        held.push(std::net::TcpListener::bind("127.0.0.1:0")?);
    }
    let mut ports = [0; N];
    for (port, l) in ports.iter_mut().zip(&held) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

/// `GET path` on a loopback port: the whole answer (head and body) if its
/// status is 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r.starts_with("HTTP/1.1 200").then_some(r)
}

/// Polls `GET path` on a loopback port until it answers 200, the process
/// has `exited()`, or `limit` passes.
pub(crate) fn wait_http_ok(
    port: u16,
    path: &str,
    limit: Duration,
    mut exited: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if http_get(port, path).is_some() {
            return Ok(());
        }
        if exited() {
            bail!("the process exited");
        }
        if t.elapsed() > limit {
            bail!("no 200 from port {port} {path} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Machine: {cores} cores ({cpu}), Linux {}. Shared and noisy: compare ratios within one run.", kernel.trim())
}
