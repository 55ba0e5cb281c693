#!/usr/bin/env bash
# Installs what a fresh machine lacks to build wasmbox and its guests:
# the wasm32-wasip1 Rust target, and clang + lld + wasi-libc for the C guest.
# Idempotent; skips what is already there.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi

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
