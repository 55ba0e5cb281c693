//! A compiled function, ready to instantiate: what the registry hands out
//! and the sandbox runs.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::InstancePre;

use crate::store::Host;

/// A compiled, linked function.
pub struct Function {
    /// The file name in the functions directory (`hello.wasm`).
    pub file_name: String,
    /// The same name, shared: the key admission queues this function by.
    pub id: Arc<str>,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The module linked against WASI p1, ready to instantiate.
    pub pre: InstancePre<Host>,
}
