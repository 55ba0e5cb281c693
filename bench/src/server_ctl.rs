//! Starting and stopping a `wasmbox serve` for the tenant scenarios,
//! robust to a server that does not end on SIGTERM (guests blocked in host
//! calls): [`Served`] stops it with a deadline, then SIGKILL, and removes
//! the cgroups it left.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ServerProc;

/// How long SIGTERM gets before SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// A running server and its CPU isolation mode; stopped on drop.
pub(crate) struct Served {
    server: Option<ServerProc>,
    pub(crate) port: u16,
    /// Where `/-/metrics` is served (the admin listener).
    pub(crate) admin_port: u16,
    pub(crate) mode: &'static str,
}

/// How the server ended.
pub(crate) struct Stopped {
    /// Ended by SIGTERM within [`GRACE`] (after this long), or not.
    pub(crate) on_term: Option<Duration>,
    /// `wasmbox-<pid>-*` cgroup directories removed, and left (rmdir failed).
    pub(crate) cgroups_removed: usize,
    pub(crate) cgroups_left: usize,
}

impl Stopped {
    pub(crate) fn describe(&self) -> String {
        let how = match self.on_term {
            Some(d) => format!("ended on SIGTERM after {:.1} s", d.as_secs_f64()),
            None => format!(
                "did NOT end within {} s of SIGTERM: killed with SIGKILL",
                GRACE.as_secs()
            ),
        };
        let left = if self.cgroups_left > 0 {
            format!(", {} could not be removed", self.cgroups_left)
        } else {
            String::new()
        };
        format!(
            "{how}; {} leftover cgroup(s) removed{left}",
            self.cgroups_removed
        )
    }
}

/// `wasmbox serve --functions dir extra..` with `--cpu-isolation
/// cgroup-v1`, else (when that fails to start) `throttle`.
pub(crate) fn start(dir: &Path, extra: &[&str], ready_path: &str) -> anyhow::Result<Served> {
    let mut last = None;
    for mode in ["cgroup-v1", "throttle"] {
        let mut args = vec!["--cpu-isolation", mode];
        args.extend_from_slice(&crate::PREWARM_NOW);
        args.extend_from_slice(extra);
        match ServerProc::start(dir, &args, ready_path) {
            Ok(server) => {
                server.until_prewarmed()?;
                return Ok(Served {
                    port: server.port,
                    admin_port: server.admin_port,
                    server: Some(server),
                    mode,
                });
            }
            Err(e) => {
                eprintln!("note: --cpu-isolation {mode} did not start: {e:#}");
                last = Some(e);
            }
        }
    }
    Err(last.expect("two modes tried"))
}

impl Served {
    /// The server's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.server.as_ref().map_or(0, |s| s.pid())
    }

    /// SIGTERM; SIGKILL if it has not exited within [`GRACE`]; then removes
    /// its leftover cgroups.
    pub(crate) fn stop(mut self) -> Stopped {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Stopped {
        let Some(server) = self.server.take() else {
            return Stopped {
                on_term: Some(Duration::ZERO),
                cgroups_removed: 0,
                cgroups_left: 0,
            };
        };
        let pid = server.pid();
        let trees =
            wasmbox_isolation::cgroup::v1_trees_of_process(pid, Path::new("/sys/fs/cgroup/cpu"));
        signal("TERM", pid);
        let t = Instant::now();
        let on_term = wait_exit(pid, GRACE).then(|| t.elapsed());
        if on_term.is_none() {
            signal("KILL", pid);
            if !wait_exit(pid, Duration::from_secs(10)) {
                eprintln!("warning: wasmbox {pid} survived SIGKILL for 10 s");
            }
        }
        // Reaps the (now exited) child.
        drop(server);
        let (cgroups_removed, cgroups_left) = remove_cgroups(&trees);
        Stopped {
            on_term,
            cgroups_removed,
            cgroups_left,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.server.is_some() {
            let s = self.stop_inner();
            eprintln!("server stopped: {}", s.describe());
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Whether `pid` exits (is gone or a zombie) within `limit`.
fn wait_exit(pid: u32, limit: Duration) -> bool {
    let t = Instant::now();
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            // The state follows the parenthesised command name.
            Ok(s) => {
                if s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
                {
                    return true;
                }
            }
        }
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes what is left of the server's instance trees (every directory in
/// them, deepest first); returns (removed, left).
fn remove_cgroups(trees: &[std::path::PathBuf]) -> (usize, usize) {
    let mut found = Vec::new();
    for tree in trees.iter().filter(|t| t.exists()) {
        find_dirs(tree, "", 6, &mut found);
        found.push(tree.clone());
    }
    let (mut removed, mut left) = (0, 0);
    // Deepest first, so a slot's parent (if any) empties before its turn.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for dir in found {
        // The kernel may take a moment to move the dead threads out.
        let t = Instant::now();
        loop {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {
                    removed += 1;
                    break;
                }
                Err(_) if t.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    eprintln!("warning: rmdir {}: {e}", dir.display());
                    left += 1;
                    break;
                }
            }
        }
    }
    (removed, left)
}

fn find_dirs(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() || ft.is_symlink() {
            continue;
        }
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with(prefix) {
            find_dirs(&path, prefix, depth.saturating_sub(1), out);
            out.push(path);
        } else if depth > 0 {
            find_dirs(&path, prefix, depth - 1, out);
        }
    }
}
