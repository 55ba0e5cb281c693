//! The deploy API's file-system work (blocking; run it off the async
//! workers): content hashes, atomic publication (a temporary file in the
//! same directory, fsync, rename, fsync of the directory), deletion, and
//! the directory listing with each file's hash.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The extensions the deploy API knows: function files, then the manifest.
pub const MODULE_EXTENSIONS: [&str; 3] = ["wasm", "wat", "cwasm"];

/// sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of the file at `path`, or `None` if there is none.
pub fn file_sha256(path: &Path) -> io::Result<Option<String>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(hex(&h.finalize())))
}

/// An upload on its way into the functions directory: a temporary file
/// there (its name starts with `.`, so it is never served or listed),
/// removed when dropped unless it was published. A deploy whose client
/// goes away midway (while its module compiles, say), or whose publish
/// fails, leaves nothing behind; dropped on an async worker, the removal
/// is one unlink.
#[derive(Debug)]
pub struct Upload {
    path: PathBuf,
    published: bool,
}

impl Upload {
    /// Writes `data` to a new temporary file in `dir`, synced to disk.
    pub fn write(dir: &Path, ext: &str, data: &[u8]) -> io::Result<Upload> {
        let path = dir.join(format!(
            ".deploy-{:016x}{:016x}.{ext}",
            fastrand::u64(..),
            fastrand::u64(..)
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)?;
        // From here a failure (or a drop) removes the file.
        let upload = Upload {
            path,
            published: false,
        };
        f.write_all(data)?;
        f.sync_all()?;
        Ok(upload)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames it to `dir/file` (atomic: a reader sees the old file or the
    /// new one, never part of either) and syncs the directory.
    pub fn publish(mut self, dir: &Path, file: &str) -> io::Result<()> {
        std::fs::rename(&self.path, dir.join(file))?;
        self.published = true;
        sync_dir(dir)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes `dir/file`; `Ok(false)` if it was not there.
pub fn remove(dir: &Path, file: &str) -> io::Result<bool> {
    match std::fs::remove_file(dir.join(file)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsync of a directory, so a rename or unlink in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `e` means the directory cannot be written (read-only file
/// system, permissions).
pub fn is_read_only(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let code = e.raw_os_error();
    e.kind() == io::ErrorKind::PermissionDenied
        || [Errno::ROFS, Errno::PERM, Errno::ACCESS]
            .iter()
            .any(|x| code == Some(x.raw_os_error()))
}

/// One function file in the directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileInfo {
    /// The function's name (the file name without its extension).
    pub name: String,
    /// The file name.
    pub file: String,
    /// `wasm`, `wat` or `cwasm`.
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    /// Last modification, Unix seconds.
    pub modified_unix: f64,
}

/// The function files in `dir` (names accepted by `valid`), sorted, each
/// hashed.
pub fn list(dir: &Path, valid: impl Fn(&str) -> bool) -> io::Result<Vec<FileInfo>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some((name, kind)) = file.rsplit_once('.') else {
            continue;
        };
        if !MODULE_EXTENSIONS.contains(&kind) || !valid(&file) || !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(info) = info(dir, name, kind)? {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The file `dir/name.kind`, if there is one.
pub fn info(dir: &Path, name: &str, kind: &str) -> io::Result<Option<FileInfo>> {
    let file = format!("{name}.{kind}");
    let path = dir.join(&file);
    let meta = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(sha256) = file_sha256(&path)? else {
        return Ok(None);
    };
    Ok(Some(FileInfo {
        name: name.to_string(),
        file,
        kind: kind.to_string(),
        size: meta.len(),
        sha256,
        modified_unix: meta.mtime() as f64 + f64::from(meta.mtime_nsec() as u32) / 1e9,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_atomically_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.wasm"), b"old").unwrap();
        let t = Upload::write(dir.path(), "wasm", b"new").unwrap();
        let name = t.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with('.'));
        t.publish(dir.path(), "f.wasm").unwrap();
        assert_eq!(std::fs::read(dir.path().join("f.wasm")).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let l = list(dir.path(), |_| true).unwrap();
        assert_eq!(l[0].sha256, sha256_hex(b"new"));
        assert_eq!((l[0].name.as_str(), l[0].kind.as_str()), ("f", "wasm"));
        assert!(remove(dir.path(), "f.wasm").unwrap());
        assert!(!remove(dir.path(), "f.wasm").unwrap());
    }

    #[test]
    fn an_upload_dropped_before_it_is_published_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = Upload::write(dir.path(), "wasm", b"new").unwrap();
        assert!(t.path().exists());
        drop(t);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A publish that fails (its target is a directory) leaves no
        // temporary file either.
        std::fs::create_dir(dir.path().join("f.wasm")).unwrap();
        std::fs::write(dir.path().join("f.wasm/x"), b"").unwrap();
        let t = Upload::write(dir.path(), "wasm", b"new").unwrap();
        t.publish(dir.path(), "f.wasm").unwrap_err();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.wasm"]);
    }
}
