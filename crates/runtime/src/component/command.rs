//! Running a wasi:cli command component: the preview-1 contract (argv,
//! stdin, stdout, exit status), through `wasi:cli/run`.

use std::time::Instant;

use wasmtime_wasi::p2::bindings::CommandPre;

use wasmbox_isolation::thread_cpu_time;

use super::guard::{classify, stop_failure, Signals};
use super::host::ComponentHost;
use crate::engine::WasmEngine;
use crate::function::Function;
use crate::sandbox::{wasi_builder, Failure, Invocation, Outcome, Timings};

/// Runs the command once with `inv`.
pub(crate) async fn run(
    engine: &WasmEngine,
    function: &Function,
    pre: &CommandPre<ComponentHost>,
    inv: Invocation,
    signals: Signals,
) -> Outcome {
    let (mut builder, stdout, stderr) = match wasi_builder(&inv, "a wasi:cli command") {
        Ok(b) => b,
        Err(refused) => return Outcome::not_run(refused),
    };
    let mut store = ComponentHost::store(engine, function, builder.build(), &inv, signals.deadline);
    signals.arm(&mut store);
    let start = Instant::now();
    let cpu_start = signals.cpu_start;
    let mut instantiated = None;
    let ran = {
        let store = &mut store;
        let instantiated = &mut instantiated;
        signals
            .race(async move {
                let command = pre.instantiate_async(&mut *store).await?;
                *instantiated = Some(Instant::now());
                command.wasi_cli_run().call_run(&mut *store).await
            })
            .await
    };
    let end = Instant::now();
    let mut timings = Timings::default();
    if let Some(at) = instantiated {
        timings.instantiate = at - start;
        timings.execute = end - at;
    }
    let result = match ran {
        Ok(Ok(Ok(()))) => Ok(()),
        // `run` returned its error result: exit status 1, as a preview-1
        // command's `main` returning an error.
        Ok(Ok(Err(()))) => Err(Failure::Exit(1)),
        Ok(Err(e)) => match classify(
            store.data(),
            e,
            stdout.as_ref(),
            (inv.timeout, inv.cpu_budget),
        ) {
            None => Ok(()),
            Some(f) => Err(f),
        },
        Err(stop) => {
            store.data_mut().stopped = Some(stop);
            Err(stop_failure(stop, (inv.timeout, inv.cpu_budget)))
        }
    };
    timings.cpu = thread_cpu_time().saturating_sub(cpu_start);
    Outcome {
        result,
        stdout: stdout.map(|c| c.take()).unwrap_or_default(),
        stderr: stderr.map(|c| c.take()).unwrap_or_default(),
        timings,
        peak_memory: store.data().limits.peak,
    }
}
