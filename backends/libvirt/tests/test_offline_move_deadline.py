"""Undefining the source is an offline migration's point of no return (issue 17, generalising
#5): a deadline sweep on two real libvirt daemons, the deadline arriving at each progress
report of the move in turn (``anyvirt.testing.deadline_sweep``). Each run is either Timeout
with the domain still defined on the source only, or a finished move."""

from __future__ import annotations

from collections.abc import Callable

from anyvirt.errors import Timeout
from anyvirt.host import Host
from anyvirt.model import VMSpec
from anyvirt.testing.deadline_sweep import DeadlineAt
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM


def test_a_deadline_at_any_point_of_an_offline_move_is_timeout_with_the_source_or_a_move(
    pair: tuple[Host, Host], spec_for: Callable[[str], VMSpec], vms: Callable[[VM], VM]
) -> None:
    source, target = pair
    seen = []
    for at in range(1, 30):
        vm = vms(source.vms.create(spec_for(unique_name("swept"))))
        vm.snapshots.create("kept")  # its metadata must follow, or stay, with the domain
        sweep = DeadlineAt(at)
        task = vm.migrate(to=target, live=False, wait=False, timeout=600,
                          on_progress=sweep.on_progress)
        sweep.attach(task)
        got = sweep.outcome(task.wait)
        if got.error is not None:
            assert isinstance(got.error, Timeout), got.error
            assert source.vms.exists(vm.id) and not target.vms.exists(vm.id), f"point {at}"
            assert [s.name for s in source.vms.get(vm.id).snapshots.list()] == ["kept"]
            seen.append("timeout")
        else:
            assert got.result is not None and got.result.vm_id == vm.id
            assert target.vms.exists(vm.id) and not source.vms.exists(vm.id), f"point {at}"
            seen.append("moved")
        if not got.fired:
            break
    else:
        raise AssertionError("the move has more points than the sweep covers")
    assert "timeout" in seen and seen[-1] == "moved", seen
