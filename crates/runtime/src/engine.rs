//! The one shared wasmtime `Engine`: pooling allocator, copy-on-write memory
//! images, epoch interruption driven by a single ticker thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::component::outbound::OutboundPolicy;

/// Plain-data engine settings (no runtime handles).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest linear memory any instance may have, in MiB. This is the pool's
    /// per-slot size; the per-request cap (`Memory-Request`) is enforced below
    /// it by [`crate::limits::MemoryCap`].
    pub max_memory_mib: u64,
    /// Number of instances that may be alive at once (pool slots). Must be at
    /// least the number of worker threads.
    pub max_instances: u32,
    /// Bytes of each linear-memory slot kept resident (not `madvise`d away)
    /// when an instance is freed. Without this, two threads collapse to ~20k
    /// invocations/s from TLB-shootdown IPIs on these machines.
    pub memory_keep_resident: usize,
    /// Same for tables.
    pub table_keep_resident: usize,
    /// Same for the stacks guests run on (async host calls run each guest
    /// on its own stack, taken from the pool per invocation).
    pub stack_keep_resident: usize,
    /// Freed slots kept warm (still holding their module's memory image and
    /// resident pages) for a quick re-instantiation of the same module. Each
    /// can hold up to `memory_keep_resident` bytes, so with many functions
    /// this bounds idle memory; wasmtime's default is 100.
    pub warm_slots: u32,
    /// Period of the epoch ticker; deadlines are checked at this granularity.
    pub epoch_tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_memory_mib: 4096,
            max_instances: 512,
            memory_keep_resident: 2 << 20,
            table_keep_resident: 64 << 10,
            stack_keep_resident: 128 << 10,
            warm_slots: 16,
            epoch_tick: Duration::from_millis(5),
        }
    }
}

/// The engine plus the settings it was built from.
#[derive(Clone)]
pub struct WasmEngine {
    /// The shared wasmtime engine.
    pub engine: Engine,
    /// The settings it was built from.
    pub config: EngineConfig,
    /// What components may reach over HTTP (nothing by default).
    pub outbound: Arc<OutboundPolicy>,
}

impl WasmEngine {
    /// Builds the engine: a pool sized from `config`, copy-on-write memory
    /// images, epoch interruption.
    pub fn new(config: EngineConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let max_memory = usize::try_from(config.max_memory_mib << 20).unwrap_or(usize::MAX);
        // Every instance alive at once may be a component at the most a
        // component may hold (a file over these fails to load, with the
        // count): one tenant's component, however many core instances,
        // memories or tables it holds, cannot take the pool's slots from
        // the other invocations (503 `unavailable` for every one of them).
        let per = |n: u32| config.max_instances.saturating_mul(n);
        pool.max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .total_core_instances(per(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(per(MEMORIES_PER_COMPONENT))
            .total_tables(per(TABLES_PER_COMPONENT))
            .total_stacks(config.max_instances)
            .total_component_instances(config.max_instances)
            .total_gc_heaps(0)
            .max_memory_size(max_memory)
            .linear_memory_keep_resident(config.memory_keep_resident)
            .table_keep_resident(config.table_keep_resident)
            .async_stack_keep_resident(config.stack_keep_resident)
            .max_unused_warm_slots(config.warm_slots);

        let mut cfg = code_config(&config);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg)?;
        Ok(WasmEngine {
            engine,
            config,
            outbound: Arc::default(),
        })
    }

    /// The same engine, letting components reach what `policy` allows.
    pub fn with_outbound(mut self, policy: OutboundPolicy) -> Self {
        crate::component::outbound::ambient();
        self.outbound = Arc::new(policy);
        self
    }

    /// Number of epoch ticks covering `d`, rounded up, at least one.
    pub fn ticks_for(&self, d: Duration) -> u64 {
        let tick = self.config.epoch_tick.as_nanos().max(1);
        (d.as_nanos().div_ceil(tick)).max(1) as u64
    }
}

/// Most core module instances one component may hold: a Python component
/// (componentize-py) has 14 core modules, a JavaScript one 4, a Rust one 3.
/// A core instance in the pool is a count, not a reservation.
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 48;

/// Most linear memories one component may define: the bundled ones define
/// 1 (their adapters share it); two composed components fit. Each slot
/// reserves address space (the largest memory plus its guard), not memory:
/// at `--workers` 8192 and the default largest memory (4 GiB), two per
/// instance is as much as the 47-bit address space takes (four failed to
/// map the pool).
pub const MEMORIES_PER_COMPONENT: u32 = 2;

/// Most tables one component may define (the bundled ones: 2).
pub const TABLES_PER_COMPONENT: u32 = 8;

/// One thread that advances the engine's epoch every `epoch_tick`. Stops
/// (and is joined) when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Spawns the ticker thread (`wasmbox-epoch`).
    pub fn start(engine: &WasmEngine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine_handle = engine.engine.clone();
        let tick = engine.config.epoch_tick;
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("wasmbox-epoch".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine_handle.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The settings that decide the compiled code, shared by the serving engine
/// and [`compile_only_engine`], so code compiled by either loads into the
/// other.
fn code_config(config: &EngineConfig) -> Config {
    let mut cfg = Config::new();
    cfg.memory_init_cow(true)
        .epoch_interruption(true)
        // Every linear memory gets a reservation big enough for the pool's
        // largest slot, so growth never moves memory.
        .memory_reservation((config.max_memory_mib << 20).max(4 << 30));
    cfg
}

/// An engine that only compiles (no instance pool, so no address space
/// reserved up front): for the compile child, which runs under a small
/// `RLIMIT_AS`. Its output loads into `WasmEngine::new(config)`.
/// It compiles on one thread: a thread pool's stacks would eat into that
/// limit, and one heavy compile should take one core, not all of them.
pub fn compile_only_engine(config: &EngineConfig) -> wasmtime::Result<Engine> {
    let mut cfg = code_config(config);
    cfg.parallel_compilation(false);
    Engine::new(&cfg)
}
