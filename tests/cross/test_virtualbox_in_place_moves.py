"""Moves out of the real VirtualBox 7.2 (the testbed's chroot) to vcsim.

A stopped VM whose disks are single base images is read where it is: no
``clonemedium`` copy, no staging file; the copy arrives byte for byte and the
source stays as it was, held stopped. A VM with a snapshot (a differencing chain,
which qemu-img cannot read) still moves, through ``clonemedium``, flattened. A
move that fails on the target (a full datastore) leaves nothing there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyvirt_vsphere.testbed.fixtures as vcsim_fixtures
import move_faults_support
import pytest
from anyvirt_virtualbox import vdi_chain
from anyvirt_virtualbox.testbed import Home, build_chroot, served_home
from anyvirt_vsphere.testbed.vcsim import Vcsim
from move_faults_support import sha256_file, small_tmpfs

import anyvirt
from anyvirt import (
    ConnectionFailed,
    DiskSpec,
    InvalidState,
    PowerState,
    TaskFailed,
    VMSpec,
)
from anyvirt.host import Host
from anyvirt.kit import raw_view
from anyvirt.tasks import Job
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.staging import largest_file
from anyvirt.vm import VM

vcsim_vcenter = vcsim_fixtures.vcsim_vcenter
temp_dir = move_faults_support.temp_dir

MIB = 1024 * 1024
NETWORKS = {"nat": "VM Network"}  # a VirtualBox VM's default NIC, to vSphere's default


@pytest.fixture
def vbox_home(tmp_path: Path) -> Iterator[Home]:
    with served_home(build_chroot(), tmp_path / "vbox") as home:
        yield home


@pytest.fixture
def vbox(vbox_home: Home) -> Iterator[Host]:
    with anyvirt.connect(vbox_home.uri) as host:
        yield host



def _image(tmp_path: Path, name: str, size: int = 16 * MIB) -> Path:
    """Random data in the first 6 MiB and at 12 MiB, zeros elsewhere."""
    image = tmp_path / name
    with open(image, "wb") as handle:
        handle.write(os.urandom(6 * MIB))
        handle.seek(12 * MIB)
        handle.write(os.urandom(MIB))
        handle.truncate(size)
    return image


def _vsphere_disk(vm: VM, sim: Vcsim, index: int = 0) -> Path:
    path = vm.info().disks[index].path  # "[LocalDS_0] dir/x.vmdk"
    assert path is not None and sim.datastore_dir is not None
    relative = path.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
    (found,) = sim.datastore_dir.rglob(relative)
    return found


def _same_bytes(raw: Path, other: Path, other_format: str) -> bool:
    done = subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", "-F", other_format, "--",
                           str(raw), str(other)], capture_output=True, check=False)
    return done.returncode == 0




def _disk_paths(vm: VM) -> list[str]:
    return [d.path or "" for d in vm.refresh().info().disks]


def test_a_single_image_vm_is_read_in_place_with_no_staging_file(
        vbox: Host, vc: Host, vcsim_vcenter: Vcsim, tmp_path: Path, temp_dir: Path,
        made: Callable[[VM], VM]) -> None:
    """Two disks, 7 MiB of data each in 16 MiB: the move reads the VDIs where VirtualBox
    keeps them (the testbed shares /tmp with its chroot, and each VDI there carries the
    UUID VirtualBox gives it), so the temp dir never holds more than 1 MiB; each disk
    arrives byte for byte; the source is unchanged, stopped, and still registered."""
    images = [_image(tmp_path, "a.raw"), _image(tmp_path, "b.raw")]
    source = made(vbox.vms.create(VMSpec(name=unique_name("inplace"), cpus=1, memory_mib=32,
                                         disks=[DiskSpec(image=str(i)) for i in images])))
    paths = _disk_paths(source)
    before = [sha256_file(Path(p)) for p in paths]
    seen = {"largest": 0}
    states: set[PowerState] = set()
    refused: list[str] = []

    def watch(task: anyvirt.Task[Any]) -> None:
        seen["largest"] = max(seen["largest"], largest_file(temp_dir))
        if "importing" in (task.message or "") and not refused:
            states.add(vbox.driver.vm_summary(source.id).state)
            try:  # the move holds its source: nothing may change it meanwhile
                source.snapshots.create("meanwhile")
                refused.append("not refused")
            except InvalidState as error:
                refused.append(str(error))

    result = anyvirt.migrate(source, to=vc, networks=NETWORKS, on_progress=watch)
    moved = made(vc.vms.get(result.vm_id))
    assert "read-back" in result.verified
    for index, image in enumerate(images):
        flat = _vsphere_disk(moved, vcsim_vcenter, index)
        assert _same_bytes(image, flat, "raw"), f"disk {index}, byte for byte"
    assert seen["largest"] < MIB, f"a {seen['largest']}-byte file was staged"
    assert states == {PowerState.STOPPED}
    assert len(refused) == 1 and "busy" in refused[0], refused
    assert source.snapshots.list() == []
    assert [sha256_file(Path(p)) for p in _disk_paths(source)] == before, "the source is untouched"
    assert source.refresh().state is PowerState.STOPPED
    assert vbox.vms.exists(source.name)
    assert list(temp_dir.iterdir()) == []
    in_place = vbox.driver.disks_in_place(source.id, Job("look", 60))
    assert in_place is not None and [d.path for d in in_place] == paths
    assert [d.format for d in in_place] == ["vdi", "vdi"]


def _chain(vbox_home: Home, source: VM, tmp_path: Path) -> Path:
    """Two snapshots over ``source``'s base, the guest's writes between them made by
    VirtualBox itself (``clonemedium --existing`` of a 4 MiB image into the differencing
    VDI: zero blocks marked zero, the rest of the disk left to the base); returns what
    the guest sees, flattened by VirtualBox (``clonemedium --format RAW``)."""
    source.snapshots.create("first")
    (first_overlay,) = _disk_paths(source)
    written = tmp_path / "written.raw"
    with open(written, "wb") as handle:
        handle.seek(2 * MIB)
        handle.write(os.urandom(MIB))
        handle.truncate(4 * MIB)
    vbox_home.run("convertfromraw", str(written), str(tmp_path / "written.vdi"))
    vbox_home.run("clonemedium", "disk", str(tmp_path / "written.vdi"), first_overlay, "--existing")
    vbox_home.run("closemedium", "disk", str(tmp_path / "written.vdi"), "--delete")
    source.snapshots.create("second")
    (top,) = _disk_paths(source)
    assert "Snapshots" in top and top != first_overlay
    truth = tmp_path / "truth.raw"
    vbox_home.run("clonemedium", "disk", top, str(truth), "--format", "RAW")
    vbox_home.run("closemedium", "disk", str(truth))
    return truth


@pytest.mark.parametrize("read", ["streamed", "clonemedium"])
def test_a_vm_with_snapshots_moves_flattened(
        vbox_home: Home, vbox: Host, vc: Host, vcsim_vcenter: Vcsim, tmp_path: Path,
        temp_dir: Path, made: Callable[[VM], VM], read: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain of three VDIs (base, a snapshot's writes, an empty top): qemu-img cannot
    read a differencing VDI ("unsupported VDI image (non-NULL link UUID)"), so it is not
    read in place; it is streamed, read here through the chain's block maps, with no
    staging file, or, where no raw view can be made (no FUSE), flattened by
    clonemedium into the temp dir. Either way the copy holds what the guest sees, byte
    for byte as VirtualBox flattens it, and the source keeps its snapshots."""
    image = _image(tmp_path, "c.raw")
    source = made(vbox.vms.create(VMSpec(name=unique_name("chain"), cpus=1, memory_mib=32,
                                         disks=[DiskSpec(image=str(image))])))
    truth = _chain(vbox_home, source, tmp_path)
    assert not _same_bytes(image, truth, "raw"), "the snapshot's writes changed the disk"
    assert truth.read_bytes()[12 * MIB:13 * MIB] == image.read_bytes()[12 * MIB:13 * MIB]
    before = [sha256_file(Path(p)) for p in _disk_paths(source)]
    assert vbox.driver.disks_in_place(source.id, Job("look", 60)) is None
    if read == "clonemedium":
        monkeypatch.setattr(raw_view, "available", lambda: False)
    seen = {"largest": 0}

    def watch(task: anyvirt.Task[Any]) -> None:
        seen["largest"] = max(seen["largest"], largest_file(temp_dir))

    result = anyvirt.migrate(source, to=vc, networks=NETWORKS, on_progress=watch)
    moved = made(vc.vms.get(result.vm_id))
    assert "read-back" in result.verified
    assert _same_bytes(truth, _vsphere_disk(moved, vcsim_vcenter), "raw"), "the chain, flattened"
    if read == "streamed":
        assert seen["largest"] < MIB, f"a {seen['largest']}-byte file was staged"
    else:
        assert seen["largest"] >= 6 * MIB, "clonemedium's copy"
    assert [s.name for s in source.snapshots.list()] == ["first", "second"]
    assert [sha256_file(Path(p)) for p in _disk_paths(source)] == before
    assert source.refresh().state is PowerState.STOPPED
    assert list(temp_dir.iterdir()) == []


def test_a_move_that_fails_on_a_full_datastore_leaves_nothing_there(
        vbox: Host, tmp_path: Path, temp_dir: Path, made: Callable[[VM], VM]) -> None:
    """A vSphere host whose datastore (a real 4 MiB tmpfs) cannot hold the 16 MiB disk's
    7 MiB of data: the move fails, nothing of the copy is left on the target, the source
    is as it was (bytes, state, registration) and the temp dir is empty."""
    image = _image(tmp_path, "d.raw")
    source = made(vbox.vms.create(VMSpec(name=unique_name("full"), cpus=1, memory_mib=32,
                                         disks=[DiskSpec(image=str(image))])))
    before = [sha256_file(Path(p)) for p in _disk_paths(source)]
    with small_tmpfs(tmp_path / "ds", "4m") as ds, \
            Vcsim(esx=True, vms=0, workdir=ds) as full, \
            anyvirt.connect(full.anyvirt_uri_with_ca, password=full.password) as target:
        with pytest.raises((ConnectionFailed, TaskFailed)):
            anyvirt.migrate(source, to=target, networks=NETWORKS)
        assert not target.vms.exists(source.name)
        assert full.datastore_dir is not None
        assert [p for p in full.datastore_dir.rglob("*")
                if source.name in p.name or p.name.startswith("anyvirt-import-")] == []
    assert [sha256_file(Path(p)) for p in _disk_paths(source)] == before
    assert source.refresh().state is PowerState.STOPPED
    assert vbox.vms.exists(source.name)
    assert list(temp_dir.iterdir()) == []


def test_a_chain_that_fails_mid_read_fails_the_move_and_leaves_nothing(
        vbox_home: Home, vbox: Host, vc: Host, vcsim_vcenter: Vcsim, tmp_path: Path,
        temp_dir: Path, made: Callable[[VM], VM]) -> None:
    """The base under a snapshot loses its data blocks (truncated past its first block:
    header and map intact, so the chain is streamed): the stream's read fails mid-copy,
    the move fails with the reason, nothing of the copy is on vcsim, and the temp dir
    is empty."""
    image = _image(tmp_path, "e.raw")
    source = made(vbox.vms.create(VMSpec(name=unique_name("cut"), cpus=1, memory_mib=32,
                                         disks=[DiskSpec(image=str(image))])))
    (base,) = _disk_paths(source)
    source.snapshots.create("s")
    layer = vdi_chain.read_layer(base)
    assert layer is not None
    os.truncate(base, layer.first_block + MIB)
    with pytest.raises(TaskFailed, match="past the file's end"):
        anyvirt.migrate(source, to=vc, networks=NETWORKS)
    assert not vc.vms.exists(source.name)
    assert vcsim_vcenter.datastore_dir is not None
    assert list(vcsim_vcenter.datastore_dir.rglob(f"{source.name}*")) == []
    assert list(vcsim_vcenter.datastore_dir.rglob("anyvirt-import-*")) == []
    assert source.refresh().state is PowerState.STOPPED
    assert list(temp_dir.iterdir()) == []
