"""``host.vms.watch()`` and ``vm.wait_for`` on the memory backend, which pushes its own events.

"Another tool" on memory:// is a second connection to the same named host: it changes
the VMs without passing through the watching Host.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt import memory
from anyvirt.errors import NotFound, Timeout
from anyvirt.host import Host
from anyvirt.model import PowerState, VMSpec
from anyvirt.testing.watch_changes import drain
from anyvirt.watch import VMChange


@pytest.fixture
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    name = f"watch-{request.node.name}"[:60].replace("[", "-").replace("]", "")
    memory.reset(name)
    with anyvirt.connect(f"memory://{name}") as h:
        yield h
    memory.reset(name)


def other_tool(host: Host) -> Host:
    return anyvirt.connect(host.uri)


def test_watch_follows_anyvirt_and_another_connection(host: Host) -> None:
    web = host.vms.create(VMSpec(name="web", cpus=1, memory_mib=256))
    with host.vms.watch() as changes:
        web.start()
        web.reconfigure(cpus=2)
        with other_tool(host) as tool:
            made = tool.vms.create(VMSpec(name="db", cpus=1, memory_mib=512))
            tool.vms.get("web").stop(force=True)
            made.delete()
        seen = drain(changes, 0.2)
    assert [(c.kind, c.vm.name, sorted(c.fields)) for c in seen] == [
        ("changed", "web", ["state"]),
        ("changed", "web", ["cpus"]),
        ("added", "db", []),
        ("changed", "web", ["state"]),
        ("removed", "db", []),
    ]
    first = seen[0]
    assert first.old is not None and first.old.state is PowerState.STOPPED
    assert first.new is not None and first.new.state is PowerState.RUNNING
    assert first.vm.id == web.id and first.vm.state is PowerState.RUNNING


def test_initial_snapshot_is_optional(host: Host) -> None:
    for i in range(3):
        host.vms.create(VMSpec(name=f"vm{i}", cpus=1, memory_mib=64))
    with host.vms.watch(initial=True) as changes:
        first = drain(changes, 0.2)
    assert sorted((c.kind, c.vm.name) for c in first) == [("added", f"vm{i}") for i in range(3)]
    with host.vms.watch() as changes:
        assert drain(changes, 0.2) == []
        assert sorted(vm.name for vm in changes.current()) == ["vm0", "vm1", "vm2"]


def test_a_burst_of_1000_changes_is_all_seen_in_flat_memory(host: Host) -> None:
    vms = [host.vms.create(VMSpec(name=f"b{i}", cpus=1, memory_mib=64)) for i in range(100)]
    with host.vms.watch() as changes:
        seen: list[VMChange] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(changes)))
        reader.start()

        def burst() -> None:
            for round_ in range(5):  # 5 x 200 = 1,000 changes
                for vm in vms:
                    vm.reconfigure(memory_mib=128 + round_)
                for vm in vms:
                    vm.start() if vm.state is PowerState.STOPPED else vm.stop(force=True)

        tracemalloc.start()
        try:
            burst()
            deadline = time.monotonic() + 10
            while len(seen) < 1000 and time.monotonic() < deadline:
                time.sleep(0.01)
            gc.collect()
            first, _ = tracemalloc.get_traced_memory()
            burst()
            deadline = time.monotonic() + 10
            while len(seen) < 2000 and time.monotonic() < deadline:
                time.sleep(0.01)
            gc.collect()
            second, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        changes.close()
        reader.join(5)
    assert len(seen) == 2000
    assert changes.stats.coalesced == 0
    # what the watch holds does not grow with the changes it has passed on
    # (``seen`` itself grows: 1,000 more changes, each well under 2 KiB)
    assert second - first < 1000 * 2048


def test_a_slow_consumer_gets_merged_changes_within_a_bounded_queue(host: Host) -> None:
    vms = [host.vms.create(VMSpec(name=f"s{i}", cpus=1, memory_mib=64)) for i in range(20)]
    with host.vms.watch(buffer=50) as changes:
        for round_ in range(200):  # 4,000 changes nobody reads yet
            for vm in vms:
                vm.reconfigure(memory_mib=65 + round_)
        assert changes.stats.peak_pending <= 50 + len(vms)
        seen = drain(changes, 0.2)
    last: dict[str, int] = {}
    for change in seen:
        assert change.new is not None
        last[change.vm.name] = change.new.memory_mib
    # nothing lost: every VM's last change says where it really ended
    assert last == {vm.name: 65 + 199 for vm in vms}
    assert changes.stats.coalesced == 4_000 - changes.stats.delivered


def test_an_add_and_remove_merged_while_lagging_cancel_out(host: Host) -> None:
    keep = host.vms.create(VMSpec(name="keep", cpus=1, memory_mib=64))
    with host.vms.watch(buffer=1) as changes:
        keep.start()  # fills the buffer
        brief = host.vms.create(VMSpec(name="brief", cpus=1, memory_mib=64))
        brief.delete()
        seen = drain(changes, 0.2)
    assert [(c.kind, c.vm.name) for c in seen] == [("changed", "keep")]


def test_close_ends_a_blocked_consumer_and_stops_the_source(host: Host) -> None:
    watch = host.vms.watch()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(watch.get()))
    reader.start()
    time.sleep(0.05)
    started = time.monotonic()
    watch.close()
    reader.join(2)
    assert not reader.is_alive() and got == [None]
    assert time.monotonic() - started < 1
    assert list(watch) == []
    assert host.native.listeners == []  # the memory host's event hook is gone


def test_wait_for_a_state_set_by_another_connection_without_polling(host: Host) -> None:
    vm = host.vms.create(VMSpec(name="w", cpus=1, memory_mib=64))
    listings = 0
    real_list = host.driver.list_vms

    def counted() -> list[anyvirt.model.VMSummary]:
        nonlocal listings
        listings += 1
        return real_list()

    host.driver.list_vms = counted  # type: ignore[method-assign]
    with other_tool(host) as tool:
        timer = threading.Timer(0.3, lambda: tool.vms.get("w").start())
        timer.start()
        started = time.monotonic()
        assert vm.wait_for(PowerState.RUNNING, timeout=10) is vm
        took = time.monotonic() - started
        timer.join()
    assert vm.state is PowerState.RUNNING
    assert 0.25 < took < 2
    assert listings == 0  # events, not listings


def test_wait_for_times_out_and_notices_removal(host: Host) -> None:
    vm = host.vms.create(VMSpec(name="t", cpus=1, memory_mib=64))
    with pytest.raises(Timeout, match="did not become running"):
        vm.wait_for("running", timeout=0.2)
    threading.Timer(0.1, vm.delete).start()
    with pytest.raises(NotFound, match="removed"):
        vm.wait_for(PowerState.RUNNING, timeout=5)
