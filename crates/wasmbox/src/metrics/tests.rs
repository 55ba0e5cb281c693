//! The exposition text: names, types, and counters that follow running
//! totals.

use std::sync::Arc;

use super::*;

fn values(functions: (usize, usize, usize, usize), slot_failures: usize) -> GaugeValues {
    GaugeValues {
        admission: wasmbox_admission::Snapshot {
            queued: 3,
            reserved: wasmbox_admission::Resources {
                cpu_millis: 1500,
                memory_mb: 256,
            },
            ..Default::default()
        },
        capacity: wasmbox_admission::Resources {
            cpu_millis: 2000,
            memory_mb: 1024,
        },
        memory_utilization: 0.25,
        pool_stats: wasmbox_runtime::executor::PoolStats {
            busy: 2,
            slot_failures,
            slot_moves: 5,
            slot_rescues: 1,
            ..Default::default()
        },
        per_function: vec![wasmbox_admission::FunctionSnapshot {
            function: Arc::from("hog.wasm"),
            queued: 1,
            queued_mb: 64,
            running: 2,
            reserved: wasmbox_admission::Resources {
                cpu_millis: 1000,
                memory_mb: 128,
            },
        }],
        pool: None,
        functions,
        front: (7, 4096, 1 << 20),
        heavy_compiles: 1,
        prewarm_scans: 2,
    }
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn running_totals_are_counters_named_total() {
    let m = Metrics::new();
    let text = m.render(&values((2, 4, 1, 2), 3));
    for line in [
        "# TYPE wasmbox_function_loads counter",
        "wasmbox_function_loads_total 4",
        "# TYPE wasmbox_function_cache_hits counter",
        "wasmbox_function_cache_hits_total 1",
        "# TYPE wasmbox_function_unloads counter",
        "wasmbox_function_unloads_total 2",
        "# TYPE wasmbox_prewarm_scans counter",
        "wasmbox_prewarm_scans_total 2",
        "# TYPE wasmbox_worker_slot_failures counter",
        "wasmbox_worker_slot_failures_total 3",
        "# TYPE wasmbox_worker_slot_moves counter",
        "wasmbox_worker_slot_moves_total 5",
        "# TYPE wasmbox_worker_slot_rescues counter",
        "wasmbox_worker_slot_rescues_total 1",
        "# TYPE wasmbox_functions_loaded gauge",
        "wasmbox_functions_loaded 2",
        "wasmbox_open_connections 7",
        "wasmbox_body_bytes_held 4096",
        "wasmbox_body_budget_bytes 1048576",
        "# TYPE wasmbox_function_heavy_compiles gauge",
        "wasmbox_function_heavy_compiles 1",
    ] {
        assert!(has_line(&text, line), "no `{line}` in:\n{text}");
    }
    for old in ["wasmbox_function_loads 4", "wasmbox_worker_slot_failures 3"] {
        assert!(!has_line(&text, old), "`{old}` is still a gauge:\n{text}");
    }
}

#[test]
fn counters_follow_the_source_and_never_go_down() {
    let m = Metrics::new();
    m.render(&values((1, 1, 0, 0), 0));
    let text = m.render(&values((2, 5, 2, 1), 4));
    assert!(has_line(&text, "wasmbox_function_loads_total 5"), "{text}");
    assert!(has_line(&text, "wasmbox_worker_slot_failures_total 4"));
    // A stale reading (smaller than one already shown) leaves them be.
    let text = m.render(&values((1, 3, 1, 0), 2));
    for line in [
        "wasmbox_function_loads_total 5",
        "wasmbox_function_cache_hits_total 2",
        "wasmbox_function_unloads_total 1",
        "wasmbox_worker_slot_failures_total 4",
        "wasmbox_functions_loaded 1",
    ] {
        assert!(has_line(&text, line), "no `{line}` in:\n{text}");
    }
}

#[test]
fn the_other_families_keep_their_names() {
    let m = Metrics::new();
    m.count("hog.wasm", "ok");
    m.queue_wait.observe(0.001);
    m.execution.observe(0.002);
    let text = m.render(&values((0, 0, 0, 0), 0));
    for line in [
        r#"wasmbox_invocations_total{function="hog.wasm",outcome="ok"} 1"#,
        "wasmbox_queue_wait_seconds_count 1",
        "wasmbox_execution_seconds_count 1",
        "wasmbox_queue_depth 3",
        "wasmbox_queue_memory_mb 0",
        "wasmbox_reserved_cpu_millicores 1500",
        "wasmbox_reserved_memory_mb 256",
        "wasmbox_capacity_cpu_millicores 2000",
        "wasmbox_capacity_memory_mb 1024",
        "wasmbox_admission_limit_cpu_millicores 0",
        "wasmbox_admission_limit_memory_mb 0",
        "wasmbox_memory_utilization_ratio 0.25",
        "wasmbox_cpu_utilization_cores 0.0",
        "wasmbox_workers_busy 2",
        "wasmbox_workers_idle 0",
        "wasmbox_workers_queued 0",
        "wasmbox_workers_retrying 0",
        r#"wasmbox_function_queued{function="hog.wasm"} 1"#,
        r#"wasmbox_function_running{function="hog.wasm"} 2"#,
        r#"wasmbox_function_reserved_cpu_millicores{function="hog.wasm"} 1000"#,
        "wasmbox_pool_core_instances 0",
        "wasmbox_pool_memories 0",
        "wasmbox_pool_unused_warm_memories 0",
        "wasmbox_pool_unused_memory_bytes_resident 0",
    ] {
        assert!(has_line(&text, line), "no `{line}` in:\n{text}");
    }
}
