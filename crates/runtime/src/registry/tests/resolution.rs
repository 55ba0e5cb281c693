//! Which file a name means, and the precompiled gate.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_name_tries_cwasm_only_when_allowed_then_wasm_then_wat() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("f.cwasm"), precompiled(&e, "from cwasm")).unwrap();
    std::fs::write(dir.path().join("f.wasm"), guest("from wasm")).unwrap();
    std::fs::write(dir.path().join("f.wat"), guest("from wat")).unwrap();

    let trusting = registry(&e, dir.path(), true, None, 8);
    let f = trusting.get(&name("f")).await.unwrap();
    assert_eq!(f.file_name, "f.cwasm");
    assert_eq!(run(&e, &f).await, "from cwasm");

    let plain = registry(&e, dir.path(), false, None, 8);
    let f = plain.get(&name("f")).await.unwrap();
    assert_eq!(f.file_name, "f.wasm");
    assert_eq!(run(&e, &f).await, "from wasm");

    std::fs::remove_file(dir.path().join("f.wasm")).unwrap();
    let f = plain.get(&name("f")).await.unwrap();
    assert_eq!(f.file_name, "f.wat");
    assert_eq!(run(&e, &f).await, "from wat");
    let f = trusting.get(&name("f")).await.unwrap();
    assert_eq!(f.file_name, "f.cwasm", "still first when allowed");

    std::fs::remove_file(dir.path().join("f.wat")).unwrap();
    let err = plain.get(&name("f")).await.err().unwrap();
    assert!(
        matches!(&err, LoadError::NotFound(n) if n == "f"),
        "a lone .cwasm is invisible to a bare name without allow_precompiled: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_extension_names_that_file_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("f.cwasm"), precompiled(&e, "from cwasm")).unwrap();
    std::fs::write(dir.path().join("f.wasm"), guest("from wasm")).unwrap();
    std::fs::write(dir.path().join("f.wat"), guest("from wat")).unwrap();
    let reg = registry(&e, dir.path(), true, None, 8);
    for (file, printed) in [
        ("f.wat", "from wat"),
        ("f.wasm", "from wasm"),
        ("f.cwasm", "from cwasm"),
    ] {
        let f = reg.get(&name(file)).await.unwrap();
        assert_eq!(f.file_name, file);
        assert_eq!(run(&e, &f).await, printed);
    }
    // No fallback to another extension when the named file is missing.
    std::fs::remove_file(dir.path().join("f.wat")).unwrap();
    let err = reg.get(&name("f.wat")).await.err().unwrap();
    assert!(
        matches!(&err, LoadError::NotFound(n) if n == "f.wat"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_extensions_and_non_files_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    for file in ["g.txt", "g", "g.wasm.bak", "g.WASM"] {
        std::fs::write(dir.path().join(file), guest("nope")).unwrap();
    }
    std::fs::create_dir(dir.path().join("d.wasm")).unwrap();
    let reg = registry(&e, dir.path(), true, None, 8);
    for n in ["g", "g.txt", "g.wasm.bak", "g.WASM", "d", "d.wasm"] {
        let err = reg.get(&name(n)).await.err().unwrap();
        assert!(
            matches!(&err, LoadError::NotFound(x) if x == n),
            "{n}: {err:?}"
        );
    }
    assert_eq!(reg.loads(), 0, "nothing was read");
    std::fs::write(dir.path().join("h.wat"), guest("h")).unwrap();
    assert_eq!(reg.list().await.unwrap(), vec!["h.wat".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_code_is_refused_without_allow_precompiled_whatever_its_extension() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    std::fs::write(dir.path().join("n.cwasm"), precompiled(&e, "native")).unwrap();
    std::fs::write(dir.path().join("disguised.wasm"), precompiled(&e, "native")).unwrap();
    std::fs::write(dir.path().join("text.cwasm"), guest("text")).unwrap();
    let plain = registry(&e, dir.path(), false, None, 8);
    for n in ["n.cwasm", "disguised"] {
        let err = plain.get(&name(n)).await.err().unwrap();
        assert!(
            matches!(&err, LoadError::PrecompiledNotAllowed(_)),
            "{n}: {err:?}"
        );
    }
    let trusting = registry(&e, dir.path(), true, None, 8);
    let f = trusting.get(&name("disguised")).await.unwrap();
    assert_eq!(run(&e, &f).await, "native");
    let err = trusting.get(&name("text.cwasm")).await.err().unwrap();
    assert!(
        matches!(&err, LoadError::Invalid { file, .. } if file == "text.cwasm"),
        "a .cwasm must hold native code: {err:?}"
    );
}
