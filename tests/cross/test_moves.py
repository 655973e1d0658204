"""Cross-platform moves and backups between a real libvirtd (QEMU/KVM) and vcsim, verified,
and failure injection: connections cut mid-download and mid-upload (a loopback proxy of
our own), the target killed mid-copy, a conversion that fails, full disks (real tmpfs).

After every failure the source is exactly as it was (state, disk bytes, snapshots),
nothing of the copy remains on the target, and the temp dir is empty.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyvirt_libvirt.testbed.fixtures as libvirt_fixtures
import anyvirt_vsphere.testbed.fixtures as vcsim_fixtures
import move_faults_support
import pytest
from anyvirt_libvirt.demo_image import read_console, wait_for_marker
from anyvirt_vsphere.testbed.vcsim import Vcsim
from fault_proxy_support import FaultProxy
from move_faults_support import sha256_file, small_tmpfs

import anyvirt
from anyvirt import AnyvirtError, ConnectionFailed, DiskSpec, PowerState, TaskFailed, VMSpec
from anyvirt.host import Host
from anyvirt.kit import raw_view
from anyvirt.migration import range_check
from anyvirt.tasks import Job
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM

libvirt_daemon = libvirt_fixtures.libvirt_daemon
guest_image = libvirt_fixtures.guest_image
vcsim_vcenter = vcsim_fixtures.vcsim_vcenter

temp_dir = move_faults_support.temp_dir  # the fixture, shared

MIB = 1024 * 1024
NODE = "DC0_C0_H0"


@pytest.fixture(scope="module")
def kvm(libvirt_daemon: libvirt_fixtures.LibvirtDaemon) -> Iterator[Host]:
    with anyvirt.connect(libvirt_daemon.anyvirt_uri) as host:
        yield host



def _random_image(tmp_path: Path, size: int = 16 * MIB) -> Path:
    image = tmp_path / "data.raw"
    with open(image, "wb") as handle:
        handle.write(os.urandom(size // 2))
        handle.truncate(size)  # half random, half zeros
    return image


def _libvirt_disk_sha(vm: VM) -> str:
    path = vm.info().disks[0].path
    assert path is not None
    return sha256_file(Path(path))


def _vsphere_disk_sha(vm: VM, sim: Vcsim) -> str:
    path = vm.info().disks[0].path  # "[LocalDS_0] dir/x.vmdk"
    assert path is not None and sim.datastore_dir is not None
    relative = path.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
    found = list(sim.datastore_dir.rglob(relative))
    assert len(found) == 1, found
    return sha256_file(found[0])


def _import_dirs(sim: Vcsim) -> list[Path]:
    assert sim.datastore_dir is not None
    return list(sim.datastore_dir.rglob("anyvirt-import-*"))


def _left_on(sim: Vcsim, name: str) -> list[Path]:
    """Whatever of a VM ``name`` is on the simulator's datastores: its folder (an import
    lease writes the disks there) and the datastore import folders."""
    assert sim.datastore_dir is not None
    return [*sim.datastore_dir.rglob(name), *_import_dirs(sim)]


def _proxied(sim: Vcsim, port: int) -> str:
    """The simulator's URI through a proxy on ``port``; a short call timeout, as a dead
    server must not keep a test waiting."""
    return sim.anyvirt_uri_with_ca.replace(f":{sim.port}?", f":{port}?") + "&timeout=15"


# ------------------------------------------------------------------ directions


def test_libvirt_to_vsphere_and_back_boots_on_kvm(kvm: Host, vc: Host, guest_image: Path,
                                                 made: Callable[[VM], VM], temp_dir: Path) -> None:
    """The tiny guest goes KVM -> vcsim -> KVM, each step read back and compared, and the
    copy that returns boots: its console prints the marker."""
    original = made(kvm.vms.create(VMSpec(name=unique_name("there"), cpus=1, memory_mib=16,
                                          disks=[DiskSpec(image=str(guest_image))])))
    before = _libvirt_disk_sha(original)
    there = anyvirt.migrate(original, to=vc)
    made(vc.vms.get(there.vm_id))
    assert there.verified == ("config", "byte-count", "read-back")
    assert [d.method for d in there.disks] == [range_check.METHOD], "vSphere reads ranges"
    assert there.consistency == "stopped"
    assert _libvirt_disk_sha(original) == before, "the source is untouched"

    back = anyvirt.migrate(vc.vms.get(there.vm_id), to=kvm, name=unique_name("back"), start=True,
                           delete_source=True)
    copy = made(kvm.vms.get(back.vm_id))
    # the vSphere disk streams out (no download first, so no hash of it): the copy is
    # compared with the source byte for byte
    assert "read-back" in back.verified and back.disks[0].method == "qemu-img compare"
    assert not vc.vms.exists(there.vm_id), "deleted only after the copy was verified"
    log = Path(copy.info().extra["console_log"])
    wait_for_marker(log, timeout=60)
    assert "ANYVIRT-GUEST-UP" in read_console(log)
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("read", ["in place", "streamed from the daemon"])
def test_backups_restore_across_libvirt_and_vsphere(kvm: Host, vc: Host, tmp_path: Path,
                                                    made: Callable[[VM], VM], temp_dir: Path,
                                                    read: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """libvirt's disks are read where they are (a local daemon) or, as from a remote one,
    streamed through ``virStorageVolDownload`` and counted against the volume's size."""
    if read != "in place":
        monkeypatch.setattr(kvm.driver, "disks_in_place", lambda vm_id, job: None)
    image = _random_image(tmp_path, 4 * MIB)
    on_vc = made(vc.vms.create(VMSpec(name=unique_name("bk"), node=NODE, memory_mib=64,
                                      disks=[DiskSpec(image=str(image))])))
    archive = on_vc.backup(tmp_path / "vc.avbk")
    assert anyvirt.migration.verify(archive).checksums
    on_kvm = made(kvm.restore(archive, name=unique_name("from-vc")))
    archive2 = on_kvm.backup(tmp_path / "kvm.avbk")
    back = made(vc.restore(archive2, name=unique_name("from-kvm")))
    data = Path(image).read_bytes()
    readback = tmp_path / "readback"
    readback.mkdir()
    exported = vc.driver.export_disks(back.id, readback, Job("read back", 60))
    assert Path(exported[0].path).read_bytes()[: len(data)] == data, "byte for byte, twice over"
    assert list(temp_dir.iterdir()) == []


def test_a_move_sends_only_the_allocated_data(kvm: Host, vcsim_vcenter: Vcsim, tmp_path: Path,
                                             made: Callable[[VM], VM], temp_dir: Path) -> None:
    """A 64 MiB disk holding 8 MiB of data goes to vSphere as a streamOptimized VMDK through
    an import lease: what crosses the wire until the read-back starts is the data plus
    about 1 % of framing (and the SOAP calls), never the zeros; nothing is staged."""
    image = tmp_path / "sparse.raw"
    with open(image, "wb") as handle:
        handle.write(os.urandom(6 * MIB))
        handle.seek(40 * MIB)
        handle.write(os.urandom(2 * MIB))
        handle.truncate(64 * MIB)
    source = made(kvm.vms.create(VMSpec(name=unique_name("sparse"), cpus=1, memory_mib=16,
                                        disks=[DiskSpec(image=str(image))])))
    before = _libvirt_disk_sha(source)
    copied: list[int] = []
    with FaultProxy(("127.0.0.1", vcsim_vcenter.port)) as proxy, \
         anyvirt.connect(_proxied(vcsim_vcenter, proxy.port), password=vcsim_vcenter.password) as vc:
        def seen(task: anyvirt.Task) -> None:
            if "verifying" in (task.message or "") and not copied:
                copied.append(proxy.relayed["up"] + proxy.relayed["down"])

        result = anyvirt.migrate(source, to=vc, name=unique_name("sparse-copy"), on_progress=seen)
        verification = proxy.relayed["up"] + proxy.relayed["down"] - copied[0]
        moved = vc.vms.get(result.vm_id)
        try:
            assert "read-back" in result.verified
            assert [d.method for d in result.disks] == [range_check.METHOD]
            assert result.disks[0].read_back_bytes == 8 * MIB, "the data ranges, no zeros"
            assert vc.driver.nfc_keeps_uploads  # type: ignore[attr-defined]
            disk = moved.info().disks[0]
            assert disk.size_bytes == 64 * MIB and "anyvirt-import-" not in (disk.path or "")
            assert _vsphere_disk_sha(moved, vcsim_vcenter) == sha256_file(image)
        finally:
            moved.delete(disks=True)
    assert copied and copied[0] <= 8 * MIB * 1.05, f"{copied[0]} bytes on the wire for 8 MiB"
    # the verification reads back the data, not the 56 MiB of zeros around it
    assert verification <= 8 * MIB * 1.1, f"{verification} bytes read back for 8 MiB of data"
    assert _libvirt_disk_sha(source) == before
    assert list(temp_dir.iterdir()) == []


def test_a_host_that_keeps_nothing_a_lease_receives_gets_the_disk_through_the_datastore(
        kvm: Host, tmp_path: Path, made: Callable[[VM], VM], temp_dir: Path) -> None:
    """Stock vcsim (without our patch 0003) answers 200 to an import lease's upload and
    keeps none of it. The import sees the blank disk the host left, removes that VM, and
    sends the disk through the datastore instead; the connection remembers."""
    image = _random_image(tmp_path, 8 * MIB)
    source = made(kvm.vms.create(VMSpec(name=unique_name("stock"), cpus=1, memory_mib=16,
                                        disks=[DiskSpec(image=str(image))])))
    with Vcsim(esx=True, vms=0, workdir=tmp_path / "stock", without_patches=("0003",)) as stock, \
         anyvirt.connect(stock.anyvirt_uri_with_ca, password=stock.password) as target:
        result = anyvirt.migrate(source, to=target)
        assert target.driver.nfc_keeps_uploads is False  # type: ignore[attr-defined]
        assert [vm.name for vm in target.vms.list()] == [source.name]
        copy = target.vms.get(result.vm_id)
        assert _vsphere_disk_sha(copy, stock) == sha256_file(image)
        assert "read-back" in result.verified
        second = target.vms.create(VMSpec(name="second", memory_mib=64,
                                          disks=[DiskSpec(image=str(image))]))
        assert _vsphere_disk_sha(second, stock) == sha256_file(image)
    assert list(temp_dir.iterdir()) == []


# ------------------------------------------------------------------ failures


def test_a_cut_download_fails_and_keeps_the_source(vcsim_vcenter: Vcsim, vc: Host, kvm: Host,
                                                   tmp_path: Path, made: Callable[[VM], VM],
                                                   temp_dir: Path) -> None:
    image = _random_image(tmp_path)
    source = made(vc.vms.create(VMSpec(name=unique_name("cutdown"), node=NODE, memory_mib=64,
                                       disks=[DiskSpec(image=str(image))])))
    before = _vsphere_disk_sha(source, vcsim_vcenter)
    kvm_names = {vm.name for vm in kvm.vms.list()}
    # the move streams the disk as the import reads it: the server gone mid-stream (every
    # connection dropped, new ones refused) fails the import
    with FaultProxy(("127.0.0.1", vcsim_vcenter.port)) as proxy, \
         anyvirt.connect(_proxied(vcsim_vcenter, proxy.port), password=vcsim_vcenter.password) as cut:
        def gone_midway(_task: anyvirt.Task) -> None:
            if proxy.relayed["down"] > 4 * MIB and not proxy.refusing:
                proxy.refusing = True
                proxy.drop_all()

        with pytest.raises((ConnectionFailed, TaskFailed)):
            anyvirt.migrate(cut.vms.get(source.id), to=kvm, delete_source=True,
                            on_progress=gone_midway)
        assert proxy.refusing, "the move failed before the server went"
    # a backup downloads the disk into its archive: a cut download fails it
    with FaultProxy(("127.0.0.1", vcsim_vcenter.port), cut_after=4 * MIB, direction="down") as proxy, \
         anyvirt.connect(_proxied(vcsim_vcenter, proxy.port), password=vcsim_vcenter.password) as cut:
        with pytest.raises(ConnectionFailed):
            cut.vms.get(source.id).backup(tmp_path / "cut.avbk")
        assert proxy.cuts == 1
    assert not (tmp_path / "cut.avbk").exists() and not (tmp_path / "cut.avbk.partial").exists()
    assert source.refresh().state is PowerState.STOPPED
    assert _vsphere_disk_sha(source, vcsim_vcenter) == before, "the source's disk is unchanged"
    assert {vm.name for vm in kvm.vms.list()} == kvm_names, "nothing was made on the target"
    assert list(temp_dir.iterdir()) == []


def test_a_cut_upload_leaves_nothing_on_the_datastore(vcsim_vcenter: Vcsim, kvm: Host,
                                                      tmp_path: Path, made: Callable[[VM], VM],
                                                      temp_dir: Path) -> None:
    source = made(kvm.vms.create(VMSpec(name=unique_name("cutup"), cpus=1, memory_mib=16,
                                        disks=[DiskSpec(image=str(_random_image(tmp_path)))])))
    source.snapshots.create("kept")
    before = _libvirt_disk_sha(source)
    with FaultProxy(("127.0.0.1", vcsim_vcenter.port), cut_after=4 * MIB, direction="up") as proxy, \
         anyvirt.connect(_proxied(vcsim_vcenter, proxy.port), password=vcsim_vcenter.password) as cut:
        with pytest.raises(ConnectionFailed):
            anyvirt.migrate(source, to=cut, delete_source=True)
        assert proxy.cuts == 1
        assert not cut.vms.exists(source.name)
    assert _left_on(vcsim_vcenter, source.name) == [], "the half-uploaded disk was removed"
    assert source.refresh().state is PowerState.STOPPED
    assert [s.name for s in source.snapshots.list()] == ["kept"]
    assert _libvirt_disk_sha(source) == before
    assert list(temp_dir.iterdir()) == []


def test_the_target_killed_mid_copy(kvm: Host, tmp_path: Path, made: Callable[[VM], VM],
                                    temp_dir: Path) -> None:
    """vcsim is killed (SIGKILL) once 2 MiB of the disk went over the link to it; the link
    is slowed so that happens mid-upload."""
    source = made(kvm.vms.create(VMSpec(name=unique_name("killed"), cpus=1, memory_mib=16,
                                        disks=[DiskSpec(image=str(_random_image(tmp_path)))])))
    before = _libvirt_disk_sha(source)
    with Vcsim(esx=True, vms=0, workdir=tmp_path / "doomed") as doomed, \
         FaultProxy(("127.0.0.1", doomed.port), direction="up", pause=0.005) as slow, \
         anyvirt.connect(_proxied(doomed, slow.port), password=doomed.password) as target:
        killed = threading.Event()

        def kill_when_copying() -> None:
            # by what the slowed link has carried to it: the disk is under way, and no file
            # system race (the simulator renames its partial files) can hide it
            while not killed.is_set():
                if slow.relayed["up"] > 2 * MIB:
                    doomed.kill()
                    killed.set()
                time.sleep(0.01)

        watcher = threading.Thread(target=kill_when_copying, daemon=True)
        watcher.start()
        try:
            with pytest.raises(ConnectionFailed) as failed:
                anyvirt.migrate(source, to=target, delete_source=True)
        finally:
            killed.set()
        assert not doomed.running, f"the simulator died during the upload, not: {failed.value}"
    assert source.refresh().state is PowerState.STOPPED
    assert _libvirt_disk_sha(source) == before
    assert list(temp_dir.iterdir()) == []


def test_a_failing_export_in_a_full_temp_dir(kvm: Host, vc: Host, vcsim_vcenter: Vcsim,
                                             tmp_path: Path, made: Callable[[VM], VM],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Where nothing can be read in place or streamed through a raw view (a remote daemon,
    a machine without FUSE), the KVM export (qcow2, 8 MiB of data) goes to a temp dir of
    6 MiB and does not fit: the move fails, all is removed. (The verification writes
    nothing there any more: it reads the data ranges back, hashed, not a file.)"""
    source = made(kvm.vms.create(VMSpec(name=unique_name("noroom"), cpus=1, memory_mib=16,
                                        disks=[DiskSpec(image=str(_random_image(tmp_path)))])))
    before = _libvirt_disk_sha(source)
    monkeypatch.setattr(kvm.driver, "disks_in_place", lambda vm_id, job: None)
    monkeypatch.setattr(raw_view, "available", lambda: False)
    with small_tmpfs(tmp_path / "small", "6m") as small:
        monkeypatch.setattr(tempfile, "tempdir", str(small))
        with pytest.raises(AnyvirtError, match=r"No space left|no room"):
            anyvirt.migrate(source, to=vc, delete_source=True)
        assert list(small.iterdir()) == []
    assert not vc.vms.exists(source.name) and _left_on(vcsim_vcenter, source.name) == []
    assert _libvirt_disk_sha(source) == before and source.refresh().state is PowerState.STOPPED


def test_a_full_datastore_is_caught_by_the_read_back_and_leaves_nothing(kvm: Host, tmp_path: Path,
                                                         made: Callable[[VM], VM],
                                                         temp_dir: Path) -> None:
    source = made(kvm.vms.create(VMSpec(name=unique_name("dsfull"), cpus=1, memory_mib=16,
                                        disks=[DiskSpec(image=str(_random_image(tmp_path)))])))
    before = _libvirt_disk_sha(source)
    with small_tmpfs(tmp_path / "ds", "8m") as ds, \
         Vcsim(esx=True, vms=0, workdir=ds) as full, \
         anyvirt.connect(full.anyvirt_uri_with_ca, password=full.password) as target:
        # vcsim 0.24.2 either breaks the connection or answers 200 to a PUT it could only
        # partly store; then only reading the copy back shows it
        with pytest.raises((ConnectionFailed, TaskFailed)) as failed:
            anyvirt.migrate(source, to=target, delete_source=True)
        assert isinstance(failed.value, ConnectionFailed) or "differs from the source" in str(
            failed.value)
        assert not target.vms.exists(source.name) and _left_on(full, source.name) == []
    assert _libvirt_disk_sha(source) == before
    assert list(temp_dir.iterdir()) == []


def test_a_running_vsphere_vm_whose_snapshot_makes_no_delta_is_refused(
        vc: Host, kvm: Host, tmp_path: Path, made: Callable[[VM], VM], temp_dir: Path) -> None:
    """A point-in-time copy exports the base disk a snapshot freezes (ESXi writes a delta
    after it). vcsim 0.24.2 takes snapshots without delta disks, so nothing is frozen:
    the copy is refused, the snapshot removed again, and the VM keeps running."""
    image = _random_image(tmp_path, 4 * MIB)
    source = made(vc.vms.create(VMSpec(name=unique_name("live"), node=NODE, memory_mib=64,
                                       disks=[DiskSpec(image=str(image))])))
    source.start()
    kvm_names = {vm.name for vm in kvm.vms.list()}
    with pytest.raises(anyvirt.InvalidState, match="no snapshot delta"):
        anyvirt.migrate(source, to=kvm, snapshot=True)
    assert source.refresh().state is PowerState.RUNNING
    assert source.snapshots.list() == [], "the point-in-time snapshot is removed"
    assert {vm.name for vm in kvm.vms.list()} == kvm_names
    assert list(temp_dir.iterdir()) == []
