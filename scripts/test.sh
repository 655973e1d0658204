#!/usr/bin/env bash
# The test command: installs what it needs, then lint, types, docs and the whole test suite.
# Safe to run again. Real testbeds (libvirtd, vcsim) are started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh test
bash scripts/python-env.sh all
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== docs"; site=$(mktemp -d); .venv/bin/mkdocs build --strict --quiet -d "$site"; rm -rf "$site"
echo "== pytest"; .venv/bin/pytest "$@"
