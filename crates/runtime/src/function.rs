//! A compiled function, ready to instantiate: what the registry hands out
//! and the sandbox runs.

use std::path::PathBuf;
use std::sync::Arc;

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
