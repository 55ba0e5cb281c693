//! The report's last section: why each goal this run missed is missed, in
//! prose whose every figure comes from this run.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::systems::{cell, Cell, WASMBOX, WASMTIME_RUN};
use super::units::{fmt_us, us};
use super::workload::ExecTime;
use crate::density::Density;

/// Writes "What limits the missed goals" for the goals this run missed
/// (nothing when it missed none). `one_worker` is hello's in-process rate
/// on one worker (invocations/s) in this run.
pub(crate) fn write(
    r: &mut String,
    cells: &[Cell],
    d: &Density,
    exec: &[ExecTime],
    one_worker: f64,
) -> anyhow::Result<()> {
    let p50 = |h: &Histogram<u64>| us(h.value_at_quantile(0.5));
    let mut notes = Vec::new();
    let in_process = 1e6 / one_worker;
    let wb1 = cell(cells, WASMBOX, "hello", 1);
    if let Some(c) = wb1.filter(|c| !c.result.server_total.is_empty()) {
        let total = p50(&c.result.server_total);
        if total > 35.0 {
            notes.push(format!(
                "**Server-side time.** `total` ({}) covers reading the request, the registry's look-up, admission, \
                 the hand-off to a worker thread, the quota step, instantiation and `_start`. In process one \
                 invocation takes {} on one worker in this run (1 / its rate); the rest is the hand-off and the \
                 HTTP stack sharing the cores with the load generator.",
                fmt_us(total),
                fmt_us(in_process)
            ));
        }
        if let Some(run) = cell(cells, WASMTIME_RUN, "hello", 1) {
            let (run, client) = (p50(&run.result.latency), p50(&c.result.latency));
            if run / client < 50.0 {
                notes.push(format!(
                    "**`wasmtime run` per invocation.** A process of the wasmtime CLI with a precompiled module starts, \
                     runs hello and exits in {}. wasmbox's client-observed {} at c=1 is mostly the loopback HTTP round \
                     trip, which a process-per-invocation platform pays as well; against wasmbox's server-side time \
                     ({}) the ratio is {:.0}x.",
                    fmt_us(run),
                    fmt_us(client),
                    fmt_us(total),
                    run / total
                ));
            }
        }
    }
    let idle = d.cached.mem.0 as f64 / (1 << 20) as f64;
    if idle > 300.0 {
        let per = d.all_loaded.mem.0.saturating_sub(d.rss_start) as f64 / d.functions as f64;
        notes.push(format!(
            "**Idle memory with many functions.** A function that has run keeps its compiled code and module state \
             while loaded: {:.0} KiB per function with all {} loaded in this run ({} KiB of Wasm each). With the \
             LRU default at most {} stay loaded; the idle RSS with it was {idle:.0} MiB.",
            per / 1024.0,
            d.functions,
            d.module_bytes / 1024,
            d.max_loaded_default
        ));
    }
    if us(d.cached.first.value_at_quantile(0.99)) > 2000.0 {
        let (k, tail) = d.cached.tail(0.99);
        notes.push(format!(
            "**First invocation.** From the AOT cache after a restart, p99 {} (p50 {}); compiling on first use, p99 {}. \
             Its slowest {k} calls after the restart, medians of each: {} as the client saw them, {} in the server \
             (Server-Timing `total`), of it {} (`load` is finding the function and its manifest, loading it from \
             the cache when neither the startup scan nor an earlier call had; the time outside the phases is the \
             server's median less theirs). They were made at positions {:?} of the pass's {} calls (0: the first \
             request after the restart).",
            fmt_us(us(d.cached.first.value_at_quantile(0.99))),
            fmt_us(us(d.cached.first.value_at_quantile(0.5))),
            fmt_us(us(d.cold.first.value_at_quantile(0.99))),
            fmt_us(us(tail.client)),
            fmt_us(us(tail.server)),
            tail.phases(|ns| fmt_us(us(ns))),
            d.cached.slowest_positions(k),
            d.cached.calls.len(),
        ));
    }
    for (name, _, (wasm, native)) in exec {
        if wasm / native <= 1.6 {
            continue;
        }
        notes.push(match *name {
            "rsakeygen" => format!(
                "**rsakeygen, {:.2}x native.** Key generation is big-integer multiplication. x86_64 multiplies two \
                 64-bit limbs into 128 bits in one instruction; core Wasm has no such instruction (the wide-arithmetic \
                 proposal adds it), so every limb product is emulated with several 64-bit multiplies.",
                wasm / native
            ),
            "imageblur" | "scryptwork" => format!(
                "**{name}, {:.2}x native.** Its hot loop is vectorised in both builds (the guests are compiled with \
                 simd128), but Wasm SIMD is 128-bit only, Cranelift's code is less tuned than LLVM's, and every loop \
                 carries the epoch (deadline) check (its price is in the deadline section above).",
                wasm / native
            ),
            _ => format!("**{name}, {:.2}x native.**", wasm / native),
        });
    }
    if !notes.is_empty() {
        writeln!(r, "## What limits the missed goals\n")?;
        for n in notes {
            writeln!(r, "{n}\n")?;
        }
    }
    Ok(())
}
