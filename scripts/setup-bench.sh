#!/usr/bin/env bash
# Installs the peers the benchmark harness compares against.
set -euo pipefail
