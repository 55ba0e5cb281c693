//! The same wasi:http hello component (functions/rust/hellohttp, built by
//! functions/build.sh into functions/hellohttp.wasm) served by wasmbox, to
//! set against `wasmtime serve` of that very file: like for like, where the
//! `hello` row compares a preview-1 module in wasmbox with the component.

use std::sync::Arc;

use crate::load::{Expect, HttpTarget};

/// The function name wasmbox serves the component as.
pub(crate) const PATH: &str = "/hellohttp";

/// wasmbox's `/hellohttp` on `port`, at cpu_quota 1000 and 64 MB, answering
/// the 20 bytes of `Hello from wasmbox!\n`.
pub(crate) fn target(port: u16) -> HttpTarget {
    HttpTarget {
        port,
        path: PATH.into(),
        resources: Arc::new(|_| (1000, 64)),
        expect: Expect::Len(20),
    }
}
