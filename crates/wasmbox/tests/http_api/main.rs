//! The HTTP API end to end: a real server on loopback, real compiled guests,
//! one test per row of the README's status table and then some.

#[path = "../common/mod.rs"]
mod common;

use bytes::Bytes;
use common::TestServer;
use hyper::Method;

const ALL: &[&str] = &[
    "hello.wat",
    "echo.wasm",
    "memhog.wasm",
    "spin.wasm",
    "exitcode.wasm",
    "wc.wasm",
];

mod loading;
mod prewarm;
mod serving;
mod statuses;
