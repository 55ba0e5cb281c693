//! The systems `compare` measures, by the names the report and the plots
//! print, and one measured cell of them. Used by the runner, the report and
//! the plots.

use crate::load::LoadResult;

pub(crate) const WASMBOX: &str = "wasmbox";
pub(crate) const WASMTIME_SERVE: &str = "wasmtime serve";
/// wasmbox serving the same wasi:http component `wasmtime serve` runs.
pub(crate) const WASMBOX_COMPONENT: &str = "wasmbox, wasi:http component";
pub(crate) const REFERENCE: &str = "reference pipeline (re-enacted)";
pub(crate) const WASMTIME_RUN: &str = "wasmtime run per request";
pub(crate) const WASMTIME_RUN_EPOCH: &str = "wasmtime run, epoch build + timeout";
pub(crate) const NATIVE: &str = "native fork/exec per request";

/// Every system, in the order the report's tables and the plots list them.
pub(crate) const ALL: [&str; 7] = [
    WASMBOX,
    WASMBOX_COMPONENT,
    WASMTIME_SERVE,
    REFERENCE,
    WASMTIME_RUN,
    WASMTIME_RUN_EPOCH,
    NATIVE,
];

/// One measured cell: a system running a function at a concurrency.
pub(crate) struct Cell {
    pub(crate) system: &'static str,
    pub(crate) function: &'static str,
    pub(crate) concurrency: usize,
    pub(crate) result: LoadResult,
}

/// The cell of `system` running `function` at concurrency `conc`, if measured.
pub(crate) fn cell<'a>(
    cells: &'a [Cell],
    system: &str,
    function: &str,
    conc: usize,
) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.system == system && c.function == function && c.concurrency == conc)
}

/// The highest requests/s of `system` running `function`, and at which
/// concurrency.
pub(crate) fn best_rate(cells: &[Cell], system: &str, function: &str) -> Option<(f64, usize)> {
    cells
        .iter()
        .filter(|c| c.system == system && c.function == function)
        .map(|c| (c.result.rate, c.concurrency))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}
