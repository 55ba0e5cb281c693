//! Component density (issue 14's benchmark): idle RSS per loaded wasi:http
//! handler component against per preview-1 module, at the same N, both
//! measured the way density.rs measures its all-loaded pass. For each kind,
//! N distinct copies (density.rs's custom section appended: valid at the end
//! of a component binary as of a module) in a fresh directory, two server
//! runs with `--cache-dir`: a first boot with the defaults, each invoked
//! once (compiled on first use or by prewarming, filling the AOT cache),
//! then a restart with `--max-loaded-functions N`, each invoked once again,
//! so all N stay loaded. Idle RSS per loaded function = (RSS after the
//! all-loaded pass - RSS at start) / N, RSS at start being the same server
//! started over an empty directory ([`crate::density::rss_empty`]).

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::density::{pass, rss_empty, write_copies, Kind, Pass};

/// One kind's two server runs.
pub(crate) struct KindRun {
    pub(crate) kind: Kind,
    /// The original file's size.
    pub(crate) bytes: usize,
    /// RSS right after start over an empty directory.
    pub(crate) rss_start: u64,
    /// First boot, defaults: each compiled on its first request.
    pub(crate) cold: Pass,
    /// Restart with `--max-loaded-functions N`, code from the AOT cache.
    pub(crate) all_loaded: Pass,
}

impl KindRun {
    /// Idle RSS per loaded function, bytes: (RSS after the all-loaded pass
    /// - RSS at start) / n.
    pub(crate) fn per_function(&self, n: usize) -> f64 {
        per_function(self.all_loaded.mem.0, self.rss_start, n)
    }
}

fn per_function(rss_after: u64, rss_start: u64, n: usize) -> f64 {
    rss_after.saturating_sub(rss_start) as f64 / n.max(1) as f64
}

/// Both kinds at the same N.
pub(crate) struct ComponentDensity {
    pub(crate) functions: usize,
    pub(crate) module: KindRun,
    pub(crate) component: KindRun,
}

impl ComponentDensity {
    /// Idle RSS per loaded component / per loaded module.
    pub(crate) fn ratio(&self) -> f64 {
        self.component.per_function(self.functions) / self.module.per_function(self.functions)
    }
}

fn run_kind(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<KindRun> {
    let dir = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let bytes = write_copies(kind, n, dir.path())?;
    let args = crate::density::ServerArgs::new(cache.path(), n);
    let (defaults, all) = (args.defaults(), args.all_loaded());
    let rss_start = rss_empty(&defaults)?;
    let cold = pass(rt, dir.path(), &defaults, kind, n, bar)?;
    let all_loaded = pass(rt, dir.path(), &all, kind, n, bar)?;
    Ok(KindRun {
        kind,
        bytes,
        rss_start,
        cold,
        all_loaded,
    })
}

/// Preview-1 modules, then wasi:http components, `n` of each.
pub(crate) fn run(
    rt: &tokio::runtime::Runtime,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<ComponentDensity> {
    bar.set_length(4 * n as u64);
    let module = run_kind(rt, Kind::Module, n, bar)?;
    let component = run_kind(rt, Kind::Component, n, bar)?;
    Ok(ComponentDensity {
        functions: n,
        module,
        component,
    })
}

/// The figures as `wasmbox-bench density --components N` prints them.
pub(crate) fn lines(d: &ComponentDensity) -> Vec<String> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e3;
    let n = d.functions;
    let mut out = Vec::new();
    for k in [&d.module, &d.component] {
        let what = match k.kind {
            Kind::Module => "preview-1 modules (echo.wasm)",
            Kind::Component => "wasi:http components (hellohttp.wasm)",
        };
        out.push(format!(
            "{n} {what}, {} KiB each: RSS at start, empty directory {:.1} MiB",
            k.bytes / 1024,
            mib(k.rss_start)
        ));
        for (pass, p) in [
            ("compiling, defaults", &k.cold),
            ("from the AOT cache, all loaded", &k.all_loaded),
        ] {
            out.push(format!(
                "  {pass}: first invocation p50 {:.0} µs p99 {:.0} µs; idle RSS {:.1} MiB; {} fds",
                q(&p.first, 0.5),
                q(&p.first, 0.99),
                mib(p.mem.0),
                p.fds
            ));
        }
        out.push(format!(
            "  idle RSS per loaded function: {:.0} KiB",
            k.per_function(n) / 1024.0
        ));
    }
    out.push(format!(
        "component / module, idle RSS per loaded function: {:.2}x (goal <= 1.5x)",
        d.ratio()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_function_is_growth_over_start_divided_by_n() {
        assert_eq!(
            per_function(300 << 20, 100 << 20, 1000),
            (200u64 << 20) as f64 / 1000.0
        );
        // Below the start (memory returned): zero, not negative.
        assert_eq!(per_function(90, 100, 10), 0.0);
        // N = 0 does not divide by zero.
        assert_eq!(per_function(200, 100, 0), 100.0);
    }
}
