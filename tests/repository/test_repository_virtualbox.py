"""Restore points across platforms with VirtualBox (the real VBoxManage 7.2 of the testbed's
chroot): a point of a memory VM restored on VirtualBox, and that VirtualBox VM backed up
into the same repository and restored elsewhere, byte for byte."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_virtualbox.testbed import build_chroot, home_at, serving
from repo_helpers import MIB, image, memory_disk, memory_host, memory_vm, pattern

import anyvirt
from anyvirt import BackupRepository
from anyvirt.kit import qemu_img


@pytest.fixture(scope="module")
def real_vboxmanage() -> Path:
    return build_chroot()  # built once (about a minute), then cached under ~/.cache/anyvirt


@pytest.fixture
def virtualbox(real_vboxmanage: Path, tmp_path: Path) -> Iterator[anyvirt.Host]:
    home = home_at(real_vboxmanage, tmp_path / "vbox")
    with serving(home):
        home.prepare()
        with anyvirt.connect(home.uri) as host:
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
