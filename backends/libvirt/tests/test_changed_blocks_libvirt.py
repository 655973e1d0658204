"""Changed-block tracking on a real libvirtd: persistent qcow2 bitmaps of stopped VMs.

An incremental backup reads only the chunks the bitmap says were written; every lost or
invalid record (the bitmap removed, the disk replaced, the point it built on gone) makes
a full read whose restore is byte for byte the disk, never a backup built on a wrong
record. Writes go through ``qemu-io``, which writes through the qcow2 driver as QEMU does
(the bitmap records them the same way).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_repository_libvirt import data_vm, guest_write, raw_bytes

import anyvirt
from anyvirt import BackupRepository, Capability
from anyvirt.host import Host
from anyvirt.model import DiskSpec, VMSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM

MIB = 1024 * 1024
DATA = 10 * MIB + MIB  # what data_vm holds, in whole chunks: 4..14 MiB and one at 40 MiB


def bitmaps(vm: VM) -> list[str]:
    path = vm.info().disks[0].path
    assert path is not None
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", "--", path],
                         check=True, capture_output=True, text=True).stdout
    found = json.loads(out)["format-specific"]["data"].get("bitmaps", [])
    return [b["name"] for b in found]


def disk_path(vm: VM) -> str:
    path = vm.info().disks[0].path
    assert path is not None
    return path


def test_a_local_daemon_declares_changed_blocks_the_test_driver_not(host: Host) -> None:
    assert host.supports(Capability.CHANGED_BLOCKS)
    with anyvirt.connect("libvirt+test:///default") as test:
        assert not test.supports(Capability.CHANGED_BLOCKS)
        assert "qcow2" in test.why_not(Capability.CHANGED_BLOCKS)


def test_incremental_backup_reads_only_the_changed_chunks(
        host: Host, tmp_path: Path, vms: Callable[[VM], VM]) -> None:
    vm = data_vm(host, tmp_path, vms)
    repo = BackupRepository(tmp_path / "repo")
    first = repo.backup(vm)
    assert first.read_bytes == DATA
    assert bitmaps(vm) == [first.disks[0]["change_mark"].split(":", 1)[1]]
    guest_write(vm, 20 * MIB + 4096, 64 * 1024, 0x5A)  # two small writes, far apart
    guest_write(vm, 50 * MIB, 8192, 0xA5)
    second = repo.backup(vm)
    assert second.incremental
    assert second.read_bytes == 2 * repo.chunk_size  # the two chunks written, nothing else
    # the parent's mark is dropped: one bitmap per disk, the newest point's
    assert bitmaps(vm) == [second.disks[0]["change_mark"].split(":", 1)[1]]
    copy = vms(repo.restore(second, to=host, name=unique_name("cbt")))
    assert raw_bytes(copy, tmp_path) == raw_bytes(vm, tmp_path)
    nothing = repo.backup(vm)
    assert nothing.read_bytes == 0 and repo.verify().ok


def test_disks_anyvirt_makes_keep_changed_block_marks(
        host: Host, tmp_path: Path, vms: Callable[[VM], VM]) -> None:
    """A linked clone's overlay and a blank disk are made by the daemon from anyvirt's
    volume XML. Without a stated qcow2 ``compat`` the daemon makes version 2 files, which
    cannot hold a bitmap: every backup of such a VM would read in full."""
    base = data_vm(host, tmp_path, vms)
    linked = vms(base.clone(unique_name("cbt-linked"), linked=True))
    blank = vms(host.vms.create(VMSpec(name=unique_name("cbt-blank"), cpus=1, memory_mib=64,
                                       disks=[DiskSpec(size_gib=0.0625)])))
    for vm in (linked, blank):
        repo = BackupRepository(tmp_path / f"repo-{vm.name}")
        repo.backup(vm)
        guest_write(vm, 20 * MIB + 4096, 4096, 0x5A)
        second = repo.backup(vm)
        assert second.read_bytes == repo.chunk_size, f"{vm.name} was read in full"
        assert len(bitmaps(vm)) == 1


def _bitmap_removed(vm: VM, repo: BackupRepository) -> None:
    for name in bitmaps(vm):
        subprocess.run(["qemu-img", "bitmap", "--remove", "-f", "qcow2", "--", disk_path(vm),
                        name], check=True, capture_output=True)


def _point_gone(vm: VM, repo: BackupRepository) -> None:
    # the newest point removed (pruned by hand, lost): the one before it had its mark
    # dropped when the newest was written, so nothing may be built on it
    repo.store.remove(f"points/{repo.points(vm)[-1].id}")


@pytest.mark.parametrize("lose", [_bitmap_removed, _point_gone], ids=["bitmap-removed", "point-gone"])
def test_a_lost_record_means_a_full_read(host: Host, tmp_path: Path, vms: Callable[[VM], VM],
                                         lose: Callable[[VM, BackupRepository], None]) -> None:
    vm = data_vm(host, tmp_path, vms)
    repo = BackupRepository(tmp_path / "repo")
    repo.backup(vm)
    guest_write(vm, 30 * MIB, MIB, 0x11)
    repo.backup(vm)
    guest_write(vm, 8 * MIB, 4096, 0x22)  # inside data the older point holds otherwise
    lose(vm, repo)
    again = repo.backup(vm)
    assert again.read_bytes == DATA + MIB  # every data chunk, the 30 MiB one too
    copy = vms(repo.restore(again, to=host, name=unique_name("cbt")))
    assert raw_bytes(copy, tmp_path) == raw_bytes(vm, tmp_path)


def test_a_replaced_disk_means_a_full_read(host: Host, tmp_path: Path,
                                           vms: Callable[[VM], VM]) -> None:
    """An older copy of the file put back (it carries the first mark, not the newest one):
    the backup must hold the copy's bytes, not the newest point's."""
    vm = data_vm(host, tmp_path, vms)
    repo = BackupRepository(tmp_path / "repo")
    repo.backup(vm)
    older = tmp_path / "older.qcow2"
    shutil.copy(disk_path(vm), older)
    guest_write(vm, 4 * MIB, MIB, 0x33)
    newest = repo.backup(vm)
    shutil.copy(older, disk_path(vm))
    again = repo.backup(vm)
    assert again.read_bytes == DATA
    copy = vms(repo.restore(again, to=host, name=unique_name("cbt")))
    assert raw_bytes(copy, tmp_path) == raw_bytes(vm, tmp_path)
    was = vms(repo.restore(newest, to=host, name=unique_name("cbt")))
    assert raw_bytes(was, tmp_path) != raw_bytes(vm, tmp_path)


def test_a_snapshot_revert_after_a_tracked_backup_works_and_reads_in_full(
        host: Host, tmp_path: Path, vms: Callable[[VM], VM]) -> None:
    """QEMU refuses to revert an internal snapshot while a bitmap is enabled: the revert
    drops anyvirt's marks first, and the next backup reads everything."""
    vm = data_vm(host, tmp_path, vms)
    snap = vm.snapshots.create("before")
    repo = BackupRepository(tmp_path / "repo")
    repo.backup(vm)
    guest_write(vm, 4 * MIB, MIB, 0x44)
    snap.revert()
    assert bitmaps(vm) == []
    again = repo.backup(vm)
    assert again.read_bytes == DATA
    copy = vms(repo.restore(again, to=host, name=unique_name("cbt")))
    assert raw_bytes(copy, tmp_path) == raw_bytes(vm, tmp_path)


def test_the_mark_records_what_the_running_guest_writes(
        guest: Callable[[str], VM], tmp_path: Path, vms: Callable[[VM], VM], host: Host) -> None:
    """The mark is taken while the VM is stopped; QEMU loads the bitmap when the VM
    starts and records the guest's own writes (the tiny guest writes its counter to
    sector 1 every second), and the next backup reads just that chunk."""
    vm = guest("cbt")
    guest_write(vm, 512 * 1024, 64 * 1024, 0x77)  # data in a second chunk the guest leaves be
    repo = BackupRepository(tmp_path / "repo", chunk_size=64 * 1024)  # the disk is 1 MiB
    first = repo.backup(vm)
    before = raw_bytes(vm, tmp_path)
    vm.start()
    deadline = time.monotonic() + 60
    while raw_bytes(vm, tmp_path)[512:1024] == before[512:1024]:
        assert time.monotonic() < deadline, "the guest never wrote its counter"
        time.sleep(1)
    vm.stop(force=True)
    second = repo.backup(vm)
    assert first.read_bytes >= 2 * repo.chunk_size and second.read_bytes == repo.chunk_size
    copy = vms(repo.restore(second, to=host, name=unique_name("cbt")))
    assert raw_bytes(copy, tmp_path) == raw_bytes(vm, tmp_path) != before


def _running_guest(guest: Callable[[str], VM], tmp_path: Path) -> VM:
    vm = guest("live")
    guest_write(vm, 512 * 1024, 64 * 1024, 0x77)  # data in a chunk the guest leaves be
    vm.start()
    deadline = time.monotonic() + 60
    while raw_bytes(vm, tmp_path)[512:516] == bytes(4):  # the guest's counter, once a second
        assert time.monotonic() < deadline, "the guest never wrote its counter"
        time.sleep(0.5)
    return vm


def _same_but_counter(a: bytes, b: bytes) -> bool:
    """Equal outside sector 1, where the running guest keeps its counter."""
    return a[:512] == b[:512] and a[1024:] == b[1024:]


def test_a_running_vm_is_backed_up_at_one_instant_then_only_its_changes(
        guest: Callable[[str], VM], tmp_path: Path, vms: Callable[[VM], VM], host: Host) -> None:
    """libvirt's backup job: the first point reads the allocated blocks, the next (VM still
    running) only what the guest wrote since the checkpoint, and after a stop the stopped
    path builds on the same checkpoint's bitmap."""
    vm = _running_guest(guest, tmp_path)
    repo = BackupRepository(tmp_path / "repo", chunk_size=64 * 1024)
    first = repo.backup(vm)
    assert first.disks[0]["change_mark"].startswith("checkpoint:")
    assert first.read_bytes >= 2 * repo.chunk_size
    second = repo.backup(vm)
    assert second.incremental and second.read_bytes <= repo.chunk_size  # the counter's chunk
    names = [c.getName() for c in vm.native.listAllCheckpoints(0)]
    assert names == [second.disks[0]["change_mark"].split(":", 1)[1]]  # the parent's: gone
    copy = vms(repo.restore(second, to=host, name=unique_name("cbt")))
    assert _same_but_counter(raw_bytes(copy, tmp_path), raw_bytes(vm, tmp_path))
    vm.stop(force=True)
    third = repo.backup(vm)
    assert third.read_bytes <= repo.chunk_size
    assert vm.native.listAllCheckpoints(0) == []  # the parent's checkpoint, dropped offline
    assert bitmaps(vm) == [third.disks[0]["change_mark"].split(":", 1)[1]]
    again = vms(repo.restore(third, to=host, name=unique_name("cbt")))
    assert raw_bytes(again, tmp_path) == raw_bytes(vm, tmp_path)
    assert repo.verify().ok


def test_a_deleted_checkpoint_means_a_full_read_of_the_running_vm(
        guest: Callable[[str], VM], tmp_path: Path, vms: Callable[[VM], VM], host: Host) -> None:
    vm = _running_guest(guest, tmp_path)
    repo = BackupRepository(tmp_path / "repo", chunk_size=64 * 1024)
    first = repo.backup(vm)
    name = first.disks[0]["change_mark"].split(":", 1)[1]
    vm.native.checkpointLookupByName(name, 0).delete(0)
    again = repo.backup(vm)
    assert again.read_bytes == first.read_bytes
    vm.stop(force=True)
    copy = vms(repo.restore(again, to=host, name=unique_name("cbt")))
    assert _same_but_counter(raw_bytes(copy, tmp_path), raw_bytes(vm, tmp_path))


def test_a_vm_backed_up_running_takes_snapshots_when_stopped(
        guest: Callable[[str], VM], tmp_path: Path, vms: Callable[[VM], VM], host: Host) -> None:
    """libvirt 9.0 refuses block operations on a stopped VM with checkpoints ("cannot
    perform block operations while checkpoint exists"): a snapshot forgets anyvirt's
    checkpoints first (their bitmaps stay: the stopped path still reads them)."""
    vm = _running_guest(guest, tmp_path)
    repo = BackupRepository(tmp_path / "repo", chunk_size=64 * 1024)
    repo.backup(vm)
    vm.stop(force=True)
    snap = vm.snapshots.create("after-a-running-backup")
    guest_write(vm, 512 * 1024, 4096, 0x12)
    after = repo.backup(vm)
    # built on the checkpoint's bitmap: the written chunk, and the counter's (chunk 0) where
    # the guest ticked between the running backup and the stop
    assert repo.chunk_size <= after.read_bytes <= 2 * repo.chunk_size
    snap.revert()
    again = repo.backup(vm)
    copy = vms(repo.restore(again, to=host, name=unique_name("cbt")))
    assert raw_bytes(copy, tmp_path) == raw_bytes(vm, tmp_path)


def test_a_vm_backed_up_while_running_can_still_be_deleted(
        guest: Callable[[str], VM], tmp_path: Path, host: Host) -> None:
    """The backup job leaves a checkpoint, which libvirt will not undefine a domain with
    unless told: a delete must not fail on anyvirt's own mark."""
    vm = _running_guest(guest, tmp_path)
    BackupRepository(tmp_path / "repo", chunk_size=64 * 1024).backup(vm)
    assert vm.native.listAllCheckpoints(0)
    vm.stop(force=True)
    vm.delete()
    assert not host.vms.exists(vm.id)


def test_a_vm_backed_up_while_running_can_still_migrate(
        guest: Callable[[str], VM], tmp_path: Path, pair: tuple[Host, Host],
        vms: Callable[[VM], VM]) -> None:
    """Checkpoints stay behind on a move (their record does not travel): the move goes on,
    and the source keeps nothing of the VM."""
    vm = _running_guest(guest, tmp_path)
    BackupRepository(tmp_path / "repo", chunk_size=64 * 1024).backup(vm)
    assert vm.native.listAllCheckpoints(0)
    vm.migrate(to=pair[1], live=True)
    moved = vms(pair[1].vms.get(vm.id))
    moved.migrate(to=pair[0], live=True)  # and back, to be backed up there again
    BackupRepository(tmp_path / "repo", chunk_size=64 * 1024).backup(moved)
    moved.stop(force=True)
    moved.migrate(to=pair[1], live=False)  # a cold move undefines the source itself
    assert not pair[0].vms.exists(vm.id)
    moved = vms(pair[1].vms.get(vm.id))
    moved.delete()
    assert not pair[1].vms.exists(vm.id)
