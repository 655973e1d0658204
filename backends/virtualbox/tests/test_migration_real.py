"""Cold migration between two homes of the real VirtualBox 7.2, read back with VBoxManage."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
from anyvirt_virtualbox import listings, machinereadable
from anyvirt_virtualbox.testbed import Home
from virtualbox_support import show

from anyvirt.errors import AnyvirtError, InvalidSpec, NotSupported, TaskFailed
from anyvirt.host import Host
from anyvirt.model import Capability, DiskSpec, NicSpec, VMSpec
from anyvirt.testing.suite.spy import recording


def names(home: Home) -> list[str]:
    return [v.name for v in listings.list_vms(home.run("list", "vms").stdout)]


def hdds(home: Home) -> list[listings.Medium]:
    return listings.media(home.run("list", "hdds").stdout)


def make(host: Host, name: str) -> str:
    vm = host.vms.create(VMSpec(name=name, cpus=2, memory_mib=72, disks=[DiskSpec(size_gib=0.0625)],
                                nics=[NicSpec()]))
    return vm.id


def test_cold_migration_arrives_and_leaves(real_home: Home, real_host: Host, other_real_home: Home,
                                           other_real_host: Host, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the OVA is written
    old_id = make(real_host, "mover")
    source = show(real_home, old_id)
    vm = real_host.vms.get(old_id)
    result = vm.migrate(to=other_real_host, live=False)
    assert result.vm_id == vm.id != old_id and vm.host is other_real_host
    assert result.bytes_transferred and result.bytes_transferred > 0
    got = show(other_real_home, vm.id)
    assert (got.get("name"), got.get("cpus"), got.get("memory")) == ("mover", "2", "72")
    assert got.get("macaddress1") == source.get("macaddress1")
    assert [m.capacity_mib for m in hdds(other_real_home)] == [64]
    assert hdds(other_real_home)[0].location.startswith(str(other_real_home.machine_folder))
    assert names(real_home) == [] and hdds(real_home) == []
    assert list(scratch.iterdir()) == [], "the OVA's directory is removed"


def test_snapshots_are_refused_before_anything_is_sent(real_home: Home, real_host: Host,
                                                       other_real_home: Home, other_real_host: Host) -> None:
    vm = real_host.vms.get(make(real_host, "snapped"))
    vm.snapshots.create("s1")
    with pytest.raises(NotSupported) as info:
        vm.migrate(to=other_real_host, live=False)
    assert info.value.capability is Capability.COLD_MIGRATION_SNAPSHOTS
    assert names(other_real_home) == [] and names(real_home) == ["snapped"]


def _assert_source_intact(home: Home, vm_id: str, before: machinereadable.Parsed) -> None:
    assert show(home, vm_id).values == before.values
    assert [m.capacity_mib for m in hdds(home)] == [64]


def test_a_failed_import_leaves_the_source_and_nothing_on_the_target(
    real_home: Home, real_host: Host, other_real_home: Home, other_real_host: Host
) -> None:
    vm_id = make(real_host, "stays")
    before = show(real_home, vm_id)
    # the target's machine folder becomes a file: the import cannot make the VM's folder
    # (a read-only folder would not stop root)
    other_real_home.machine_folder.rmdir()
    other_real_home.machine_folder.write_text("not a folder\n")
    with pytest.raises(AnyvirtError):
        real_host.vms.get(vm_id).migrate(to=other_real_host, live=False)
    _assert_source_intact(real_home, vm_id, before)
    assert names(other_real_home) == [] and hdds(other_real_home) == []


def test_a_copy_that_differs_is_removed_and_the_source_stays(
    real_home: Home, real_host: Host, other_real_home: Home, other_real_host: Host,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from anyvirt_virtualbox import migration

    vm_id = make(real_host, "checked")
    before = show(real_home, vm_id)
    monkeypatch.setattr(migration, "compare", lambda a, b: ["injected difference"])
    with pytest.raises(AnyvirtError, match="injected difference"):
        real_host.vms.get(vm_id).migrate(to=other_real_host, live=False)
    _assert_source_intact(real_home, vm_id, before)
    assert names(other_real_home) == [] and hdds(other_real_home) == []
    assert [p for p in other_real_home.machine_folder.rglob("*") if p.is_file()] == []


def test_a_source_that_cannot_be_deleted_keeps_its_place_and_the_copy_goes(
    real_home: Home, real_host: Host, other_real_home: Home, other_real_host: Host,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from anyvirt_virtualbox import runner

    vm_id = make(real_host, "pinned")
    before = show(real_home, vm_id)
    source_runner = real_host.driver.native
    real_run = runner.VBoxManage.run

    def run(self: runner.VBoxManage, args: Any, what: str, **kw: Any) -> runner.Output:
        if self is source_runner and list(args)[:1] == ["unregistervm"]:
            raise TaskFailed("injected: the source cannot be deleted")
        return real_run(self, args, what, **kw)

    monkeypatch.setattr(runner.VBoxManage, "run", run)
    with pytest.raises(TaskFailed, match="injected"):
        real_host.vms.get(vm_id).migrate(to=other_real_host, live=False)
    _assert_source_intact(real_home, vm_id, before)
    assert names(other_real_home) == [] and hdds(other_real_home) == []


def test_the_same_home_is_refused(real_home: Home, real_host: Host) -> None:
    import anyvirt

    vm_id = make(real_host, "here")
    vm = real_host.vms.get(vm_id)
    # the same URI but for anyvirt's own options: this very host, where there is no other
    # node to move to (InvalidSpec, the gate's rule for a move within one host)
    with anyvirt.connect(real_home.uri.replace("?home=", "?timeout=600&home=")) as same, \
            recording(real_host) as calls, pytest.raises(InvalidSpec, match="already on"):
        vm.migrate(to=same, live=False)
    assert calls == []
    # the same home spelled another way: another endpoint, which this one cannot reach
    # (can_reach): the gate's NotSupported, as on every backend (the driver's own check
    # said InvalidSpec)
    with anyvirt.connect(f"{real_home.uri}/.") as same, recording(real_host) as calls, \
            pytest.raises(NotSupported) as refused:
        vm.migrate(to=same, live=False)
    assert refused.value.capability is Capability.COLD_MIGRATION and calls == []
    assert names(real_home) == ["here"]


def test_compare_names_every_difference() -> None:
    from anyvirt_virtualbox.migration import compare

    from anyvirt.model import DiskInfo, Firmware, NicInfo, PowerState, VMInfo

    base = VMInfo(id="a", name="m", state=PowerState.STOPPED, raw_state="poweroff", cpus=2, memory_mib=72,
                  disks=(DiskInfo(id="sata0", size_bytes=64),), nics=(NicInfo(id="1", mac="0800270000AA"),))
    assert compare(base, attrs.evolve(base, id="b")) == []
    changed = attrs.evolve(base, id="b", cpus=1, firmware=Firmware.EFI, disks=(),
                           nics=(NicInfo(id="1", mac="0800270000AB"),))
    assert len(compare(base, changed)) == 4


def test_a_deadline_at_any_point_is_timeout_with_the_source_or_a_finished_move(
    real_home: Home, real_host: Host, other_real_home: Home, other_real_host: Host,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 17 #5: the deadline arrives before each VBoxManage call of the move and at each
    progress report, in turn. Each run is either Timeout with the source as it was and
    nothing on the target, or a finished move; never Timeout with the source deleted."""
    from anyvirt_virtualbox import runner

    from anyvirt.errors import Timeout
    from anyvirt.testing.deadline_sweep import DeadlineAt

    real_run = runner.VBoxManage.run
    sweep: list[DeadlineAt] = []

    def run(self: runner.VBoxManage, args: Any, what: str, **kw: Any) -> runner.Output:
        if sweep:
            sweep[-1].point()  # the deadline may arrive just before this call
        return real_run(self, args, what, **kw)

    monkeypatch.setattr(runner.VBoxManage, "run", run)
    seen = []
    for at in range(1, 40):
        vm_id = make(real_host, "swept")
        before = show(real_home, vm_id)
        sweep.append(DeadlineAt(at))
        task = real_host.vms.get(vm_id).migrate(to=other_real_host, live=False, wait=False,
                                                 timeout=600, on_progress=sweep[-1].on_progress)
        sweep[-1].attach(task)
        got = sweep[-1].outcome(task.wait)
        if got.error is not None:
            assert isinstance(got.error, Timeout), got.error
            _assert_source_intact(real_home, vm_id, before)
            assert names(other_real_home) == [] and hdds(other_real_home) == [], f"point {at}"
            seen.append("timeout")
            real_home.run("unregistervm", vm_id, "--delete")
        else:
            assert got.result is not None
            assert names(real_home) == [] and hdds(real_home) == [], f"point {at}"
            assert names(other_real_home) == ["swept"]
            assert got.result.vm_id == listings.list_vms(other_real_home.run("list", "vms").stdout)[0].uuid
            seen.append("moved")
            other_real_home.run("unregistervm", got.result.vm_id, "--delete")
        if not got.fired:
            break
    else:
        raise AssertionError("the move has more points than the sweep covers")
    assert "timeout" in seen and seen[-2:] == ["moved", "moved"], seen
