//! Why a function could not be loaded (a leaf: every part of the registry
//! reports through it).

/// Why a function could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// No file for the name in the functions directory (or it was gone by
    /// the time it was read). Holds the name.
    #[error("no function named '{0}' in the functions directory")]
    NotFound(String),
    /// The file holds precompiled native code and the registry's
    /// `allow_precompiled` is off. Holds the file name.
    #[error("'{0}' is a precompiled module (native code); this server was started without --allow-precompiled")]
    PrecompiledNotAllowed(String),
    #[error("'{file}' was precompiled by a different wasmtime build or engine configuration; recompile it with `wasmbox compile` using this server's settings ({reason})")]
    /// Precompiled code this engine cannot load: made by another wasmtime
    /// build or engine configuration.
    Incompatible {
        /// The file name.
        file: String,
        /// wasmtime's error.
        reason: String,
    },
    #[error("'{file}' failed to compile: {reason}")]
    /// The file is not a valid module: it failed to compile, or is a
    /// `.cwasm` that does not hold precompiled code.
    Invalid {
        /// The file name.
        file: String,
        /// The compile error.
        reason: String,
    },
    #[error("'{file}' is not a WASI command module: {why}")]
    /// The module exports no `_start` function, or one that takes or
    /// returns values.
    NotACommand {
        /// The file name.
        file: String,
        /// What is wrong with its `_start`.
        why: String,
    },
    #[error("'{file}' cannot be linked: {reason}")]
    /// The module imports something WASI p1 does not provide.
    Link {
        /// The file name.
        file: String,
        /// The linker's error.
        reason: String,
    },
    #[error("'{file}' is over the compile budget: {reason}")]
    /// The module is larger than the registry compiles (module size,
    /// function count, largest function body), or its compile ran out of
    /// time or memory.
    OverBudget {
        /// The file name.
        file: String,
        /// Which limit, its value, and the flag that sets it.
        reason: String,
    },
    #[error("'{file}' could not be read: {reason}")]
    /// The file (or the functions directory) could not be read for a reason
    /// other than its absence: EIO, ESTALE, EACCES, a directory that did not
    /// answer in time, or a loader that panicked. Transient: a compiled
    /// version already held is kept, and the load is retried.
    Io {
        /// The file (or function) name.
        file: String,
        /// The I/O error, or the panic.
        reason: String,
    },
}
