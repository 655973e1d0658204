"""Where the core uses the kit: an archive's disk that points elsewhere is refused on restore,
and memory:// places VMs on the least-loaded node."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import anyvirt
from anyvirt import DiskSpec, InvalidSpec, VMSpec
from anyvirt.kit import qemu_img
from anyvirt.memory import reset
from anyvirt.testing.plugin import unique_name


@pytest.fixture
def host() -> Iterator[anyvirt.Host]:
    name = unique_name("kit")
    with anyvirt.connect(f"memory://{name}?nodes=3") as h:
        yield h
    reset(name)


def tampered(archive: Path, disk: Path, out: Path) -> Path:
    """``archive`` with its first disk replaced by ``disk`` (the manifest unchanged)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        manifest = json.load(src.extractfile("manifest.json"))  # type: ignore[arg-type]
        for member in src.getmembers():
            if member.name == manifest["disks"][0]["file"]:
                dst.add(disk, arcname=member.name)
            else:
                dst.addfile(member, src.extractfile(member))
    return out


def test_restore_refuses_a_disk_with_a_backing_file(host: anyvirt.Host, tmp_path: Path) -> None:
    vm = host.vms.create(VMSpec(name="web1", disks=[DiskSpec(size_gib=0.001)]))
    archive = vm.backup(tmp_path / "web1.avbk")
    assert anyvirt.migration.read_manifest(archive)["disks"][0]["format"] == "qcow2"  # compacted
    evil = tmp_path / "evil.qcow2"
    qemu_img.create(evil, "qcow2", backing="/etc/hostname", backing_format="raw")
    bad = tampered(archive, evil, tmp_path / "bad.avbk")
    # format 2 refuses the swapped member by its size and sha256 already; with matching sums
    # the image check refuses the backing file (tests/test_archive_v2.py)
    with pytest.raises(InvalidSpec, match=r"backing file|manifest says|sha256"):
        host.restore(bad, name="web2")
    assert [v.name for v in host.vms.list()] == ["web1"]


def test_memory_places_new_vms_on_the_least_loaded_node(host: anyvirt.Host) -> None:
    placed = [host.vms.create(VMSpec(name=f"vm{i}", memory_mib=512 * (3 - i))).info().node
              for i in range(3)]
    assert len(set(placed)) == 3
    # the next one goes where the least memory is given out: the node of the smallest VM
    assert host.vms.create(VMSpec(name="next", memory_mib=64)).info().node == placed[2]
