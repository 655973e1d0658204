#!/usr/bin/env bash
# Prints the path of a uv to run, installing one first where the machine has none.
# Usage: uv=$(bash scripts/uv.sh)   (everything but the path goes to stderr)
set -euo pipefail
if command -v uv >/dev/null 2>&1; then
  command -v uv
  exit 0
fi
# uv in a virtualenv of its own: Debian 12's and Ubuntu's Python refuse pip installs outside
# one (PEP 668, "externally-managed-environment"), --user ones too. Outside the checkout, so
# every clone shares it; a half-made one (pip failed) is made again.
tools="${XDG_DATA_HOME:-$HOME/.local/share}/anyvirt/uv"
if [ ! -x "$tools/bin/uv" ]; then
  python3 -m venv --clear "$tools" >&2 || {
    echo "could not make a virtualenv for uv; as root: apt-get install -y python3-venv" >&2
    exit 1
  }
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check uv >&2
fi
echo "$tools/bin/uv"
