#!/usr/bin/env bash
# Installs the tools that build the Python and JavaScript component guests
# (idempotent): componentize-py (PyPI) in functions/.tools/venv, and
# componentize-js (npm, pinned in functions/js/package-lock.json) in
# functions/js/node_modules. Needs python3 (with venv) and node/npm; installs
# them with apt-get when missing and possible.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPONENTIZE_PY=0.25.1

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else
    echo "setup-components: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

venv=functions/.tools/venv
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY"
fi

if [ ! -x functions/js/node_modules/.bin/componentize-js ]; then
  (cd functions/js && npm ci --no-audit --no-fund --silent)
fi
echo "setup-components: componentize-py $("$venv/bin/componentize-py" --version | tr -d '\n'), componentize-js $(cd functions/js && node -p "require('./node_modules/@bytecodealliance/componentize-js/package.json').version")"
