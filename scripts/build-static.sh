#!/usr/bin/env bash
# The static release build the container image ships: x86_64 musl, stripped
# (the release profile keeps line tables for profiling: a 127 MB binary; the
# image needs none of them: 20 MB). Arguments go to `cargo build`, e.g.
# `-p wasmbox`. scripts/deploy-image.sh and the tests that run release
# binaries (crates/wasmbox/tests/deploy, bench/tests) all build through
# here, so one test run compiles wasmtime in release once.
set -euo pipefail
cd "$(dirname "$0")/.."
# A test calls this with its own package's CARGO_PKG_*, CARGO_MANIFEST_*...
# in the environment. Build scripts that read them (ring's) would otherwise
# run again, and everything above them rebuild, for each calling package.
while IFS= read -r var; do
  case "$var" in
    CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_PRIMARY_PACKAGE | CARGO_BIN_NAME | CARGO_TARGET_TMPDIR)
      unset "$var" ;;
  esac
done < <(compgen -e)
CARGO_PROFILE_RELEASE_STRIP=symbols \
  exec cargo build --release --locked --target x86_64-unknown-linux-musl "$@"
