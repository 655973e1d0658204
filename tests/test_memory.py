"""The memory backend's own behaviour, beyond the contract suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt import (
    AlreadyExists,
    CapacityExceeded,
    DiskSpec,
    InvalidSpec,
    InvalidState,
    NotFound,
    Overcommit,
    PowerState,
    TaskFailed,
    VMSpec,
)
from anyvirt.memory import inject_failure, reset
from anyvirt.testing.plugin import unique_name


@pytest.fixture
def name() -> Iterator[str]:
    n = unique_name("mem")
    yield n
    reset(n)


def test_two_connections_see_one_host(name: str) -> None:
    with anyvirt.connect(f"memory://{name}") as a, anyvirt.connect(f"memory://{name}") as b:
        vm = a.vms.create(VMSpec(name="web1"))
        assert b.vms.get("web1").id == vm.id
        b.vms.get("web1").start()
        assert vm.refresh().state is PowerState.RUNNING


def test_split_a_big_machine_safely(name: str) -> None:
    """30 cores and 64 GiB into small VMs, refusing past the overcommit limit."""
    host = anyvirt.connect(f"memory://{name}?nodes=1&cpus=30&memory_mib=65536",
                           overcommit=Overcommit(cpu=1.0, memory=1.0, counts="defined"))
    for i in range(30):
        host.vms.create(VMSpec(name=f"small{i}", cpus=1, memory_mib=2048))
    info = host.info()
    assert info.allocation.vcpus == 30
    assert info.allocation.cpu_ratio == 1.0
    assert info.allocation.memory_mib == 61440
    with pytest.raises(CapacityExceeded, match="past its limit of 30"):
        host.vms.create(VMSpec(name="one-too-many", cpus=1, memory_mib=512))
    assert len(host.vms.list()) == 30
    with pytest.raises(CapacityExceeded, match="memory"):
        host.vms.get("small0").reconfigure(memory_mib=8192)
    host.overcommit = Overcommit(cpu=2.0, memory=1.0, counts="defined")
    host.vms.create(VMSpec(name="now-fits", cpus=1, memory_mib=512))


def test_revert_restores_spec_and_state(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="db", cpus=2, memory_mib=1024, disks=[DiskSpec(size_gib=1)]))
    vm.start()
    live = vm.snapshots.create("live", memory=True)
    disk_only = vm.snapshots.create("disk-only")
    vm.stop(force=True)
    vm.reconfigure(cpus=4, memory_mib=2048)
    live.revert()
    assert (vm.state, vm.cpus, vm.memory_mib) == (PowerState.RUNNING, 2, 1024)
    disk_only.revert()
    assert vm.state is PowerState.STOPPED, "a disk-only snapshot has no running guest"
    assert disk_only.memory is False


def test_linked_clone_protects_its_base(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    base = host.vms.create(VMSpec(name="base", disks=[DiskSpec(size_gib=1)]))
    clone = base.clone("child", linked=True)
    assert clone.info().disks[0].backing == base.info().disks[0].path
    with pytest.raises(InvalidState, match="linked clones"):
        base.delete()
    clone.delete()
    base.delete()


def test_migration_between_memory_hosts(name: str) -> None:
    other = unique_name("mem-other")
    try:
        src = anyvirt.connect(f"memory://{name}")
        dst = anyvirt.connect(f"memory://{other}")
        vm = src.vms.create(VMSpec(name="mover"))
        vm.start()
        result = vm.migrate(to=dst)
        assert result.live is True
        assert vm.host is dst
        assert dst.vms.get("mover").state is PowerState.RUNNING
        assert not src.vms.exists("mover")
        dst.vms.create(VMSpec(name="taken"))
        blocker = src.vms.create(VMSpec(name="taken"))
        with pytest.raises(AlreadyExists):
            blocker.migrate(to=dst, live=False)
        assert src.vms.exists("taken"), "a failed migration leaves the source alone"
        with pytest.raises(InvalidSpec, match="already on"):
            vm.migrate(to=dst)
    finally:
        reset(other)


def test_evacuate_and_maintenance(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=3")
    node1 = host.nodes.get("node1")
    vms = [host.vms.create(VMSpec(name=f"v{i}", node="node1")) for i in range(4)]
    vms[0].start()
    results = host.evacuate(node1, maintenance=True)
    assert len(results) == 4
    assert {vm.refresh().node for vm in vms} == {"node2", "node3"}
    assert host.nodes.get("node1").info.maintenance is True
    assert vms[0].state is PowerState.RUNNING


def test_failed_create_leaves_nothing_behind(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    inject_failure(name, "create_vm", TaskFailed("disk allocation failed", task_id="t1"))
    with pytest.raises(TaskFailed, match="disk allocation failed"):
        host.vms.create(VMSpec(name="half"))
    assert not host.vms.exists("half")
    assert host.vms.create(VMSpec(name="half")).name == "half"


def test_latency_gives_cancellable_tasks_with_progress(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?latency=2")
    task = host.vms.create(VMSpec(name="slow"), wait=False)
    task.cancel()
    with pytest.raises(anyvirt.Cancelled):
        task.wait(5)
    assert not host.vms.exists("slow"), "a cancelled create makes nothing"


def test_templates(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    golden = host.vms.create(VMSpec(name="golden"))
    golden.mark_template()
    assert golden.template
    with pytest.raises(InvalidState, match="template"):
        golden.start()
    web = golden.clone("web-from-template")
    assert not web.template
    assert host.info().allocation.vms == 1, "templates are not allocation"


def test_snapshot_of_a_missing_vm(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="gone"))
    vm.delete()
    with pytest.raises(NotFound):
        vm.snapshots.create("s")


def test_bad_options(name: str) -> None:
    with pytest.raises(InvalidSpec, match="nodes"):
        anyvirt.connect(f"memory://{name}-x?nodes=zero")


def test_missing_image_is_refused_before_anything_is_made(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    with pytest.raises(InvalidSpec, match="not a readable file"):
        host.vms.create(VMSpec(name="img", disks=[DiskSpec(image="/nonexistent/disk.qcow2")]))
    assert not host.vms.exists("img")


def test_a_closed_host_refuses_every_call(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="after-close"))
    host.close()
    host.close()  # closing twice is fine
    for call in (host.vms.list, host.info, lambda: host.capabilities, vm.start, vm.refresh,
                 lambda: vm.snapshots.create("s"), host.nodes.list):
        with pytest.raises(anyvirt.ConnectionFailed, match="was closed"):
            call()
    assert "after-close" in repr(vm) and host.backend == "memory"


def test_a_node_in_maintenance_takes_no_new_vms(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=2")
    host.vms.create(VMSpec(name="a", node="node1"))
    host.evacuate("node1", maintenance=True)
    with pytest.raises(InvalidState, match="maintenance"):
        host.vms.create(VMSpec(name="pinned", node="node1"))
    for i in range(3):  # the scheduler places nothing there either
        assert host.vms.create(VMSpec(name=f"free{i}")).node == "node2"
    with pytest.raises(InvalidState, match="maintenance"):
        host.vms.get("a").clone("a2", node="node1")
    assert not host.vms.exists("pinned") and not host.vms.exists("a2")


def test_a_node_leaves_maintenance_and_takes_vms_again(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=2")
    host.evacuate("node1", maintenance=True)
    node = host.nodes.get("node1")
    assert node.maintenance
    assert not node.set_maintenance(False).maintenance
    assert host.vms.create(VMSpec(name="back", node="node1")).node == "node1"


def test_evacuate_without_any_migration_is_not_supported_up_front(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?without=migration.live,migration.cold")
    host.vms.create(VMSpec(name="a", node="node1"))
    with pytest.raises(anyvirt.NotSupported, match="migration"):
        host.evacuate("node1")
    assert host.vms.get("a").node == "node1"


def test_linked_clones_and_their_base_stay_on_their_host(name: str) -> None:
    """Another memory host has its own storage: moving a linked clone or its base there
    would leave a disk reading from nothing."""
    host = anyvirt.connect(f"memory://{name}")
    other = anyvirt.connect(f"memory://{name}-other")
    try:
        base = host.vms.create(VMSpec(name="base", disks=[DiskSpec(size_gib=1)]))
        clone = base.clone("linked", linked=True)
        with pytest.raises(InvalidState, match="linked clones use"):
            base.migrate(to=other, live=False)
        with pytest.raises(InvalidState, match="is a linked clone"):
            clone.migrate(to=other, live=False)
        assert other.vms.list() == [] and len(host.vms.list()) == 2
        other_node = next(n for n in host.nodes.list() if n.id != base.node)
        base.migrate(to=other_node, live=False)  # between nodes of one host: shared storage
    finally:
        reset(f"{name}-other")


def test_an_incomplete_evacuation_is_an_anyvirt_error_with_what_moved(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    host.vms.create(VMSpec(name="a", node="node1"))
    host.vms.create(VMSpec(name="b", node="node1"))
    inject_failure(name, "migrate_vm", TaskFailed("the network dropped"))
    with pytest.raises(anyvirt.AnyvirtError) as caught:
        host.evacuate("node1")
    error = caught.value
    assert isinstance(error, anyvirt.EvacuationIncomplete)
    assert isinstance(error, ExceptionGroup)
    assert [type(e) for e in error.exceptions] == [TaskFailed]
    assert len(error.results) == 1
    assert sorted(vm.node or "" for vm in host.vms.list()) == ["node1", "node2"]
