#!/usr/bin/env bash
# Builds the guest functions into this directory (functions/*.wasm), next to
# hello.wat. Needs the wasm32-wasip1 Rust target and, for the C guest, clang,
# lld and wasi-libc (scripts/setup.sh installs them), and, for the
# components (cli-*.wasm, httpkit, hellohttp),
# the wasm32-wasip2 target.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip1 --quiet
for g in echo memhog spin sleep exitcode jsoncompress scryptwork rsakeygen imageblur genpdf; do
  cp "target/wasm32-wasip1/release/$g.wasm" "$g.wasm"
done
clang --target=wasm32-wasi -O2 -fuse-ld=lld c/wc.c -o wc.wasm

# WASI 0.2 components (wasm32-wasip2). wasi:cli commands: the same guests
# built for wasip2 (Rust's std makes a command component of a binary), served
# as cli-NAME. wasi:http handlers: httpkit (the tests' handler) and hellohttp.
cli=(echo memhog spin sleep exitcode)
cargo build --release --target wasm32-wasip2 --quiet $(printf -- '-p %s ' "${cli[@]}") -p httpkit -p hellohttp
for g in "${cli[@]}"; do
  cp "target/wasm32-wasip2/release/$g.wasm" "cli-$g.wasm"
done
cp target/wasm32-wasip2/release/httpkit.wasm httpkit.wasm
cp target/wasm32-wasip2/release/hellohttp.wasm hellohttp.wasm
echo "built: $(ls *.wasm | tr '\n' ' ')"

# For the benchmark harness (bench/): the five workloads as native programs
# (functions/native/), and hello as a wasi:http component for `wasmtime
# serve` (functions/peers/). Neither is served by wasmbox.
workloads=(jsoncompress scryptwork rsakeygen imageblur genpdf)
cargo build --release --quiet $(printf -- '-p %s ' "${workloads[@]}")
mkdir -p native peers
for g in "${workloads[@]}"; do
  cp "target/release/$g" "native/$g"
done
cp hellohttp.wasm peers/hellohttp.wasm
echo "built for the benchmark: native/{$(IFS=,; echo "${workloads[*]}")} peers/hellohttp.wasm"
