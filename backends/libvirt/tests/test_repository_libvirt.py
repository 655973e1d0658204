"""The backup repository on a real libvirtd: qcow2 disks read in place, incremental after a
guest-sized change, restored byte for byte onto libvirt and onto another backend."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import anyvirt
from anyvirt import BackupRepository, DiskSpec, VMSpec
from anyvirt.host import Host
from anyvirt.kit import qemu_img
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM

MIB = 1024 * 1024


def raw_bytes(vm: VM, tmp: Path) -> bytes:
    """The VM's first disk as the guest sees it: its image converted to raw."""
    disk = vm.info().disks[0]
    assert disk.path is not None
    out = tmp / f"{uuid.uuid4().hex}.raw"
    qemu_img.convert(disk.path, out, source_format=disk.format or "qcow2", format="raw",
                     force_share=True)
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def guest_write(vm: VM, offset: int, length: int, byte: int) -> None:
    """What a guest writing to its disk does to the image (the VM is stopped: qemu-io
    writes through the image format the way QEMU would)."""
    disk = vm.info().disks[0]
    assert disk.path is not None
    subprocess.run(["qemu-io", "-f", disk.format or "qcow2", "-c",
                    f"write -P {byte:#x} {offset} {length}", disk.path],
                   check=True, capture_output=True)


def data_vm(host: Host, tmp: Path, vms: Callable[[VM], VM]) -> VM:
    image = tmp / "data.raw"
    with open(image, "wb") as handle:
        handle.truncate(64 * MIB)
        handle.seek(4 * MIB)
        handle.write(os.urandom(10 * MIB))
        handle.seek(40 * MIB)
        handle.write(b"the end of the data" * 1000)
    return vms(host.vms.create(VMSpec(name=unique_name("repo"), cpus=1, memory_mib=64,
                                      disks=[DiskSpec(image=str(image))])))


def test_backup_incremental_and_restore_on_libvirt_and_memory(
        host: Host, tmp_path: Path, vms: Callable[[VM], VM]) -> None:
    vm = data_vm(host, tmp_path, vms)
    repo = BackupRepository(tmp_path / "repo")
    first = repo.backup(vm)
    # only the chunks holding data are read (3 + 1 of 16), the holes never
    assert first.read_bytes <= 5 * 4 * MIB
    assert 10 * MIB < first.stored_bytes < 11 * MIB  # random data: stored as it is, once
    before = raw_bytes(vm, tmp_path)
    guest_write(vm, 20 * MIB, MIB, 0x5A)
    second = repo.backup(vm)
    assert second.incremental
    assert second.stored_bytes < 64 * 1024  # one changed chunk of a repeated byte, compressed
    after = raw_bytes(vm, tmp_path)
    assert after != before
    assert repo.verify().ok

    copy = vms(repo.restore(second, to=host, name=unique_name("restored")))
    assert raw_bytes(copy, tmp_path) == after
    old = vms(repo.restore(first, to=host, name=unique_name("old")))
    assert raw_bytes(old, tmp_path) == before

    memory = anyvirt.connect(f"memory://repo-{uuid.uuid4().hex[:8]}")
    elsewhere = repo.restore(second, to=memory, name="on-memory")
    _fmt, data = elsewhere.native.contents["disk0"]
    assert data + bytes(len(after) - len(data)) == after
