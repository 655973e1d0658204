"""Restore points across platforms with VirtualBox (the real VBoxManage 7.2 of the testbed's
chroot): a point of a memory VM restored on VirtualBox, and that VirtualBox VM backed up
into the same repository and restored elsewhere, byte for byte; and the points of one VM
restored on libvirt (a real libvirtd), vSphere (vcsim) and VirtualBox, byte for byte."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyvirt_virtualbox.testbed import build_chroot, served_home
from repo_helpers import (
    MIB,
    exported_disk,
    image,
    memory_disk,
    memory_host,
    memory_vm,
    pattern,
    write_memory_disk,
)

import anyvirt
from anyvirt import BackupRepository, DiskSpec, VMSpec
from anyvirt.kit import qemu_img


@pytest.fixture(scope="module")
def real_vboxmanage() -> Path:
    return build_chroot()  # built once (about a minute), then cached under ~/.cache/anyvirt


@pytest.fixture
def virtualbox(real_vboxmanage: Path, tmp_path: Path) -> Iterator[anyvirt.Host]:
    with served_home(real_vboxmanage, tmp_path / "vbox") as home, \
            anyvirt.connect(home.uri) as host:
        yield host


def virtualbox_disk(vm: anyvirt.VM, tmp: Path) -> bytes:
    """The VM's disk as the guest sees it: its VDI read by qemu-img, as raw bytes."""
    disk = vm.info().disks[0]
    assert disk.path is not None and disk.path.endswith(".vdi")
    raw = tmp / f"{uuid.uuid4().hex}.raw"
    qemu_img.convert(disk.path, raw, source_format="vdi", format="raw")
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


def test_a_memory_point_restores_on_virtualbox_and_back(virtualbox: anyvirt.Host,
                                                         tmp_path: Path) -> None:
    source = memory_vm(memory_host(), "web1", image(
        tmp_path / "d.raw", 16 * MIB, [(MIB, pattern(1, 3 * MIB)), (12 * MIB, b"the end")]))
    repo = BackupRepository(tmp_path / "repo")
    point = repo.backup(source)
    name = f"restored-{uuid.uuid4().hex[:6]}"
    copy = repo.restore(point, to=virtualbox, name=name, networks={"default": "nat"})
    try:
        assert copy.host.backend == "virtualbox" and copy.name == name
        assert virtualbox_disk(copy, tmp_path) == memory_disk(source)
        # the VirtualBox VM backs up into the same repository: every chunk is there already
        again = repo.backup(copy)
        assert again.stored_bytes < 4096 and again.read_bytes >= 4 * MIB
        back = repo.restore(again, to=memory_host("t"), name="back", networks={"nat": "default"})
        assert memory_disk(back) == memory_disk(source)
        assert repo.verify().ok
    finally:
        copy.delete(disks=True)


def test_the_points_of_one_vm_restore_on_libvirt_vsphere_and_virtualbox_byte_for_byte(
        virtualbox: anyvirt.Host, libvirt_daemon: Any, vcsim_vcenter: Any,
        tmp_path: Path) -> None:
    disk = image(tmp_path / "d.raw", 24 * MIB, [(0, pattern(3, 5 * MIB)), (17 * MIB, pattern(4, MIB))])
    # no NIC: the testbeds' networks differ, and the disks are what is compared
    source = memory_host().vms.create(VMSpec(name="web1", cpus=1, memory_mib=64,
                                             disks=[DiskSpec(image=str(disk))]))
    repo = BackupRepository(tmp_path / "repo")
    first = repo.backup(source)
    before = memory_disk(source)
    write_memory_disk(source, 9 * MIB, pattern(5, 2 * MIB))
    second = repo.backup(source)
    after = memory_disk(source)
    assert second.incremental and before != after
    with anyvirt.connect(libvirt_daemon.anyvirt_uri) as libvirt, \
            anyvirt.connect(vcsim_vcenter.anyvirt_uri, password=vcsim_vcenter.password) as vsphere:
        for host in (libvirt, vsphere, virtualbox):
            for point, expected in ((first, before), (second, after)):
                copy = repo.restore(point, to=host, name=f"r-{uuid.uuid4().hex[:6]}")
                try:
                    assert exported_disk(copy, tmp_path) == expected, host.backend
                finally:
                    copy.delete(disks=True)
