//! What a guest's build settings cost or save per call, in process: each
//! setting against the same guest built without it (functions/build.sh
//! makes the variants in functions/variants/), the two loaded on one
//! engine configuration and measured in alternating rounds. The README's
//! "Writing fast functions" quotes this report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use wasmbox_runtime::sandbox::{self, CancelToken, Stdio as GuestStdio};
use wasmbox_runtime::{EngineConfig, Function, Invocation, WasmEngine};

use crate::compare::median;
use crate::scaling::throughput;
use crate::{machine, repo_root, InProcess};

/// One guest built two ways.
struct Setting {
    /// What differs, as a reader would pass it.
    name: &'static str,
    flag: &'static str,
    /// The guest without the setting, and with it (under functions/).
    without: &'static str,
    with: &'static str,
    argv: Vec<String>,
    stdin: &'static [u8],
    /// What its stdout must contain.
    expect: &'static str,
}

fn settings(quick: bool) -> [Setting; 2] {
    let strings = if quick { "100" } else { "1000" };
    [
        Setting {
            name: "a 64 KiB stack instead of Rust's 1 MiB",
            flag: "-C link-arg=-zstack-size=65536",
            without: "echo.wasm",
            with: "variants/echo-stack64k.wasm",
            argv: vec!["echo".into(), "hi".into()],
            stdin: b"from the bench",
            expect: "hi\nfrom the bench",
        },
        Setting {
            name: "Wasm SIMD",
            flag: "-C target-feature=+simd128",
            without: "variants/scryptwork-nosimd.wasm",
            with: "scryptwork.wasm",
            argv: vec!["scryptwork".into(), strings.into()],
            stdin: b"",
            expect: "digest=",
        },
    ]
}

fn invocation(s: &Setting) -> Invocation {
    Invocation {
        argv: s.argv.clone(),
        stdio: GuestStdio::Captured {
            stdin: Bytes::from_static(s.stdin),
            stdout_cap: 1 << 16,
            stderr_cap: 1 << 16,
        },
        memory_cap: 64 << 20,
        timeout: std::time::Duration::from_secs(60),
        throttle: None,
        env: Vec::new(),
        cpu_budget: None,
    }
}

/// A call of `f` as `s` describes it, failing loudly if it goes wrong.
fn call(engine: &WasmEngine, f: &Arc<Function>, s: &Setting) -> anyhow::Result<()> {
    let o = sandbox::invoke(engine, f, invocation(s), &CancelToken::default());
    if let Err(e) = &o.result {
        bail!("{}: {e:?}", f.file_name);
    }
    if !String::from_utf8_lossy(&o.stdout).contains(s.expect) {
        bail!("{}: unexpected output {:?}", f.file_name, o.stdout);
    }
    Ok(())
}

/// `f` called back to back for `secs` on 1 thread and on 2: (seconds per
/// call on 1, calls/s on 2 over calls/s on 1).
fn rates(
    engine: &WasmEngine,
    f: &Arc<Function>,
    s: &'static Setting,
    secs: f64,
) -> anyhow::Result<(f64, f64)> {
    call(engine, f, s)?;
    let work = {
        let (engine, f) = (engine.clone(), f.clone());
        move || call(&engine, &f, s).expect("checked above")
    };
    let [one, two] = [1, 2].map(|t| throughput(t, secs, work.clone()));
    Ok((1.0 / one, two / one))
}

fn load(path: &Path) -> anyhow::Result<InProcess> {
    InProcess::load(
        EngineConfig {
            max_instances: 16,
            ..Default::default()
        },
        path,
    )
    .with_context(|| {
        format!(
            "{} (functions/build.sh builds it)",
            path.strip_prefix(repo_root()).unwrap_or(path).display()
        )
    })
}

fn fmt_time(secs: f64) -> String {
    if secs >= 0.01 {
        format!("{:.0} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

pub(crate) fn run(quick: bool, out: &Path) -> anyhow::Result<()> {
    let (rounds, secs) = if quick { (3, 0.5) } else { (5, 2.0) };
    let functions: PathBuf = repo_root().join("functions");
    let mut report = String::new();
    writeln!(report, "# Guest build settings, per call in process\n")?;
    writeln!(report, "{}\n", machine())?;
    writeln!(
        report,
        "Command: `wasmbox-bench guest-build{}` (after `functions/build.sh`). \
         Each guest is loaded as the server loads it (pooling allocator, epoch \
         deadline) and called back to back on 1 thread and on 2 threads for \
         {secs} s, the two builds alternating, {rounds} rounds; medians. Time \
         per call is the 1-thread figure; scaling is 2 threads' calls/s over \
         1 thread's.\n",
        if quick { " --quick" } else { "" }
    )?;
    writeln!(
        report,
        "| setting | guest, call | time per call without / with | faster | 2 threads / 1 without / with |"
    )?;
    writeln!(report, "|---|---|---|---|---|")?;
    // Leaked: the closures `throughput` runs on its threads are 'static.
    let settings: &'static [Setting; 2] = Box::leak(Box::new(settings(quick)));
    for s in settings {
        let without = load(&functions.join(s.without))?;
        let with = load(&functions.join(s.with))?;
        let (mut time, mut scale) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _ in 0..rounds {
            for (i, p) in [&without, &with].into_iter().enumerate() {
                let (t, x) = rates(&p.engine, &p.function, s, secs)?;
                time[i].push(t);
                scale[i].push(x);
            }
        }
        let [t0, t1] = time.map(|mut v| median(&mut v));
        let [x0, x1] = scale.map(|mut v| median(&mut v));
        println!(
            "{}: {} -> {} per call ({:.2}x), 2/1 {x0:.2} -> {x1:.2}",
            s.name,
            fmt_time(t0),
            fmt_time(t1),
            t0 / t1
        );
        writeln!(
            report,
            "| {} (`{}`) | `{}` | {} / {} | {:.2}x | {x0:.2}x / {x1:.2}x |",
            s.name,
            s.flag,
            s.argv.join(" "),
            fmt_time(t0),
            fmt_time(t1),
            t0 / t1
        )?;
    }
    std::fs::write(out, &report).with_context(|| out.display().to_string())?;
    println!("wrote {}", out.display());
    Ok(())
}
