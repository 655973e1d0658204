"""The overcommit limit holds when several threads create, clone or migrate at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt import AlreadyExists, CapacityExceeded, Overcommit, VMSpec
from anyvirt.memory import inject_failure, reset
from anyvirt.testing.plugin import unique_name


@pytest.fixture
def name() -> Iterator[str]:
    n = unique_name("cap")
    yield n
    reset(n)


def _small_host(name: str) -> anyvirt.Host:
    # latency: each create takes a while, so the threads' checks overlap
    return anyvirt.connect(f"memory://{name}?nodes=1&cpus=2&memory_mib=1000&latency=0.2",
                           overcommit=Overcommit(cpu=1.0, memory=1.0, counts="defined"))


def test_concurrent_creates_stay_within_the_limit(name: str) -> None:
    host = _small_host(name)
    outcomes: list[str] = []

    def create(i: int) -> None:
        try:
            outcomes.append(host.vms.create(VMSpec(name=f"vm{i}", cpus=1, memory_mib=400)).name)
        except CapacityExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alloc = host.info().allocation
    assert alloc.memory_mib <= 1000 and alloc.vcpus <= 2
    assert outcomes.count("refused") == 3
    assert len(host.vms.list()) == 2


def test_concurrent_creates_through_two_connections_share_the_limit(name: str) -> None:
    a, b = _small_host(name), _small_host(name)
    tasks = [conn.vms.create(VMSpec(name=f"vm{i}", cpus=1, memory_mib=400), wait=False)
             for i, conn in enumerate((a, b))]
    with pytest.raises(CapacityExceeded):
        a.vms.create(VMSpec(name="third", cpus=1, memory_mib=400))
    for task in tasks:
        task.wait(10)
    assert a.info().allocation.memory_mib == 800


def test_a_failed_create_gives_its_reservation_back(name: str) -> None:
    host = _small_host(name)
    inject_failure(name, "create_vm", RuntimeError("platform said no"))
    with pytest.raises(RuntimeError):
        host.vms.create(VMSpec(name="fails", cpus=2, memory_mib=1000))
    assert host.vms.create(VMSpec(name="fits", cpus=2, memory_mib=1000)).name == "fits"


def test_clones_in_flight_count_against_the_limit(name: str) -> None:
    host = _small_host(name)
    base = host.vms.create(VMSpec(name="base", cpus=1, memory_mib=300))
    task = base.clone("copy", wait=False)
    with pytest.raises(CapacityExceeded):
        host.vms.create(VMSpec(name="late", cpus=1, memory_mib=300))
    task.wait(10)
    assert host.info().allocation.memory_mib == 600


def test_migrating_to_a_host_that_is_too_small_is_refused(name: str) -> None:
    big = anyvirt.connect(f"memory://{name}")
    # where stopped VMs count (else a stopped VM holds nothing until it starts there)
    small = anyvirt.connect(f"memory://{name}-small?nodes=1&cpus=1&memory_mib=256",
                            overcommit="counts=defined")
    try:
        vm = big.vms.create(VMSpec(name="fat", cpus=2, memory_mib=4096))
        with pytest.raises(CapacityExceeded, match="4096 MiB more memory"):
            vm.migrate(to=small, live=False)
        assert small.vms.list() == []
        assert vm.refresh().host is big
    finally:
        reset(f"{name}-small")


def test_migrating_onto_a_taken_name_is_refused_before_anything_moves(name: str) -> None:
    a = anyvirt.connect(f"memory://{name}")
    b = anyvirt.connect(f"memory://{name}-b")
    try:
        vm = a.vms.create(VMSpec(name="web"))
        b.vms.create(VMSpec(name="web"))
        with pytest.raises(AlreadyExists, match="'web' exists already on memory://"):
            vm.migrate(to=b, live=False)
        assert a.vms.get("web").id == vm.id
    finally:
        reset(f"{name}-b")


def test_migrating_to_a_node_of_another_connection_of_the_same_host_moves_nodes(
        name: str) -> None:
    # a second connection of one URI is this host (the gate says "already on" for the host
    # itself, as for ``to=vm.host``): its nodes are this host's nodes
    a, b = anyvirt.connect(f"memory://{name}"), anyvirt.connect(f"memory://{name}")
    vm = a.vms.create(VMSpec(name="web", node="node1"))
    result = vm.migrate(to=b.nodes.get("node2"), live=False)
    assert result.target.endswith("/node2")
