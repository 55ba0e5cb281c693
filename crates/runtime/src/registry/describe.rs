//! What the function listing says of each file: a core module or a
//! component, and for a component the world it serves, read from its
//! header and its exports without compiling it.

use std::io::Read;
use std::path::Path;

use wasmparser::{Parser, Payload};

use super::compiled::precompiled_kind;
use super::Registry;
use crate::component::World;
use crate::names::FunctionName;

/// One file of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The file name.
    pub name: String,
    /// `module`, `component`, or `unknown` (unreadable or not WebAssembly).
    pub kind: &'static str,
    /// For a component: `wasi:cli/command` or `wasi:http/proxy` (or `None`
    /// when it exports neither, or for precompiled code).
    pub world: Option<&'static str>,
}

impl Registry {
    /// Every invocable file with its kind and world (on the file system
    /// pool; each file read up to `--max-module-mb`).
    pub async fn describe(&self) -> std::io::Result<Vec<Description>> {
        let dir = self.config.dir.clone();
        let limit = self.config.compile.max_module_bytes;
        self.fs
            .run(move || {
                let names = super::resolve::list(&dir, |name| {
                    FunctionName::validate(name.to_string()).is_ok()
                })?;
                Ok(names
                    .into_iter()
                    .map(|name| {
                        let (kind, world) = describe_file(&dir.join(&name), limit);
                        Description { name, kind, world }
                    })
                    .collect())
            })
            .await
            .map_err(std::io::Error::other)?
    }
}

fn describe_file(path: &Path, limit: u64) -> (&'static str, Option<&'static str>) {
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes));
    if read.is_err() {
        return ("unknown", None);
    }
    if let Some(kind) = precompiled_kind(&bytes) {
        return match kind {
            wasmtime::Precompiled::Module => ("module", None),
            wasmtime::Precompiled::Component => ("component", None),
        };
    }
    let Ok(wasm) = wat::parse_bytes(&bytes) else {
        return ("unknown", None);
    };
    if Parser::is_core_wasm(&wasm) {
        return ("module", None);
    }
    if !Parser::is_component(&wasm) {
        return ("unknown", None);
    }
    ("component", world_of(&wasm).map(World::as_str))
}

/// The world a component's own (outermost) exports say it serves.
fn world_of(wasm: &[u8]) -> Option<World> {
    let (mut depth, mut command, mut http) = (0usize, false, false);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    let export = export.ok()?;
                    let name = export.name.name;
                    let is = |i: &str| name == i || name.starts_with(&format!("{i}@"));
                    http |= is("wasi:http/incoming-handler");
                    command |= is("wasi:cli/run");
                }
            }
            _ => {}
        }
    }
    if http {
        Some(World::HttpHandler)
    } else if command {
        Some(World::Command)
    } else {
        None
    }
}
