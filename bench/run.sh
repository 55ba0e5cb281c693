#!/usr/bin/env bash
# One command for every benchmark: installs the peers (the wasmtime CLI),
# builds the guests (Wasm, native, the wasi:http component) and the release
# binaries, then runs core, isolation, admission and compare. Results:
# bench/results/*.md and bench/results/plots/*.svg.
#   ./bench/run.sh            the full run (about 15 minutes on 2 cores)
#   ./bench/run.sh --quick    compare in under 3 minutes (+ quick others)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-bench.sh
./functions/build.sh
cargo build --release --locked -p wasmbox -p wasmbox-bench
exec target/release/wasmbox-bench all "$@"
