//! The data every invocation's `Store` carries, and the one linker that
//! provides WASI preview 1 to it.
//!
//! The WASI host is wasmtime-wasi's *async* one: a host call that waits (a
//! `poll_oneoff` sleep, a read) awaits instead of blocking the thread, so
//! the invocation's deadline and cancel signal can interrupt it (see
//! [`crate::sandbox`]).

use wasmtime::Linker;
use wasmtime_wasi::p1::WasiP1Ctx;

use wasmbox_isolation::Throttle;

use crate::limits::MemoryCap;

/// The store's data: WASI state, the memory cap, the throttle budget, and
/// why the host stopped the guest (if it did).
pub struct Host {
    /// WASI p1 state: args, stdio.
    pub wasi: WasiP1Ctx,
    /// The memory cap, and the growth it refused.
    pub limits: MemoryCap,
    /// The quota as held from inside the call, checked at every epoch tick
    /// (throttle mode: sleeps; cgroup modes: moves into the slot at the
    /// call's first tick).
    pub throttle: Option<Throttle>,
    /// Set when the host stopped the guest: why.
    pub stopped: Option<Stop>,
}

/// Why the host stopped a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its wall-clock deadline passed.
    Timeout,
    /// It used up its CPU-time budget.
    CpuBudget,
    /// Its caller went away.
    Cancelled,
    /// The server is shutting down and stopped what still ran.
    Shutdown,
}

/// The error an epoch callback raises to stop the guest.
#[derive(Debug, thiserror::Error)]
#[error("invocation stopped by the host: {0:?}")]
pub struct Stopped(pub Stop);

/// A linker with WASI preview 1 (async host calls) for [`Host`] stores.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)?;
    Ok(linker)
}
