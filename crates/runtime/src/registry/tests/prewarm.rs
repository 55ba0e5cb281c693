//! The prewarm's loads run below the requests' priority, and no request
//! waits for one.

use super::*;
use crate::registry::background::{Blocking, IdleThreads};
use crate::registry::prewarm::PREWARM_CONCURRENCY;

/// The calling thread's scheduling policy, field 41 of
/// `/proc/thread-self/stat` (after the parenthesised name, which may hold
/// spaces, it is the 39th).
fn policy() -> u32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(38)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn background_threads_run_at_idle_priority() {
    assert_ne!(policy(), libc::SCHED_IDLE as u32, "the test's own thread");
    let threads = IdleThreads::new(1, true);
    let on_it = threads.run(policy).await.unwrap();
    assert_eq!(on_it, libc::SCHED_IDLE as u32);
}

/// wasmtime compiles in parallel on the rayon pool it runs in: the
/// prewarm's compiles run in one at idle priority, and leave rayon's global
/// pool, which requests' compiles use, alone.
#[tokio::test]
async fn a_prewarm_compile_s_parallel_work_runs_at_idle_priority() {
    let threads = IdleThreads::new(2, true);
    let pool = threads.compile_pool().unwrap();
    let policies = threads
        .run(move || pool.install(|| rayon::join(policy, policy)))
        .await
        .unwrap();
    let idle = libc::SCHED_IDLE as u32;
    assert_eq!(policies, (idle, idle));
    let global = rayon::join(policy, policy);
    assert_ne!(global.0, idle, "rayon's global pool is at idle priority");
}

#[tokio::test]
async fn a_background_job_that_panics_leaves_its_thread_working() {
    let threads = IdleThreads::new(1, true);
    let err = threads
        .run(|| panic!("a load gone wrong"))
        .await
        .unwrap_err();
    assert!(err.contains("panicked"), "{err}");
    assert_eq!(threads.run(|| 7).await.unwrap(), 7);
}

/// A registry over a directory holding `a.wat`, which prints `msg`, and
/// what a scan finds for it (the directory goes when `dir` is dropped).
struct OneFile {
    engine: WasmEngine,
    dir: tempfile::TempDir,
    r: Arc<Registry>,
    found: Resolved,
}

fn one_file(msg: &str) -> OneFile {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.wat"), guest(msg)).unwrap();
    let r = with_config(&engine, config(dir.path()));
    let found = resolve::resolve(dir.path(), false, "a").unwrap().unwrap();
    OneFile {
        engine,
        dir,
        r,
        found,
    }
}

/// The prewarm's load of `a.wat` cannot progress (the background threads
/// are held busy), and a request for `a` is answered anyway, from its own
/// load; the prewarm's copy, once it finishes, does not replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_does_not_wait_for_a_load_the_prewarm_has_under_way() {
    let OneFile {
        engine,
        dir: _dir,
        r,
        found,
    } = one_file("from a");

    // Hold every background thread until `release` is dropped.
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held));
    for _ in 0..PREWARM_CONCURRENCY {
        let (r, started_tx, held) = (r.clone(), started_tx.clone(), held.clone());
        tokio::spawn(async move {
            r.background
                .run(move || {
                    started_tx.send(()).unwrap();
                    let _ = held.lock().unwrap().recv();
                })
                .await
        });
    }
    for _ in 0..PREWARM_CONCURRENCY {
        started
            .recv_timeout(Duration::from_secs(30))
            .expect("a background thread took the holding job");
    }

    // What a scan does for a file the table does not hold.
    let ahead = tokio::spawn({
        let r = r.clone();
        async move { r.load_ahead(&name("a"), found).await }
    });
    until("the prewarm started loading a.wat", || r.loads() >= 1).await;
    let served = tokio::time::timeout(Duration::from_secs(30), r.get(&name("a")))
        .await
        .expect("the request waited for the prewarm's load")
        .unwrap();
    assert_eq!(run(&engine, &served).await, "from a");
    assert_eq!(r.loads(), 2, "the request loaded a.wat itself");

    drop(release);
    let installed = tokio::time::timeout(Duration::from_secs(30), ahead)
        .await
        .expect("the prewarm's load finished once its thread was free")
        .unwrap();
    assert!(!installed, "the prewarm's load was put into the table");
    let now = r.get(&name("a")).await.unwrap();
    assert!(
        Arc::ptr_eq(&now, &served),
        "the prewarm's copy replaced the one the request loaded"
    );
}

/// With no request in its way, the prewarm's load is what the first
/// request finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prewarm_s_load_is_what_the_first_request_finds() {
    let OneFile {
        engine,
        dir: _dir,
        r,
        found,
    } = one_file("from a");
    assert!(r.load_ahead(&name("a"), found).await);
    assert_eq!(r.loads(), 1);
    let f = r.get(&name("a")).await.unwrap();
    assert_eq!(r.loads(), 1, "the request loaded a.wat again");
    assert_eq!(run(&engine, &f).await, "from a");
}

/// The file changes while the prewarm loads it, and a request loads the
/// new version: the prewarm's load, of the version its scan saw, does not
/// replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarm_load_of_a_file_replaced_meanwhile_leaves_the_request_s() {
    let OneFile {
        engine,
        dir,
        r,
        found,
    } = one_file("one");
    replace(dir.path(), "a.wat", guest("two"));
    let served = r.get(&name("a")).await.unwrap();
    assert_eq!(run(&engine, &served).await, "two");

    assert!(!r.load_ahead(&name("a"), found).await);
    assert_eq!(r.loads(), 2, "the prewarm loaded what it found");
    let now = r.get(&name("a")).await.unwrap();
    assert!(
        Arc::ptr_eq(&now, &served),
        "the prewarm's load replaced the request's"
    );
    assert_eq!(r.loads(), 2, "the request loaded a.wat again");
}

/// Past the table's room the prewarm compiles a file into the AOT cache
/// only, and only once: a file whose code the cache holds (as after a
/// restart) is neither compiled nor deserialized by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_table_the_prewarm_caches_only_what_the_cache_lacks() {
    let engine = engine();
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(dir.path().join("a.wat"), guest("from a")).unwrap();
    let r = registry(&engine, dir.path(), false, Some(cache.path()), 1);
    let found = resolve::resolve(dir.path(), false, "a").unwrap().unwrap();
    let precache = || {
        let (file, path) = (found.file_name.clone(), found.path.clone());
        let on = Blocking::Background(&r.background);
        r.loader.precache(on, file, path, found.version.len())
    };
    let cached = || std::fs::read_dir(cache.path()).unwrap().count();

    assert_eq!(precache().await, (Some(found.version.clone()), true));
    assert_eq!((r.loads(), r.cache_hits(), r.held()), (1, 0, 0));
    assert_eq!(cached(), 1, "compiled into the cache");

    assert_eq!(precache().await, (Some(found.version.clone()), false));
    assert_eq!(
        (r.loads(), r.cache_hits()),
        (1, 0),
        "compiled or deserialized again"
    );

    let f = r.get(&name("a")).await.unwrap();
    assert_eq!(run(&engine, &f).await, "from a");
    assert_eq!((r.loads(), r.cache_hits()), (2, 1), "the request's load");
}

/// The table filled while the prewarm loaded (room is counted when the scan
/// plans): its copy is dropped, and what a request loaded stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarm_load_never_pushes_out_what_a_request_loaded() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.wat"), guest("from a")).unwrap();
    std::fs::write(dir.path().join("b.wat"), guest("from b")).unwrap();
    let r = registry(&engine, dir.path(), false, None, 1);
    let found = resolve::resolve(dir.path(), false, "a").unwrap().unwrap();
    r.get(&name("b")).await.unwrap();

    assert!(!r.load_ahead(&name("a"), found).await);
    assert_eq!((r.held(), r.evictions()), (1, 0));
    assert!(r.is_loaded("b.wat"));
}

/// A prewarm at idle priority can starve, so its light compile takes no
/// lane permit a request would then queue for behind it; at normal
/// priority it cannot, and waits for the lane as a request does.
#[tokio::test]
async fn only_a_prewarm_at_idle_priority_compiles_without_a_lane_permit() {
    use crate::registry::compile::Compiler;
    let engine = engine();
    let wasm = wat::parse_str(guest("lane")).unwrap();
    let limits = CompileLimits {
        light_concurrency: 1,
        ..CompileLimits::default()
    };
    for idle in [true, false] {
        let compiler = Compiler::new(limits.clone(), engine.config.clone());
        let threads = IdleThreads::new(1, idle);
        let held = compiler.light_lane().acquire().await.unwrap();
        let compile = compiler.compile(
            &engine.engine,
            "lane",
            wasm.clone(),
            Blocking::Background(&threads),
        );
        tokio::pin!(compile);
        if idle {
            let done = tokio::time::timeout(Duration::from_secs(300), &mut compile).await;
            let compiled = done.expect("the idle prewarm waited for the lane");
            assert!(compiled.is_ok(), "idle: the compile failed");
            continue;
        }
        // The thread takes jobs in order: once a job sent after the
        // compile's first step has run, a compile sent to the thread at
        // that step has run too, and is polled first here.
        tokio::select! {
            biased;
            _ = &mut compile => panic!("compiled while the lane's one permit was held"),
            marker = threads.run(|| ()) => marker.unwrap(),
        }
        drop(held);
        assert!(compile.await.is_ok(), "normal: the compile failed");
    }
}
