//! A compiled function, ready to instantiate: what the registry hands out
//! and the sandbox runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::InstancePre;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::component::host::ComponentHost;
use crate::component::World;
use crate::store::Host;

/// A compiled, linked function.
pub struct Function {
    /// The file name in the functions directory (`hello.wasm`).
    pub file_name: String,
    /// The same name, shared: the key admission queues this function by.
    pub id: Arc<str>,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The linked code, ready to instantiate.
    pub code: Code,
    /// Nanoseconds its load (read, compile or cache hit, link) took, until
    /// taken by [`Function::take_load_time`].
    pub load_nanos: AtomicU64,
}

/// Linked code of each kind wasmbox runs.
pub enum Code {
    /// A core module linked against WASI p1 (a command: `_start`).
    Module(InstancePre<Host>),
    /// A component exporting `wasi:cli/run`.
    Command(CommandPre<ComponentHost>),
    /// A component exporting `wasi:http/incoming-handler`.
    Http(ProxyPre<ComponentHost>),
}

impl Function {
    /// Records how long loading it took.
    pub fn set_load_time(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.load_nanos.store(nanos.max(1), Ordering::Relaxed);
    }

    /// Its load time, once: later calls get `None` (so usage accounting
    /// counts each load once, however many requests share it).
    pub fn take_load_time(&self) -> Option<Duration> {
        // Every request asks; all but the first after a load find none,
        // and reading writes nothing to a line every thread that serves
        // this function reads (a swap would).
        if self.load_nanos.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match self.load_nanos.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// `module` or `component`.
    pub fn kind(&self) -> &'static str {
        match self.code {
            Code::Module(_) => "module",
            Code::Command(_) | Code::Http(_) => "component",
        }
    }

    /// The world a component serves (`None` for a module).
    pub fn world(&self) -> Option<World> {
        match self.code {
            Code::Module(_) => None,
            Code::Command(_) => Some(World::Command),
            Code::Http(_) => Some(World::HttpHandler),
        }
    }

    /// Whether requests reach it as HTTP requests (a wasi:http handler).
    pub fn is_http_handler(&self) -> bool {
        matches!(self.code, Code::Http(_))
    }
}
