#!/usr/bin/env bash
# Sets up a fresh machine (Rust wasm target, C guest toolchain), builds the
# guest functions from source, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-components.sh
./functions/build.sh
# The lint gate: formatting, and clippy with warnings as errors.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
