//! The report's last section: why each goal this run missed is missed.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::systems::{cell, Cell, WASMBOX, WASMTIME_RUN};
use super::units::{fmt_us, us};
use super::workload::ExecTime;
use crate::density::Density;

/// Writes "What limits the missed goals" for the goals this run missed
/// (nothing when it missed none).
pub(crate) fn write(
    r: &mut String,
    cells: &[Cell],
    d: &Density,
    exec: &[ExecTime],
) -> anyhow::Result<()> {
    let p50 = |h: &Histogram<u64>| us(h.value_at_quantile(0.5));
    let mut notes = Vec::new();
    let wb1 = cell(cells, WASMBOX, "hello", 1);
    if let Some(c) = wb1.filter(|c| !c.result.server_total.is_empty()) {
        let total = p50(&c.result.server_total);
        if total > 50.0 {
            notes.push(format!(
                "**Server-side time.** `total` ({}) covers reading the request, the registry's `stat` of the file, \
                 admission, the hand-off to a worker thread (a futex wake when the worker is parked), the quota step, \
                 instantiation and `_start`. In process the invocation alone takes 4-6 µs (bench/results/core.md); \
                 the rest is the hand-off and the HTTP stack sharing two cores with the load generator.",
                fmt_us(total)
            ));
        }
        if let Some(run) = cell(cells, WASMTIME_RUN, "hello", 1) {
            let (run, client) = (p50(&run.result.latency), p50(&c.result.latency));
            if run / client < 50.0 {
                notes.push(format!(
                    "**`wasmtime run` per invocation.** A process of the wasmtime CLI with a precompiled module starts, \
                     runs hello and exits in {} here, a fast machine for process creation. wasmbox's client-observed \
                     {} at c=1 is mostly the loopback HTTP round trip, which a process-per-invocation platform pays as \
                     well; against wasmbox's server-side time ({}) the ratio is {:.0}x.",
                    fmt_us(run),
                    fmt_us(client),
                    fmt_us(total),
                    run / total
                ));
            }
        }
    }
    let per = d.loaded_cached.0.saturating_sub(d.rss_start) as f64 / d.functions as f64;
    let at_1000 = (d.rss_start as f64 + 1000.0 * per) / (1 << 20) as f64;
    // Extrapolating from a small N would mostly measure fixed costs.
    if d.functions >= 100 && at_1000 > 256.0 {
        notes.push(format!(
            "**Idle memory with many functions.** Each function that has run keeps its compiled code loaded: the \
             {} KiB `echo` guest compiles to about 210 KiB of machine code and metadata, mapped from the AOT cache \
             and dirtied by relocation, plus its module and pre-instantiation state: {:.0} KiB per function in this \
             run, so about {at_1000:.0} MiB at 1,000. Warm pool slots are capped at 16 (wasmtime's default of 100 \
             added about 0.2 MiB per function). Staying under 256 MiB needs unloading functions that have been idle \
             (reloading one from the AOT cache takes the cached first-invocation time above); not done yet. \
             On first boot the compiler's freed working memory, kept by the allocator, adds to that.",
            d.module_bytes / 1024,
            per / 1024.0
        ));
    }
    if us(d.first_cold.value_at_quantile(0.99)) > 2000.0 {
        notes.push(
            "**First invocation without a cache.** A function never seen before is compiled on its first request \
             (Cranelift, both cores). Deploy with `--cache-dir` kept across restarts, or precompile with \
             `wasmbox compile` and `--allow-precompiled`, and the first invocation is a load from disk (the cached row)."
                .to_string(),
        );
    }
    for (name, _, (wasm, native)) in exec {
        if wasm / native <= 1.6 {
            continue;
        }
        notes.push(match *name {
            "rsakeygen" => format!(
                "**rsakeygen, {:.1}x native.** Key generation is big-integer multiplication. x86_64 multiplies two \
                 64-bit limbs into 128 bits in one instruction; core Wasm has no such instruction (the wide-arithmetic \
                 proposal adds it), so every limb product is emulated with several 64-bit multiplies.",
                wasm / native
            ),
            "imageblur" | "scryptwork" => format!(
                "**{name}, {:.2}x native.** Its hot loop is vectorised in both builds (the guests are compiled with \
                 simd128; without it scrypt ran 3.0x native), but Wasm SIMD is 128-bit only and Cranelift's code is \
                 less tuned than LLVM's, and every loop carries the epoch (deadline) check.",
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
