//! The one place that loads native code: `.cwasm` files (only with
//! `--allow-precompiled`, i.e. the operator trusts the directory), our own
//! AOT cache entries, and what our own compile child wrote.
#![allow(unsafe_code)]

pub fn deserialize(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: wasmtime requires the bytes to come from `Module::serialize`
    // or `Engine::precompile_module` of a trusted source; they are checked
    // for a matching engine version and configuration before use. The
    // caller only passes files the operator opted in to trust.
    unsafe { wasmtime::Module::deserialize(engine, bytes) }
}

/// What our own `compile-child` wrote to the pipe to its stdout.
pub fn deserialize_child_output(
    engine: &wasmtime::Engine,
    bytes: &[u8],
) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: as for `deserialize`: the bytes are `Engine::precompile_module`
    // output of our own executable (same wasmtime build), read from a pipe
    // only the parent and that child hold.
    unsafe { wasmtime::Module::deserialize(engine, bytes) }
}

/// Maps one of our own cache entries instead of copying it: its code
/// pages are shared, file-backed and only resident once used, which
/// matters with a thousand functions loaded. `file` was opened without
/// following symlinks and is a regular file.
pub fn deserialize_cache_entry(
    engine: &wasmtime::Engine,
    file: std::fs::File,
) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: as for `deserialize`: the cache directory was checked at
    // startup to be owned by this user and not writable by anyone else, so
    // only this user's processes (us) wrote the entry. The file must not
    // change while mapped: entries are only ever written under a temporary
    // name and renamed into place, so a mapped entry's inode is never
    // rewritten (a replacement is a new inode).
    unsafe { wasmtime::Module::deserialize_open_file(engine, file) }
}
