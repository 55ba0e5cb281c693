#!/usr/bin/env bash
# One command for every benchmark: installs the peers (the wasmtime CLI),
# builds the guests (Wasm, native, the wasi:http component) and the release
# binaries, then runs core, isolation, admission, guest-build and compare,
# then the tenant scenarios (containment, trace). Results:
# bench/results/*.md and bench/results/plots/*.svg.
#   ./bench/run.sh            the full run (about 21 minutes on 2 cores)
#   ./bench/run.sh --quick    compare in under 3 minutes (+ quick others;
#                             containment ~1 minute, trace ~2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-bench.sh
./functions/build.sh
cargo build --release --locked -p wasmbox -p wasmbox-bench
target/release/wasmbox-bench all "$@"
target/release/wasmbox-bench containment "$@"
target/release/wasmbox-bench trace "$@"
