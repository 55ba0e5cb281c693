//! What a compile produces: a core module or a component. Which one a file
//! holds is decided by its header (the binary's layer field, or the
//! precompiled artefact's kind), never by its name.

use wasmtime::component::Component;
use wasmtime::{Engine, Module, Precompiled};

/// Compiled code of either kind.
pub(crate) enum Compiled {
    /// A core WebAssembly module (WASI preview 1).
    Module(Module),
    /// A WebAssembly component (WASI 0.2).
    Component(Component),
}

impl Compiled {
    /// Compiles binary `wasm` (a module or a component, by its header).
    pub(crate) fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        if is_component(wasm) {
            Component::new(engine, wasm).map(Compiled::Component)
        } else {
            Module::new(engine, wasm).map(Compiled::Module)
        }
    }

    /// The artefact the AOT cache stores (and `wasmbox compile` writes).
    pub(crate) fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
    }
}

/// Whether binary `wasm` is a component (its preamble's layer field).
pub(crate) fn is_component(wasm: &[u8]) -> bool {
    wasmparser::Parser::is_component(wasm)
}

/// Which kind a precompiled artefact holds, if it is one.
pub(crate) fn precompiled_kind(bytes: &[u8]) -> Option<Precompiled> {
    Engine::detect_precompiled(bytes)
}

/// Precompiles `bytes` (binary or text; a module or a component, by its
/// header) for `engine` (`wasmbox compile`).
pub fn precompile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let wasm = wat::parse_bytes(bytes)?;
    if is_component(&wasm) {
        engine.precompile_component(&wasm)
    } else {
        engine.precompile_module(&wasm)
    }
}
