"""The semantics every backend shares, on real booted guests (one boot per behaviour):
clones of running VMs, linked clones of VMs with snapshots, templates, cold
migration carrying snapshots, snapshot meaning surviving a native revert, and
concurrent use leaving nothing orphaned. (A memory-less snapshot surviving a native
revert is in ``test_audit_regressions``, on the guest that test boots anyway.)"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from anyvirt_libvirt.demo_image import disk_counter, wait_for_counter, wait_for_marker
from libvirt_support import console_log, destroy

from anyvirt.errors import AlreadyExists, CapacityExceeded, InvalidState, NotFound
from anyvirt.host import Host
from anyvirt.model import DiskSpec, PowerState, VMSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM


def _disk(vm: VM) -> Path:
    return Path(vm.info().disks[0].path or "")


def _pool_volumes(host: Host) -> set[str]:
    pool = host.native.storagePoolLookupByName("default")
    pool.refresh(0)
    return {str(v.path()) for v in pool.listAllVolumes(0)}


def test_clones_of_a_running_vm_boot_with_its_disk_as_it_was(
    guest: Callable[[str], VM], vms: Callable[[VM], VM]
) -> None:
    vm = guest("hot")
    vm.start()
    wait_for_counter(console_log(vm), 1)
    full = vms(vm.clone(unique_name("hot-full")))
    linked, sibling = (vms(c) for c in vm.clone(unique_name("hot-linked"), linked=True, count=2))
    assert vm.refresh().state is PowerState.RUNNING, "the original ran on throughout"
    assert linked.info().disks[0].backing == sibling.info().disks[0].backing, (
        "bulk linked clones share one frozen copy")
    copied = disk_counter(_disk(full))
    assert copied is not None and copied >= 1, "the guest's writes are in the copy"
    assert linked.info().disks[0].backing, "a linked clone sits on a frozen copy"
    assert _disk(vm) != _disk(full) and vm.info().disks[0].backing is None
    vm.stop(force=True)
    # the full copy holds the guest's disk (its counter, above); the linked clone, the
    # more layered of the two (an overlay on a frozen copy), boots from it
    linked.start()
    wait_for_marker(console_log(linked))
    linked.stop(force=True)


def test_linked_clones_of_a_vm_with_snapshots_share_one_frozen_copy(
    guest: Callable[[str], VM], vms: Callable[[VM], VM]
) -> None:
    vm = guest("snapped")
    vm.snapshots.create("before")
    clones = [vms(c) for c in vm.clone(unique_name("snapped"), linked=True, count=2)]
    bases = {c.info().disks[0].backing for c in clones}
    assert len(bases) == 1 and None not in bases, "bulk clones share one frozen copy"
    assert [s.name for s in vm.snapshots.list()] == ["before"]
    vm.snapshots.get("before").revert()  # the original's snapshots still work
    with pytest.raises(InvalidState, match="linked clones"):
        vm.delete(disks=True)
    assert vm.host.vms.exists(vm.id)


def test_templates_refuse_to_start_and_deploy_linked_clones_that_boot(
    guest: Callable[[str], VM], vms: Callable[[VM], VM]
) -> None:
    vm = guest("tmpl")
    disk = _disk(vm)
    template = vm.mark_template()
    assert template.template and vm.host.vms.get(vm.id).template, "listing agrees"
    with pytest.raises(InvalidState, match="template"):
        template.start()
    clone = vms(template.clone(unique_name("from-tmpl"), linked=True))
    assert clone.info().disks[0].backing == str(disk), "the clone layers on the template's disk"
    assert not clone.template
    clone.start()
    wait_for_marker(console_log(clone))
    clone.stop(force=True)
    with pytest.raises(InvalidState, match=clone.name):
        template.delete(disks=True)
    clone.delete(disks=True)
    assert disk.exists(), "deleting a clone never takes the template's disk"
    back = template.convert_to_vm()
    assert not back.template and not vm.host.vms.get(vm.id).template


def test_cold_migration_carries_snapshots_that_revert_on_the_target(
    pair: tuple[Host, Host], spec_for: Callable[[str], VMSpec], vms: Callable[[VM], VM]
) -> None:
    source, target = pair
    vm = vms(source.vms.create(spec_for(unique_name("carry"))))
    at_first = disk_counter(_disk(vm))  # a fresh disk: the guest never counted on it
    vm.snapshots.create("first")
    vm.start()
    wait_for_counter(console_log(vm), 2)
    vm.stop(force=True)
    vm.snapshots.create("second")
    assert (disk_counter(_disk(vm)) or 0) > (at_first or 0), "the guest wrote its counter"

    vm.migrate(to=target, live=False)
    moved = vms(target.vms.get(vm.id))
    assert not source.vms.exists(vm.id)
    snaps = {s.name: s for s in moved.snapshots.list()}
    assert set(snaps) == {"first", "second"}
    parent = snaps["second"].parent
    assert parent is not None and parent.name == "first" and snaps["second"].is_current
    snaps["first"].revert()
    assert disk_counter(_disk(moved)) == at_first, "the target's disk is the snapshot's"


#: errors a concurrent caller may rightly get: the gate's "busy", a name another
#: thread took, a VM another thread deleted meanwhile, the host's overcommit limit
_EXPECTED = (InvalidState, AlreadyExists, NotFound, CapacityExceeded)


def test_concurrent_create_delete_snapshot_clone_leave_no_orphans(host: Host) -> None:
    volumes_before = _pool_volumes(host)
    names = [f"storm-{i}" for i in range(8)]
    stop_at = time.monotonic() + 20
    wrong: list[BaseException] = []
    done: list[str] = []
    ids: list[str] = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < stop_at:
            name = rnd.choice(names)
            try:
                action = rnd.choice(("create", "create", "delete", "snapshot", "clone", "exists"))
                if action == "exists":  # by id, of VMs that come and go
                    assert host.vms.exists(rnd.choice(ids or ["none"])) in (True, False)
                elif action == "create":
                    ids.append(host.vms.create(VMSpec(name=name, cpus=1, memory_mib=16,
                                           disks=[DiskSpec(size_gib=0.001)], nics=[])).id)
                elif action == "delete":
                    host.vms.get(name).delete(disks=True)
                elif action == "snapshot":
                    host.vms.get(name).snapshots.create(unique_name("s"))
                else:
                    host.vms.get(name).clone(rnd.choice(names), linked=rnd.random() < 0.5)
                done.append(action)
            except _EXPECTED:
                pass
            except BaseException as exc:  # every other kind is a finding
                wrong.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not wrong, wrong[:5]
    assert len(done) > 50
    left = [vm for vm in host.vms.list() if vm.name.startswith("storm-")]
    used: set[str] = set()
    for vm in left:
        disks = vm.info().disks
        if disks and disks[0].path:  # its definition record lives beside its first disk
            used.add(os.path.join(os.path.dirname(disks[0].path), f"{vm.id}.definition.json"))
        for disk in disks:
            used.add(disk.path or "")
            backing = disk.backing
            while backing:
                used.add(backing)
                backing = host.driver.site.volume_facts(backing)[1]  # type: ignore[attr-defined]
    orphans = _pool_volumes(host) - volumes_before - used
    orphans = {p for p in orphans if not p.endswith(".console.log")}
    assert not orphans, orphans
    for _ in range(5):  # originals go once their linked clones are gone
        for vm in [v for v in host.vms.list() if v.name.startswith("storm-")]:
            destroy(vm)
    assert not [vm for vm in host.vms.list() if vm.name.startswith("storm-")]
    assert _pool_volumes(host) - volumes_before == set()
