#!/usr/bin/env bash
# Builds the real VirtualBox testbed: a Debian sid chroot (debootstrap, minbase) with
# Debian's `virtualbox` package from contrib, and a `VBoxManage` wrapper that runs it.
#
# Usage: build-chroot.sh CACHE_DIR
#   CACHE_DIR/root             the chroot (outside any shared work dir)
#   CACHE_DIR/bin/VBoxManage   the wrapper: a private mount namespace with /proc, /sys,
#                              /dev and the shared dirs bound in, then chroot + VBoxManage
#   CACHE_DIR/bin/VBoxManage-debian  the same through Debian's /usr/bin/VBoxManage script
#   CACHE_DIR/bin/VBoxSVC      the same for VirtualBox's service (with the C helper only)
#   CACHE_DIR/ready            written last: the VirtualBox version, the build is complete
#   CACHE_DIR/recipe           a hash of this script and enter-chroot.c: a change rebuilds
#
# Idempotent and safe to run concurrently (flock): a complete build is left alone, a broken
# one is thrown away and redone. Needs root and the `debootstrap` package.
# Environment: ANYVIRT_DEBIAN_MIRROR overrides the mirror (default: the one apt uses).
set -euo pipefail
cache=${1:?usage: build-chroot.sh CACHE_DIR}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
root=$cache/root
exec 9>"$cache/lock"
flock 9

# what the build is made of: a change to this script or the helper rebuilds the wrapper
here=$(cd "$(dirname "$0")" && pwd)
recipe=$(cat "$0" "$here/enter-chroot.c" | sha256sum | cut -c1-16)
if [ -s "$cache/ready" ] && [ "$(cat "$cache/recipe" 2>/dev/null)" = "$recipe" ] \
   && [ -x "$cache/bin/VBoxManage" ] && [ -x "$root/usr/lib/virtualbox/VBoxManage" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "building the VirtualBox chroot needs root (debootstrap, chroot, mount)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || {
  echo "debootstrap is not installed: apt-get install debootstrap (scripts/system-packages.sh test)" >&2
  exit 1
}

# The mirror apt already uses on this host (deb822 .sources or one-line sources.list).
mirror_from_apt() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ {print $2; exit}' "$f" | grep -v security && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f" \
      | grep -v security && return 0
  done
  return 1
}
mirror=${ANYVIRT_DEBIAN_MIRROR:-$(mirror_from_apt | head -n1 || true)}
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt; set ANYVIRT_DEBIAN_MIRROR" >&2; exit 1; }

rm -rf "$cache/ready" "$cache/bin"
if [ ! -x "$root/usr/bin/apt-get" ] || [ ! -f "$root/.anyvirt-debootstrap-done" ]; then
  rm -rf "$root"
  echo "anyvirt: debootstrap sid from $mirror into $root" >&2
  debootstrap --variant=minbase sid "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
    tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  touch "$root/.anyvirt-debootstrap-done"
fi

# sid's Release file on the archive may be past its Valid-Until date: do not insist on it.
echo "deb $mirror sid main contrib" >"$root/etc/apt/sources.list"
printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99anyvirt-no-valid-until"
# Package scripts must not start services in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
echo "anyvirt: installing virtualbox in the chroot" >&2
{
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends virtualbox &&
  chroot "$root" apt-get clean
} >"$cache/apt.log" 2>&1 || { tail -n 30 "$cache/apt.log" >&2; exit 1; }

mkdir -p "$cache/bin"
# The wrapper. Mounts happen in a private mount namespace per call, so nothing stays
# mounted on the host (an rm -rf of the cache can never reach the host's /dev or /proc).
# Shared dirs (the same path on both sides, so disk images mean the same): /tmp, /var/tmp
# and the colon-separated ANYVIRT_VBOX_SHARED. enter-chroot.c does the namespace, binds
# and chroot in one process (gcc); without a compiler, the same is done with unshare + mount.
if command -v gcc >/dev/null && gcc -O2 -o "$cache/bin/enter-chroot" "$here/enter-chroot.c" 2>"$cache/gcc.log"; then
  # Debian's /usr/bin/VBoxManage is a shell script: it prints a warning when /dev/vboxdrv
  # is missing, then runs the real binary. A shell per call is 35 ms, 80% of a call here,
  # so the wrapper runs the binary itself and enter-chroot prints the script's own warning
  # (captured once, below) when the device is missing: the same bytes on stdout.
  dirs="/proc:/sys:/dev:/tmp:/var/tmp\${ANYVIRT_VBOX_SHARED:+:\$ANYVIRT_VBOX_SHARED}"
  "$cache/bin/enter-chroot" "$root" /proc:/sys:/dev /usr/bin/VBoxManage --version \
    | sed '$d' >"$cache/bin/vboxdrv-warning.txt"
  cat >"$cache/bin/VBoxManage" <<WRAPPER
#!/bin/sh
# anyvirt's VirtualBox testbed: Debian sid's VBoxManage, run inside $root
exec "$cache/bin/enter-chroot" "$root" "$dirs" --warning "$cache/bin/vboxdrv-warning.txt" /usr/lib/virtualbox/VBoxManage "\$@"
WRAPPER
  # the same through Debian's script, for a test that it prints what the wrapper prints
  cat >"$cache/bin/VBoxManage-debian" <<WRAPPER
#!/bin/sh
exec "$cache/bin/enter-chroot" "$root" "$dirs" /usr/bin/VBoxManage "\$@"
WRAPPER
  chmod +x "$cache/bin/VBoxManage-debian"
  # VBoxSVC itself, for a caller that keeps one running per home (see make_home's docs)
  cat >"$cache/bin/VBoxSVC" <<WRAPPER
#!/bin/sh
exec "$cache/bin/enter-chroot" "$root" "/proc:/sys:/dev:/tmp:/var/tmp\${ANYVIRT_VBOX_SHARED:+:\$ANYVIRT_VBOX_SHARED}" /usr/lib/virtualbox/VBoxSVC "\$@"
WRAPPER
  chmod +x "$cache/bin/VBoxSVC"
else
  cat >"$cache/bin/VBoxManage" <<WRAPPER
#!/usr/bin/env bash
# anyvirt's VirtualBox testbed: Debian sid's VBoxManage, run inside $root
exec unshare --mount --propagation private -- "$cache/bin/enter" "\$@"
WRAPPER
  cat >"$cache/bin/enter" <<ENTER
#!/usr/bin/env bash
set -eu
root='$root'
shared="/proc:/sys:/dev:/tmp:/var/tmp\${ANYVIRT_VBOX_SHARED:+:\$ANYVIRT_VBOX_SHARED}"
IFS=: read -r -a dirs <<<"\$shared"
for d in "\${dirs[@]}"; do
  [ -n "\$d" ] && [ -d "\$d" ] || continue
  mkdir -p "\$root\$d"
  mount --rbind "\$d" "\$root\$d"
done
exec chroot "\$root" /usr/bin/VBoxManage "\$@"
ENTER
  chmod +x "$cache/bin/enter"
fi
chmod +x "$cache/bin/VBoxManage"
version=$("$cache/bin/VBoxManage" --version 2>/dev/null | tail -n1)
case $version in
  [0-9]*.[0-9]*) ;;
  *) echo "the chroot's VBoxManage did not report a version (got: $version)" >&2; exit 1 ;;
esac
echo "$recipe" >"$cache/recipe"
echo "$version" >"$cache/ready"
echo "anyvirt: VirtualBox $version ready in $root" >&2
