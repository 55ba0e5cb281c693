//! The function registry: what is held now, and loads, cache hits and
//! unloads since start (counters), heavy compiles running, and the
//! prewarm's finished scans.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{counter, gauge, raise_to, GaugeValues};

pub(super) struct Functions {
    loaded: Gauge,
    /// `wasmbox_function_loads_total`.
    loads: Counter,
    /// `wasmbox_function_cache_hits_total`.
    cache_hits: Counter,
    /// `wasmbox_function_unloads_total`.
    unloads: Counter,
    heavy_compiles: Gauge,
    /// `wasmbox_prewarm_scans_total`.
    prewarm_scans: Counter,
}

impl Functions {
    pub fn register(r: &mut Registry) -> Self {
        Functions {
            loaded: gauge(
                r,
                "functions_loaded",
                "Functions held by the registry: compiled, compiling or failed (at most --max-loaded-functions)",
            ),
            loads: counter(
                r,
                "function_loads",
                "Compilations or cache loads of functions",
            ),
            cache_hits: counter(
                r,
                "function_cache_hits",
                "Function loads served from the AOT cache",
            ),
            unloads: counter(
                r,
                "function_unloads",
                "Functions unloaded (least recently used)",
            ),
            heavy_compiles: gauge(
                r,
                "function_heavy_compiles",
                "Heavy compiles running now (modules of --heavy-module-kb or more, each in a compile child)",
            ),
            prewarm_scans: counter(
                r,
                "prewarm_scans",
                "Scans of the functions directory the prewarm has finished; the first ends the compile of every file there at start",
            ),
        }
    }

    pub fn set(&self, v: &GaugeValues) {
        let (held, loads, hits, unloads) = v.functions;
        self.loaded.set(held as i64);
        raise_to(&self.loads, loads);
        raise_to(&self.cache_hits, hits);
        raise_to(&self.unloads, unloads);
        self.heavy_compiles.set(v.heavy_compiles as i64);
        raise_to(&self.prewarm_scans, v.prewarm_scans);
    }
}
