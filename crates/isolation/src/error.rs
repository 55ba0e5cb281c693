//! The one error type of this crate: a mode that cannot work on this host,
//! or a cgroup operation that failed (which file, what was written).

use std::io;
use std::path::{Path, PathBuf};

use crate::Mode;

/// Why a mode cannot be opened, or a slot made or applied.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// This mode cannot work on this host; `reason` says what is missing.
    #[error("--cpu-isolation {mode} is not usable here: {reason}")]
    Unusable {
        /// The mode that was tried.
        mode: Mode,
        /// What is missing, for the operator to fix.
        reason: String,
    },
    /// A cgroup (or /proc, /dev) operation failed: `action` on `path`, with
    /// `value` when something was written.
    #[error(
        "cannot {action}{} {}: {source}",
        .value.as_ref().map(|v| format!(" '{v}' to")).unwrap_or_default(),
        .path.display()
    )]
    Step {
        /// What was tried, as a verb: `read`, `write`, `create`, `remove`...
        action: &'static str,
        /// The file or directory it was tried on.
        path: PathBuf,
        /// What was written, for a write.
        value: Option<String>,
        /// The OS error.
        source: io::Error,
    },
}

impl IsolationError {
    /// `action` on `path` failed.
    pub fn step(action: &'static str, path: &Path, source: io::Error) -> Self {
        IsolationError::Step {
            action,
            path: path.to_path_buf(),
            value: None,
            source,
        }
    }

    /// Writing `value` to `path` failed.
    pub fn write(path: &Path, value: &str, source: io::Error) -> Self {
        IsolationError::Step {
            action: "write",
            path: path.to_path_buf(),
            value: Some(value.to_string()),
            source,
        }
    }

    /// `mode` cannot work on this host, for `reason`.
    pub fn unusable(mode: Mode, reason: impl Into<String>) -> Self {
        IsolationError::Unusable {
            mode,
            reason: reason.into(),
        }
    }

    /// The I/O error of a failed step.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            IsolationError::Step { source, .. } => Some(source),
            IsolationError::Unusable { .. } => None,
        }
    }

    /// A step failed because a file or directory was not there (ENOENT).
    pub fn is_not_found(&self) -> bool {
        self.io()
            .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
    }

    /// A step failed because the directory was there already (EEXIST).
    pub fn is_already_there(&self) -> bool {
        self.io()
            .is_some_and(|e| e.kind() == io::ErrorKind::AlreadyExists)
    }

    /// A step failed because the cgroup is in use (EBUSY).
    pub fn is_busy(&self) -> bool {
        self.io().is_some_and(|e| e.raw_os_error() == Some(EBUSY))
    }

    /// During `open`, a step refused for lack of rights means the mode is
    /// not usable here rather than that something broke: say so, with `hint`.
    pub fn at_open(self, mode: Mode, hint: &str) -> Self {
        let denied = self.io().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            )
        });
        if denied {
            IsolationError::unusable(mode, format!("{self}; {hint}"))
        } else {
            self
        }
    }
}

pub(crate) const EBUSY: i32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_the_value_and_the_reason() {
        let e = IsolationError::write(
            Path::new("/cg/slot-1/cpu.cfs_quota_us"),
            "25000",
            io::Error::from_raw_os_error(22),
        );
        assert!(
            e.to_string().starts_with(
                "cannot write '25000' to /cg/slot-1/cpu.cfs_quota_us: Invalid argument"
            ),
            "{e}"
        );
        let e = IsolationError::step(
            "create",
            Path::new("/cg/x"),
            io::Error::from_raw_os_error(13),
        );
        assert!(
            e.to_string()
                .starts_with("cannot create /cg/x: Permission denied"),
            "{e}"
        );
        let e = e.at_open(Mode::CgroupV1, "needs write access");
        assert!(matches!(
            e,
            IsolationError::Unusable {
                mode: Mode::CgroupV1,
                ..
            }
        ));
        assert!(
            e.to_string().starts_with(
                "--cpu-isolation cgroup-v1 is not usable here: cannot create /cg/x: Permission denied"
            ) && e.to_string().ends_with("; needs write access"),
            "{e}"
        );
        let busy = IsolationError::step(
            "remove",
            Path::new("/cg/x"),
            io::Error::from_raw_os_error(EBUSY),
        );
        assert!(busy.is_busy() && !busy.is_not_found());
        assert!(matches!(
            busy.at_open(Mode::CgroupV1, "h"),
            IsolationError::Step { .. }
        ));
    }
}
