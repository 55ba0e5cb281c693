//! The wasmbox server: configuration, HTTP routes, the serve loop and the
//! `run`/`compile` subcommands. The Wasm side lives in `wasmbox-runtime`.
#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod http;
pub mod server;
