#!/usr/bin/env bash
# Installs what a fresh machine lacks to build wasmbox and its guests:
# the wasm32-wasip1 and wasm32-wasip2 Rust targets, and clang + lld + wasi-libc for the C guest.
# Idempotent; skips what is already there.
set -euo pipefail

# The toolchain rust-toolchain.toml pins, with its targets and components:
# rustup installs it on first use unless RUSTUP_AUTO_INSTALL=0 (set on some
# machines), so install it explicitly.
if ! rustup toolchain list | grep -q "^$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)-"; then
  rustup toolchain install
fi

# wasm32-wasip1 for the guests; wasm32-wasip2 for the benchmark's wasi:http
# component (functions/rust/hellohttp).
for t in wasm32-wasip1 wasm32-wasip2; do
  if ! rustup target list --installed | grep -qx "$t"; then
    rustup target add "$t"
  fi
done

# rustfmt and clippy for the lint gate in scripts/test.sh.
for c in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
    rustup component add "$c"
  fi
done

need=()
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || command -v wasm-ld-14 >/dev/null || need+=(lld)
dpkg -s wasi-libc >/dev/null 2>&1 || need+=(wasi-libc)
dpkg -s libclang-rt-14-dev-wasm32 >/dev/null 2>&1 || need+=(libclang-rt-14-dev-wasm32)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
