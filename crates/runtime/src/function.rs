//! A compiled function, ready to instantiate: what the registry hands out
//! and the sandbox runs.

use std::path::PathBuf;

use wasmtime::InstancePre;

use crate::store::Host;

/// A compiled, linked function.
pub struct Function {
    /// The file name in the functions directory (`hello.wasm`).
    pub file_name: String,
    pub path: PathBuf,
    pub pre: InstancePre<Host>,
}
