"""Proxmox VE's own backups (``host.extension(ProxmoxBackups)``): vzdump, list, restore, delete.

Every request is held to the official schema (the autouse ``traffic`` fixture).
fakepve runs the vzdump task but writes no archive, and refuses every restore,
so two stand-ins of this project's answer those (``VzdumpStandIn``: the archive
volume in fakepve's storage model; ``ArchiveRestoreStandIn``: PVE's refusals,
then the archived config made into a VM by fakepve's own create, as a
``qmrestore`` task). Without the first, a vzdump that leaves no archive must
fail rather than report a backup that is not there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from anyvirt_proxmox import NativeBackup, ProxmoxBackups
from fakepve import FakePve
from pve_support import (
    ArchiveRestoreStandIn,
    InProcessFakePve,
    Send,
    StandIn,
    Traffic,
    VzdumpStandIn,
    pve_response,
)

import anyvirt
from anyvirt import DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.errors import AlreadyExists, InvalidSpec, NotFound, TaskFailed
from anyvirt.host import Host
from anyvirt.vm import VM

VOLID = re.compile(r"^local:backup/vzdump-qemu-(\d+)-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.vma\.zst$")


@pytest.fixture
def dumps(fake: InProcessFakePve, traffic: Traffic) -> VzdumpStandIn:
    standin = VzdumpStandIn(fake)
    traffic.standins.append(standin)
    return standin


@pytest.fixture
def restores(fake: InProcessFakePve, traffic: Traffic, dumps: VzdumpStandIn) -> ArchiveRestoreStandIn:
    standin = ArchiveRestoreStandIn(fake, dumps)
    traffic.standins.append(standin)
    return standin


@pytest.fixture
def make(pve_host: Host, pve: FakePve) -> Iterator[Callable[..., VM]]:
    made: list[VM] = []

    def create(name: str, **changes: object) -> VM:
        spec = VMSpec(name=name, cpus=2, memory_mib=96, disks=[DiskSpec(size_gib=0.0625)], nics=[NicSpec()],
                      node="pve1")
        vm = pve_host.vms.create(anyvirt.model.evolve(spec, **changes) if changes else spec)
        made.append(vm)
        return vm

    yield create
    for vm in [*made, *(v for v in pve_host.vms.list() if v.name.startswith("restored-"))]:
        try:
            vm.refresh()
            if vm.state is not PowerState.STOPPED:
                vm.stop(force=True)
            vm.delete()
        except anyvirt.AnyvirtError:
            continue
    for store in pve.storages.values():
        for name in [n for n in store.get("volumes", {}) if n.startswith("backup/")]:
            del store["volumes"][name]


def test_a_vzdump_becomes_a_listed_archive(pve_host: Host, make: Callable[..., VM], dumps: VzdumpStandIn,
                                           traffic: Traffic) -> None:
    vm = make("dumped")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm, notes="{{guestname}} nightly", protected=True)
    assert isinstance(made, NativeBackup)
    match = VOLID.match(made.volid)
    assert match is not None and match[1] == vm.id
    assert (made.vm_id, made.node, made.storage, made.format) == (vm.id, "pve1", "local", "vma.zst")
    assert made.notes == "dumped nightly" and made.protected and made.size_bytes > 0
    sent = dict(traffic.bodies[traffic.paths().index("/api2/json/nodes/pve1/vzdump")])
    assert sent == {"vmid": vm.id, "storage": "local", "mode": "snapshot", "compress": "zstd",
                    "notes-template": "{{guestname}} nightly", "protected": "1"}
    assert backups.backups(vm) == [made]
    assert made in backups.backups()


def test_a_running_vm_is_backed_up_in_snapshot_mode(pve_host: Host, make: Callable[..., VM],
                                                     dumps: VzdumpStandIn) -> None:
    vm = make("busy")
    vm.start()
    made = pve_host.extension(ProxmoxBackups).backup(vm)
    vm.refresh()
    assert vm.state is PowerState.RUNNING and made.vm_id == vm.id


def test_a_vzdump_that_leaves_no_archive_is_a_failure(pve_host: Host, make: Callable[..., VM]) -> None:
    # fakepve itself, no stand-in: the task ends OK and no archive appears
    vm = make("lost")
    with pytest.raises(TaskFailed, match="no new backup"):
        pve_host.extension(ProxmoxBackups).backup(vm)


def test_bad_options_are_refused_before_any_request(pve_host: Host, make: Callable[..., VM],
                                                    traffic: Traffic) -> None:
    vm = make("careful")
    backups = pve_host.extension(ProxmoxBackups)
    before = len(traffic.requests)
    for bad in ({"mode": "fast"}, {"compress": "xz"}, {"storage": "../etc"}, {"notes": "x" * 1025}):
        with pytest.raises(InvalidSpec):
            backups.backup(vm, **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec):
        backups.restore("local:backup/../../etc/passwd")
    with pytest.raises(InvalidSpec):
        backups.restore("local:backup/vzdump-qemu-100-x.vma.zst", name="not a dns name")
    assert len(traffic.requests) == before


def test_a_storage_without_backup_content_is_refused(pve_host: Host, make: Callable[..., VM],
                                                     dumps: VzdumpStandIn) -> None:
    vm = make("nowhere")
    with pytest.raises(InvalidSpec, match="no storage 'local-lvm' takes backups"):
        pve_host.extension(ProxmoxBackups).backup(vm, storage="local-lvm")


def test_restore_makes_a_new_vm_beside_the_original(pve_host: Host, pve: FakePve, make: Callable[..., VM],
                                                    restores: ArchiveRestoreStandIn) -> None:
    vm = make("original")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm)
    copy = backups.restore(made, name="restored-copy", storage="local-lvm")
    assert copy.id != vm.id and copy.name == "restored-copy"
    info, source = copy.info(), vm.info()
    assert (info.cpus, info.memory_mib, len(info.disks)) == (2, 96, 1)
    assert info.disks[0].size_bytes == source.disks[0].size_bytes
    assert info.nics[0].mac != source.nics[0].mac  # unique=1: a copy that can run beside the original
    assert info.extra["uuid"] != source.extra["uuid"]
    assert restores.restored[-1] == {"vmid": copy.id, "archive": made.volid, "storage": "local-lvm",
                                     "unique": "1", "name": "restored-copy"}
    task = pve.tasks[next(u for u in pve.tasks if f":qmrestore:{copy.id}:" in u)]
    assert task["exitstatus"] == "OK"
    assert pve_host.vms.get("original").id == vm.id  # the original is untouched


def test_restore_of_a_deleted_backup_is_not_found(pve_host: Host, make: Callable[..., VM],
                                                  restores: ArchiveRestoreStandIn) -> None:
    vm = make("gone")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm)
    backups.delete(made)
    assert backups.backups(vm) == []
    with pytest.raises(NotFound):
        backups.restore(made, name="restored-never")
    assert [v for v in pve_host.vms.list() if v.name == "restored-never"] == []


def test_a_protected_backup_is_not_deleted(pve_host: Host, make: Callable[..., VM],
                                           dumps: VzdumpStandIn) -> None:
    vm = make("kept")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm, protected=True)
    with pytest.raises(TaskFailed, match="protected"):
        backups.delete(made)
    assert backups.backups(vm) == [made]


def test_restore_under_a_name_taken_is_refused(pve_host: Host, make: Callable[..., VM],
                                               restores: ArchiveRestoreStandIn, traffic: Traffic) -> None:
    vm = make("twin")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm)
    with pytest.raises(AlreadyExists):
        backups.restore(made, name="twin")
    assert restores.restored == []


class TakenIdStandIn(StandIn):
    """Stand-in for another client: ``/cluster/nextid`` does not reserve, so once it answers an
    id another VM has meanwhile."""

    def __init__(self, taken: int) -> None:
        self.taken, self.answered = taken, False

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        if self.answered or not str(request.url).endswith("/cluster/nextid"):
            return None
        self.answered = True
        return pve_response(request, 200, str(self.taken))


def test_a_restore_that_meets_a_taken_vmid_asks_again(pve_host: Host, pve: FakePve, make: Callable[..., VM],
                                                      restores: ArchiveRestoreStandIn,
                                                      traffic: Traffic) -> None:
    vm = make("racer")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm)
    taken = int(vm.id) + 50
    pve.add_vm(taken, "squatter", "pve2", "stopped", {"memory": 64, "cores": 1})
    try:
        traffic.standins.insert(0, TakenIdStandIn(taken))
        copy = backups.restore(made, name="restored-racer")
        assert copy.id != str(taken) and copy.name == "restored-racer"
        tries = [b for b in traffic.bodies if b.get("archive") == made.volid]
        assert [t["vmid"] for t in tries] == [str(taken), copy.id]
        assert pve.vm(taken).name == "squatter"  # never overwritten
    finally:
        pve.vms[:] = [v for v in pve.vms if v.vmid != taken]


def test_a_restore_that_fails_leaves_no_vm(pve_host: Host, make: Callable[..., VM],
                                           restores: ArchiveRestoreStandIn) -> None:
    vm = make("unlucky")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm)
    before = {v.id for v in pve_host.vms.list()}
    with pytest.raises(anyvirt.AnyvirtError, match="does not support vm images"):
        backups.restore(made, name="restored-nowhere", storage="local")  # 'local' takes no images
    assert {v.id for v in pve_host.vms.list()} == before


def test_a_restore_given_up_is_removed_once_its_task_ends(pve_host: Host, pve: FakePve,
                                                          fake: InProcessFakePve, make: Callable[..., VM],
                                                          restores: ArchiveRestoreStandIn) -> None:
    vm = make("slowpoke")
    backups = pve_host.extension(ProxmoxBackups)
    made = backups.backup(vm)
    fake.sync(lambda: pve.add_ceph_storage("ceph-pool"))
    fake.sync(lambda: pve.ceph_slow(20))  # every RBD operation 20 PVE seconds longer: 1 s here
    pve.time_scale = 0.05
    try:
        with pytest.raises(anyvirt.Timeout):
            backups.restore(made, name="restored-late", storage="ceph-pool", timeout=0.3)
        deadline = time.monotonic() + 15
        while [v for v in pve.vms if v.name == "restored-late"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [v for v in pve.vms if v.name == "restored-late"], "the late VM was removed"
        assert not pve.storages["ceph-pool"].get("volumes"), "and its disk"
    finally:
        pve.time_scale = 0
        fake.sync(lambda: pve.ceph_recover())
        fake.sync(lambda: pve.storages.pop("ceph-pool"))
