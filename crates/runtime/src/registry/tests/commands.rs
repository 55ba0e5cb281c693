//! What counts as a WASI command module: one whose `_start` the sandbox
//! can call.

use super::*;

/// Only a command's `_start` (no arguments, no results) is run, so a
/// module with any other is refused when it loads, saying what it has,
/// rather than failing on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_whose_start_is_not_a_commands_is_refused_when_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    let cases = [
        (
            "args",
            r#"(module (func (export "_start") (param i32)))"#,
            "its `_start` takes (i32) and returns ()",
        ),
        (
            "result",
            r#"(module (func (export "_start") (result i32) i32.const 0))"#,
            "its `_start` takes () and returns (i32)",
        ),
        (
            "global",
            r#"(module (global (export "_start") i32 (i32.const 0)))"#,
            "its `_start` is a global, not a function",
        ),
        (
            "none",
            r#"(module (func (export "main")))"#,
            "it exports no `_start` function",
        ),
    ];
    for (file, wat, _) in &cases {
        std::fs::write(dir.path().join(format!("{file}.wat")), wat).unwrap();
    }
    std::fs::write(dir.path().join("ok.wat"), guest("ran")).unwrap();
    let reg = registry(&e, dir.path(), false, None, 8);
    for (file, _, why) in cases {
        match reg.get(&name(file)).await {
            Err(e @ LoadError::NotACommand { .. }) => {
                let text = e.to_string();
                assert!(text.contains("is not a WASI command module"), "{text}");
                assert!(text.contains(why), "{file}: {text}");
            }
            other => panic!("{file}: expected NotACommand, got {:?}", other.map(|_| ())),
        }
    }
    let ok = reg.get(&name("ok")).await.unwrap();
    assert_eq!(run(&e, &ok).await, "ran", "a command's `_start` still runs");
}
