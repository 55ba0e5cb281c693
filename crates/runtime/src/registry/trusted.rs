//! The one place that loads native code: `.cwasm` files (only with
//! `--allow-precompiled`, i.e. the operator trusts the directory), our own
//! AOT cache entries, and what our own compile child wrote. Each holds a
//! core module or a component; which one is read from the artefact itself.
#![allow(unsafe_code)]

use std::io::Read;

use wasmtime::component::Component;
use wasmtime::{Module, Precompiled};

use super::compiled::{precompiled_kind, Compiled};

/// Loads precompiled `bytes` of either kind.
pub fn deserialize(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
    // SAFETY: wasmtime requires the bytes to come from `Module::serialize`
    // or `Engine::precompile_module` (or their component counterparts) of a
    // trusted source; they are checked for a matching engine version and
    // configuration before use. The caller only passes files the operator
    // opted in to trust.
    unsafe {
        match precompiled_kind(bytes) {
            Some(Precompiled::Component) => {
                Component::deserialize(engine, bytes).map(Compiled::Component)
            }
            _ => Module::deserialize(engine, bytes).map(Compiled::Module),
        }
    }
}

/// What our own `compile-child` wrote to the pipe to its stdout.
pub fn deserialize_child_output(
    engine: &wasmtime::Engine,
    bytes: &[u8],
) -> wasmtime::Result<Compiled> {
    // SAFETY: as for `deserialize`: the bytes are `Engine::precompile_*`
    // output of our own executable (same wasmtime build), read from a pipe
    // only the parent and that child hold.
    deserialize(engine, bytes)
}

/// Maps one of our own cache entries instead of copying it: its code
/// pages are shared, file-backed and only resident once used, which
/// matters with a thousand functions loaded. `file` was opened without
/// following symlinks and is a regular file. `component` says which kind
/// the entry's source was (the cache key is the source's hash, so the
/// entry is of the same kind). Components have no mapping entry point in
/// wasmtime 50, so their entries are read into memory.
pub fn deserialize_cache_entry(
    engine: &wasmtime::Engine,
    mut file: std::fs::File,
    component: bool,
) -> wasmtime::Result<Compiled> {
    if component {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // SAFETY: as below; the bytes were read from the open entry.
        return unsafe { Component::deserialize(engine, &bytes) }.map(Compiled::Component);
    }
    // SAFETY: as for `deserialize`: the cache directory was checked at
    // startup to be owned by this user and not writable by anyone else, so
    // only this user's processes (us) wrote the entry. The file must not
    // change while mapped: entries are only ever written under a temporary
    // name and renamed into place, so a mapped entry's inode is never
    // rewritten (a replacement is a new inode).
    unsafe { Module::deserialize_open_file(engine, file) }.map(Compiled::Module)
}
