//! The on-disk AOT cache.

use super::super::aot_cache::{cache_key, entry_path};
use super::*;

#[test]
fn the_cache_key_follows_the_module_bytes_and_the_engine() {
    let e = engine();
    let one = cache_key(&e.engine, guest("one").as_bytes());
    assert_eq!(one, cache_key(&e.engine, guest("one").as_bytes()));
    assert_ne!(one, cache_key(&e.engine, guest("two").as_bytes()));
    // Same module bytes, an engine whose compiled code is incompatible.
    let mut cfg = wasmtime::Config::new();
    cfg.epoch_interruption(false);
    let other = wasmtime::Engine::new(&cfg).unwrap();
    let (hash, engine_part) = one.split_once('-').unwrap();
    let other_key = cache_key(&other, guest("one").as_bytes());
    assert!(other_key.starts_with(&format!("{hash}-")), "{other_key}");
    assert_ne!(other_key, one, "engine part {engine_part}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_registry_on_the_same_cache_dir_loads_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("f.wat"), guest("cached")).unwrap();
    let first = registry(&e, dir.path(), false, Some(cache.path()), 8);
    first.get(&name("f")).await.unwrap();
    assert_eq!((first.loads(), first.cache_hits()), (1, 0));
    let entry = entry_path(cache.path(), &e.engine, guest("cached").as_bytes());
    let files: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(files, vec![entry.clone()], "one entry, no temporary left");
    assert!(wasmtime::Engine::detect_precompiled(&std::fs::read(&entry).unwrap()).is_some());

    // A new engine with the same settings (as after a restart).
    let e2 = engine();
    let second = registry(&e2, dir.path(), false, Some(cache.path()), 8);
    let f = second.get(&name("f")).await.unwrap();
    assert_eq!((second.loads(), second.cache_hits()), (1, 1));
    assert_eq!(run(&e2, &f).await, "cached");

    // Changed bytes: a new key, so compiled and cached anew.
    replace(dir.path(), "f.wat", guest("changed"));
    let f = second.get(&name("f")).await.unwrap();
    assert_eq!((second.loads(), second.cache_hits()), (2, 1));
    assert_eq!(run(&e2, &f).await, "changed");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
}

fn cached(cache: &Path, max_bytes: u64) -> RegistryConfig {
    RegistryConfig {
        cache_dir: Some(cache.to_path_buf()),
        cache_max_bytes: max_bytes,
        ..RegistryConfig::new(std::env::temp_dir())
    }
}

#[test]
fn a_cache_dir_others_can_write_or_that_is_not_ours_is_refused_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    let e = engine();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o770, 0o722] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Registry::new(e.clone(), cached(&dir, 1 << 30))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("writable by group or others") && err.contains("chmod go-w"),
            "{err}"
        );
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Registry::new(e.clone(), cached(&dir, 1 << 30)).expect("ours, not writable by others");

    // A symlink to a good directory is not the directory.
    let link = parent.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let err = Registry::new(e.clone(), cached(&link, 1 << 30))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not a directory"), "{err}");

    // Created when missing, owner-only.
    let fresh = parent.path().join("fresh/cache");
    Registry::new(e.clone(), cached(&fresh, 1 << 30)).unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    // Owned by someone else: only root can make that here.
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let err = Registry::new(e, cached(&dir, 1 << 30))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    } else {
        eprintln!("skipped the other-owner case: not root, cannot chown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_in_the_cache_dir_are_never_followed_or_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let e = engine();
    let src = guest("linked");
    std::fs::write(dir.path().join("f.wat"), &src).unwrap();

    // A valid compiled entry outside the cache, linked in under the key's
    // name (someone who could write the directory planting code).
    let planted = outside.path().join("planted.cwasm");
    std::fs::write(
        &planted,
        e.engine.precompile_module(src.as_bytes()).unwrap(),
    )
    .unwrap();
    let entry = entry_path(cache.path(), &e.engine, src.as_bytes());
    std::os::unix::fs::symlink(&planted, &entry).unwrap();
    // And a victim behind the temporary name the old code would have used.
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let old_tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &old_tmp).unwrap();

    let reg = registry(&e, dir.path(), false, Some(cache.path()), 8);
    let f = reg.get(&name("f")).await.unwrap();
    assert_eq!(run(&e, &f).await, "linked");
    assert_eq!(
        (reg.loads(), reg.cache_hits()),
        (1, 0),
        "the link was not loaded"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let meta = std::fs::symlink_metadata(&entry).unwrap();
    assert!(meta.is_file(), "the compiled entry replaced the link");
    let temps = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|d| {
            d.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count();
    assert_eq!(temps, 0, "no temporary left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_fails_to_load_is_deleted_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = engine();
    let src = guest("rebuilt");
    std::fs::write(dir.path().join("f.wat"), &src).unwrap();
    let entry = entry_path(cache.path(), &e.engine, src.as_bytes());
    std::fs::write(&entry, b"\x7fELF damaged").unwrap();
    let reg = registry(&e, dir.path(), false, Some(cache.path()), 8);
    let f = reg.get(&name("f")).await.unwrap();
    assert_eq!(run(&e, &f).await, "rebuilt");
    assert_eq!(reg.cache_hits(), 0);
    let bytes = std::fs::read(&entry).unwrap();
    assert!(
        wasmtime::Engine::detect_precompiled(&bytes).is_some(),
        "rebuilt"
    );
    let again = registry(&e, dir.path(), false, Some(cache.path()), 8);
    again.get(&name("f")).await.unwrap();
    assert_eq!(again.cache_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_to_its_size_by_deleting_the_least_recently_used_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = engine();
    for f in ["a", "b", "c"] {
        std::fs::write(dir.path().join(format!("{f}.wat")), guest(f)).unwrap();
    }
    let entry = |f: &str| entry_path(cache.path(), &e.engine, guest(f).as_bytes());
    let unbounded = registry(&e, dir.path(), false, Some(cache.path()), 8);
    unbounded.get(&name("a")).await.unwrap();
    unbounded.get(&name("b")).await.unwrap();
    let size = std::fs::metadata(entry("a")).unwrap().len();
    // a used long ago, b less long ago (set, not waited for).
    let now = std::time::SystemTime::now();
    for (f, ago) in [("a", 200), ("b", 100)] {
        std::fs::File::options()
            .write(true)
            .open(entry(f))
            .unwrap()
            .set_modified(now - Duration::from_secs(ago))
            .unwrap();
    }

    // Room for two and a half entries. A restart loads a from the cache,
    // which makes a the most recently used; c's new entry then pushes out b.
    let bounded = with_config(
        &e,
        RegistryConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            cache_max_bytes: size * 5 / 2,
            ..config(dir.path())
        },
    );
    bounded.get(&name("a")).await.unwrap();
    assert_eq!(bounded.cache_hits(), 1);
    bounded.get(&name("c")).await.unwrap();
    assert!(entry("a").exists(), "used last: kept");
    assert!(!entry("b").exists(), "least recently used: deleted");
    assert!(entry("c").exists(), "just written: kept");
}
