"""Moves from a libvirt daemon whose files this process does not read (as from a remote
one), streamed: the volumes are read through the daemon (``virStorageVolDownload``
ranges) as the target's import consumes them, a linked clone's chain flattened on the
way, with no staging file; the verification reads back the data ranges only.

The daemon is reached through a UNIX-socket proxy of the tests' own that counts the
bytes each way and can cut the link (the source gone mid-transfer). "Remote" is the
driver's answer that it cannot read the files in place, as in the other move tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyvirt_libvirt.testbed.fixtures as libvirt_fixtures
import anyvirt_vsphere.testbed.fixtures as vcsim_fixtures
import move_faults_support
import pytest
from anyvirt_vsphere.testbed.vcsim import Vcsim
from fault_proxy_support import FaultProxy
from move_faults_support import sha256_file

import anyvirt
from anyvirt import AnyvirtError, ConnectionFailed, DiskSpec, PowerState, VMSpec
from anyvirt.host import Host
from anyvirt.migration import range_check
from anyvirt.testing.disk_bytes import flip_memory_disk_byte
from anyvirt.testing.staging import largest_file
from anyvirt.vm import VM

libvirt_daemon = libvirt_fixtures.libvirt_daemon
vcsim_vcenter = vcsim_fixtures.vcsim_vcenter
temp_dir = move_faults_support.temp_dir

MIB = 1024 * 1024


@pytest.fixture
def remote(libvirt_daemon: libvirt_fixtures.LibvirtDaemon,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, FaultProxy]]:
    """The daemon through a counting proxy, its files not read in place."""
    proxy = FaultProxy(str(libvirt_daemon.socket_path))
    uri = libvirt_daemon.anyvirt_uri.replace(str(libvirt_daemon.socket_path), proxy.path)
    assert uri != libvirt_daemon.anyvirt_uri
    with proxy, anyvirt.connect(uri) as kvm:
        monkeypatch.setattr(kvm.driver, "disks_in_place", lambda vm_id, job: None)
        yield kvm, proxy


@pytest.fixture
def linked_clone(remote: tuple[Host, FaultProxy], tmp_path: Path) -> Iterator[VM]:
    """A 64 MiB base with 10 MiB of data, and a linked clone of it that wrote 1 MiB of its
    own where the base has none (qemu-io into the overlay: a guest's write)."""
    kvm, _proxy = remote
    image = tmp_path / "base.raw"
    with open(image, "wb") as handle:
        handle.write(os.urandom(8 * MIB))
        handle.seek(40 * MIB)
        handle.write(os.urandom(2 * MIB))
        handle.truncate(64 * MIB)
    base = kvm.vms.create(VMSpec(name=f"base-{os.urandom(3).hex()}", cpus=1, memory_mib=16,
                                 disks=[DiskSpec(image=str(image))]))
    clone = base.clone(f"clone-{os.urandom(3).hex()}", linked=True)
    overlay = clone.info().disks[0].path
    assert overlay is not None and clone.info().disks[0].backing
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 20M 1M", overlay], check=True,
                   capture_output=True)
    yield clone
    for vm in (clone, base):
        with contextlib.suppress(AnyvirtError):
            vm.delete(disks=True)


def _flattened_sha(vm: VM, tmp_path: Path) -> str:
    path = vm.info().disks[0].path
    assert path is not None
    flat = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", "--", path, str(flat)], check=True)
    try:
        return sha256_file(flat)
    finally:
        flat.unlink()


def _vsphere_disk_sha(vm: VM, sim: Vcsim) -> str:
    path = vm.info().disks[0].path
    assert path is not None and sim.datastore_dir is not None
    relative = path.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
    (found,) = sim.datastore_dir.rglob(relative)
    return sha256_file(found)




def test_a_linked_clone_streams_flattened_with_no_staging_file(
        remote: tuple[Host, FaultProxy], linked_clone: VM, vc: Host, vcsim_vcenter: Vcsim,
        tmp_path: Path, temp_dir: Path) -> None:
    """11 MiB of guest data (10 in the base, 1 in the overlay) of a 64 MiB linked clone:
    the copy on vSphere holds the flattened chain byte for byte; the source link carries
    about the data once for the copy (qcow2 metadata and RPC on top), the temp dir never
    holds more than a socket, and the verification reads back the data ranges only, from
    the target alone: the source's side was hashed as the copy read it, so the source
    link carries next to nothing while the copy is verified."""
    _kvm, proxy = remote
    expected = _flattened_sha(linked_clone, tmp_path)
    seen: dict[str, int] = {"largest": 0}

    def watch(task: anyvirt.Task) -> None:
        seen["largest"] = max(seen["largest"], largest_file(temp_dir))
        if "verifying" in (task.message or "") and "copy_down" not in seen:
            seen["copy_down"] = proxy.relayed["down"]

    before = proxy.relayed["down"]
    result = anyvirt.migrate(linked_clone, to=vc, on_progress=watch)
    verify_down = proxy.relayed["down"] - seen["copy_down"]
    moved = vc.vms.get(result.vm_id)
    try:
        assert _vsphere_disk_sha(moved, vcsim_vcenter) == expected, "the chain, flattened"
        assert [d.method for d in result.disks] == [range_check.METHOD]
        assert result.disks[0].read_back_bytes == 11 * MIB
    finally:
        moved.delete(disks=True)
    data = 11 * MIB
    copy = seen["copy_down"] - before
    assert copy <= data * 1.1, f"{copy} bytes from the daemon for the copy of {data}"
    assert verify_down < data * 0.1, f"{verify_down} bytes from the daemon to verify {data}"
    assert seen["largest"] < MIB, f"a {seen['largest']}-byte file was staged"
    assert linked_clone.refresh().state is PowerState.STOPPED
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("where", [None, 20 * MIB + 7, 30 * MIB],
                         ids=["same", "changed-in-data", "changed-in-a-hole"])
def test_a_linked_clone_moved_to_a_target_without_ranged_reads_is_verified_from_its_digest(
        remote: tuple[Host, FaultProxy], linked_clone: VM, tmp_path: Path, temp_dir: Path,
        where: int | None) -> None:
    """memory:// reads no ranges: its copy is read back whole, here, and compared with the
    digest the chain's layer reads took as the copy read them (put back in guest order):
    the source link carries next to nothing while the copy is verified. A copy changed
    after the import (in the data, or where the source reads as zeros) still fails the
    move and leaves nothing."""
    _kvm, proxy = remote
    expected = _flattened_sha(linked_clone, tmp_path)
    seen: dict[str, int] = {}
    with anyvirt.connect(f"memory://digest-{os.urandom(3).hex()}") as target:
        def watch(task: anyvirt.Task) -> None:
            if "verifying" not in (task.message or "") or "copy_down" in seen:
                return
            seen["copy_down"] = proxy.relayed["down"]
            if where is not None:
                flip_memory_disk_byte(target, linked_clone.name, where)

        if where is not None:
            with pytest.raises(anyvirt.TaskFailed, match="differ"):
                anyvirt.migrate(linked_clone, to=target, on_progress=watch)
            assert "copy_down" in seen, "the copy was never changed"
            assert target.vms.list() == []
        else:
            result = anyvirt.migrate(linked_clone, to=target, on_progress=watch)
            verify_down = proxy.relayed["down"] - seen["copy_down"]
            moved = target.vms.get(result.vm_id)
            fmt, data = moved.native.contents[moved.info().disks[0].id]
            assert fmt == "raw"
            assert hashlib.sha256(data.ljust(64 * MIB, b"\0")).hexdigest() == expected
            assert [d.method for d in result.disks] == [range_check.METHOD]
            data_bytes = 11 * MIB
            assert verify_down < data_bytes * 0.1, (
                f"{verify_down} bytes from the daemon to verify {data_bytes}")
    assert linked_clone.refresh().state is PowerState.STOPPED
    assert list(temp_dir.iterdir()) == []


def test_the_source_gone_mid_stream_leaves_nothing_and_the_source_whole(
        libvirt_daemon: libvirt_fixtures.LibvirtDaemon, vc: Host, vcsim_vcenter: Vcsim,
        tmp_path: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once 4 MiB of a 16 MiB disk came down, the daemon is gone for this process (every
    connection dropped, new ones refused): the import fails on the unreadable source, the
    half-made VM and its files are removed from the target, the source's disk is what it
    was, and nothing is left in the temp dir."""
    image = tmp_path / "data.raw"
    image.write_bytes(os.urandom(16 * MIB))
    with anyvirt.connect(libvirt_daemon.anyvirt_uri) as direct:
        source = direct.vms.create(VMSpec(name=f"cut-{os.urandom(3).hex()}", cpus=1,
                                          memory_mib=16, disks=[DiskSpec(image=str(image))]))
        path = source.info().disks[0].path
        assert path is not None
        before = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        try:
            # a slow link (10 ms a 64 KiB), so the copy is still reading when the source
            # goes: the verification no longer reads the source, a cut after the copy
            # would go unnoticed, as it should
            with FaultProxy(str(libvirt_daemon.socket_path), pause=0.01) as proxy:
                verifying: list[str] = []

                def gone_midway(task: anyvirt.Task) -> None:
                    if "verifying" in (task.message or ""):
                        verifying.append(task.message or "")
                    if proxy.relayed["down"] > 4 * MIB and not proxy.refusing:
                        proxy.refusing = True
                        proxy.drop_all()

                uri = libvirt_daemon.anyvirt_uri.replace(str(libvirt_daemon.socket_path),
                                                         proxy.path)
                with anyvirt.connect(uri) as cut:
                    monkeypatch.setattr(cut.driver, "disks_in_place", lambda vm_id, job: None)
                    with pytest.raises(AnyvirtError) as failed:
                        anyvirt.migrate(cut.vms.get(source.id), to=vc, on_progress=gone_midway)
                assert proxy.refusing, f"the move failed before the source went: {failed.value}"
                assert isinstance(failed.value, ConnectionFailed), repr(failed.value)
                assert not verifying, "the source went during the copy, not after it"
            assert not vc.vms.exists(source.name)
            assert vcsim_vcenter.datastore_dir is not None
            assert list(vcsim_vcenter.datastore_dir.rglob(source.name)) == []
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == before
            assert source.refresh().state is PowerState.STOPPED
            assert list(temp_dir.iterdir()) == []
        finally:
            source.delete(disks=True)
