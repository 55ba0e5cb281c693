use std::process::ExitCode;

// mimalloc: +10-20 % invocations/s over glibc malloc in bench/results/core.md runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
// The static musl build's memcpy and memmove: musl's cost a guest's
// memory.copy and every buffer copy tens of cycles each (crates/memcopy).
use wasmbox_memcopy as _;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use wasmbox::config::{Cli, Command};
use wasmbox::server::{shutdown_signal, Server};

/// Makes mimalloc give freed memory back to the OS at once. By default it
/// purges freed pages 10 ms later, but only when the freeing thread next
/// allocates, so memory freed by a tokio worker that then goes idle (a burst
/// of large request bodies) stayed resident (v3's default delay is 1 s). In
/// a burst of 200 4-MB POSTs, 32 at a time, to a debug build with 16
/// workers: RSS went 98 -> 194 MiB and was 163 MiB 5 s later (another run:
/// 102 -> 184 -> 184); with these settings 84 -> 125 -> 125 and 86 -> 122 ->
/// 117, the rest being the 16 instance slots' kept-resident 2 MiB each.
/// Arenas are also committed lazily, on use.
#[allow(unsafe_code)]
fn return_freed_memory_promptly() {
    // mimalloc v3's `mi_option_e` (include/mimalloc.h) values.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting two integer options; no memory is handed over, and
    // mimalloc reads options at each decision, so setting them while it is
    // in use is supported (it is what `mi_option_set` is for).
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let from_env = wasmbox::config::env_source_of(&e);
        let _ = e.print();
        if let Some(name) = from_env {
            eprintln!("(the value came from the environment variable {name})");
        }
        std::process::exit(e.exit_code());
    });
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    let (filter, problem) = wasmbox::logging::filter(level, default_level);
    if let Some(problem) = problem {
        eprintln!("wasmbox: {problem}");
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();

    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Run(args) => wasmbox::commands::run(args),
        Command::Compile(args) => wasmbox::commands::compile(args),
        Command::CompileChild(args) => Ok(wasmbox::commands::compile_child(args)),
        Command::Deploy(args) => Ok(wasmbox::cli::deploy(args)),
        Command::Functions(args) => Ok(wasmbox::cli::functions(args)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("wasmbox: {e:#}");
        ExitCode::FAILURE
    })
}

fn serve(args: wasmbox::config::ServeArgs) -> anyhow::Result<ExitCode> {
    let vars = std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    let (read, problems) = wasmbox::config::check_environment(vars);
    if args.check_config {
        return Ok(check_config(&args, &read, &problems));
    }
    for p in &problems {
        tracing::warn!("{p}");
    }
    let config = args.resolve()?;
    // The token has been read; no child process or /proc/self/environ
    // reader needs to see it. (Still one thread here.)
    std::env::remove_var(wasmbox::config::ENV_ADMIN_TOKEN);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = Server::bind(config).await?;
        server.run(shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `serve --check-config`: the resolved settings and the environment they
/// came from on stdout; each problem on stderr; exit 1 if there is any.
fn check_config(
    args: &wasmbox::config::ServeArgs,
    read: &[(String, String, String)],
    problems: &[String],
) -> ExitCode {
    let mut ok = problems.is_empty();
    for p in problems {
        eprintln!("wasmbox: {p}");
    }
    match args.resolve() {
        Ok(config) => {
            print!("{}", config.describe());
            println!("environment read:");
            for (name, value, flag) in read {
                println!("  {name}={value} ({flag})");
            }
        }
        Err(e) => {
            eprintln!("wasmbox: invalid configuration: {e}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
