//! One file's slot in the registry's table: the version it is for, its
//! load (shared by every request for that version), and when to retry a
//! failed load.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OnceCell;

use super::config::Backoff;
use super::error::LoadError;
use super::resolve::Version;
use crate::function::Function;

/// The outcome of one load.
#[derive(Clone)]
pub(super) struct Loaded {
    pub result: Result<Arc<Function>, LoadError>,
    /// The version of the bytes actually read (fstat of the opened file);
    /// `None` when the file could not be read.
    pub read: Option<Version>,
    /// When it finished.
    pub at: Instant,
}

pub(super) struct Entry {
    /// The version a stat saw when this entry was made.
    pub version: Version,
    /// Failed loads of this version before this entry's.
    pub failures: u32,
    pub cell: OnceCell<Loaded>,
    /// The registry's use clock when this entry was last asked for.
    pub last_used: AtomicU64,
}

/// What a request that found `version` on disk does with the entry held.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Use it (or wait for its load).
    Use,
    /// Replace it with a new entry whose load has `failures` before it.
    Replace { failures: u32 },
}

impl Entry {
    pub(super) fn new(version: Version, failures: u32, now: u64) -> Self {
        Entry {
            version,
            failures,
            cell: OnceCell::new(),
            last_used: AtomicU64::new(now),
        }
    }

    /// See [`Verdict`]. A changed file is loaded at once; a load that read
    /// other bytes than `version` (the file changed between the stat and
    /// the read) is done again; a failed load is answered from memory until
    /// its backoff has passed, then retried, except one over its compile
    /// budget, which stands until the file changes.
    pub(super) fn verdict(&self, version: &Version, now: Instant, backoff: &Backoff) -> Verdict {
        if &self.version != version {
            return Verdict::Replace { failures: 0 };
        }
        let Some(loaded) = self.cell.get() else {
            return Verdict::Use;
        };
        if loaded.read.as_ref().is_some_and(|read| read != version) {
            return Verdict::Replace { failures: 0 };
        }
        match &loaded.result {
            Ok(_) => Verdict::Use,
            // Over its budget: trying the same bytes again would spend the
            // budget again (a heavy lane held for --compile-timeout a
            // minute, for good). Refused until the file changes.
            Err(LoadError::OverBudget { .. }) => Verdict::Use,
            Err(_) if now < loaded.at + backoff.after(self.failures + 1) => Verdict::Use,
            Err(_) => Verdict::Replace {
                failures: self.failures + 1,
            },
        }
    }
}
