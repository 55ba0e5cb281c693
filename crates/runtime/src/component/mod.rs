//! WASI 0.2 components as functions.
//!
//! A component is linked once against WASI 0.2 and wasi:http
//! ([`host::linker`]) and pre-instantiated for the world it serves, which is
//! read from its exports:
//! - `wasi:http/incoming-handler`: an HTTP handler ([`World::HttpHandler`]),
//!   run by [`http`] with the request as a wasi:http request;
//! - `wasi:cli/run`: a command ([`World::Command`]), run by [`command`] with
//!   the same contract as a preview-1 command (argv, stdin, stdout, exit
//!   status).
//!
//! Both run on the worker threads exactly like modules ([`crate::sandbox`]
//! dispatches here): the same memory cap (over all of the instance's
//! memories), CPU slot, deadline and stop signals ([`guard`]).

pub mod command;
pub mod guard;
pub mod host;
pub mod http;
pub mod outbound;

use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::function::Code;
use host::ComponentHost;

/// Which world a component serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// Exports `wasi:cli/run`.
    Command,
    /// Exports `wasi:http/incoming-handler`.
    HttpHandler,
}

impl World {
    /// The name `/-/functions` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Command => "wasi:cli/command",
            World::HttpHandler => "wasi:http/proxy",
        }
    }
}

/// Links `component` and pre-instantiates it for the world it exports (an
/// HTTP handler first, when it exports both). The error says what is
/// missing.
pub fn link(linker: &Linker<ComponentHost>, component: &Component) -> Result<Code, String> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("{e:#}"))?;
    if let Ok(proxy) = ProxyPre::new(pre.clone()) {
        return Ok(Code::Http(proxy));
    }
    CommandPre::new(pre).map(Code::Command).map_err(|_| {
        "the component exports neither wasi:cli/run (a command) nor wasi:http/incoming-handler (an HTTP handler)"
            .to_string()
    })
}
