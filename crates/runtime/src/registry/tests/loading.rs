//! Loading on the request path: off the async workers, single-flight that
//! outlives its waiters, I/O errors apart from absence, retries with
//! backoff, versions from what was read.

use super::super::entry::{Entry, Loaded, Verdict};
use super::super::fs_pool::FsPool;
use super::super::resolve::Version;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_waiters_all_went_away_finishes_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    let src = big_guest("slow", 4000);
    std::fs::write(dir.path().join("slow.wat"), &src).unwrap();
    let slow = SlowCompiler::new(&e.engine.precompile_module(src.as_bytes()).unwrap());
    let reg = with_config(
        &e,
        RegistryConfig {
            compile: slow.limits(2000),
            ..config(dir.path())
        },
    );
    // A request starts the compile, then its client disconnects (the
    // request's future is dropped).
    let request = tokio::spawn({
        let reg = reg.clone();
        async move { reg.get(&name("slow")).await }
    });
    until("the compile has started", || {
        reg.heavy_compiles_running() == 1
    })
    .await;
    request.abort();
    assert!(request.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(reg.heavy_compiles_running(), 1, "the compile goes on");

    slow.release().await;
    let f = reg.get(&name("slow")).await.unwrap();
    assert_eq!(run(&e, &f).await, "slow");
    assert_eq!(
        reg.loads(),
        1,
        "compiled once: the next request got its result"
    );
    let again = reg.get(&name("slow")).await.unwrap();
    assert!(Arc::ptr_eq(&f, &again));
}

/// Stand-in for EIO, ESTALE or EACCES: a symlink loop at the function's
/// name makes `stat` fail with ELOOP, a real error that is not "no such
/// file". (The tests may run as root, for whom `chmod 000` denies nothing,
/// and a local file system gives no EIO on demand.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_is_an_io_error_and_its_compiled_function_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    let file = dir.path().join("f.wat");
    std::fs::write(&file, guest("kept")).unwrap();
    let reg = registry(&e, dir.path(), false, None, 8);
    let f = reg.get(&name("f")).await.unwrap();

    let aside = dir.path().join("aside");
    std::fs::rename(&file, &aside).unwrap(); // keeps inode, size, mtime
    std::os::unix::fs::symlink("f.wat", &file).unwrap();
    match reg.get(&name("f")).await {
        Err(LoadError::Io { file, reason }) => {
            assert_eq!(file, "f");
            assert!(reason.contains("symbolic links"), "{reason}");
        }
        other => panic!("expected an I/O error, got {:?}", other.map(|_| ())),
    }
    assert_eq!(reg.held(), 1, "not forgotten");

    std::fs::remove_file(&file).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    let again = reg.get(&name("f")).await.unwrap();
    assert!(Arc::ptr_eq(&f, &again), "the same compiled function");
    assert_eq!(reg.loads(), 1, "never compiled again");
    assert_eq!(run(&e, &again).await, "kept");

    // Absence is still absence: forgotten, NotFound.
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(
        reg.get(&name("f")).await,
        Err(LoadError::NotFound(_))
    ));
    assert_eq!(reg.held(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_is_answered_from_memory_until_its_backoff_and_a_changed_file_is_tried_at_once(
) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("f.wat"), "(module (func").unwrap();
    let hour = Duration::from_secs(3600);
    let reg = with_config(
        &e,
        RegistryConfig {
            retry: Backoff {
                first: hour,
                max: hour,
            },
            ..config(dir.path())
        },
    );
    for _ in 0..3 {
        assert!(matches!(
            reg.get(&name("f")).await,
            Err(LoadError::Invalid { .. })
        ));
    }
    assert_eq!(reg.loads(), 1, "within the backoff: not tried again");
    replace(dir.path(), "f.wat", "(module (func (export");
    assert!(matches!(
        reg.get(&name("f")).await,
        Err(LoadError::Invalid { .. })
    ));
    assert_eq!(reg.loads(), 2, "a changed file is tried at once");
    replace(dir.path(), "f.wat", guest("fixed"));
    let f = reg.get(&name("f")).await.unwrap();
    assert_eq!(run(&e, &f).await, "fixed");

    // With no backoff, the same failing version is tried on every request
    // (it is not cached forever).
    std::fs::write(dir.path().join("g.wat"), "(module (func").unwrap();
    let zero = Duration::ZERO;
    let eager = with_config(
        &e,
        RegistryConfig {
            retry: Backoff {
                first: zero,
                max: zero,
            },
            ..config(dir.path())
        },
    );
    for n in 1..=3 {
        assert!(eager.get(&name("g")).await.is_err());
        assert_eq!(eager.loads(), n);
    }
}

#[test]
fn the_retry_delay_doubles_from_one_second_to_a_minute() {
    let b = Backoff::default();
    let secs: Vec<u64> = (1..=8).map(|n| b.after(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(b.after(u32::MAX).as_secs(), 60);
}

#[test]
fn a_load_that_read_another_version_than_its_stat_saw_is_done_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "one").unwrap();
    std::fs::write(&b, "two!").unwrap();
    let v1 = Version::of(&std::fs::metadata(&a).unwrap());
    let v2 = Version::of(&std::fs::metadata(&b).unwrap());
    let backoff = Backoff::default();
    let now = std::time::Instant::now();
    let entry = |read: Option<Version>| {
        let e = Entry::new(v1.clone(), 0, 0);
        let _ = e.cell.set(Loaded {
            result: Err(LoadError::NotFound("f".into())),
            read,
            at: now,
        });
        e
    };
    // The stat saw v1; the file was replaced before it was opened, so the
    // bytes compiled are v2's: the entry is not v1's.
    let raced = entry(Some(v2.clone()));
    assert_eq!(
        raced.verdict(&v1, now, &backoff),
        Verdict::Replace { failures: 0 }
    );
    assert_eq!(
        raced.verdict(&v2, now, &backoff),
        Verdict::Replace { failures: 0 }
    );
    let read_as_seen = entry(Some(v1.clone()));
    assert_eq!(
        read_as_seen.verdict(&v1, now, &backoff),
        Verdict::Use,
        "within backoff"
    );
    assert_eq!(
        read_as_seen.verdict(&v1, now + Duration::from_secs(2), &backoff),
        Verdict::Replace { failures: 1 }
    );
    // Over its compile budget: not retried for the same bytes, whatever
    // the time; a changed file is tried at once.
    let over = Entry::new(v1.clone(), 0, 0);
    let _ = over.cell.set(Loaded {
        result: Err(LoadError::OverBudget {
            file: "f".into(),
            reason: "too slow".into(),
        }),
        read: Some(v1.clone()),
        at: now,
    });
    assert_eq!(
        over.verdict(&v1, now + Duration::from_secs(3600), &backoff),
        Verdict::Use
    );
    assert_eq!(
        over.verdict(&v2, now, &backoff),
        Verdict::Replace { failures: 0 }
    );
}

/// Stand-in for a hung NFS mount: the pool's only slot is taken by a call
/// that blocks until the test lets it go. On a single-threaded runtime a
/// request then fails after the deadline while other tasks keep running,
/// which they could not if the call ran on the runtime's thread.
#[tokio::test(flavor = "current_thread")]
async fn a_hung_file_system_call_times_the_request_out_and_blocks_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("f.wat"), guest("f")).unwrap();
    let mut reg = registry(&e, dir.path(), false, None, 8);
    Arc::get_mut(&mut reg).unwrap().fs = FsPool::new(1, Duration::from_millis(300));
    let (release, hung) = std::sync::mpsc::channel::<()>();
    let stuck = tokio::spawn({
        let reg = reg.clone();
        async move { reg.fs.run(move || hung.recv()).await }
    });
    until("the slot is taken", || reg.fs.busy() == 1).await;

    let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    match reg.get(&name("f")).await {
        Err(LoadError::Io { reason, .. }) => {
            assert!(reason.contains("did not answer within"), "{reason}")
        }
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    assert!(
        ticks.load(Ordering::Relaxed) > 0,
        "other tasks ran meanwhile"
    );
    assert!(reg.list().await.is_err(), "listing waits for the pool too");
    ticker.abort();

    assert!(stuck.await.unwrap().is_err(), "its caller gave up too");
    // The hung call returns: its slot is free again.
    release.send(()).unwrap();
    let f = reg.get(&name("f")).await.unwrap();
    assert_eq!(run(&e, &f).await, "f");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_function_is_served_without_a_stat_within_the_revalidation_interval() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("f.wat"), guest("old")).unwrap();
    let reg = with_config(
        &e,
        RegistryConfig {
            revalidate_after: Duration::from_secs(3600),
            ..RegistryConfig::new(dir.path().to_path_buf())
        },
    );
    let f = reg.get(&name("f")).await.unwrap();
    replace(dir.path(), "f.wat", guest("new"));
    let again = reg.get(&name("f")).await.unwrap();
    assert!(
        Arc::ptr_eq(&f, &again),
        "not looked at again within the interval"
    );
    assert_eq!(reg.loads(), 1);
    // Another name for the same file is looked at, and finds the new one.
    let by_file = reg.get(&name("f.wat")).await.unwrap();
    assert_eq!(run(&e, &by_file).await, "new");
    // A new file is served at once.
    std::fs::write(dir.path().join("g.wat"), guest("g")).unwrap();
    assert_eq!(run(&e, &reg.get(&name("g")).await.unwrap()).await, "g");
}
