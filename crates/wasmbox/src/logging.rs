//! The tracing filter the binary installs, from `--log-level`/`LOG_LEVEL`.
//!
//! wasmtime-wasi opens an INFO span around every WASI preview-1 host call
//! a guest makes (`#[instrument]` in its `p1` module), formatting the
//! call's arguments into it. Nothing of ours logs inside a host call, so at
//! the default level those spans are never shown, yet each one is built,
//! formatted, entered and dropped: a Rust guest's few host calls per
//! invocation cost its worker several microseconds. Unless the filter names
//! that target itself, it is held at `warn`.

use tracing_subscriber::EnvFilter;

/// wasmtime-wasi's preview-1 host calls, each an INFO span.
const WASI_P1_TARGET: &str = "wasmtime_wasi::p1";

/// The filter for `level` (a `tracing_subscriber` filter string: a level,
/// or directives such as `info,wasmbox=debug`); `default` when `level` is
/// not a valid filter, with a message saying so.
pub fn filter(level: &str, default: &str) -> (EnvFilter, Option<String>) {
    let (spec, problem) = match EnvFilter::try_new(level) {
        Ok(_) => (level, None),
        Err(_) => (
            default,
            Some(format!(
                "LOG_LEVEL/--log-level '{level}' is not a valid filter; using {default}"
            )),
        ),
    };
    let mut filter = EnvFilter::new(spec);
    if !names_wasi_p1(spec) {
        let quiet = format!("{WASI_P1_TARGET}=warn")
            .parse()
            .expect("a target and a level is a valid directive");
        filter = filter.add_directive(quiet);
    }
    (filter, problem)
}

/// Whether a directive of `spec` is about wasmtime-wasi's preview-1 spans:
/// its target is a prefix of theirs (`wasmtime_wasi=debug`; a directive's
/// target matches every target it begins) or lies within it. The operator
/// asked for those spans then, and a quieter directive of ours, being more
/// specific, would override the ask.
fn names_wasi_p1(spec: &str) -> bool {
    spec.split(',').any(|directive| {
        let target = directive.split(['=', '[']).next().unwrap_or("").trim();
        !target.is_empty()
            && (WASI_P1_TARGET.starts_with(target) || target.starts_with(WASI_P1_TARGET))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;
    use wasmbox_runtime::sandbox::{self, Stdio};
    use wasmbox_runtime::{
        CancelToken, EngineConfig, Function, Invocation, Registry, RegistryConfig, WasmEngine,
    };

    use super::filter;

    /// Counts the spans opened under wasmtime-wasi's targets.
    struct WasiSpans(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for WasiSpans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: Context<'_, S>,
        ) {
            if attrs.metadata().target().starts_with("wasmtime_wasi") {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The bundled hello (one `fd_write`), run in process on this thread.
    fn hello() -> (WasmEngine, Arc<Function>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions");
        let engine = WasmEngine::new(EngineConfig {
            max_instances: 4,
            ..Default::default()
        })
        .unwrap();
        let registry = Registry::new(engine.clone(), RegistryConfig::new(dir.clone())).unwrap();
        let function = registry.load_path(&dir.join("hello.wat")).unwrap();
        (engine, function)
    }

    /// wasmtime-wasi spans opened while hello runs once under `filter`.
    fn spans_of_one_call(filter: tracing_subscriber::EnvFilter) -> usize {
        let (engine, function) = hello();
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(WasiSpans(count.clone()));
        let outcome = tracing::subscriber::with_default(subscriber, || {
            let invocation = Invocation {
                argv: vec!["hello".into()],
                stdio: Stdio::Captured {
                    stdin: Bytes::new(),
                    stdout_cap: 1 << 10,
                    stderr_cap: 1 << 10,
                },
                memory_cap: 16 << 20,
                timeout: Duration::from_secs(30),
                throttle: None,
                env: Vec::new(),
                cpu_budget: None,
            };
            sandbox::invoke(&engine, &function, invocation, &CancelToken::default())
        });
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(&outcome.stdout[..], b"Hello from wasmbox!\n");
        count.load(Ordering::Relaxed)
    }

    #[test]
    fn a_host_call_opens_no_span_at_the_default_level() {
        // The filter as tracing_subscriber reads it alone: the span is built.
        let plain = spans_of_one_call(tracing_subscriber::EnvFilter::new("info"));
        assert!(plain >= 1, "hello's fd_write opened {plain} spans");
        for level in ["info", "debug", "info,wasmbox=trace"] {
            let (f, problem) = filter(level, "info");
            assert_eq!(problem, None);
            assert_eq!(spans_of_one_call(f), 0, "under '{level}'");
        }
    }

    #[test]
    fn a_filter_that_names_wasmtime_wasi_keeps_its_spans() {
        for level in ["info,wasmtime_wasi=info", "warn,wasmtime_wasi::p1=trace"] {
            let (f, _) = filter(level, "info");
            assert!(spans_of_one_call(f) >= 1, "under '{level}'");
        }
    }

    #[test]
    fn only_a_directive_whose_target_covers_the_spans_names_them() {
        use super::names_wasi_p1;
        for named in [
            "wasmtime_wasi=debug",
            "info,wasmtime_wasi::p1=info",
            "wasmtime=trace",
            "warn, wasmtime_wasi::p1::wasi_snapshot_preview1[fd_write]=info",
        ] {
            assert!(names_wasi_p1(named), "{named}");
        }
        for not in [
            "info",
            "debug",
            "info,wasmtime_wasi_http=debug",
            "wasmbox=trace",
            "[span]=info",
        ] {
            assert!(!names_wasi_p1(not), "{not}");
        }
    }

    #[test]
    fn an_invalid_filter_falls_back_and_says_so() {
        let (f, problem) = filter("info,=[", "warn");
        let problem = problem.expect("a message");
        assert!(
            problem.contains("'info,=['") && problem.contains("using warn"),
            "{problem}"
        );
        assert_eq!(spans_of_one_call(f), 0);
    }
}
