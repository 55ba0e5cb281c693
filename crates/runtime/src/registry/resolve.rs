//! Name resolution: which file in the functions directory a URL name means,
//! and which version of it is there now.

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

/// Maps a URL name to a file in `dir`. A name with a known extension names
/// that file exactly; a bare name tries `.cwasm` (when `allow_precompiled`),
/// `.wasm`, `.wat`, in that order. Only regular files count.
pub(super) fn resolve(dir: &Path, allow_precompiled: bool, name: &str) -> Option<Resolved> {
    let candidates: Vec<String> = if has_function_extension(name) {
        vec![name.to_string()]
    } else {
        EXTENSIONS
            .iter()
            .filter(|e| allow_precompiled || **e != "cwasm")
            .map(|e| format!("{name}.{e}"))
            .collect()
    };
    candidates.into_iter().find_map(|file_name| {
        let path = dir.join(&file_name);
        let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
        let version = Version {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        };
        Some(Resolved {
            file_name,
            path,
            version,
        })
    })
}
