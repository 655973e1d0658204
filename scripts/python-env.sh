#!/usr/bin/env bash
# Creates/updates the project's virtualenv (.venv) with uv, idempotently.
# Usage: scripts/python-env.sh [all|core]
#   all:  anyvirt + every backend + dev tools (needs libvirt-dev to compile libvirt-python)
#   core: anyvirt + dev tools only
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
if ! command -v uv >/dev/null 2>&1; then
  # uv in a virtualenv of its own: Debian 12's and Ubuntu's Python refuse pip installs
  # outside one (PEP 668, "externally-managed-environment"), --user ones too
  tools="${XDG_DATA_HOME:-$HOME/.local/share}/anyvirt/uv"
  if [ ! -x "$tools/bin/uv" ]; then
    python3 -m venv --clear "$tools" || {
      echo "creating a virtualenv for uv failed; as root: apt-get install -y python3-venv" >&2
      exit 1
    }
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check uv
  fi
  export PATH="$tools/bin:$PATH"
fi
export UV_PYTHON_DOWNLOADS=never   # use the machine's Python 3.11+; never fetch one
# the real interpreter, not a shim (pyenv): uv recreates a venv whose interpreter path differs,
# which would pull the environment from under tests running beside this (the tour test)
python=$(python3 -c "import sys; print(sys.executable)")
if [ "$mode" = all ]; then
  uv sync --quiet --all-packages --python "$python"
else
  uv sync --quiet --python "$python"
fi
