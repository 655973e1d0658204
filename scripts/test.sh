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
echo "== pytest"
if [ "$#" -gt 0 ]; then exec .venv/bin/pytest "$@"; fi
# Two lanes on the two cores: the libvirt backend's tests mostly wait on real guests
# booting and shutting down, and the Ansible playbooks on ansible-playbook's processes, so
# they run beside the rest. Each lane ends with its own summary; the second lane's is
# printed last.
lane=$(mktemp)
.venv/bin/pytest backends/libvirt tests/ansible >"$lane" 2>&1 &
libvirt_lane=$!
status=0
.venv/bin/pytest --ignore=backends/libvirt --ignore=tests/ansible || status=$?
wait "$libvirt_lane" || status=$?
echo "== pytest backends/libvirt tests/ansible"; cat "$lane"; rm -f "$lane"
exit "$status"
