//! The in-memory table: versions, single-flight, least-recently-used
//! eviction.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::*;

/// Polls `fut` once, from inside the runtime (it may spawn), without
/// registering interest in a wake-up: enough to run it up to its first
/// `await` that is not ready.
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Should an assertion fail while a loader is blocked opening the FIFO, the
/// runtime's shutdown would wait for it forever. On drop, if the FIFO is
/// still there, this opens it read-write (which never blocks on Linux) and
/// leaks the descriptor: a writer then always exists, so every loader's
/// `open` returns and the failure is reported instead of hanging.
struct Unblock(std::path::PathBuf);

impl Drop for Unblock {
    fn drop(&mut self) {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(&self.0).is_ok_and(|m| m.file_type().is_fifo()) {
            let rw = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.0);
            std::mem::forget(rw);
        }
    }
}

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

/// The load of `a.wat` is held up on its AOT cache entry, which the test
/// makes a FIFO: the loader's `open` blocks until the test opens the other
/// end. Meanwhile `b.wat` is loaded with `max_loaded` 1, and a second request
/// for `a` arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_still_loading_is_not_evicted_and_its_waiters_share_one_load() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = engine();
    let a_src = guest("a");
    std::fs::write(dir.path().join("a.wat"), &a_src).unwrap();
    std::fs::write(dir.path().join("b.wat"), guest("b")).unwrap();
    let reg = registry(&e, dir.path(), false, Some(cache.path()), 1);
    let fifo = super::super::aot_cache::entry_path(cache.path(), &e.engine, a_src.as_bytes());
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let _unblock = Unblock(fifo.clone());

    let (na1, na2) = (name("a"), name("a"));
    let mut a1 = std::pin::pin!(reg.get(&na1));
    assert!(poll_once(a1.as_mut()).is_pending(), "blocked on the FIFO");
    assert_eq!(reg.held(), 1);

    let b = reg.get(&name("b")).await.unwrap();
    assert_eq!(run(&e, &b).await, "b");
    assert_eq!(reg.held(), 2, "a is loading: not evicted");
    assert_eq!(reg.evictions(), 0);

    let mut a2 = std::pin::pin!(reg.get(&na2));
    assert!(
        poll_once(a2.as_mut()).is_pending(),
        "waits for the same load"
    );

    // Let a's loader through: it finds an empty FIFO where the entry should
    // be, ignores it, compiles, and writes a real entry in its place.
    let fifo2 = fifo.clone();
    tokio::task::spawn_blocking(move || drop(std::fs::File::create(fifo2).unwrap()))
        .await
        .unwrap();
    let (a1, a2) = tokio::join!(a1, a2);
    let (a1, a2) = (a1.unwrap(), a2.unwrap());
    assert!(Arc::ptr_eq(&a1, &a2), "one result for both waiters");
    assert_eq!(reg.loads(), 2, "a compiled once, b once");
    assert_eq!(reg.cache_hits(), 0);
    assert_eq!(run(&e, &a1).await, "a");
    assert!(std::fs::metadata(&fifo).unwrap().is_file());

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
