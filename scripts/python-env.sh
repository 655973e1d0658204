#!/usr/bin/env bash
# Creates/updates the project's virtualenv (.venv) with uv, idempotently.
# Usage: scripts/python-env.sh [all|core]
#   all:  anyvirt + every backend + dev tools (needs libvirt-dev to compile libvirt-python)
#   core: anyvirt + dev tools only
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
uv=$(bash scripts/uv.sh)
export UV_PYTHON_DOWNLOADS=never   # use the machine's Python 3.11+; never fetch one
# the real interpreter, not a shim (pyenv): uv recreates a venv whose interpreter path differs,
# which would pull the environment from under tests running beside this (the tour test)
python=$(python3 -c "import sys; print(sys.executable)")
if [ "$mode" = all ]; then
  "$uv" sync --quiet --all-packages --python "$python"
else
  "$uv" sync --quiet --python "$python"
fi
