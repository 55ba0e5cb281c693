//! The wasmbox server: configuration, HTTP routes, the serve loop and the
//! `run`/`compile` subcommands. The Wasm side lives in `wasmbox-runtime`.
#![forbid(unsafe_code)]

pub mod accounting;
pub mod admin_listener;
pub mod cli;
pub mod commands;
pub mod config;
pub mod health;
pub mod host;
pub mod http;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod reporter;
pub mod server;
