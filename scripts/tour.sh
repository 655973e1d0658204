#!/usr/bin/env bash
# The main job: the same script across every platform it can reach (examples/tour.py),
# on the local QEMU (embedded libvirt) where it can run, else on memory://.
# Extra arguments are more URIs to tour, e.g. vsphere://user@vc?verify=false.
set -euo pipefail
cd "$(dirname "$0")/.."
if bash scripts/system-packages.sh tour; then
  bash scripts/python-env.sh all
else
  echo "(continuing without the local QEMU backend: memory:// only)" >&2
  bash scripts/python-env.sh core
fi
exec .venv/bin/python examples/tour.py "$@"
