//! The report's density section: N tenants' functions in one wasmbox, with
//! the LRU default and with all loaded, against one process per function.

use std::fmt::Write as _;

use super::units::{fmt_us, us};
use crate::density::{Density, Kind, Pass};
use crate::density_component::ComponentDensity;

pub(crate) fn write(r: &mut String, d: &Density) -> std::fmt::Result {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    writeln!(
        r,
        "## Density: {} functions in one wasmbox vs one process per function\n",
        d.functions
    )?;
    writeln!(
        r,
        "The functions are copies of `echo` ({} KiB of Wasm, Rust std), each made distinct by a custom section, \
         invoked once each in turn on one connection. Three server runs over the same directory, all with \
         `--cache-dir` and `--cache-max-mb {}` (room for all of them; the default 768 MB holds about 3,500): first boot with the defaults (each compiled on its first request, filling the AOT cache); \
         a restart with the defaults, where at most {} functions stay compiled in memory (`--max-loaded-functions` \
         default: the least recently used are unloaded and reload from the cache on their next request); a restart \
         with `--max-loaded-functions {}`, all loaded.\n",
        d.module_bytes / 1024,
        crate::density::cache_mb_for(d.functions),
        d.max_loaded_default,
        d.functions
    )?;
    writeln!(
        r,
        "| server run | first invocation p50 / p99 | idle RSS / PSS after | RSS per function | open fds |\n|---|---|---|---|---|"
    )?;
    let row = |r: &mut String, what: String, p: &Pass| {
        writeln!(
            r,
            "| {what} | {} / {} | {:.1} / {:.1} MiB | {:.0} KiB | {} |",
            fmt_us(us(p.first.value_at_quantile(0.5))),
            fmt_us(us(p.first.value_at_quantile(0.99))),
            mib(p.mem.0),
            mib(p.mem.1),
            p.mem.0.saturating_sub(d.rss_start) as f64 / 1024.0 / d.functions as f64,
            p.fds
        )
    };
    row(
        r,
        format!(
            "first boot, defaults (LRU at {}), compiling",
            d.max_loaded_default
        ),
        &d.cold,
    )?;
    row(
        r,
        format!(
            "restart, defaults (LRU at {}), from the AOT cache",
            d.max_loaded_default
        ),
        &d.cached,
    )?;
    row(
        r,
        format!("restart, all {} loaded, from the AOT cache", d.functions),
        &d.all_loaded,
    )?;
    writeln!(
        r,
        "\nRSS right after start with nothing to load (the same server over an empty directory; over the real one \
         it starts compiling the files as soon as it is up): {:.1} MiB. RSS per function is above it.\n",
        mib(d.rss_start)
    )?;
    match d.per_process {
        Some((k, rss, pss)) => {
            let per_wasmbox = d.all_loaded.mem.0 as f64 / d.functions as f64;
            writeln!(
                r,
                "One `wasmtime serve` process per function ({k} measured): {:.1} / {:.1} MiB RSS / PSS each; \
                 per function, a process (PSS) takes {:.0}x wasmbox with all loaded (RSS / N). A process per function \
                 is only the Wasm host here; a container adds its runtime's shim and, under Knative, a queue-proxy \
                 sidecar per pod.\n",
                mib(rss) / k as f64,
                mib(pss) / k as f64,
                (pss as f64 / k as f64) / per_wasmbox
            )
        }
        None => writeln!(
            r,
            "One process per function: skipped: {}.\n",
            d.per_process_skip.as_deref().unwrap_or("?")
        ),
    }
}

/// Component density: idle RSS per loaded wasi:http handler against per
/// preview-1 module, at the same N (issue 14).
pub(crate) fn write_components(r: &mut String, d: &ComponentDensity) -> std::fmt::Result {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let n = d.functions;
    writeln!(
        r,
        "## Density: {n} wasi:http handler components vs {n} preview-1 modules, all loaded\n"
    )?;
    writeln!(
        r,
        "{n} distinct copies of `functions/hellohttp.wasm` ({} KiB, the wasi:http hello component, Rust std) and, \
         separately, of `functions/echo.wasm` ({} KiB), each made distinct by a custom section as above. Per kind: \
         a first boot with the defaults and `--cache-dir` (each compiled on its first request or by prewarming), then a restart with \
         `--max-loaded-functions {n}`, each invoked once again so all stay loaded. Idle RSS per loaded function = \
         (RSS after the all-loaded pass - RSS at start) / {n}, RSS at start being the same server over an empty \
         directory.\n",
        d.component.bytes / 1024,
        d.module.bytes / 1024
    )?;
    writeln!(
        r,
        "| kind | RSS at start | first boot: first invocation p50 / p99, idle RSS | all loaded: first invocation p50 / p99 | all loaded: idle RSS / PSS | idle RSS per loaded function | open fds (all loaded) |\n|---|---|---|---|---|---|---|"
    )?;
    for k in [&d.module, &d.component] {
        let what = match k.kind {
            Kind::Module => "preview-1 module (echo)",
            Kind::Component => "wasi:http component (hellohttp)",
        };
        let q = |p: &Pass, x: f64| fmt_us(us(p.first.value_at_quantile(x)));
        writeln!(
            r,
            "| {what} | {:.1} MiB | {} / {}, {:.1} MiB | {} / {} | {:.1} / {:.1} MiB | {:.0} KiB | {} |",
            mib(k.rss_start),
            q(&k.cold, 0.5),
            q(&k.cold, 0.99),
            mib(k.cold.mem.0),
            q(&k.all_loaded, 0.5),
            q(&k.all_loaded, 0.99),
            mib(k.all_loaded.mem.0),
            mib(k.all_loaded.mem.1),
            k.per_function(n) / 1024.0,
            k.all_loaded.fds
        )?;
    }
    writeln!(
        r,
        "\nPer loaded function, a component takes {:.2}x a module (issue 14's goal: <= 1.5x).\n",
        d.ratio()
    )
}
