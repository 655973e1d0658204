"""memory:// under concurrent use: threads creating, changing, listing and deleting at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

import anyvirt
from anyvirt import InvalidState, PowerState, VMSpec
from anyvirt.memory import reset
from anyvirt.testing.plugin import unique_name


@pytest.fixture
def name() -> Iterator[str]:
    n = unique_name("conc")
    yield n
    reset(n)


def _together(*calls: Callable[[], object]) -> list[str]:
    """Run the calls in threads at once; each outcome as "ok" or the error's class name."""
    out: list[str] = []
    lock = threading.Lock()

    def run(call: Callable[[], object]) -> None:
        try:
            call()
            result = "ok"
        except Exception as exc:
            result = type(exc).__name__
        with lock:
            out.append(result)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(out)


def test_threads_creating_listing_and_deleting(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(15):
                vm = host.vms.create(VMSpec(name=f"w{i}-{j}", cpus=1, memory_mib=64))
                assert vm.name in {v.name for v in host.vms.list()}
                host.info()
                vm.start()
                vm.snapshots.create("s", memory=True)
                vm.stop(force=True)
                vm.delete(disks=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert host.vms.list() == []
    assert host.info().allocation.vms == 0


def test_one_change_at_a_time_per_vm(name: str) -> None:
    """Two starts at once: one wins, the other is refused, not silently repeated."""
    host = anyvirt.connect(f"memory://{name}?latency=0.3")
    host.vms.create(VMSpec(name="b"))
    outcomes = _together(*(lambda: host.vms.get("b").start() for _ in range(3)))
    assert outcomes == ["InvalidState", "InvalidState", "ok"]
    assert host.vms.get("b").state is PowerState.RUNNING


def test_delete_while_starting_is_refused(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?latency=0.3")
    vm = host.vms.create(VMSpec(name="b"))
    task = vm.start(wait=False)
    while task.progress is None:  # the start has begun
        threading.Event().wait(0.01)
    with pytest.raises(InvalidState, match="busy"):
        host.vms.get("b").delete()
    task.wait(10)
    assert host.vms.get("b").state is PowerState.RUNNING
    vm.stop(force=True)
    vm.delete()  # and once the start is over, nothing holds the VM any more
    assert host.vms.list() == []


def test_moves_in_opposite_directions_at_once_do_not_deadlock(name: str) -> None:
    a, b = anyvirt.connect(f"memory://{name}-a"), anyvirt.connect(f"memory://{name}-b")
    try:
        from_a = [a.vms.create(VMSpec(name=f"a{i}", cpus=1, memory_mib=1)) for i in range(60)]
        from_b = [b.vms.create(VMSpec(name=f"b{i}", cpus=1, memory_mib=1)) for i in range(60)]

        def move(vms: list[anyvirt.VM], to: anyvirt.Host) -> None:
            for vm in vms:
                vm.migrate(to=to, live=False)

        threads = [threading.Thread(target=move, args=(from_a, b), daemon=True),
                   threading.Thread(target=move, args=(from_b, a), daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads), "the two moves deadlocked"
        assert {vm.name for vm in a.vms.list()} == {f"b{i}" for i in range(60)}
        assert {vm.name for vm in b.vms.list()} == {f"a{i}" for i in range(60)}
    finally:
        reset(f"{name}-a")
        reset(f"{name}-b")


def test_two_snapshots_of_one_name_at_once_make_one(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?latency=0.3")
    host.vms.create(VMSpec(name="b"))
    outcomes = _together(*(lambda: host.vms.get("b").snapshots.create("pre") for _ in range(3)))
    assert outcomes.count("ok") == 1
    assert [s.name for s in host.vms.get("b").snapshots.list()] == ["pre"]
