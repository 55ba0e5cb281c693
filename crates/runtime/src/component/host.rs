//! The data every component invocation's `Store` carries, and the one
//! component linker: WASI 0.2 (cli, filesystem, random, clocks, sockets,
//! io; async host calls) plus wasi:http, so what the usual toolchains
//! import links. The environment and preopens are empty and every socket
//! address is denied (wasmtime-wasi's defaults, kept); outbound HTTP goes
//! through [`Outbound`].

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use wasmbox_isolation::Throttle;

use super::outbound::Outbound;
use crate::limits::MemoryCap;
use crate::store::Stop;

/// A component store's data.
pub struct ComponentHost {
    /// WASI state: args, stdio, (no) environment, (no) preopens.
    pub wasi: WasiCtx,
    /// The component's resources (streams, requests, ...).
    pub table: ResourceTable,
    /// wasi:http state.
    pub http: WasiHttpCtx,
    /// Outbound HTTP policy and counters for this invocation.
    pub outbound: Outbound,
    /// The memory cap over all of the instance's memories, and the growth
    /// it refused.
    pub limits: MemoryCap,
    /// The quota as held from inside the call, checked at every epoch tick
    /// (throttle mode: sleeps; cgroup modes: moves into the slot at the
    /// call's first tick).
    pub throttle: Option<Throttle>,
    /// Set when the host stopped the guest: why.
    pub stopped: Option<Stop>,
    /// Run at every epoch tick while the guest executes Wasm.
    pub on_tick: Option<Box<dyn Fn() + Send + Sync>>,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// A linker with WASI 0.2 and wasi:http (async host calls).
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<ComponentHost>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

impl ComponentHost {
    /// A store for one invocation of `function` (its name goes into the
    /// outbound log lines), WASI state from `wasi`.
    pub(crate) fn store(
        engine: &crate::engine::WasmEngine,
        function: &crate::function::Function,
        wasi: WasiCtx,
        inv: &crate::sandbox::Invocation,
        deadline: std::time::Instant,
    ) -> wasmtime::Store<ComponentHost> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(table_capacity(inv.memory_cap));
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELD_SIZE_LIMIT);
        let host = ComponentHost {
            wasi,
            table,
            http,
            outbound: Outbound::new(engine.outbound.clone(), function.id.clone(), deadline),
            limits: MemoryCap::new(inv.memory_cap),
            throttle: inv.throttle.clone(),
            stopped: None,
            on_tick: None,
        };
        wasmtime::Store::new(&engine.engine, host)
    }
}

/// Most bytes one wasi:http `fields` (a header map the guest builds) may
/// hold on the host: wasi:http's own default, set here because
/// [`HOST_BYTES_PER_ENTRY`] counts on it.
const FIELD_SIZE_LIMIT: usize = 128 << 10;

/// Most bytes a guest's write to an outgoing body (a request it sends or
/// the response it streams) may hand the host at once; one such write is
/// buffered while another is taken (wasi:http's default is 1 MiB).
pub(crate) const OUTGOING_BODY_CHUNK: usize = 64 << 10;

/// About the most host memory one resource of a component may hold: a
/// `fields` at [`FIELD_SIZE_LIMIT`], or an outgoing body with a buffered
/// and a taken write of [`OUTGOING_BODY_CHUNK`]. Streams, pollables and
/// the rest hold far less.
const HOST_BYTES_PER_ENTRY: usize = FIELD_SIZE_LIMIT;

/// Fewest resources any invocation may hold at once, however small its
/// Memory-Request.
const MIN_TABLE_ENTRIES: usize = 256;

/// How many resources an invocation capped at `memory_cap` bytes may hold
/// at once. A resource's memory is the host's, outside the guest's linear
/// memory and its cap, and wasmtime's table takes a million of them (a
/// guest keeping header maps of 128 KiB could hold 128 GiB): as many as
/// fit in the cap at the most one may hold keep a guest's host memory
/// within about its Memory-Request again (at least 256, 32 MiB).
pub(crate) fn table_capacity(memory_cap: usize) -> usize {
    (memory_cap / HOST_BYTES_PER_ENTRY).max(MIN_TABLE_ENTRIES)
}
