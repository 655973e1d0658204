#!/usr/bin/env bash
# The main job: the same script across every platform it can reach (examples/tour.py),
# on the local QEMU (embedded libvirt) where it can run, else on memory://.
# Extra arguments are more URIs to tour, e.g. vsphere://user@vc?verify=false.
set -euo pipefail
cd "$(dirname "$0")/.."

# As root, libvirt's QEMU driver (the embedded one too) looks up its build's QEMU user
# and group before it reads any qemu.conf; Debian's libvirt-daemon-system would create
# them, but the tour needs no daemon, so create just the accounts (idempotent).
qemu_accounts() {
  [ "$(id -u)" -eq 0 ] || return 0
  local sbin=/usr/sbin
  getent group kvm >/dev/null || "$sbin/groupadd" --system kvm
  getent group libvirt-qemu >/dev/null || "$sbin/groupadd" --system libvirt-qemu
  getent passwd libvirt-qemu >/dev/null \
    || "$sbin/useradd" --system --gid kvm --home-dir /var/lib/libvirt --no-create-home \
         --shell /usr/sbin/nologin libvirt-qemu
}

if bash scripts/system-packages.sh tour && qemu_accounts; then
  bash scripts/python-env.sh all
else
  echo "(continuing without the local QEMU backend: memory:// only)" >&2
  bash scripts/python-env.sh core
fi
exec .venv/bin/python examples/tour.py "$@"
