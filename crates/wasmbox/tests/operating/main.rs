//! Operating many tenants (issue 15), against a real server over real HTTP
//! with real wasmtime and guests built from `functions/`:
//! - `api`: the deploy API on the admin listener (token, deploy, replace
//!   under load, refusals, If-Match, delete, read-only directory, listing);
//! - `manifest`: per-function configuration (env, args, ceilings,
//!   defaults, CPU budget, broken manifests);
//! - `usage`: per-function usage accounting (figures against what a guest
//!   does, client-gone, access log, request ids);
//! - `client`: the `wasmbox deploy` / `wasmbox functions` CLI against a
//!   live server.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod client;
mod helpers;
mod manifest;
mod usage;
