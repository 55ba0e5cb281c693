//! The deadline's price, per paper workload: the engine's (the epoch build
//! run with a timeout against the plain build, both `wasmtime run`) and
//! wasmbox's own (wasmbox against the epoch build it runs the same way).
//!
//! All figures are c=1 p50 of this run. A `wasmtime run` process also pays
//! process start, module load and instantiation; hello's `wasmtime run` p50
//! of the same build is taken as that floor and subtracted, so the
//! "execution" ratios compare the workload's run alone.

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
    /// hello under the same two builds: the process floor.
    pub(crate) floor_plain: f64,
    pub(crate) floor_epoch: f64,
}

impl DeadlinePrice {
    /// epoch / plain, whole processes.
    pub(crate) fn engine_raw(&self) -> f64 {
        self.epoch / self.plain
    }
    /// The epoch build's p50 less its process floor, µs (at or below zero
    /// when the workload is shorter than the floor's noise).
    pub(crate) fn epoch_less_floor(&self) -> f64 {
        self.epoch - self.floor_epoch
    }
    /// The workload's execution alone under the epoch build, µs
    /// ([`DeadlinePrice::epoch_less_floor`]). `None` when it is not above
    /// the floor, where no ratio means anything.
    pub(crate) fn epoch_exec(&self) -> Option<f64> {
        let e = self.epoch_less_floor();
        (e > 0.0).then_some(e)
    }
    /// epoch / plain, each less its process floor.
    pub(crate) fn engine_exec(&self) -> Option<f64> {
        let plain = self.plain - self.floor_plain;
        (plain > 0.0).then_some(self.epoch_exec()? / plain)
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

/// The price for every workload measured under all three systems.
pub(crate) fn prices(cells: &[Cell], functions: &[&'static str]) -> Vec<DeadlinePrice> {
    let p50 = |system: &str, f: &str| {
        cell(cells, system, f, 1).map(|c| us(c.result.latency.value_at_quantile(0.5)))
    };
    let floors = p50(WASMTIME_RUN, "hello").zip(p50(WASMTIME_RUN_EPOCH, "hello"));
    functions
        .iter()
        .filter(|f| **f != "hello")
        .filter_map(|&function| {
            let (floor_plain, floor_epoch) = floors?;
            Some(DeadlinePrice {
                function,
                plain: p50(WASMTIME_RUN, function)?,
                epoch: p50(WASMTIME_RUN_EPOCH, function)?,
                wasmbox: p50(WASMBOX, function)?,
                floor_plain,
                floor_epoch,
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
    let f = &prices[0];
    writeln!(
        r,
        "c=1 p50 of this run. `{WASMTIME_RUN}` is the module compiled and run without epoch interruption (no deadline \
         possible); `{WASMTIME_RUN_EPOCH}` is compiled with `{}` and run with `{}`, the check wasmbox's deadline relies \
         on. Process floor: hello's p50 under the same build ({:.0} µs plain, {:.0} µs epoch), subtracted to get each \
         workload's execution alone. Engine's deadline cost = epoch / plain; wasmbox's own overhead = wasmbox \
         (client-observed, HTTP round trip and all) / the epoch build's execution. Goal: own overhead <= {OWN_OVERHEAD_GOAL}x. \
         A process also pays costs that grow with the workload and that a warm server does not (page faults on fresh \
         memory: wasmbox's pool slots keep theirs resident), so the own-overhead ratios lean in wasmbox's favour; the \
         engine's ratio has the same process on both sides.\n",
        crate::peers::EPOCH_COMPILE.join(" "),
        crate::peers::EPOCH_RUN.join(" "),
        f.floor_plain,
        f.floor_epoch
    )?;
    writeln!(
        r,
        "| workload | plain p50 | epoch p50 | wasmbox p50 | engine: epoch / plain (processes) | engine: epoch / plain (execution) | own: wasmbox / epoch (process) | own: wasmbox / epoch (execution) | verdict |"
    )?;
    writeln!(r, "|---|---|---|---|---|---|---|---|---|")?;
    for p in prices {
        writeln!(
            r,
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x | {} | {:.2}x | {} | {} |",
            p.function,
            p.plain / 1e3,
            p.epoch / 1e3,
            p.wasmbox / 1e3,
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

    fn price(epoch: f64, wasmbox: f64) -> DeadlinePrice {
        DeadlinePrice {
            function: "genpdf",
            plain: 9000.0,
            epoch,
            wasmbox,
            floor_plain: 7000.0,
            floor_epoch: 7200.0,
        }
    }

    /// A workload whose p50 is not above the process floor (noise larger
    /// than the workload) gets no ratio and no verdict; a negative "ratio"
    /// once passed the goal.
    #[test]
    fn a_workload_at_or_below_the_process_floor_is_not_measured() {
        let below = price(7190.0, 1440.0);
        assert_eq!(below.own_exec(), None);
        assert_eq!(below.met(), None);
        assert_eq!(
            ratio(below.engine_exec()),
            "n/a (at or below the process floor)"
        );
        let mut r = String::new();
        write(&mut r, &[below]).unwrap();
        assert!(r.contains("| not measured |"), "{r}");

        let above = price(9200.0, 2040.0);
        assert_eq!(above.own_exec(), Some(1.02));
        assert_eq!(above.met(), Some(true));
        assert_eq!(ratio(above.engine_exec()), "1.00x");
    }
}
