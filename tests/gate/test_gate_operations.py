"""The operation gate: holds, deadlines, rollback of late results, typed refusals."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import anyvirt
from anyvirt import (
    AlreadyExists,
    Capability,
    DiskSpec,
    InvalidSpec,
    InvalidState,
    NotFound,
    NotSupported,
    Overcommit,
    PowerState,
    Timeout,
    VMSpec,
)
from anyvirt.memory import reset
from anyvirt.operations import RULES, operations_markdown
from anyvirt.rules import Case, Demand, Rule, raised, raises
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.probes import cancel_a_running_task
from anyvirt.testing.stress import mixed_operations
from anyvirt.testing.suite.spy import recording


@pytest.fixture
def name() -> Iterator[str]:
    n = unique_name("gate")
    yield n
    reset(n)


def test_every_operation_of_the_issue_has_a_rule() -> None:
    wanted = {"create", "start", "stop", "reboot", "reset", "pause", "resume", "suspend",
              "reconfigure", "delete", "clone", "snapshot_create", "snapshot_revert",
              "snapshot_delete", "mark_template", "migrate", "export", "restore"}
    assert wanted <= set(RULES)
    table = operations_markdown()
    for op in RULES:
        assert f"| {op} |" in table


def test_twenty_threads_never_pass_the_overcommit_limit(name: str) -> None:
    # 4 CPUs x 1.0 and 1 GiB: a handful of 1-2 vCPU, 128 MiB VMs fill it at once
    host = anyvirt.connect(f"memory://{name}?nodes=1&cpus=4&memory_mib=1024&latency=0.01",
                           overcommit=Overcommit(cpu=1.0, memory=1.0, counts="defined"))
    report = mixed_operations(host, lambda n: VMSpec(name=n, cpus=1, memory_mib=128),
                              threads=20, seconds=3.0)
    assert report.unexpected == []
    assert report.samples > 10
    assert report.max_vcpus <= 4, report
    assert report.max_memory_mib <= 1024, report
    assert report.outcomes["CapacityExceeded"] > 0, "the mix must push against the limit"
    assert report.outcomes["create"] > 0
    assert host.vms.list() == []


def test_revert_that_would_pass_the_limit_is_refused(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=1&cpus=4&memory_mib=4096",
                           overcommit=Overcommit(cpu=1.0, memory=1.0, counts="defined"))
    vm = host.vms.create(VMSpec(name="big", cpus=3))
    snap = vm.snapshots.create("three")
    vm.reconfigure(cpus=1)
    host.vms.create(VMSpec(name="other", cpus=2))
    with recording(host) as calls, pytest.raises(anyvirt.CapacityExceeded):
        snap.revert()
    assert calls == []
    assert vm.refresh().cpus == 1


def test_a_timeout_bounds_the_whole_operation_and_late_results_are_removed(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?latency=1.0")
    started = time.monotonic()
    with pytest.raises(Timeout):
        host.vms.create(VMSpec(name="slow"), timeout=0.2)
    assert time.monotonic() - started < 0.6
    time.sleep(1.2)
    assert not host.vms.exists("slow"), "a create that ended after its deadline is undone"


def test_a_timed_out_operation_is_cancelled_on_the_platform(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?latency=0.6")
    vm = host.vms.create(VMSpec(name="b"))
    with pytest.raises(Timeout, match=r"did not finish within 0\.1 s"):
        vm.start(timeout=0.1)
    time.sleep(0.3)
    assert vm.refresh().state is PowerState.STOPPED
    vm.delete()  # the cancelled start holds the VM no longer


def test_wait_false_returns_typed_tasks(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    task = host.vms.create(VMSpec(name="t"), wait=False)
    vm = task.wait(10)
    assert isinstance(vm, anyvirt.VM)
    assert vm.start(wait=False).wait(10).state is PowerState.RUNNING
    assert vm.reconfigure(cpus=2, wait=False).wait(10) is True
    snap = vm.snapshots.create("s", wait=False).wait(10)
    assert snap.revert(wait=False).wait(10) == snap


def test_two_creates_of_one_name_make_one(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?latency=0.3")
    first = host.vms.create(VMSpec(name="dup"), wait=False)
    with pytest.raises(AlreadyExists, match="being made"):
        host.vms.create(VMSpec(name="dup"))
    first.wait(10)
    assert [v.name for v in host.vms.list()] == ["dup"]


def test_vm_equality_survives_a_migration(name: str) -> None:
    a, b = anyvirt.connect(f"memory://{name}"), anyvirt.connect(f"memory://{name}-b")
    try:
        vm = a.vms.create(VMSpec(name="mover"))
        before = a.vms.get("mover")
        vm.migrate(to=b)
        after = b.vms.get("mover")
        assert before == after and hash(before) == hash(after)
        assert {before, after} == {after}
    finally:
        reset(f"{name}-b")


def test_not_supported_names_a_capability(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?without=snapshot")
    vm = host.vms.create(VMSpec(name="n"))
    with pytest.raises(NotSupported) as info:
        vm.snapshots.create("x")
    assert info.value.capability is Capability.SNAPSHOTS
    limited = anyvirt.connect(f"memory://{name}?without=task.cancel")
    with pytest.raises(NotSupported) as cancel:
        cancel_a_running_task(limited)
    assert cancel.value.capability is Capability.TASK_CANCEL
    cancel_a_running_task(host)


def test_templates_refuse_start_and_allow_linked_clones(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="golden", disks=[anyvirt.DiskSpec(size_gib=1)]))
    vm.mark_template()
    with recording(host) as calls:
        with pytest.raises(InvalidState, match="template"):
            vm.start()
        with pytest.raises(InvalidState, match="template"):
            vm.snapshots.create("s")
        with pytest.raises(InvalidState, match="template"):
            vm.reconfigure(cpus=2)
    assert calls == []
    clone = vm.clone("from-golden", linked=True)
    assert clone.template is False
    with pytest.raises(InvalidState, match="linked clones use them"):
        vm.delete()
    vm.convert_to_vm()
    assert vm.template is False and host.vms.get("golden").template is False
    clone.delete()
    vm.delete()


def test_placement_the_backend_does_not_take_is_refused(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="p"))
    with recording(host) as calls, pytest.raises(InvalidSpec, match="no folder placement"):
        vm.clone("q", folder="web")
    assert calls == []


def test_a_bulk_clone_that_fails_half_way_leaves_no_clone(name: str) -> None:
    from anyvirt.memory import inject_failure

    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="src"))
    calls = {"n": 0}
    driver = host.driver
    original = driver.clone_vm

    def second_fails(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            inject_failure(name, "clone_vm", anyvirt.TaskFailed("disk full"))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    driver.clone_vm = second_fails  # type: ignore[method-assign]
    with pytest.raises(anyvirt.TaskFailed):
        vm.clone("many", count=3)
    assert [v.name for v in host.vms.list()] == ["src"]


# -- a new operation is one table row plus one driver primitive ----------------------------

def _toy_row() -> Rule:
    """A toy operation, "add a CPU to a running VM": its capability, states, template rule,
    hold, a precondition and a reservation are all the row says; the gate does the rest."""

    @raises(InvalidState)
    def below_eight(case: Case) -> None:
        """the VM has fewer than 8 CPUs"""
        if case.vm.cpus >= 8:
            raise InvalidState(f"{case.vm_name!r} has {case.vm.cpus} CPUs already")

    def one_more(case: Case) -> Demand:
        """one more CPU"""
        return Demand(1, 0)

    return Rule("vm.toy()", Capability.LIVE_RECONFIGURE, frozenset({PowerState.RUNNING}),
                "refused", "the VM", preconditions=(below_eight,), reserve=one_more)


def _toy(vm: anyvirt.VM, *, wait: bool = True, timeout: float | None = 30.0) -> Any:
    driver = vm.host.driver
    return vm.host.gate.operate(
        _toy_row(), f"toy {vm.name}",
        lambda job, case: driver.reconfigure_vm(vm.id, case.vm.cpus + 1, None, job),
        lambda live: vm.refresh(), vm_id=vm.id, vm_name=vm.name, wait=wait, timeout=timeout)


def test_a_new_row_gets_the_whole_gate(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=1&cpus=4&latency=0.5",
                           overcommit=Overcommit(cpu=1.0, memory=1.0, counts="defined"))
    vm = host.vms.create(VMSpec(name="toy", cpus=1))
    with recording(host) as calls, pytest.raises(InvalidState, match="stopped"):
        _toy(vm)  # the row's states
    assert calls == []
    vm.start()
    task = _toy(vm, wait=False)  # a Task, the VM held while it runs
    assert isinstance(task, anyvirt.Task)
    with recording(host) as calls, pytest.raises(InvalidState, match="busy"):
        vm.stop()
    assert calls == []
    assert task.wait(10).cpus == 2
    started = time.monotonic()
    with pytest.raises(Timeout):
        _toy(vm, timeout=0.1)  # the deadline bounds the primitive
    assert time.monotonic() - started < 0.45
    time.sleep(0.6)  # the cancelled work gives the hold back
    assert vm.refresh().cpus == 2, "the timed-out toy was cancelled on the platform"
    host.vms.create(VMSpec(name="filler", cpus=2))  # 4 of 4 CPUs given out
    with recording(host) as calls, pytest.raises(anyvirt.CapacityExceeded):
        _toy(vm)  # the row's reservation
    assert calls == []
    limited = anyvirt.connect(f"memory://{name}?without=vm.reconfigure.live")
    with recording(limited) as calls, pytest.raises(NotSupported) as refused:
        _toy(limited.vms.get("toy"))
    assert refused.value.capability is Capability.LIVE_RECONFIGURE and calls == []
    assert "| toy | `vm.toy()` | `vm.reconfigure.live` | running |" in operations_markdown(
        {"toy": _toy_row()})
    assert "one more CPU" in operations_markdown({"toy": _toy_row()})


def test_a_precondition_of_a_new_row_refuses_before_anything_is_sent(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="wide", cpus=8)).start()
    with recording(host) as calls, pytest.raises(InvalidState, match="8 CPUs already"):
        _toy(vm)
    assert calls == [] and vm.refresh().cpus == 8


def test_every_raise_in_a_check_is_declared_for_the_docs() -> None:
    for rule in RULES.values():
        for check in (*rule.checks, *rule.preconditions):
            source = inspect.getsource(check)
            declared = {error.__name__ for error in raised(check)}
            assert set(re.findall(r"raise (\w+)\(", source)) <= declared, check.__name__


def test_moving_a_linked_clone_to_another_host_sends_nothing(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    other = anyvirt.connect(f"memory://{name}-other")
    try:
        base = host.vms.create(VMSpec(name="base", disks=[DiskSpec(size_gib=1)]))
        clone = base.clone("linked", linked=True)
        with recording(host) as calls, pytest.raises(InvalidState, match="is a linked clone"):
            clone.migrate(to=other, live=False)
        assert calls == []
    finally:
        reset(f"{name}-other")


def test_the_gate_names_the_node_where_the_platform_does_not_schedule(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=3")
    host.vms.create(VMSpec(name="heavy", node="node1", memory_mib=4096))
    host.nodes.get("node2").set_maintenance(True)
    driver = host.driver
    sent: list[str | None] = []
    original = driver.create_vm

    def create_vm(spec: VMSpec, job: Any) -> Any:
        sent.append(spec.node)
        return original(spec, job)

    driver.create_vm = create_vm  # type: ignore[method-assign]
    try:
        made = host.vms.create(VMSpec(name="placed"))
    finally:
        del driver.create_vm
    assert not driver.schedules_vms
    assert sent == ["node3"] and made.node == "node3"  # not node1 (loaded), not node2 (maintenance)


# -- rules that were backends' own: one refusal, one error type, nothing sent. Each driver
# fact is set on a memory:// driver the way a backend states it (vSphere: a VM is bounded
# by its node, hot-add per VM, one vCenter); the backends' real tests prove their facts.

def test_a_vm_larger_than_its_node_is_refused_where_the_platform_bounds_it(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=2&cpus=4&memory_mib=8192")
    small = anyvirt.connect(f"memory://{name}-small?nodes=1&cpus=2&memory_mib=8192")
    try:
        for driver in (host.driver, small.driver):
            driver.bounds_vm_by_node = True  # type: ignore[misc]
        vm = host.vms.create(VMSpec(name="fits", node="node1", cpus=4))
        attempts = {
            "create on a node": lambda: host.vms.create(VMSpec(name="big", node="node1", cpus=5)),
            "create, node chosen": lambda: host.vms.create(VMSpec(name="big2", memory_mib=8193)),
            "reconfigure": lambda: vm.reconfigure(cpus=5),
            "migrate to another host": lambda: vm.migrate(to=small, live=False),
        }
        for what, attempt in attempts.items():
            with recording(host) as calls, pytest.raises(anyvirt.CapacityExceeded,
                                                         match="asked for, but node"):
                attempt()
            assert calls == [], what
        assert [v.name for v in host.vms.list()] == ["fits"] and small.vms.list() == []
        host.driver.bounds_vm_by_node = False  # type: ignore[misc]
        assert host.vms.create(VMSpec(name="overcommitted", node="node1", cpus=5)).cpus == 5
    finally:
        reset(f"{name}-small")


def test_a_change_a_running_vm_cannot_take_is_refused_before_anything_is_sent(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="hot", cpus=1, memory_mib=512))
    vm.start()
    host.driver.running_takes = lambda vm_id: frozenset({"memory_mib"})  # type: ignore[method-assign]
    with recording(host) as calls, pytest.raises(InvalidState, match="CPU hot-add is off"):
        vm.reconfigure(cpus=2)
    assert calls == []
    vm.reconfigure(cpus=1, memory_mib=1024)  # cpus unchanged: only memory changes
    assert (vm.refresh().cpus, vm.memory_mib) == (1, 1024)
    vm.stop(force=True)
    assert vm.reconfigure(cpus=2) is False  # stopped: any change, for the next start


def test_a_move_to_a_host_the_driver_cannot_reach_is_refused_before_anything_is_sent(
        name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    other = anyvirt.connect(f"memory://{name}-other")
    try:
        vm = host.vms.create(VMSpec(name="stay"))
        host.driver.can_reach = lambda target: False  # type: ignore[method-assign]
        for live in (False, True):
            if live:
                vm.start()
            with recording(host) as calls, pytest.raises(NotSupported,
                                                         match="cannot move a VM to") as refused:
                vm.migrate(to=other, live=live)
            assert calls == []
            wanted = Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION
            assert refused.value.capability is wanted
        assert other.vms.list() == []
    finally:
        reset(f"{name}-other")


def test_a_second_connection_to_the_same_endpoint_is_this_host(name: str) -> None:
    """Two Host objects of one URI are one host: a move "to" the other is a move within
    this one, which names no node (InvalidSpec), never a move to another host."""
    host = anyvirt.connect(f"memory://{name}")
    same = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="stay"))
    with recording(host) as calls, pytest.raises(InvalidSpec, match="already on"):
        vm.migrate(to=same, live=False)
    assert calls == [] and vm.refresh().node == host.vms.get("stay").node


def test_evacuation_is_a_row_and_its_own_task(name: str) -> None:
    """Evacuation is admitted by its row (no ungated Task path is left on Host), and
    ``wait=False`` gives the whole evacuation as one Task."""
    assert not hasattr(anyvirt.Host, "new_task") and not hasattr(anyvirt.Host, "run")
    assert RULES["evacuate"].refined_by[0].capability is Capability.MAINTENANCE_MODE
    host = anyvirt.connect(f"memory://{name}?nodes=2")
    try:
        host.vms.create(VMSpec(name="evacuee", node="node1"))
        without = anyvirt.connect(f"memory://{name}-b?nodes=2&without=node.maintenance")
        with recording(without) as calls, pytest.raises(NotSupported) as refused:
            without.evacuate("node1", maintenance=True)
        assert refused.value.capability is Capability.MAINTENANCE_MODE and calls == []
        task = host.evacuate("node1", maintenance=True, wait=False)
        assert isinstance(task, anyvirt.Task)
        moved = task.wait(30)
        assert [r.vm_name for r in moved] == ["evacuee"]
        assert host.nodes.get("node1").maintenance
    finally:
        reset(name)
        reset(f"{name}-b")


def test_a_name_two_vms_carry_is_refused_naming_both_ids(name: str) -> None:
    """A user-writable name must not pick the VM by listing order: two VMs of one name
    (made outside anyvirt) make a lookup by that name AmbiguousName (a NotFound), naming
    the ids; the id still finds each, and the name counts as taken."""
    host = anyvirt.connect(f"memory://{name}")
    try:
        first = host.vms.create(VMSpec(name="web"))
        second = host.vms.create(VMSpec(name="web-b"))
        with host.driver._locked() as world:  # a platform that allows two of one name
            world.vms[second.id].name = "web"
        with pytest.raises(anyvirt.AmbiguousName) as ambiguous:
            host.vms.get("web")
        assert set(ambiguous.value.ids) == {first.id, second.id}
        assert first.id in str(ambiguous.value) and second.id in str(ambiguous.value)
        assert isinstance(ambiguous.value, NotFound)
        assert host.vms.get(second.id).id == second.id
        assert host.vms.exists("web")
        with pytest.raises(anyvirt.AlreadyExists):
            host.vms.create(VMSpec(name="web"))
    finally:
        reset(name)


def test_snapshot_lookup_is_id_first_like_vms(name: str) -> None:
    """One precedence for "by id or name": a snapshot named like another's id is found
    by that id."""
    host = anyvirt.connect(f"memory://{name}")
    try:
        vm = host.vms.create(VMSpec(name="s"))
        one = vm.snapshots.create("one")
        vm.snapshots.create(one.id)
        assert vm.snapshots.get(one.id).name == "one"
    finally:
        reset(name)


def test_no_workflow_calls_a_mutating_driver_primitive() -> None:
    """Workflows go through the gate: no mutating driver primitive is called from them."""
    from anyvirt.testing.suite.spy import MUTATORS

    root = Path(anyvirt.__file__).parent / "migration"
    calls = re.compile(r"driver\.(" + "|".join(MUTATORS) + r"|export_snapshot_disks)\(")
    found = [f"{p.name}: {m.group(0)}" for p in root.glob("*.py") for m in calls.finditer(p.read_text())]
    assert found == []


def test_a_running_copy_needs_its_capability_and_sends_nothing_without(name: str) -> None:
    """The point-in-time copy is a declared capability (no duck typing): without it a
    snapshot=True move is refused before anything is sent."""
    src = anyvirt.connect(f"memory://{name}?without=disk.export.snapshot")
    dst = anyvirt.connect(f"memory://{name}-dst")
    try:
        vm = src.vms.create(VMSpec(name="runs", disks=[anyvirt.DiskSpec(size_gib=1)]))
        vm.start()
        with recording(src) as calls, pytest.raises(NotSupported) as refused:
            anyvirt.migrate(vm, to=dst, snapshot=True)
        assert refused.value.capability is Capability.SNAPSHOT_DISK_EXPORT and calls == []
        assert not dst.vms.exists("runs")
    finally:
        reset(name)
        reset(f"{name}-dst")


def test_the_move_preview_uses_the_export_row(name: str) -> None:
    """The CLI's "is it movable" check is the export row: a VM in an UNKNOWN state is refused."""
    from anyvirt.migration.plan import require_movable

    host = anyvirt.connect(f"memory://{name}")
    try:
        vm = host.vms.create(VMSpec(name="odd"))
        with host.driver._locked() as world:
            world.vms[vm.id].state = PowerState.UNKNOWN
        with pytest.raises(InvalidState):
            require_movable(vm)
    finally:
        reset(name)
