//! The one place that loads native code: `.cwasm` files (only with
//! `--allow-precompiled`, i.e. the operator trusts the directory) and our own
//! AOT cache entries.
#![allow(unsafe_code)]

pub fn deserialize(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: wasmtime requires the bytes to come from `Module::serialize`
    // or `Engine::precompile_module` of a trusted source; they are checked
    // for a matching engine version and configuration before use. The
    // caller only passes files the operator opted in to trust, or our own
    // cache entries.
    unsafe { wasmtime::Module::deserialize(engine, bytes) }
}

/// Maps one of our own cache entries instead of copying it: its code
/// pages are shared, file-backed and only resident once used, which
/// matters with a thousand functions loaded.
pub fn deserialize_cache_entry(
    engine: &wasmtime::Engine,
    path: &std::path::Path,
) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: as for `deserialize`, and the file must not change while
    // mapped: cache entries are only ever written under a temporary name
    // and renamed into place, so a mapped entry's inode is never
    // rewritten (a replacement is a new inode).
    unsafe { wasmtime::Module::deserialize_file(engine, path) }
}
