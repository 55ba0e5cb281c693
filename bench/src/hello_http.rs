//! hello over HTTP against its ceilings, for issue 13's goals: wasmbox with
//! CPU isolation on (cgroup-v1, else throttle: the mode is in every label)
//! and `--cpu-isolation none`, against a bare hyper server answering the
//! same bytes (bare_hyper.rs), at c=1 and c=16; the same with admission not
//! binding (at a whole core, and at a quota that holds); the server on one
//! core (`taskset`) against two; and back-to-back calls on one connection
//! at `cpu_quota: 100` against 1000.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::bare_hyper::{BareHyper, HELLO};
use crate::load::{self, Expect, HttpTarget, LoadResult};
use crate::repo_root;
use crate::server_ctl::{self, Served};

/// Admission capacity (millicores) that never binds for hello.
pub(crate) const NOT_BINDING: &str = "256000";

/// A quota below a core, for the rows where calls are held to one (a
/// cgroup mode's worker moves into its slot cgroup for such a call once it
/// reaches its first epoch tick, crates/isolation/src/cgroup.rs).
pub(crate) const HELD_QUOTA: u64 = 500;

/// One measured hello cell.
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) concurrency: usize,
    pub(crate) cpu_quota: u64,
    pub(crate) result: LoadResult,
}

/// Everything this part measured; rows in the order measured.
pub(crate) struct HelloHttp {
    pub(crate) rows: Vec<Row>,
    /// The isolation mode wasmbox ran with where it is "on".
    pub(crate) mode: &'static str,
}

/// Labels of the rows (the goals look rows up by them).
pub(crate) const ISO_ON: &str = "wasmbox, isolation on, defaults";
pub(crate) const ISO_NONE: &str = "wasmbox, --cpu-isolation none";
pub(crate) const BARE: &str = "bare hyper (no Wasm)";
pub(crate) const ON_NOT_BINDING: &str = "wasmbox, isolation on, --capacity-cpu 256000";
pub(crate) const NONE_NOT_BINDING: &str = "wasmbox, --cpu-isolation none, --capacity-cpu 256000";
pub(crate) const ONE_CORE: &str =
    "wasmbox, isolation on, defaults, server on 1 core (taskset -c 0)";
pub(crate) const B2B: &str = "wasmbox, isolation on, defaults, back to back on one connection";

impl HelloHttp {
    pub(crate) fn get(&self, label: &str, conc: usize, quota: u64) -> Option<&LoadResult> {
        self.rows
            .iter()
            .find(|r| r.label == label && r.concurrency == conc && r.cpu_quota == quota)
            .map(|r| &r.result)
    }
}

pub(crate) fn target(port: u16, path: &str, quota: u64) -> HttpTarget {
    HttpTarget {
        port,
        path: path.into(),
        resources: Arc::new(move |_| (quota, 64)),
        expect: Expect::Len(HELLO.len()),
    }
}

/// Pins every thread of `pid` (and those it starts later) to CPU 0.
fn pin_to_cpu0(pid: u32) -> anyhow::Result<()> {
    let st = Command::new("taskset")
        .args(["-a", "-c", "-p", "0", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run taskset")?;
    if !st.success() {
        bail!("taskset -a -c -p 0 {pid}: {st}");
    }
    Ok(())
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, window: Duration) -> anyhow::Result<HelloHttp> {
    let functions = repo_root().join("functions");
    let mut rows = Vec::new();
    let mut measure = |label: &str, port: u16, path: &str, conc: usize, quota: u64| {
        let t = target(port, path, quota);
        // Warm up (compile, connections, worker threads).
        rt.block_on(load::http(&t, conc, window / 4))?;
        let result = rt.block_on(load::http(&t, conc, window))?.all_ok(label)?;
        rows.push(Row {
            label: label.to_string(),
            concurrency: conc,
            cpu_quota: quota,
            result,
        });
        anyhow::Ok(())
    };
    let mode;
    {
        let s: Served = server_ctl::start(&functions, &[], "/hello")?;
        mode = s.mode;
        for conc in [1, 16] {
            measure(ISO_ON, s.port, "/hello", conc, 1000)?;
        }
        measure(B2B, s.port, "/hello", 1, 100)?;
        measure(B2B, s.port, "/hello", 1, 1000)?;
    }
    {
        let s = server_ctl::start(&functions, &[], "/hello")?;
        pin_to_cpu0(s.pid())?;
        for conc in [1, 16] {
            measure(ONE_CORE, s.port, "/hello", conc, 1000)?;
        }
    }
    {
        let s = server_ctl::start(&functions, &["--capacity-cpu", NOT_BINDING], "/hello")?;
        measure(ON_NOT_BINDING, s.port, "/hello", 16, 1000)?;
        measure(ON_NOT_BINDING, s.port, "/hello", 16, HELD_QUOTA)?;
    }
    for (label, extra) in [
        (ISO_NONE, &["--cpu-isolation", "none"][..]),
        (
            NONE_NOT_BINDING,
            &["--cpu-isolation", "none", "--capacity-cpu", NOT_BINDING][..],
        ),
    ] {
        let s = crate::ServerProc::start_with(extra)?;
        let concs: &[usize] = if label == ISO_NONE { &[1, 16] } else { &[16] };
        for &conc in concs {
            measure(label, s.port, "/hello", conc, 1000)?;
        }
        if label == NONE_NOT_BINDING {
            measure(label, s.port, "/hello", 16, HELD_QUOTA)?;
        }
    }
    {
        let b = BareHyper::start()?;
        for conc in [1, 16] {
            measure(BARE, b.port, "/", conc, 1000)?;
        }
    }
    Ok(HelloHttp { rows, mode })
}
