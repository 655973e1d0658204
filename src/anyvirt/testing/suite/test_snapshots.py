"""Snapshot trees: create, current, parent/children, revert, delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyvirt.errors import AlreadyExists, NotFound
from anyvirt.model import Capability, PowerState
from anyvirt.snapshot import Snapshot
from anyvirt.testing.suite.base import ContractTests
from anyvirt.vm import VM


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.SNAPSHOTS)
class TestSnapshots(ContractTests):
    def test_tree(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        assert vm.snapshots.list() == []
        assert vm.snapshots.current is None
        s1 = vm.snapshots.create("s1", description="first")
        assert isinstance(s1, Snapshot)
        assert s1.name == "s1" and s1.description == "first"
        s2 = vm.snapshots.create("s2")
        assert vm.snapshots.current == s2
        assert s2.parent == s1
        assert [c.name for c in s1.children] == ["s2"]
        assert vm.snapshots.get("s1") == s1
        assert vm.snapshots.get(s1.id) == s1
        with pytest.raises(NotFound):
            vm.snapshots.get("nope")
        with pytest.raises(AlreadyExists):
            vm.snapshots.create("s1")
        assert [s.name for s in vm.snapshots.list()] == ["s1", "s2"]

    def test_revert_moves_current_and_branches(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        s1 = vm.snapshots.create("s1")
        vm.snapshots.create("s2")
        s1.revert()
        assert vm.snapshots.current == s1
        s3 = vm.snapshots.create("s3")
        assert s3.parent == s1
        assert sorted(c.name for c in s1.children) == ["s2", "s3"]

    @pytest.mark.anyvirt_requires(Capability.RECONFIGURE)
    def test_revert_restores_configuration(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        cpus = vm.cpus
        snap = vm.snapshots.create("before")
        vm.reconfigure(cpus=cpus + 1)
        snap.revert()
        assert vm.refresh().cpus == cpus
        assert vm.info().cpus == cpus

    def test_delete_one_reparents_children(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        s1 = vm.snapshots.create("s1")
        vm.snapshots.create("s2")
        s1.delete()
        names = [s.name for s in vm.snapshots.list()]
        assert names == ["s2"]
        assert vm.snapshots.get("s2").parent is None

    def test_delete_with_children(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        root = vm.snapshots.create("root")
        s1 = vm.snapshots.create("s1")
        vm.snapshots.create("s2")
        s1.delete(children=True)
        assert [s.name for s in vm.snapshots.list()] == ["root"]
        assert vm.snapshots.current == root

    @pytest.mark.anyvirt_requires(Capability.START, Capability.POWER_OFF, Capability.MEMORY_SNAPSHOTS)
    def test_memory_snapshot_revert_returns_to_running(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        vm.start()
        snap = vm.snapshots.create("live", memory=True)
        assert snap.memory is True
        vm.stop(force=True)
        snap.revert()
        assert vm.state is PowerState.RUNNING

    def test_snapshot_of_a_deleted_vm(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        vm.delete()
        with pytest.raises(NotFound):
            vm.snapshots.create("s1")
