//! The on-disk AOT cache: compiled `.wasm`/`.wat` modules kept as files
//! named by the module bytes' hash and the engine's compatibility hash, so a
//! restart (or a second registry on the same directory) skips compilation.
//!
//! Loading an entry runs native code from it, so the directory is trusted
//! only when it can be: at startup it must be a directory (not a symlink)
//! owned by this user and not writable by group or others. Entries are
//! opened with `O_NOFOLLOW` and must be regular files; they are written
//! under a random temporary name created exclusively and renamed into place,
//! so a reader never sees a partial file, a mapped entry's inode is never
//! rewritten, and two instances sharing the directory never collide. Using
//! an entry touches its mtime; past `max_bytes` the entries used least
//! recently are deleted. An entry that fails to load (damaged, or from
//! another engine build) is deleted and rebuilt.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;

use super::compiled::Compiled;

use super::private_tmp;
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

/// A cache directory that passed the trust checks.
#[derive(Debug)]
pub(super) struct AotCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl AotCache {
    /// Creates `dir` (mode 0700) if missing, and refuses it unless it is a
    /// real directory owned by this user and not writable by group or
    /// others. The error says what is wrong and how to fix it.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> Result<AotCache, String> {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            return Err(format!("cannot create cache dir {}: {e}", dir.display()));
        }
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot stat cache dir {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "cache dir {} is not a directory (a symlink or a file); point --cache-dir at a real directory",
                dir.display()
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(format!(
                "cache dir {} is owned by uid {}, not by this user (uid {me}); its entries are loaded as native code, so it must be ours: chown it or pick another --cache-dir",
                dir.display(),
                meta.uid()
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "cache dir {} is writable by group or others (mode {mode:03o}); its entries are loaded as native code: `chmod go-w` it or pick another --cache-dir",
                dir.display()
            ));
        }
        Ok(AotCache {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// Where the entry for `bytes` lives.
    pub(super) fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        entry_path(&self.dir, engine, bytes)
    }

    /// The cached code at `entry`, if there is a usable one (blocking);
    /// `component` says which kind its source is.
    /// A symlink or other non-regular file there is ignored; an entry that
    /// fails to load is deleted.
    pub(super) fn lookup(
        &self,
        engine: &Engine,
        entry: &Path,
        component: bool,
    ) -> Option<Compiled> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(entry)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %entry.display(), error = %e, "ignoring unusable cache entry (a symlink or unreadable)");
                return None;
            }
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            tracing::warn!(path = %entry.display(), "ignoring a cache entry that is not a regular file");
            return None;
        }
        // Touch on use: eviction goes by mtime, least recent first.
        let _ = file.set_modified(SystemTime::now());
        match trusted::deserialize_cache_entry(engine, file, component) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %entry.display(), error = %e, "deleting unusable cache entry");
                let _ = std::fs::remove_file(entry);
                None
            }
        }
    }

    /// Writes `module` to `entry` (blocking; best effort: a failure is
    /// logged, and the module is simply compiled again next time), then
    /// deletes the least recently used entries beyond the size bound.
    pub(super) fn store(&self, entry: &Path, module: &Compiled) {
        let data = match module.serialize() {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize module for the cache");
                return;
            }
        };
        let tmp = self
            .dir
            .join(format!(".tmp-{}", private_tmp::unique_suffix()));
        if let Err(e) =
            private_tmp::write_new(&tmp, &data).and_then(|_| std::fs::rename(&tmp, entry))
        {
            tracing::warn!(path = %entry.display(), error = %e, "cannot write cache entry");
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.trim(entry);
    }

    /// Deletes entries, least recently used first, until the total is within
    /// `max_bytes`; never `keep` (the one just written).
    fn trim(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .filter_map(|d| {
                let d = d.ok()?;
                let meta = d.metadata().ok()?; // does not follow symlinks
                let is_entry = d.path().extension().is_some_and(|e| e == "cwasm");
                (meta.is_file() && is_entry).then(|| {
                    let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    (used, meta.len(), d.path())
                })
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                tracing::debug!(path = %path.display(), "cache entry evicted (least recently used)");
            }
        }
    }
}
