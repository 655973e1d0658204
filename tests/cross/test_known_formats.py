"""A guest's raw disk is raw, whatever its first bytes look like.

A guest can write anything to its own disk, a complete qcow2 image at offset 0 included.
A restore (whose disks are raw guest bytes) and a move (whose exports carry their format)
know each image's format: the target's import must take it as given, never probe it. A
probe reads such a disk as the qcow2 it contains, and the copy silently holds that
image's contents instead of the guest's disk. Proven on memory://, a real libvirt (the
embedded QEMU, tests/conftest.py), vcsim and the real VBoxManage.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_virtualbox.testbed import build_chroot, served_home

import anyvirt
from anyvirt import BackupRepository, DiskSpec, InvalidSpec, VMSpec
from anyvirt.kit import qemu_img
from anyvirt.tasks import Job
from anyvirt.testing.disk_bytes import raw_disk_that_looks_like_qcow2
from anyvirt.vm import VM

MIB = 1024 * 1024
DISK = 8 * MIB


@pytest.fixture
def guest_bytes(tmp_path: Path) -> bytes:
    """What the guest wrote to its 8 MiB raw disk: a qcow2 image at offset 0, more data later."""
    disk = raw_disk_that_looks_like_qcow2(tmp_path)
    probed = tmp_path / "probed.raw"
    probed.write_bytes(disk)
    assert qemu_img.probe_format(probed) == "qcow2"  # what a probe would take it for
    return disk


@pytest.fixture
def source(guest_bytes: bytes, tmp_path: Path) -> Iterator[VM]:
    """A memory VM whose raw disk holds ``guest_bytes``, written as a guest writes (through
    the backend's native object: memory disks have no guest)."""
    blank = tmp_path / "blank.raw"
    with open(blank, "wb") as handle:
        handle.truncate(DISK)
        handle.write(b"boot")
    with anyvirt.connect(f"memory://known-{uuid.uuid4().hex[:8]}") as host:
        vm = host.vms.create(VMSpec(name="guest", cpus=1, memory_mib=64,
                                    disks=[DiskSpec(image=str(blank))]))
        fmt, _old = vm.native.contents["disk0"]
        assert fmt == "raw"
        vm.native.contents["disk0"] = (fmt, guest_bytes)
        yield vm


def _guest_view(vm: VM, tmp: Path) -> bytes:
    """A VM's first disk as its guest sees it, read back through its platform's own export."""
    out = tmp / uuid.uuid4().hex
    out.mkdir()
    try:
        disk = vm.host.driver.export_disks(vm.id, out, Job("read back"))[0]
        raw = out / "disk.raw"
        qemu_img.convert(disk.path, raw, source_format=disk.format, format="raw")
        return raw.read_bytes()
    finally:
        shutil.rmtree(out)


def _same_disk(got: bytes, want: bytes) -> None:
    assert len(got) >= len(want), f"the copy holds {len(got)} bytes, the guest's disk {len(want)}"
    assert got[:len(want)] == want, "the copy holds other bytes than the guest's disk"
    assert not got[len(want):].strip(b"\0"), "a larger copy reads zeros past the guest's disk"


def _removed(host: anyvirt.Host, name: str) -> None:
    if host.vms.exists(name):
        host.vms.get(name).delete(disks=True)


# ---------------------------------------------------------------- restores
def test_a_restore_onto_memory_keeps_a_raw_disk_that_looks_like_qcow2(
        source: VM, guest_bytes: bytes, tmp_path: Path) -> None:
    with BackupRepository(str(tmp_path / "repo")) as repo:
        point = repo.backup(source)
        with anyvirt.connect(f"memory://restored-{uuid.uuid4().hex[:8]}") as target:
            copy = repo.restore(point, to=target, name="copy")
            _same_disk(_guest_view(copy, tmp_path), guest_bytes)
            assert copy.info().disks[0].format == "raw"


def test_a_restore_onto_libvirt_keeps_a_raw_disk_that_looks_like_qcow2(
        source: VM, guest_bytes: bytes, tmp_path: Path, embed_uri: str) -> None:
    name = f"known-{uuid.uuid4().hex[:6]}"
    with BackupRepository(str(tmp_path / "repo")) as repo, anyvirt.connect(embed_uri) as target:
        point = repo.backup(source)
        try:
            copy = repo.restore(point, to=target, name=name)
            _same_disk(_guest_view(copy, tmp_path), guest_bytes)
        finally:
            _removed(target, name)


def test_a_restore_onto_virtualbox_keeps_a_raw_disk_that_looks_like_qcow2(
        source: VM, guest_bytes: bytes, tmp_path: Path) -> None:
    """The real VBoxManage 7.2 of the testbed's chroot; its disk read as the VDI it is."""
    with served_home(build_chroot(), tmp_path / "vbox") as home, \
            BackupRepository(str(tmp_path / "repo")) as repo:
        point = repo.backup(source)
        with anyvirt.connect(home.uri) as target:
            copy = repo.restore(point, to=target, name="copy")
            disk = copy.info().disks[0]
            assert disk.path is not None and disk.path.endswith(".vdi")
            raw = tmp_path / "copy.raw"
            qemu_img.convert(disk.path, raw, source_format="vdi", format="raw")
            _same_disk(raw.read_bytes(), guest_bytes)


def test_a_restore_onto_vsphere_takes_a_raw_disk_whose_header_names_a_backing_file(
        guest_bytes: bytes, tmp_path: Path, vc: anyvirt.Host) -> None:
    """A guest wrote a qcow2 header that names a backing file: read as the qcow2 it looks
    like, the disk is refused (its backing file would be read); read as the raw disk it
    is, it restores byte for byte, through vSphere's gate check and its import."""
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname",
                    "--", str(overlay), "1M"], check=True)
    header = overlay.read_bytes()
    disk = bytearray(guest_bytes)
    disk[:len(header)] = header
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"boot")
    name = f"known-{uuid.uuid4().hex[:6]}"
    with anyvirt.connect(f"memory://backing-{uuid.uuid4().hex[:8]}") as host, \
            BackupRepository(str(tmp_path / "repo")) as repo:
        vm = host.vms.create(VMSpec(name="guest", cpus=1, memory_mib=64,
                                    disks=[DiskSpec(image=str(blank), size_gib=DISK / 1024**3)]))
        vm.native.contents["disk0"] = ("raw", bytes(disk))
        point = repo.backup(vm)
        try:
            copy = repo.restore(point, to=vc, name=name)
            _same_disk(_guest_view(copy, tmp_path), bytes(disk))
        finally:
            _removed(vc, name)


def test_vsphere_refuses_a_format_other_than_vmdk_for_a_datastore_image(vc: anyvirt.Host) -> None:
    with pytest.raises(InvalidSpec, match="does not describe it"):
        vc.vms.create(VMSpec(name=f"known-{uuid.uuid4().hex[:6]}", cpus=1, memory_mib=64,
                             disks=[DiskSpec(image="[LocalDS_0] x/x.vmdk", format="raw")]))


# ---------------------------------------------------------------- moves
@pytest.fixture(params=["libvirt", "vsphere", "memory"])
def move_target(request: pytest.FixtureRequest) -> Iterator[anyvirt.Host]:
    """A move's target: a real libvirt (the embedded QEMU), vcsim, another memory host."""
    if request.param == "vsphere":
        yield request.getfixturevalue("vc")
        return
    uri = (request.getfixturevalue("embed_uri") if request.param == "libvirt"
           else f"memory://moved-{uuid.uuid4().hex[:8]}")
    with anyvirt.connect(uri) as target:
        yield target


def test_a_move_keeps_a_raw_disk_that_looks_like_qcow2(
        source: VM, guest_bytes: bytes, tmp_path: Path, move_target: anyvirt.Host) -> None:
    name = f"known-{uuid.uuid4().hex[:6]}"
    try:
        result = anyvirt.migrate(source, to=move_target, name=name)
        _same_disk(_guest_view(move_target.vms.get(result.vm_id), tmp_path), guest_bytes)
    finally:
        _removed(move_target, name)


# ---------------------------------------------------------------- the spec
def test_a_disk_spec_takes_a_known_format_and_refuses_others(tmp_path: Path) -> None:
    assert DiskSpec(image="/x/disk.img", format="raw").format == "raw"
    assert DiskSpec(image="/x/disk.img").format is None  # probed, as for any user's image
    with pytest.raises(InvalidSpec, match="not one of"):
        DiskSpec(image="/x/disk.img", format="qcow")
    with pytest.raises(InvalidSpec, match="image"):
        DiskSpec(size_gib=1, format="raw")


def test_a_create_takes_an_image_in_the_format_given(guest_bytes: bytes, tmp_path: Path) -> None:
    """The user's own create: ``format="raw"`` keeps a raw file raw on memory://."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(guest_bytes)
    with anyvirt.connect(f"memory://given-{uuid.uuid4().hex[:8]}") as host:
        vm = host.vms.create(VMSpec(name="given", cpus=1, memory_mib=64,
                                    disks=[DiskSpec(image=str(disk), format="raw")]))
        _same_disk(_guest_view(vm, tmp_path), guest_bytes)
