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
# The static build's memcpy and memmove exist only for musl: test them there,
# as the binaries link them (debug and optimised).
cargo clippy -p wasmbox-memcopy --all-targets --target x86_64-unknown-linux-musl --locked -- -D warnings
cargo test -p wasmbox-memcopy --target x86_64-unknown-linux-musl --locked
cargo test -p wasmbox-memcopy --target x86_64-unknown-linux-musl --release --locked
