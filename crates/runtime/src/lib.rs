//! `wasmbox-runtime`: a thin facade over wasmtime for running many tenants'
//! WASI p1 command modules in one process.
//!
//! One request, top to bottom:
//! 1. [`names::FunctionName::parse`] validates the name from the URL.
//! 2. [`registry::Registry::get`] finds the file in the functions directory and
//!    returns its compiled, cached [`registry::Function`] (compiled once,
//!    single-flight; recompiled when the file changes).
//! 3. [`executor::Executor::submit`] hands the job to a dedicated OS worker
//!    thread (never a tokio worker: the sync WASI host blocks); the job calls
//!    [`executor::Worker::isolate`] to hold that thread to the request's
//!    `cpu_quota` (its `wasmbox-isolation` slot).
//! 4. On that thread [`sandbox::invoke`] builds a `Store` with WASI p1, the
//!    memory cap ([`limits`]), bounded stdout/stderr ([`capture`]) and the
//!    wall-clock deadline and throttle budget (epoch callback), and calls
//!    `_start`.
//!
//! `unsafe` is denied everywhere but `registry::trusted`, the one place that
//! loads precompiled native code.
//! 5. The [`sandbox::Outcome`] carries stdout, the exit status and phase timings.
#![deny(unsafe_code)]

pub mod cancel;
pub mod capture;
pub mod engine;
pub mod executor;
pub mod function;
pub mod limits;
pub mod names;
pub mod registry;
pub mod sandbox;
pub mod store;

pub use cancel::CancelToken;
pub use engine::{EngineConfig, EpochTicker, WasmEngine};
pub use executor::{Executor, ExecutorConfig};
pub use function::Function;
pub use names::FunctionName;
pub use registry::{LoadError, Registry, RegistryConfig};
pub use sandbox::{Failure, Invocation, Outcome};
