"""Helpers for repository tests: memory VMs with real disk bytes, and reading them back."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import anyvirt
from anyvirt import DiskSpec, NicSpec, VMSpec
from anyvirt.testing.disk_bytes import pattern as pattern  # the repository tests import it from here

MIB = 1024 * 1024


def image(path: Path, size: int, extents: list[tuple[int, bytes]]) -> Path:
    """A sparse raw image of ``size`` bytes holding ``extents`` (offset, data)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in extents:
            handle.seek(offset)
            handle.write(data)
    return path


def memory_host(prefix: str = "repo") -> anyvirt.Host:
    return anyvirt.connect(f"memory://{prefix}-{uuid.uuid4().hex[:8]}")


def memory_vm(host: anyvirt.Host, name: str, disk: Path) -> anyvirt.VM:
    return host.vms.create(VMSpec(name=name, cpus=1, memory_mib=256, disks=[DiskSpec(image=str(disk))],
                                  nics=[NicSpec(network="default")]))


def memory_disk(vm: anyvirt.VM, disk: str = "disk0") -> bytes:
    """A memory VM's disk as the guest sees it (its stored bytes, zero-padded to its size)."""
    info = {d.id: d for d in vm.info().disks}[disk]
    _fmt, data = vm.native.contents.get(disk, ("raw", b""))
    return data + bytes((info.size_bytes or 0) - len(data))


def write_memory_disk(vm: anyvirt.VM, offset: int, data: bytes, disk: str = "disk0") -> None:
    """Change a memory VM's disk the way a guest would (through the backend's native
    object: memory disks have no guest)."""
    fmt, old = vm.native.contents[disk]
    buf = bytearray(old)
    if len(buf) < offset + len(data):
        buf += bytes(offset + len(data) - len(buf))
    buf[offset:offset + len(data)] = data
    vm.native.contents[disk] = (fmt, bytes(buf))


def file_bytes(path: str | os.PathLike[str]) -> bytes:
    return Path(path).read_bytes()


def exported_disk(vm: anyvirt.VM, tmp: Path) -> bytes:
    """A VM's first disk as the guest sees it, read back through its platform's own export
    (any backend) and converted to raw bytes."""
    from anyvirt.kit import qemu_img
    from anyvirt.tasks import Job

    out = tmp / uuid.uuid4().hex
    out.mkdir()
    disk = vm.host.driver.export_disks(vm.id, out, Job("read back"))[0]
    raw = out / "disk.raw"
    qemu_img.convert(disk.path, raw, source_format=disk.format, format="raw")
    try:
        return raw.read_bytes()
    finally:
        shutil.rmtree(out)
