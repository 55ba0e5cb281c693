//! The in-memory table: versions, single-flight, least-recently-used
//! eviction.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_file_is_recompiled_and_the_old_function_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("f.wat"), guest("old")).unwrap();
    let reg = registry(&e, dir.path(), false, None, 8);
    let old = reg.get(&name("f")).await.unwrap();
    let again = reg.get(&name("f")).await.unwrap();
    assert!(
        Arc::ptr_eq(&old, &again),
        "same version: same compiled function"
    );
    assert_eq!(reg.loads(), 1);

    replace(dir.path(), "f.wat", guest("new version"));
    let new = reg.get(&name("f")).await.unwrap();
    assert!(!Arc::ptr_eq(&old, &new));
    assert_eq!(reg.loads(), 2, "compiled again");
    assert_eq!(reg.held(), 1, "the new version took the old one's place");
    assert_eq!(run(&e, &new).await, "new version");
    assert_eq!(run(&e, &old).await, "old", "a request holding the old Arc");

    // Same size, new inode: still a new version.
    replace(dir.path(), "f.wat", guest("NEW VERSION"));
    let newer = reg.get(&name("f")).await.unwrap();
    assert_eq!(reg.loads(), 3);
    assert_eq!(run(&e, &newer).await, "NEW VERSION");

    std::fs::remove_file(dir.path().join("f.wat")).unwrap();
    assert!(matches!(
        reg.get(&name("f")).await,
        Err(LoadError::NotFound(_))
    ));
    assert_eq!(reg.held(), 0, "a deleted file is forgotten");
    assert_eq!(run(&e, &newer).await, "NEW VERSION");
}

/// The load of `a.wat` is held up in its compile, which goes to a
/// stand-in compiler that waits until the test lets it finish (see
/// `SlowCompiler`). Meanwhile `b.wat` is loaded with `max_loaded` 1, and a
/// second request for `a` arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_still_loading_is_not_evicted_and_its_waiters_share_one_load() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = engine();
    let a_src = big_guest("a", 4000);
    std::fs::write(dir.path().join("a.wat"), &a_src).unwrap();
    std::fs::write(dir.path().join("b.wat"), guest("b")).unwrap();
    let slow = SlowCompiler::new(&e.engine.precompile_module(a_src.as_bytes()).unwrap());
    let reg = with_config(
        &e,
        RegistryConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            max_loaded: 1,
            compile: slow.limits(2000),
            ..config(dir.path())
        },
    );

    let a1 = tokio::spawn({
        let reg = reg.clone();
        async move { reg.get(&name("a")).await }
    });
    until("a's compile has started", || {
        reg.heavy_compiles_running() == 1
    })
    .await;
    assert_eq!(reg.held(), 1);

    let b = reg.get(&name("b")).await.unwrap();
    assert_eq!(run(&e, &b).await, "b");
    assert_eq!(reg.held(), 2, "a is loading: not evicted");
    assert_eq!(reg.evictions(), 0);

    let a2 = tokio::spawn({
        let reg = reg.clone();
        async move { reg.get(&name("a")).await }
    });
    assert_eq!(reg.heavy_compiles_running(), 1);

    // Let a's compile finish: both waiters get its one result, and a real
    // cache entry is written.
    slow.release().await;
    let (a1, a2) = (a1.await.unwrap().unwrap(), a2.await.unwrap().unwrap());
    assert!(Arc::ptr_eq(&a1, &a2), "one result for both waiters");
    assert_eq!(reg.loads(), 2, "a compiled once, b once");
    assert_eq!(reg.cache_hits(), 0);
    assert_eq!(run(&e, &a1).await, "a");
    let entry = super::super::aot_cache::entry_path(cache.path(), &e.engine, a_src.as_bytes());
    assert!(std::fs::metadata(&entry).unwrap().is_file());

    // The next insertion brings the table back to one entry.
    std::fs::write(dir.path().join("c.wat"), guest("c")).unwrap();
    reg.get(&name("c")).await.unwrap();
    assert_eq!((reg.held(), reg.evictions()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_function_is_unloaded_first() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    for f in ["a", "b", "c"] {
        std::fs::write(dir.path().join(format!("{f}.wat")), guest(f)).unwrap();
    }
    let reg = registry(&e, dir.path(), false, None, 2);
    let a = reg.get(&name("a")).await.unwrap();
    reg.get(&name("b")).await.unwrap();
    reg.get(&name("a")).await.unwrap(); // a is now the more recent
    assert_eq!((reg.held(), reg.evictions(), reg.loads()), (2, 0, 2));

    reg.get(&name("c")).await.unwrap(); // unloads b
    assert_eq!((reg.held(), reg.evictions(), reg.loads()), (2, 1, 3));
    let a_again = reg.get(&name("a")).await.unwrap();
    assert!(Arc::ptr_eq(&a, &a_again), "a stayed loaded");
    assert_eq!(reg.loads(), 3);

    reg.get(&name("b")).await.unwrap(); // loaded again; unloads c
    assert_eq!((reg.held(), reg.evictions(), reg.loads()), (2, 2, 4));
    reg.get(&name("a")).await.unwrap();
    assert_eq!(reg.loads(), 4, "a survived: c was the least recent");
    reg.get(&name("c")).await.unwrap();
    assert_eq!(reg.loads(), 5, "c had been unloaded");
    assert_eq!(run(&e, &a).await, "a");
}

/// An evicted function is let go of (on the blocking pool, off the
/// request's path and the table's lock): once nothing else holds it, its
/// compiled code is freed, not kept by the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_function_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    for f in ["a", "b"] {
        std::fs::write(dir.path().join(format!("{f}.wat")), guest(f)).unwrap();
    }
    let reg = registry(&e, dir.path(), false, None, 1);
    let a = Arc::downgrade(&reg.get(&name("a")).await.unwrap());
    assert!(a.upgrade().is_some(), "held by the table");
    reg.get(&name("b")).await.unwrap(); // unloads a
    assert_eq!(reg.evictions(), 1);
    until("a's function is freed", || a.upgrade().is_none()).await;
}
