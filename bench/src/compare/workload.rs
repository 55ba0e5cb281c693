//! What `compare` runs at each scale: the functions, their arguments and
//! memory, and the answer every system must give.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::load::Expect;
use crate::peers;

/// How long and how big: `--smoke` (CI: every table filled, seconds),
/// `--quick` (under 3 minutes), or the full run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    Smoke,
    Quick,
    Full,
}

impl Scale {
    /// How long each cell is measured.
    pub(crate) fn window(self) -> Duration {
        match self {
            Scale::Smoke => Duration::from_millis(150),
            Scale::Quick => Duration::from_millis(600),
            Scale::Full => Duration::from_secs(4),
        }
    }
    /// The concurrencies a process-per-request system is measured at:
    /// `--quick` leaves out the highest (a process each at once, for
    /// seconds per cell on a small machine).
    pub(crate) fn process_concurrency(self) -> &'static [usize] {
        match self {
            Scale::Quick => &CONCURRENCY[..CONCURRENCY.len() - 1],
            _ => &CONCURRENCY,
        }
    }
    /// The command line's words of this scale, each after a space.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scale::Smoke => " --smoke",
            Scale::Quick => " --quick",
            Scale::Full => "",
        }
    }
}

/// The concurrencies every system is measured at.
pub(crate) const CONCURRENCY: [usize; 4] = [1, 2, 16, 64];
/// The highest of them.
pub(crate) const MOST_CONCURRENT: usize = CONCURRENCY[CONCURRENCY.len() - 1];

/// The cpu_quota (millicores) of hello's requests, round robin: each
/// invocation changes its worker's quota.
pub(crate) const HELLO_QUOTAS: [u64; 3] = [250, 500, 750];

/// One function as every system runs it.
pub(crate) struct Workload {
    pub(crate) name: &'static str,
    /// argv[1..] at this scale.
    pub(crate) args: Vec<String>,
    /// Memory-Request (MB) for wasmbox and the re-enactment.
    pub(crate) memory_mb: u64,
    /// What a correct answer contains.
    pub(crate) expect: Expect,
}

/// The paper's five at their default sizes (full), or smaller.
pub(crate) fn workloads(scale: Scale) -> Vec<(&'static str, Vec<&'static str>, u64)> {
    match scale {
        Scale::Full => vec![
            ("jsoncompress", vec!["200000"], 300),
            ("scryptwork", vec!["1000"], 64),
            ("rsakeygen", vec!["2048"], 64),
            ("imageblur", vec!["1000", "10"], 128),
            ("genpdf", vec!["500"], 128),
        ],
        Scale::Quick => vec![
            ("jsoncompress", vec!["20000"], 128),
            ("scryptwork", vec!["100"], 64),
            ("rsakeygen", vec!["1024"], 64),
            ("imageblur", vec!["300", "10"], 64),
            ("genpdf", vec!["100"], 64),
        ],
        Scale::Smoke => vec![
            ("jsoncompress", vec!["1000"], 64),
            ("scryptwork", vec!["5"], 64),
            ("rsakeygen", vec!["1024"], 64),
            ("imageblur", vec!["64", "2"], 64),
            ("genpdf", vec!["10"], 64),
        ],
    }
}

/// The `digest=...` token a native run prints: what every system must print.
pub(crate) fn expected_digest(name: &str, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new(peers::native(name)?).args(args).output()?;
    if !out.status.success() {
        bail!(
            "native {name} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find(|t| t.starts_with("digest="))
        .map(str::to_owned)
        .with_context(|| format!("native {name} printed no digest: {text}"))
}

/// One workload's median execution time: (name, args, (Wasm ms, native ms)).
pub(crate) type ExecTime = (&'static str, Vec<String>, (f64, f64));
