//! The compile budget: limits checked before compiling, lanes that keep a
//! cheap compile from waiting behind an expensive one, and a compile child
//! stopped at its timeout.

use super::*;

/// A WASI command with `n` extra functions of `body` each.
fn many_functions(n: usize, body: &str) -> String {
    let funcs: String = (0..n).map(|_| format!("(func {body})\n")).collect();
    guest("many").replacen("(func (export", &format!("{funcs}(func (export"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_over_a_size_limit_is_refused_before_compiling_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    let body = "(drop (i32.add (i32.const 1) (i32.const 2)))".repeat(20);
    std::fs::write(dir.path().join("many.wat"), many_functions(3, &body)).unwrap();
    let refused = |limits: CompileLimits| {
        let reg = with_config(
            &e,
            RegistryConfig {
                compile: limits,
                ..config(dir.path())
            },
        );
        async move {
            match reg.get(&name("many")).await {
                Err(LoadError::OverBudget { file, reason }) => {
                    assert_eq!(file, "many.wat");
                    reason
                }
                other => panic!("expected over budget, got {:?}", other.map(|_| ())),
            }
        }
    };
    let reason = refused(CompileLimits {
        max_functions: 3,
        ..CompileLimits::default()
    })
    .await;
    assert!(
        reason.contains("4 functions") && reason.contains("--max-module-functions"),
        "{reason}"
    );
    let reason = refused(CompileLimits {
        max_function_body_bytes: 100,
        ..CompileLimits::default()
    })
    .await;
    assert!(reason.contains("--max-function-body-bytes"), "{reason}");
    let reason = refused(CompileLimits {
        max_module_bytes: 1000,
        ..CompileLimits::default()
    })
    .await;
    assert!(reason.contains("--max-module-mb"), "{reason}");

    // Within the defaults it compiles and runs.
    let reg = registry(&e, dir.path(), false, None, 8);
    let f = reg.get(&name("many")).await.unwrap();
    assert_eq!(run(&e, &f).await, "many");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheap_compile_is_answered_while_a_heavy_one_is_still_running() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    let big = big_guest("big", 8000);
    std::fs::write(dir.path().join("big.wat"), &big).unwrap();
    std::fs::write(dir.path().join("small.wat"), guest("small")).unwrap();
    let slow = SlowCompiler::new(&e.engine.precompile_module(big.as_bytes()).unwrap());
    let reg = with_config(
        &e,
        RegistryConfig {
            compile: CompileLimits {
                light_concurrency: 1,
                ..slow.limits(2000)
            },
            ..config(dir.path())
        },
    );
    let heavy = tokio::spawn({
        let reg = reg.clone();
        async move { reg.get(&name("big")).await }
    });
    until("the heavy compile has started", || {
        reg.heavy_compiles_running() == 1
    })
    .await;

    let small = reg.get(&name("small")).await.unwrap();
    assert_eq!(run(&e, &small).await, "small");
    assert_eq!(
        reg.heavy_compiles_running(),
        1,
        "answered while the heavy compile runs"
    );
    assert!(!heavy.is_finished());

    slow.release().await;
    let big = heavy.await.unwrap().unwrap();
    assert_eq!(run(&e, &big).await, "big");
}

/// The stand-in compiler is never let through: the registry kills it at the
/// compile timeout and refuses the module with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_past_its_timeout_is_stopped_and_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    let big = big_guest("big", 8000);
    std::fs::write(dir.path().join("big.wat"), &big).unwrap();
    std::fs::write(dir.path().join("small.wat"), guest("small")).unwrap();
    let slow = SlowCompiler::new(b"never written");
    let reg = with_config(
        &e,
        RegistryConfig {
            compile: CompileLimits {
                timeout: Duration::from_millis(200),
                ..slow.limits(2000)
            },
            ..config(dir.path())
        },
    );
    match reg.get(&name("big")).await {
        Err(LoadError::OverBudget { reason, .. }) => {
            assert!(reason.contains("--compile-timeout"), "{reason}")
        }
        other => panic!("expected over budget, got {:?}", other.map(|_| ())),
    }
    assert_eq!(reg.heavy_compiles_running(), 0);
    let small = reg.get(&name("small")).await.unwrap();
    assert_eq!(run(&e, &small).await, "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sparse_file_is_refused_by_its_size_before_any_byte_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // 1 TiB of holes: reading it whole would abort the process.
    let f = std::fs::File::create(dir.path().join("huge.wasm")).unwrap();
    f.set_len(1 << 40).unwrap();
    let reg = registry(&engine(), dir.path(), false, None, 8);
    match reg.get(&name("huge")).await {
        Err(LoadError::OverBudget { file, reason }) => {
            assert_eq!(file, "huge.wasm");
            assert!(reason.contains("--max-module-mb"), "{reason}");
        }
        other => panic!("expected over budget, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_parse_error_does_not_quote_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // What a symlink to a secret would show: its first line.
    std::fs::write(dir.path().join("leak.wat"), "SECRET=hunter2\n").unwrap();
    let reg = registry(&engine(), dir.path(), false, None, 8);
    match reg.get(&name("leak")).await {
        Err(e @ LoadError::Invalid { .. }) => {
            let text = e.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains(":1:"), "the position is kept: {text}");
        }
        other => panic!("expected invalid, got {:?}", other.map(|_| ())),
    }
}
