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
