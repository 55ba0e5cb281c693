#!/usr/bin/env bash
# Builds the guest functions into this directory (functions/*.wasm), next to
# hello.wat. Needs the wasm32-wasip1 Rust target and, for the C guest, clang,
# lld and wasi-libc (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip1 --quiet
for g in echo memhog spin exitcode jsoncompress scryptwork rsakeygen imageblur genpdf; do
  cp "target/wasm32-wasip1/release/$g.wasm" "$g.wasm"
done
clang --target=wasm32-wasi -O2 -fuse-ld=lld c/wc.c -o wc.wasm
echo "built: $(ls *.wasm | tr '\n' ' ')"
