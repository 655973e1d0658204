"""Full and linked clones: new identity, independent life."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyvirt.errors import AlreadyExists
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.base import ContractTests
from anyvirt.vm import VM


def _check_clone(host: Host, original: VM, clone: VM, name: str) -> None:
    assert clone.name == name
    assert clone.id != original.id
    assert clone.state is PowerState.STOPPED
    assert clone.cpus == original.cpus and clone.memory_mib == original.memory_mib
    macs = {n.mac for n in original.info().nics}
    assert not macs & {n.mac for n in clone.info().nics}, "a clone gets new MACs"
    assert len(clone.info().disks) == len(original.info().disks)
    assert host.vms.get(name).id == clone.id


@pytest.mark.anyvirt_requires(Capability.VM_CREATE)
class TestClone(ContractTests):
    @pytest.mark.anyvirt_requires(Capability.FULL_CLONE)
    def test_full_clone(self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        name = unique_name("full")
        clone = make_vm.track(vm.clone(name))  # type: ignore[attr-defined]
        _check_clone(anyvirt_host, vm, clone, name)
        clone.delete()
        assert vm.refresh().state is PowerState.STOPPED
        assert anyvirt_host.vms.get(vm.id).name == vm.name

    @pytest.mark.anyvirt_requires(Capability.LINKED_CLONE)
    def test_linked_clone(self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        name = unique_name("linked")
        clone = make_vm.track(vm.clone(name, linked=True))  # type: ignore[attr-defined]
        _check_clone(anyvirt_host, vm, clone, name)
        clone.delete()
        assert anyvirt_host.vms.get(vm.id).name == vm.name
        assert vm.info().disks

    @pytest.mark.anyvirt_requires(Capability.FULL_CLONE)
    def test_bulk_clone(self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        prefix = unique_name("bulk")
        clones = vm.clone(prefix, count=3)
        for c in clones:
            make_vm.track(c)  # type: ignore[attr-defined]
        assert [c.name for c in clones] == [f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"]
        assert len({c.id for c in clones}) == 3
        with pytest.raises(AlreadyExists):
            vm.clone(f"{prefix}-1")
