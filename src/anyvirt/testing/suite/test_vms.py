"""Creating, listing, describing, reconfiguring and deleting VMs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyvirt.errors import AlreadyExists, InvalidSpec, InvalidState, NotFound
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState, VMInfo, VMSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.VM_DELETE)
class TestVMs(ContractTests):
    def test_create_lists_and_describes(
        self, anyvirt_host: Host, make_vm: Callable[..., VM]
    ) -> None:
        vm = make_vm()
        assert vm.state is PowerState.STOPPED
        listed = {v.id: v for v in anyvirt_host.vms.list()}
        assert vm.id in listed
        row = listed[vm.id]
        assert (row.name, row.state, row.cpus, row.memory_mib) == (
            vm.name, PowerState.STOPPED, vm.cpus, vm.memory_mib)
        assert anyvirt_host.vms.get(vm.name).id == vm.id
        assert anyvirt_host.vms.get(vm.id).name == vm.name
        info = vm.info()
        assert isinstance(info, VMInfo)
        assert info.id == vm.id and info.name == vm.name
        assert info.raw_state

    def test_info_matches_the_spec(
        self, anyvirt_host: Host, anyvirt_vm_spec: Callable[[str], VMSpec]
    ) -> None:
        spec = anyvirt_vm_spec(unique_name("spec"))
        vm = anyvirt_host.vms.create(spec)
        try:
            info = vm.info()
            assert info.cpus == spec.cpus
            assert info.memory_mib == spec.memory_mib
            assert len(info.disks) == len(spec.disks)
            assert len(info.nics) == len(spec.nics)
            for nic in info.nics:
                assert nic.mac and len(nic.mac.split(":")) == 6
            assert info.spec.cpus == spec.cpus
        finally:
            vm.delete()

    def test_duplicate_name_is_refused(
        self, anyvirt_host: Host, make_vm: Callable[..., VM],
        anyvirt_vm_spec: Callable[[str], VMSpec],
    ) -> None:
        vm = make_vm()
        before = len(anyvirt_host.vms.list())
        with recording(anyvirt_host) as calls, pytest.raises(AlreadyExists):
            anyvirt_host.vms.create(anyvirt_vm_spec(vm.name))
        assert calls == []
        assert len(anyvirt_host.vms.list()) == before

    def test_bad_input_is_refused_before_anything_is_sent(self, anyvirt_host: Host) -> None:
        with recording(anyvirt_host) as calls:
            with pytest.raises(InvalidSpec):
                anyvirt_host.vms.create("web1")  # type: ignore[call-overload]
            with pytest.raises(InvalidSpec):
                VMSpec(name="", cpus=1)
            with pytest.raises(InvalidSpec):
                VMSpec(name="x", memory_mib=-1)
        assert calls == []

    def test_delete(self, anyvirt_host: Host, anyvirt_vm_spec: Callable[[str], VMSpec]) -> None:
        vm = anyvirt_host.vms.create(anyvirt_vm_spec(unique_name("del")))
        vm.delete(disks=True)
        assert vm.id not in {v.id for v in anyvirt_host.vms.list()}
        with pytest.raises(NotFound):
            anyvirt_host.vms.get(vm.id)
        with pytest.raises(NotFound):
            vm.refresh()

    @pytest.mark.anyvirt_requires(Capability.START, Capability.POWER_OFF)
    def test_a_running_vm_is_not_deleted(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        vm.start()
        with pytest.raises(InvalidState):
            vm.delete()
        assert vm.refresh().state is PowerState.RUNNING

    @pytest.mark.anyvirt_requires(Capability.RECONFIGURE)
    def test_reconfigure_stopped(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        cpus, memory = vm.cpus + 1, vm.memory_mib + 32
        live = vm.reconfigure(cpus=cpus, memory_mib=memory)
        assert live is False
        assert (vm.cpus, vm.memory_mib) == (cpus, memory)
        info = vm.info()
        assert (info.cpus, info.memory_mib) == (cpus, memory)
        with pytest.raises(InvalidSpec):
            vm.reconfigure(cpus=0)
        with pytest.raises(InvalidSpec):
            vm.reconfigure()

    # -- rules the gate enforces from a platform fact the driver states: where the fact
    # holds, every backend refuses alike (one error type) before anything is sent
    def test_a_vm_bigger_than_its_node_is_refused_where_the_platform_bounds_it(
        self, anyvirt_host: Host, anyvirt_vm_spec: Callable[[str], VMSpec]
    ) -> None:
        import attrs

        from anyvirt.errors import CapacityExceeded
        from anyvirt.rules import takes_vms

        if not anyvirt_host.driver.bounds_vm_by_node:
            pytest.skip(f"{anyvirt_host.backend} states no node bound on one VM (bounds_vm_by_node)")
        node = next(n for n in anyvirt_host.nodes.list() if takes_vms(n.info) and n.info.cpus)
        spec = attrs.evolve(anyvirt_vm_spec(unique_name("big")), node=node.id)
        for too_big in (attrs.evolve(spec, cpus=node.info.cpus + 1),
                        attrs.evolve(spec, memory_mib=node.info.memory_mib + 1)):
            with recording(anyvirt_host) as calls, pytest.raises(CapacityExceeded,
                                                                 match="asked for, but node"):
                anyvirt_host.vms.create(too_big)
            assert calls == [], too_big
        assert not anyvirt_host.vms.exists(spec.name)

    @pytest.mark.anyvirt_requires(Capability.START, Capability.RECONFIGURE)
    def test_a_change_a_running_vm_cannot_take_is_refused_before_anything_is_sent(
        self, anyvirt_host: Host, make_vm: Callable[..., VM]
    ) -> None:
        vm = make_vm()
        refused = {"cpus", "memory_mib"} - anyvirt_host.driver.running_takes(vm.id)
        if not refused:
            pytest.skip(f"a running {anyvirt_host.backend} VM takes CPU and memory changes")
        vm.start()
        cpus, memory = (vm.cpus + 1, None) if "cpus" in refused else (None, vm.memory_mib + 32)
        with recording(anyvirt_host) as calls, pytest.raises(InvalidState, match="hot-add is off"):
            vm.reconfigure(cpus=cpus, memory_mib=memory)
        assert calls == []
        assert (vm.refresh().cpus, vm.memory_mib) == (vm.cpus, vm.memory_mib)
