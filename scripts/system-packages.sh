#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages anyvirt's tests and tour need, idempotently.
# Usage: scripts/system-packages.sh [tour|test]
#   tour: QEMU/libvirt (the local default backend) and the tools to build the tiny guest
#   test: the above plus Go and the govmomi source (to build VMware's vcsim simulator)
#         and debootstrap (to build the Debian sid chroot with the real VirtualBox),
#         and what the Linux test guest and its private network need
# As root it installs; otherwise it prints the one apt line to run and fails.
set -euo pipefail
mode=${1:-test}
pkgs=(
  # libvirt + QEMU/KVM, and what libvirt-python compiles against
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  libvirt-dev pkg-config gcc python3-dev
  # a virtualenv for uv where the machine has none (scripts/uv.sh)
  python3-venv
  # GNU as/ld for the test guest's boot sector; iproute2/util-linux for isolated daemons
  binutils util-linux
)
if [ "$mode" = test ]; then
  pkgs+=(golang-go golang-github-vmware-govmomi-dev openssl debootstrap)
  # headless Chromium: the docs are checked in a real browser (tests/test_docs.py)
  pkgs+=(chromium fonts-dejavu-core)
  # the Linux test guest (busybox-static; its kernel is apt-get download'ed), its isolated
  # network in a private namespace (iproute2, iptables, dnsmasq-base), seeds (xorriso)
  pkgs+=(busybox-static iproute2 iptables dnsmasq-base xorriso)
  # the Linux test guest's BIOS boot disk: syslinux's boot code, FAT written by mtools (no mounts)
  pkgs+=(syslinux syslinux-common mtools)
  # Debian's real cloud-init and xorriso: generated seeds are checked by cloud-init's own
  # schema and NoCloud/VMware readers; ssh-keygen makes real keys (tests/deployment)
  pkgs+=(cloud-init openssh-client)
  # a real sshd on loopback: the backup repository's sftp:// storage is tested against it
  pkgs+=(openssh-server)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "anyvirt needs these system packages; run as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
