#!/usr/bin/env bash
# Installs what the deployment tests need (filled in by the deployment work).
set -euo pipefail
