#!/usr/bin/env bash
# Builds the wasmbox image from the Containerfile: the static musl binary,
# the bundled functions (if functions/*.wasm are missing), then
# `podman build`. Usage: scripts/deploy-image.sh [TAG] (default wasmbox:latest).
# Needs the x86_64-unknown-linux-musl target, musl-tools and podman
# (scripts/setup-deploy.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-wasmbox:latest}"
./scripts/build-static.sh -p wasmbox
if ! ls functions/*.wasm >/dev/null 2>&1; then
  ./functions/build.sh
fi
podman build -f Containerfile -t "$tag" .
