#!/usr/bin/env bash
# Installs the peers the benchmark harness (bench/, `wasmbox-bench compare`)
# compares wasmbox with: the wasmtime CLI 50.0.1, the same wasmtime version
# wasmbox embeds (`wasmtime run`, `wasmtime serve`, `wasmtime compile`).
# Takes about 7 minutes on 2 cores the first time; idempotent.
set -euo pipefail
want="wasmtime 50.0.1"
have="$( (wasmtime --version || ~/.cargo/bin/wasmtime --version) 2>/dev/null || true)"
if [[ "$have" != "$want"* ]]; then
  cargo install wasmtime-cli@50.0.1 --locked
fi
