//! The deadline's price, per paper workload: the engine's (the epoch build
//! run with a timeout against the plain build, both `wasmtime run`) and
//! wasmbox's own (wasmbox against the epoch build it runs the same way).
//!
//! All figures are c=1 p50 of this run. A `wasmtime run` process also pays
//! process start, module load and instantiation; the "execution" ratios
//! take that floor away pair by pair: the workload's process and hello's
//! under the same build, run back to back ([`crate::load::paired_processes`]).

use std::fmt::Write as _;

use super::systems::{cell, Cell, WASMBOX, WASMTIME_RUN, WASMTIME_RUN_EPOCH};
use super::units::us;

/// The goal: wasmbox's own overhead at most this over the epoch build.
pub(crate) const OWN_OVERHEAD_GOAL: f64 = 1.03;

/// One workload's c=1 p50s, in µs.
pub(crate) struct DeadlinePrice {
    pub(crate) function: &'static str,
    pub(crate) plain: f64,
    pub(crate) epoch: f64,
    /// wasmbox, client-observed (HTTP round trip included).
    pub(crate) wasmbox: f64,
    /// The workload's execution alone under each build, µs: the median over
    /// back-to-back pairs of its process less hello's (at or below zero
    /// when the workload is shorter than the processes' noise).
    pub(crate) exec_plain: f64,
    pub(crate) exec_epoch: f64,
    /// How many pairs each of those took (plain, epoch).
    pub(crate) pairs: (usize, usize),
}

/// One workload's execution under one build, from
/// [`crate::load::paired_processes`].
pub(crate) struct Paired {
    pub(crate) system: &'static str,
    pub(crate) function: &'static str,
    /// Median of the workload's process less hello's, µs.
    pub(crate) exec: f64,
    pub(crate) pairs: usize,
}

impl DeadlinePrice {
    /// epoch / plain, whole processes.
    pub(crate) fn engine_raw(&self) -> f64 {
        self.epoch / self.plain
    }
    /// The workload's execution alone under the epoch build, µs. `None`
    /// when it is not above the process floor, where no ratio means
    /// anything.
    pub(crate) fn epoch_exec(&self) -> Option<f64> {
        (self.exec_epoch > 0.0).then_some(self.exec_epoch)
    }
    /// epoch / plain, execution alone.
    pub(crate) fn engine_exec(&self) -> Option<f64> {
        (self.exec_plain > 0.0).then_some(self.epoch_exec()? / self.exec_plain)
    }
    /// wasmbox / epoch build, whole `wasmtime run` process.
    pub(crate) fn own_raw(&self) -> f64 {
        self.wasmbox / self.epoch
    }
    /// wasmbox (all it adds, HTTP included) / the epoch build's execution
    /// alone: the figure the goal is judged on (the stricter one).
    pub(crate) fn own_exec(&self) -> Option<f64> {
        Some(self.wasmbox / self.epoch_exec()?)
    }
    /// `None`: not measurable in this run ([`DeadlinePrice::epoch_exec`]).
    pub(crate) fn met(&self) -> Option<bool> {
        self.own_exec().map(|r| r <= OWN_OVERHEAD_GOAL)
    }
}

/// A ratio as "1.23x", or why there is none.
pub(crate) fn ratio(r: Option<f64>) -> String {
    r.map_or_else(
        || "n/a (at or below the process floor)".to_string(),
        |r| format!("{r:.2}x"),
    )
}

/// The price for every workload measured under all three systems and
/// paired with hello under both builds.
pub(crate) fn prices(
    cells: &[Cell],
    paired: &[Paired],
    functions: &[&'static str],
) -> Vec<DeadlinePrice> {
    let p50 = |system: &str, f: &str| {
        cell(cells, system, f, 1).map(|c| us(c.result.latency.value_at_quantile(0.5)))
    };
    let exec = |system: &str, f: &str| {
        paired
            .iter()
            .find(|p| p.system == system && p.function == f)
            .map(|p| (p.exec, p.pairs))
    };
    functions
        .iter()
        .filter(|f| **f != "hello")
        .filter_map(|&function| {
            let (exec_plain, plain_pairs) = exec(WASMTIME_RUN, function)?;
            let (exec_epoch, epoch_pairs) = exec(WASMTIME_RUN_EPOCH, function)?;
            Some(DeadlinePrice {
                function,
                plain: p50(WASMTIME_RUN, function)?,
                epoch: p50(WASMTIME_RUN_EPOCH, function)?,
                wasmbox: p50(WASMBOX, function)?,
                exec_plain,
                exec_epoch,
                pairs: (plain_pairs, epoch_pairs),
            })
        })
        .collect()
}

/// The report's section on the deadline's price.
pub(crate) fn write(r: &mut String, prices: &[DeadlinePrice]) -> std::fmt::Result {
    writeln!(
        r,
        "## The deadline's price: the engine's and wasmbox's own\n"
    )?;
    if prices.is_empty() {
        return writeln!(r, "Not measured (the wasmtime CLI is not installed).\n");
    }
    writeln!(
        r,
        "c=1 p50 of this run. `{WASMTIME_RUN}` is the module compiled and run without epoch interruption (no deadline \
         possible); `{WASMTIME_RUN_EPOCH}` is compiled with `{}` and run with `{}`, the check wasmbox's deadline relies \
         on. Execution alone: the workload's process and hello's under the same build run back to back, one at a time, \
         in pairs (order alternating), for the cell's window and at least {} pairs; the figure is the median over pairs \
         of the workload's time less hello's, so both halves of a pair see the same machine (a floor taken in another \
         window moved genpdf's execution between 0.9 and 4.9 ms across runs). Engine's deadline cost = epoch / plain; wasmbox's own overhead = wasmbox \
         (client-observed, HTTP round trip and all) / the epoch build's execution. Goal: own overhead <= {OWN_OVERHEAD_GOAL}x. \
         A process also pays costs that grow with the workload and that a warm server does not (page faults on fresh \
         memory: wasmbox's pool slots keep theirs resident), so the own-overhead ratios lean in wasmbox's favour; the \
         engine's ratio has the same process on both sides.\n",
        crate::peers::EPOCH_COMPILE.join(" "),
        crate::peers::EPOCH_RUN.join(" "),
        crate::load::MIN_PAIRS,
    )?;
    writeln!(
        r,
        "| workload | plain p50 | epoch p50 | wasmbox p50 | execution alone: plain, epoch (pairs) | engine: epoch / plain (processes) | engine: epoch / plain (execution) | own: wasmbox / epoch (process) | own: wasmbox / epoch (execution) | verdict |"
    )?;
    writeln!(r, "|---|---|---|---|---|---|---|---|---|---|")?;
    for p in prices {
        writeln!(
            r,
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms, {:.2} ms ({}, {}) | {:.2}x | {} | {:.2}x | {} | {} |",
            p.function,
            p.plain / 1e3,
            p.epoch / 1e3,
            p.wasmbox / 1e3,
            p.exec_plain / 1e3,
            p.exec_epoch / 1e3,
            p.pairs.0,
            p.pairs.1,
            p.engine_raw(),
            ratio(p.engine_exec()),
            p.own_raw(),
            ratio(p.own_exec()),
            match p.met() {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "not measured",
            }
        )?;
    }
    writeln!(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload whose execution alone (paired with hello) is `exec_epoch`
    /// µs under the epoch build and 2,000 µs under the plain one.
    fn price(exec_epoch: f64, wasmbox: f64) -> DeadlinePrice {
        DeadlinePrice {
            function: "genpdf",
            plain: 9000.0,
            epoch: 7200.0 + exec_epoch,
            wasmbox,
            exec_plain: 2000.0,
            exec_epoch,
            pairs: (40, 40),
        }
    }

    /// A workload whose execution alone is not above zero (the pairs' noise
    /// larger than the workload) gets no ratio and no verdict; a negative
    /// "ratio" once passed the goal.
    #[test]
    fn a_workload_at_or_below_the_process_floor_is_not_measured() {
        let below = price(-10.0, 1440.0);
        assert_eq!(below.own_exec(), None);
        assert_eq!(below.met(), None);
        assert_eq!(
            ratio(below.engine_exec()),
            "n/a (at or below the process floor)"
        );
        let mut r = String::new();
        write(&mut r, &[below]).unwrap();
        assert!(r.contains("| not measured |"), "{r}");

        let above = price(2000.0, 2040.0);
        assert_eq!(above.own_exec(), Some(1.02));
        assert_eq!(above.met(), Some(true));
        assert_eq!(ratio(above.engine_exec()), "1.00x");
    }
}
