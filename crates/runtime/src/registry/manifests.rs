//! The manifests of the functions directory: `NAME.toml` read, validated
//! and kept per function, looked at again like the function files (a
//! `stat` at most once per `revalidate_after`, re-read when size, mtime,
//! inode or device change), on the registry's bounded file-system pool.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fs_pool::{FsPool, FS_DEADLINE};
use super::manifest::{Manifest, ServerBounds, MAX_MANIFEST_BYTES};
use super::resolve::{is_absent, Version};

/// Why a function's manifest cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManifestError {
    /// The file is there but is not a valid manifest.
    #[error("the manifest {file} is invalid: {reason}")]
    Invalid {
        /// Its file name (`NAME.toml`).
        file: String,
        /// What is wrong, naming the key or line.
        reason: String,
    },
    /// The file could not be looked at or read (EIO, EACCES, a hung mount).
    #[error("the manifest {file} cannot be read: {reason}")]
    Io {
        /// Its file name.
        file: String,
        /// The I/O error.
        reason: String,
    },
}

/// What one look at a manifest found.
type Found = Result<Option<Arc<Manifest>>, ManifestError>;

struct Cached {
    checked: Instant,
    version: Option<Version>,
    found: Found,
}

/// Manifests by function stem (`echo` for `echo.wasm`).
pub struct Manifests {
    dir: PathBuf,
    bounds: ServerBounds,
    revalidate_after: Duration,
    fs: FsPool,
    cache: Mutex<HashMap<String, Cached>>,
}

/// Most stems remembered (then the memory is cleared and rebuilt).
const MAX_CACHED: usize = 4096;

impl Manifests {
    /// Manifests in `dir`, validated against `bounds`.
    pub fn new(dir: PathBuf, bounds: ServerBounds, revalidate_after: Duration) -> Self {
        Manifests {
            dir,
            bounds,
            revalidate_after,
            fs: FsPool::new(4, FS_DEADLINE),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The server's limits manifests are checked against.
    pub fn bounds(&self) -> &ServerBounds {
        &self.bounds
    }

    /// Makes the next request for `stem` look at its manifest again (the
    /// deploy API calls it after a change).
    pub fn forget(&self, stem: &str) {
        self.cache.lock().unwrap().remove(stem);
    }

    /// The file name of `stem`'s manifest.
    pub fn file_name(stem: &str) -> String {
        format!("{stem}.toml")
    }

    /// The manifest of the function whose file is `file_name` (`echo.wasm`
    /// -> `echo.toml`): `Ok(None)` when it has none.
    pub async fn get(&self, file_name: &str) -> Found {
        let stem = stem_of(file_name).to_string();
        if let Some(c) = self.cache.lock().unwrap().get(&stem) {
            if c.checked.elapsed() < self.revalidate_after {
                return c.found.clone();
            }
        }
        let path = self.dir.join(Self::file_name(&stem));
        let known = self
            .cache
            .lock()
            .unwrap()
            .get(&stem)
            .map(|c| (c.version.clone(), c.found.clone()));
        let bounds = self.bounds;
        let file = Self::file_name(&stem);
        let f2 = file.clone();
        let looked = self
            .fs
            .run(move || look(&path, &f2, &bounds, known))
            .await
            .unwrap_or_else(|reason| (None, Err(ManifestError::Io { file, reason })));
        let (version, found) = looked;
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            stem,
            Cached {
                checked: Instant::now(),
                version,
                found: found.clone(),
            },
        );
        found
    }
}

/// `echo` for `echo.wasm`, `echo.wat`, `echo.cwasm` (and `echo`).
pub fn stem_of(file_name: &str) -> &str {
    Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| super::resolve::EXTENSIONS.contains(e))
        .map_or(file_name, |e| &file_name[..file_name.len() - e.len() - 1])
}

/// Blocking: stats `path`, and reads and validates it unless `known` has
/// the same version.
fn look(
    path: &Path,
    file: &str,
    bounds: &ServerBounds,
    known: Option<(Option<Version>, Found)>,
) -> (Option<Version>, Found) {
    let io = |e: std::io::Error| ManifestError::Io {
        file: file.to_string(),
        reason: e.to_string(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if is_absent(&e) => return (None, Ok(None)),
        Err(e) => return (None, Err(io(e))),
    };
    let version = Version::of(&meta);
    if let Some((Some(v), found)) = known {
        if v == version {
            return (Some(v), found);
        }
    }
    (Some(version), read_manifest(path, file, bounds))
}

/// Reads and validates one manifest file (blocking).
pub fn read_manifest(path: &Path, file: &str, bounds: &ServerBounds) -> Found {
    let invalid = |reason: String| ManifestError::Invalid {
        file: file.to_string(),
        reason,
    };
    let io = |e: std::io::Error| ManifestError::Io {
        file: file.to_string(),
        reason: e.to_string(),
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(invalid("it is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    f.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(invalid(format!(
            "it is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("it is not UTF-8".into()))?;
    Manifest::parse(&text, bounds)
        .map(|m| Some(Arc::new(m)))
        .map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> ServerBounds {
        ServerBounds {
            max_memory_mb: 4096,
            max_cpu_quota: 1000,
            timeout: Duration::from_secs(60),
            max_output_bytes: 1 << 24,
            max_stderr_bytes: 1 << 16,
        }
    }

    #[test]
    fn stems() {
        assert_eq!(stem_of("echo.wasm"), "echo");
        assert_eq!(stem_of("a.b.wat"), "a.b");
        assert_eq!(stem_of("x.cwasm"), "x");
        assert_eq!(stem_of("plain"), "plain");
        assert_eq!(stem_of("odd.txt"), "odd.txt");
    }

    #[tokio::test]
    async fn a_changed_manifest_is_read_again_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifests::new(dir.path().to_path_buf(), bounds(), Duration::ZERO);
        assert!(m.get("f.wasm").await.unwrap().is_none());
        std::fs::write(dir.path().join("f.toml"), "args = [\"a\"]\n").unwrap();
        assert_eq!(m.get("f.wasm").await.unwrap().unwrap().args, ["a"]);
        std::fs::write(dir.path().join("f.toml"), "args = [\"bb\"]\n").unwrap();
        assert_eq!(m.get("f.wasm").await.unwrap().unwrap().args, ["bb"]);
        std::fs::write(dir.path().join("f.toml"), "nope = 1\n").unwrap();
        let e = m.get("f.wasm").await.unwrap_err().to_string();
        assert!(e.contains("f.toml") && e.contains("nope"), "{e}");
        std::fs::remove_file(dir.path().join("f.toml")).unwrap();
        assert!(m.get("f.wasm").await.unwrap().is_none());
    }
}
