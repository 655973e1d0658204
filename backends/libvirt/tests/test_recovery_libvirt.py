"""Acceptance of issue 21 on real daemons: a dead standalone host's VMs come back on
another host, from shared storage (nothing lost) or from a repository's newest points,
never while the old copies may still run, and the old copies stay down when their host
returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from anyvirt_libvirt.demo_image import disk_counter, last_counter, wait_for_counter, wait_for_marker
from recovery_support import SHARED_POOL, active_domains, failing_pair, power_cut

import anyvirt
from anyvirt import BackupRepository, DiskSpec, InvalidState, VMSpec
from anyvirt.model import PowerState
from anyvirt.recovery import RecoveredFrom, records
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM


def tiny(name: str, image: Path, storage: str | None) -> VMSpec:
    return VMSpec(name=name, cpus=1, memory_mib=16, disks=[DiskSpec(image=str(image), storage=storage)],
                  nics=[])


def console(vm: VM) -> Path:
    return Path(vm.info().extra["console_log"])


def disk_path(vm: VM) -> Path:
    return Path(str(vm.info().disks[0].path))


def test_power_cut_recovers_from_shared_storage_and_the_returning_host_keeps_its_copies_down(
        guest_image: Path) -> None:
    with failing_pair() as (a, b, shared):
        with anyvirt.connect(a.anyvirt_uri) as ha:
            vms = [ha.vms.create(tiny(unique_name(f"rec{i}"), guest_image, SHARED_POOL)) for i in range(5)]
            for vm in vms:
                vm.native.setAutostart(1)  # without the recovery, A would start them again
                vm.start()
            for vm in vms:
                wait_for_counter(console(vm), 2, timeout=60)
            names = {vm.id: vm.name for vm in vms}
            disks = {vm.id: disk_path(vm) for vm in vms}
            consoles = {vm.id: console(vm) for vm in vms}
        power_cut(a)
        # nothing lost: each disk holds the last count its guest printed on A (or the one
        # before, when the cut fell between the guest's print and its disk write)
        at_cut = {i: disk_counter(disks[i]) for i in names}
        for vm_id, value in at_cut.items():
            printed = last_counter(consoles[vm_id])
            assert value is not None and value >= 2 and printed is not None
            assert printed - 1 <= value <= printed

        with anyvirt.connect(b.anyvirt_uri) as hb:
            recovery = anyvirt.recover(failed=a.anyvirt_uri, to=hb)
            assert {r.old_id for r in recovery} == set(names)
            assert all(r.outcome is RecoveredFrom.SHARED_STORAGE for r in recovery), recovery
            assert all(r.data_age is None and r.reason == "" for r in recovery)
            assert recovery.elapsed > 0 and not recovery.failed
            for result in recovery:
                assert result.vm is not None
                vm = hb.vms.get(result.old_id)  # the same VM: same id, name and disk
                assert vm.name == names[result.old_id] and vm.state is PowerState.RUNNING
                assert disk_path(vm) == disks[result.old_id]
                wait_for_marker(console(vm), timeout=60)
            # B's guests write the very disks A's wrote
            for result in recovery:
                vm = hb.vms.get(result.old_id)
                seen = wait_for_counter(console(vm), at_cut[result.old_id] + 1, timeout=60)
                assert seen > at_cut[result.old_id]
            # a second recovery finds nothing left to do: the records now name B
            with pytest.raises(anyvirt.NotFound):
                anyvirt.recover(failed=a.anyvirt_uri, to=hb)

            a.restart()
            time.sleep(1.0)  # libvirtd's autostart has run (and failed on the image locks)
            assert active_domains(a) == []
            with anyvirt.connect(a.anyvirt_uri) as back:  # first contact disarms the stale copies
                for vm_id in names:
                    stale = back.vms.get(vm_id)
                    assert stale.state is not PowerState.RUNNING
                    assert not stale.native.autostart()
                    assert str(stale.info().extra["stale_copy"]).startswith(
                        f"stale copy, recovered on {hb.uri} at ")
                stale = back.vms.get(next(iter(names)))
                with pytest.raises(InvalidState, match="disks are the recovered VM's"):
                    stale.delete(disks=True)
                stale.delete(disks=False)  # the stale copy goes; the recovered VM's record stays
            assert active_domains(a) == []
            assert all(disks[i].exists() for i in names)
            for vm_id in names:  # every record beside the disks names B, the stale copy's too
                kept = records.decode_record((shared / f"{vm_id}.definition.json").read_bytes(), vm_id)
                assert kept.host_uri == hb.uri
            assert all(hb.vms.get(i).state is PowerState.RUNNING for i in names)


def test_a_daemon_dead_with_its_guests_running_is_refused_by_the_image_locks(guest_image: Path) -> None:
    with failing_pair() as (a, b, _shared):
        with anyvirt.connect(a.anyvirt_uri) as ha:
            vms = [ha.vms.create(tiny(unique_name("held"), guest_image, SHARED_POOL)) for _ in range(2)]
            for vm in vms:
                vm.start()
                wait_for_marker(console(vm), timeout=60)
        with anyvirt.connect(b.anyvirt_uri) as hb:
            with pytest.raises(InvalidState, match="still answers"):
                anyvirt.recover(failed=a.anyvirt_uri, to=hb)
            a.kill()  # the daemon only: its QEMUs keep running
            with pytest.raises(InvalidState, match="still in use by another process") as refused:
                anyvirt.recover(failed=a.anyvirt_uri, to=hb)
            assert "write" in str(refused.value) and "lock" in str(refused.value)
            assert hb.vms.list() == []  # nothing defined, so no second QEMU ever opened a disk
            assert active_domains(b) == []
            # a caller who says "fenced" while the QEMUs still run: QEMU's own lock stops B's
            # start, and the failed start leaves nothing behind (the records still name A)
            lied = anyvirt.recover(failed=a.anyvirt_uri, to=hb, fenced=True)
            assert [r.outcome for r in lied] == [RecoveredFrom.NOT_RECOVERED] * 2
            assert all("lock" in r.reason for r in lied), [r.reason for r in lied]
            assert hb.vms.list() == []
            with pytest.raises(InvalidState, match="still in use by another process"):
                anyvirt.recover(failed=a.anyvirt_uri, to=hb)


def test_without_shared_storage_the_newest_restore_points_come_back_with_their_age(
        guest_image: Path, tmp_path: Path) -> None:
    repo = BackupRepository(tmp_path / "repo")
    with failing_pair() as (a, b, _shared):
        with anyvirt.connect(a.anyvirt_uri) as ha:
            vms = [ha.vms.create(tiny(unique_name("bk"), guest_image, None)) for _ in range(2)]
            newest = {}
            for vm in vms:
                repo.backup(vm)
                vm.start()
                wait_for_counter(console(vm), 1, timeout=60)
                vm.stop(force=True)
                newest[vm.id] = repo.backup(vm)
        power_cut(a)
        with anyvirt.connect(b.anyvirt_uri) as hb:
            before = time.time()
            recovery = anyvirt.recover(failed=a.anyvirt_uri, to=hb, repository=repo)
            assert {r.old_id for r in recovery} == set(newest)
            for result in recovery:
                assert result.outcome is RecoveredFrom.RESTORE_POINT, result
                assert result.point is not None and result.point.id == newest[result.old_id].id
                assert result.data_age is not None
                assert result.data_age.total_seconds() >= before - result.point.created.timestamp() - 1
                assert result.vm is not None and result.vm.state is PowerState.RUNNING
                assert result.vm.name == newest[result.old_id].vm_name
                wait_for_marker(console(result.vm), timeout=60)
