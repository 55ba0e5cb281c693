#!/usr/bin/env bash
# Builds the guest functions into this directory (functions/*.wasm), next to
# hello.wat. Needs the wasm32-wasip1 Rust target and, for the C guest, clang,
# lld and wasi-libc (scripts/setup.sh installs them), and, for the
# components (cli-*.wasm, httpkit, hellohttp),
# the wasm32-wasip2 target.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip1 --quiet
for g in echo memhog spin sleep exitcode probe jsoncompress scryptwork rsakeygen imageblur genpdf; do
  cp "target/wasm32-wasip1/release/$g.wasm" "$g.wasm"
done
clang --target=wasm32-wasi -O2 -fuse-ld=lld c/wc.c -o wc.wasm

# WASI 0.2 components (wasm32-wasip2). wasi:cli commands: the same guests
# built for wasip2 (Rust's std makes a command component of a binary), served
# as cli-NAME. wasi:http handlers: httpkit (the tests' handler) and hellohttp.
cli=(echo memhog spin sleep exitcode probe)
cargo build --release --target wasm32-wasip2 --quiet $(printf -- '-p %s ' "${cli[@]}") -p httpkit -p hellohttp
for g in "${cli[@]}"; do
  cp "target/wasm32-wasip2/release/$g.wasm" "cli-$g.wasm"
done
cp target/wasm32-wasip2/release/httpkit.wasm httpkit.wasm
cp target/wasm32-wasip2/release/hellohttp.wasm hellohttp.wasm

# wasi:http handlers in Python and JavaScript, with the tools
# scripts/setup-components.sh installs (rebuilt when their source, the WIT
# or the tool is newer than the output; each takes about a minute).
stale() { local out=$1; shift; [ ! -e "$out" ] || [ -n "$(find "$@" -newer "$out" -print -quit)" ]; }
if [ -x .tools/venv/bin/componentize-py ]; then
  if stale pyhello.wasm python wit .tools/venv/bin/componentize-py; then
    .tools/venv/bin/componentize-py -d wit -w http-handler componentize -p python app -o pyhello.wasm
  fi
else
  echo "build.sh: componentize-py not installed (scripts/setup-components.sh): pyhello.wasm not built" >&2
fi
if [ -x js/node_modules/.bin/componentize-js ]; then
  if stale jshello.wasm js/hello.js wit js/package-lock.json; then
    (cd js && ./node_modules/.bin/componentize-js hello.js -w ../wit -n http-handler -o ../jshello.wasm)
  fi
else
  echo "build.sh: componentize-js not installed (scripts/setup-components.sh): jshello.wasm not built" >&2
fi
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

# Guests built with one setting changed, for `wasmbox-bench guest-build`
# (functions/variants/, not served): echo linked with a 64 KiB stack
# instead of Rust's default 1 MiB, and scryptwork without simd128. RUSTFLAGS
# replaces the flags of .cargo/config.toml; each has its own target dir.
mkdir -p variants
RUSTFLAGS="-C target-feature=+simd128 -C link-arg=-zstack-size=65536" \
  cargo build --release --target wasm32-wasip1 --quiet --target-dir target/stack64k -p echo
cp target/stack64k/wasm32-wasip1/release/echo.wasm variants/echo-stack64k.wasm
RUSTFLAGS="-C target-feature=-simd128" \
  cargo build --release --target wasm32-wasip1 --quiet --target-dir target/nosimd -p scryptwork
cp target/nosimd/wasm32-wasip1/release/scryptwork.wasm variants/scryptwork-nosimd.wasm
echo "built for the benchmark: variants/{echo-stack64k,scryptwork-nosimd}.wasm"
