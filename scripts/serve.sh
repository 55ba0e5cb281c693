#!/usr/bin/env bash
# Sets up a fresh machine, builds the guest functions and serves them on
# 0.0.0.0:${PORT:-8080}. Extra arguments go to `wasmbox serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./functions/build.sh
exec cargo run --release --locked --bin wasmbox -- serve "$@"
