//! The tracing filter the binary installs, from `--log-level`/`LOG_LEVEL`.
//!
//! wasmtime-wasi opens an INFO span around every WASI preview-1 host call
//! a guest makes (`#[instrument]` in its `p1` module, target
//! `wasmtime_wasi::p1`), formatting the call's arguments into it. No line
//! the server prints carries those spans, yet at the default level each
//! one is built, formatted, entered and dropped on the worker: a Rust
//! guest's few host calls per invocation cost several microseconds. They
//! are dropped unless a directive of the filter could match them (it names
//! their target or a prefix of it, or filters on span names); nothing else
//! the filter enables changes, events of that target included.

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::layer::Layer;
use tracing_subscriber::EnvFilter;

/// wasmtime-wasi's preview-1 host calls' spans (`module_path!()`).
const WASI_P1_TARGET: &str = "wasmtime_wasi::p1";

/// The filter for `level` (a `tracing_subscriber` filter string: a level,
/// or directives such as `info,wasmbox=debug`), `default` when `level` is
/// not a valid filter (with a message saying so), as a layer to put
/// beneath the formatting one.
pub fn filter<S>(level: &str, default: &str) -> (impl Layer<S> + Send + Sync, Option<String>)
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let (spec, env, problem) = match EnvFilter::try_new(level) {
        Ok(env) => (level, env, None),
        Err(_) => (
            default,
            EnvFilter::new(default),
            Some(format!(
                "LOG_LEVEL/--log-level '{level}' is not a valid filter; using {default}"
            )),
        ),
    };
    let keep_wasi_spans = names_wasi_p1(spec);
    let wasi_spans = FilterFn::new(move |meta: &Metadata<'_>| {
        keep_wasi_spans
            || !(meta.is_span() && *meta.level() == Level::INFO && meta.target() == WASI_P1_TARGET)
    });
    (env.and_then(wasi_spans), problem)
}

/// Whether a directive of `spec` could match wasmtime-wasi's preview-1
/// spans: its target is a prefix of theirs (a directive's target matches
/// every target it begins: `wasmtime_wasi=debug`, `wasmtime=trace`,
/// `wasmtime_wasi[fd_write]=debug`), or it filters on span names of every
/// target (`[fd_write]=info`), which needs the spans built. A bare level
/// (`debug`) does not.
fn names_wasi_p1(spec: &str) -> bool {
    spec.split(',').any(|directive| {
        let (lhs, _level) = directive.split_once('=').unwrap_or((directive, ""));
        if lhs.parse::<LevelFilter>().is_ok() {
            return false;
        }
        let (target, spans) = match lhs.split_once('[') {
            Some((target, _)) => (target, true),
            None => (lhs, false),
        };
        // A span filter with no target looks at every target's spans.
        if target.is_empty() {
            spans
        } else {
            WASI_P1_TARGET.starts_with(target)
        }
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

    use super::{filter, names_wasi_p1};

    /// Counts the INFO spans opened under wasmtime-wasi's targets (under
    /// `trace`, wiggle's TRACE span around each call is the filter's to
    /// keep), and the events of the preview-1 target that reach it.
    #[derive(Default, Clone)]
    struct Seen {
        spans: Arc<AtomicUsize>,
        events: Arc<AtomicUsize>,
    }

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: Context<'_, S>,
        ) {
            let meta = attrs.metadata();
            if *meta.level() == tracing::Level::INFO && meta.target().starts_with("wasmtime_wasi") {
                self.spans.fetch_add(1, Ordering::Relaxed);
            }
        }

        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == super::WASI_P1_TARGET {
                self.events.fetch_add(1, Ordering::Relaxed);
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

    /// wasmtime-wasi INFO spans opened while hello runs once under `layer`.
    fn spans_of_one_call<L>(layer: L) -> usize
    where
        L: Layer<tracing_subscriber::Registry> + Send + Sync,
    {
        let (engine, function) = hello();
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(seen.clone());
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
        seen.spans.load(Ordering::Relaxed)
    }

    #[test]
    fn a_host_call_opens_no_span_at_the_default_level() {
        // The filter as tracing_subscriber reads it alone: the span is built.
        let plain = spans_of_one_call(tracing_subscriber::EnvFilter::new("info"));
        assert!(plain >= 1, "hello's fd_write opened {plain} spans");
        for level in ["info", "debug", "trace", "info,wasmbox=trace"] {
            let (f, problem) = filter(level, "info");
            assert_eq!(problem, None);
            assert_eq!(spans_of_one_call(f), 0, "under '{level}'");
        }
    }

    #[test]
    fn a_filter_that_could_match_the_spans_keeps_them() {
        for level in [
            "info,wasmtime_wasi=info",
            "warn,wasmtime_wasi::p1=info",
            "wasmtime=trace",
            "info,[fd_write]=debug",
        ] {
            let (f, problem) = filter(level, "info");
            assert_eq!(problem, None, "'{level}' is a valid filter");
            assert!(spans_of_one_call(f) >= 1, "under '{level}'");
        }
    }

    #[test]
    fn only_a_directive_that_could_match_the_spans_names_them() {
        for named in [
            "wasmtime_wasi=debug",
            "info,wasmtime_wasi::p1=info",
            "wasmtime=trace",
            "wasmtime_wasi",
            "info,[fd_write]=debug",
            "wasmtime_wasi[fd_write]=debug",
        ] {
            assert!(names_wasi_p1(named), "{named}");
        }
        for not in [
            "",
            "info",
            "DEBUG",
            "3",
            "off",
            "info,wasmtime_wasi_http=debug",
            "wasmtime_wasi::p1::wasi_snapshot_preview1=trace",
            "wasmbox=trace",
            "wasmbox[request]=debug",
        ] {
            assert!(!names_wasi_p1(not), "{not}");
        }
    }

    /// Only the INFO spans go: the target's events pass as the filter
    /// says, and a quiet filter stays as quiet (the layer enables nothing
    /// the filter does not).
    #[test]
    fn events_and_quiet_levels_are_left_as_the_filter_says() {
        let count = |level: &str| {
            let seen = Seen::default();
            let (f, _) = filter(level, "info");
            let subscriber = tracing_subscriber::registry().with(f).with(seen.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(target: "wasmtime_wasi::p1", "a warning");
                tracing::info!(target: "wasmtime_wasi::p1", "a note");
            });
            seen.events.load(Ordering::Relaxed)
        };
        assert_eq!(count("info"), 2);
        assert_eq!(count("warn"), 1);
        assert_eq!(count("error"), 0);
        assert_eq!(count("off"), 0);
    }

    #[test]
    fn an_invalid_filter_falls_back_and_says_so() {
        let (f, problem) = filter("info,=[", "info");
        let problem = problem.expect("a message");
        assert!(
            problem.contains("'info,=['") && problem.contains("using info"),
            "{problem}"
        );
        assert_eq!(spans_of_one_call(f), 0);
    }
}
