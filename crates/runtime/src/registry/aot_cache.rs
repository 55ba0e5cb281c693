//! The on-disk AOT cache: compiled `.wasm`/`.wat` modules kept as files
//! named by the module bytes' hash and the engine's compatibility hash, so a
//! restart (or a second registry on the same directory) skips compilation.
//!
//! Entries are written under a temporary name and renamed into place, so a
//! reader never sees a partial file and a mapped entry's inode is never
//! rewritten. An unusable entry (damaged, or from another engine build) is
//! ignored and overwritten by the next compilation.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use super::trusted;

/// Content hash of the module bytes plus the engine's compatibility hash.
pub(super) fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}", h.finish())
}

/// Where the entry for `bytes` lives in `dir`.
pub(super) fn entry_path(dir: &Path, engine: &Engine, bytes: &[u8]) -> PathBuf {
    dir.join(format!("{}.cwasm", cache_key(engine, bytes)))
}

/// The cached module at `entry`, if there is a usable one.
pub(super) fn lookup(engine: &Engine, entry: &Path) -> Option<Module> {
    if !entry.exists() {
        return None;
    }
    match trusted::deserialize_cache_entry(engine, entry) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %entry.display(), error = %e, "ignoring unusable cache entry");
            None
        }
    }
}

/// Writes `module` to `entry` (best effort: a failure is logged, and the
/// module is simply compiled again next time).
pub(super) fn store(entry: &Path, module: &Module) {
    let data = match module.serialize() {
        Ok(data) => data,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialize module for the cache");
            return;
        }
    };
    // Write to a temporary name and rename, so readers never see a partial
    // file.
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, entry)) {
        tracing::warn!(path = %entry.display(), error = %e, "cannot write cache entry");
        let _ = std::fs::remove_file(&tmp);
    }
}
