//! Name resolution: which file in the functions directory a URL name means,
//! and which version of it is there now. Blocking: run it on the file
//! system pool.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Identity of one version of a file: if any of these change, it is a new
/// version and is compiled again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Version {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    device: u64,
}

impl Version {
    /// The file's size when it was looked at.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The version `meta` (of a path, or of an open file) describes.
    pub(super) fn of(meta: &Metadata) -> Self {
        Version {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

/// A file found for a name.
#[derive(Debug)]
pub(super) struct Resolved {
    /// The file name in the directory (`hello.wasm`): the registry's key.
    pub file_name: String,
    pub path: PathBuf,
    pub version: Version,
}

/// File extensions that hold functions, in lookup order for a bare name.
pub const EXTENSIONS: [&str; 3] = ["cwasm", "wasm", "wat"];

/// Whether `name` ends in one of [`EXTENSIONS`].
pub(super) fn has_function_extension(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e == *x))
}

/// Whether `e` means "there is no such file" (as opposed to "it could not
/// be looked at": EIO, ESTALE, EACCES, ELOOP, ...).
pub(super) fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory
}

/// Maps a URL name to a file in `dir`. A name with a known extension names
/// that file exactly; a bare name tries `.cwasm` (when `allow_precompiled`),
/// `.wasm`, `.wat`, in that order. Only regular files count. `Ok(None)`:
/// no such file; `Err`: a candidate could not be looked at, so whether the
/// function exists is unknown (the caller must not forget what it holds).
pub(super) fn resolve(
    dir: &Path,
    allow_precompiled: bool,
    name: &str,
) -> io::Result<Option<Resolved>> {
    let candidates: Vec<String> = if has_function_extension(name) {
        vec![name.to_string()]
    } else {
        EXTENSIONS
            .iter()
            .filter(|e| allow_precompiled || **e != "cwasm")
            .map(|e| format!("{name}.{e}"))
            .collect()
    };
    for file_name in candidates {
        let path = dir.join(&file_name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {
                return Ok(Some(Resolved {
                    file_name,
                    version: Version::of(&meta),
                    path,
                }))
            }
            Ok(_) => continue,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Names of all invocable files in `dir` (sorted).
pub(super) fn list(dir: &Path, valid: impl Fn(&str) -> bool) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if has_function_extension(&name) && valid(&name) && entry.file_type()?.is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
