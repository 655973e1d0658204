"""The Linux test guest as a plain BIOS-bootable disk: what ``DiskSpec(image=...)`` can boot.

Direct kernel boot (``<kernel>``/``<initrd>``) is not something a VMSpec can
say, so clones made through anyvirt's API need the guest on a disk. The disk
is made from Debian's ``syslinux`` and ``mtools``, without loop mounts or root:

* an MBR (syslinux's ``mbr.bin``) with one active FAT16 partition at 1 MiB;
* the partition formatted by ``mformat`` and filled by ``mcopy`` (both work on
  ``image@@offset``): the compressed kernel (``vmlinuz``: a boot loader needs
  a bzImage, the PVH ELF used by direct boot cannot be loaded this way), the
  initramfs and ``syslinux.cfg`` (kernel command line :data:`~.CMDLINE`, so
  the console is on ttyS0);
* ``syslinux --install --offset`` writes its boot sector and ``ldlinux.sys``
  into that partition.

SeaBIOS runs the MBR, which chains to syslinux, which loads the kernel. The
image is converted to qcow2 (a good base for linked clones) and cached inside
the guest's own cache entry, named by a hash of everything that made it,
written under a temporary name and renamed into place: never rewritten once
there, so overlays backed by it stay valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from anyvirt.images import ImageBuilder
from anyvirt.kit import qemu_img
from anyvirt_libvirt.testbed.linux_guest import (
    CMDLINE,
    LinuxGuest,
    LinuxGuestError,
    build_linux_guest,
)

__all__ = ["BUILDER", "MBR_CANDIDATES", "SYSLINUX_CFG", "build_boot_disk", "linux_guest_disk"]

#: where Debian's ``syslinux-common`` puts the MBR boot code (the first that exists is used)
MBR_CANDIDATES = (Path("/usr/lib/syslinux/mbr/mbr.bin"), Path("/usr/lib/SYSLINUX/mbr.bin"))

SYSLINUX_CFG = (
    "DEFAULT guest\n"
    "PROMPT 0\n"
    "TIMEOUT 0\n"
    "LABEL guest\n"
    "  LINUX /vmlinuz\n"
    "  INITRD /initrd.img\n"
    f"  APPEND {CMDLINE}\n"
)

_FORMAT = "1"  # bump when the layout of the disk changes
_SECTOR = 512
_PARTITION_START = 2048  # sectors: 1 MiB, the usual alignment
_MIB = 1024 * 1024
_FAT16_LBA = 0x0E
_ACTIVE = 0x80
_PACKAGES = "syslinux, syslinux-common and mtools (scripts/system-packages.sh test)"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LinuxGuestError(f"'{name}' is needed to build the guest's boot disk: install {_PACKAGES}")
    return found


def _mbr_code() -> bytes:
    for candidate in MBR_CANDIDATES:
        with contextlib.suppress(OSError):
            code = candidate.read_bytes()
            if 0 < len(code) <= 440:
                return code
    raise LinuxGuestError(f"syslinux's mbr.bin is needed to build the guest's boot disk: install {_PACKAGES}")


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
    if done.returncode != 0:
        raise LinuxGuestError(f"{Path(argv[0]).name} failed ({done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-500:]}")


def _partition_entry(start: int, sectors: int) -> bytes:
    """An active FAT16 (LBA) entry; CHS fields saturated, as for any disk read through LBA."""
    chs_max = b"\xfe\xff\xff"
    return struct.pack("<B3sB3sII", _ACTIVE, chs_max, _FAT16_LBA, chs_max, start, sectors)


def _master_boot_record(code: bytes, start: int, sectors: int, signature: bytes) -> bytes:
    table = _partition_entry(start, sectors) + bytes(48)
    return code.ljust(440, b"\0") + signature[:4] + b"\0\0" + table + b"\x55\xaa"


def _disk_key(guest: LinuxGuest, mbr: bytes) -> str:
    digest = hashlib.sha256(_FORMAT.encode())
    digest.update(SYSLINUX_CFG.encode())
    digest.update(hashlib.sha256(mbr).digest())
    for part in (guest.bzimage, guest.initrd):
        stat = part.stat()
        digest.update(f"{part.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _write_raw(raw: Path, guest: LinuxGuest, mbr: bytes, key: str, work: Path) -> None:
    payload = guest.bzimage.stat().st_size + guest.initrd.stat().st_size
    part_mib = max(32, -(-(payload + 2 * _MIB) * 11 // 10 // _MIB))  # FAT16 (not FAT12) from 32 MiB
    part_sectors = part_mib * _MIB // _SECTOR
    with raw.open("wb") as disk:
        # the disk signature (which tells disks apart) comes from the key, like the name
        disk.write(_master_boot_record(mbr, _PARTITION_START, part_sectors, bytes.fromhex(key)))
        disk.truncate((_PARTITION_START + part_sectors) * _SECTOR)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"}
    image = f"{raw}@@{_PARTITION_START * _SECTOR}"
    # FAT16, 32 sectors x 64 heads, 2048 hidden sectors: the partition's own geometry
    _run([_tool("mformat"), "-i", image, "-v", "ANYVIRT",
          "-T", str(part_sectors), "-h", "64", "-s", "32", "-H", str(_PARTITION_START), "::"], env)
    cfg = work / "syslinux.cfg"
    cfg.write_text(SYSLINUX_CFG)
    for source, name in ((guest.bzimage, "vmlinuz"), (guest.initrd, "initrd.img"), (cfg, "syslinux.cfg")):
        _run([_tool("mcopy"), "-i", image, str(source), f"::{name}"], env)
    _run([_tool("syslinux"), "--install", "--offset", str(_PARTITION_START * _SECTOR), str(raw)], env)


def build_boot_disk(guest: LinuxGuest) -> Path:
    """The guest's boot disk (qcow2), from the cache beside the guest or built now (~1-2 s)."""
    mbr = _mbr_code()
    entry = guest.initrd.parent
    key = _disk_key(guest, mbr)
    disk = entry / f"boot-disk-{key}.qcow2"
    if disk.is_file():
        return disk
    work = Path(tempfile.mkdtemp(prefix=".disk-", dir=entry))
    try:
        raw = work / "disk.raw"
        _write_raw(raw, guest, mbr, key, work)
        qcow2 = work / "disk.qcow2"
        qemu_img.convert(raw, qcow2, source_format="raw", format="qcow2")
        qcow2.chmod(0o444)  # a base for overlays: never written in place
        with contextlib.suppress(OSError):  # a concurrent build won: both are the same disk
            os.link(qcow2, disk)  # fails if disk exists, where rename would replace it
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not disk.is_file():
        raise LinuxGuestError(f"the boot disk built into {disk} cannot be read back")
    return disk


def linux_guest_disk(cache_dir: Path | None = None) -> Path:
    """The Linux test guest's boot disk (qcow2; built and cached on first use, see the module doc)."""
    return build_boot_disk(build_linux_guest(cache_dir))


class LinuxGuestImageBuilder:
    """``anyvirt image linux-guest``: the :class:`anyvirt.images.ImageBuilder` of this disk."""

    summary = ("The Linux test guest (Debian's kernel and busybox, BIOS boot): applies a NoCloud "
               "seed, runs DHCP, reports on its serial console (needs busybox-static, syslinux, "
               "mtools, and apt-get download of the kernel package).")
    formats: Sequence[str] = ("qcow2", "raw")

    def write(self, path: Path, fmt: str) -> None:
        qemu_img.convert(linux_guest_disk(), path, source_format="qcow2", format=fmt)


BUILDER: ImageBuilder = LinuxGuestImageBuilder()
"""Registered under the ``anyvirt.images`` entry-point group as ``linux-guest``."""
