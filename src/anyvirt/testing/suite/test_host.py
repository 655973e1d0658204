"""The connection, host facts and nodes."""

from __future__ import annotations

import pytest

from anyvirt.errors import CapacityExceeded, InvalidSpec, NotFound
from anyvirt.host import Host
from anyvirt.model import Capability, HostInfo, Overcommit
from anyvirt.testing.suite.base import ContractTests


class TestHost(ContractTests):
    def test_identity(self, anyvirt_host: Host) -> None:
        assert anyvirt_host.backend
        assert anyvirt_host.uri.startswith(anyvirt_host.uri.split("://")[0] + "://")
        assert anyvirt_host.backend in repr(anyvirt_host)

    def test_capabilities_are_declared(self, anyvirt_host: Host) -> None:
        caps = anyvirt_host.capabilities
        assert isinstance(caps, frozenset)
        assert all(isinstance(c, Capability) for c in caps)
        for cap in Capability:
            assert anyvirt_host.supports(cap) is (cap in caps)

    def test_info_has_capacity_and_allocation(self, anyvirt_host: Host) -> None:
        info = anyvirt_host.info()
        assert isinstance(info, HostInfo)
        assert info.backend == anyvirt_host.backend
        assert info.cpus > 0
        assert info.memory_mib > 0
        assert info.hypervisor
        listed = [vm for vm in anyvirt_host.vms.list() if not vm.template]
        assert info.allocation.vms == len(listed)
        assert info.allocation.vcpus == sum(vm.cpus for vm in listed)
        assert info.allocation.memory_mib == sum(vm.memory_mib for vm in listed)

    def test_nodes(self, anyvirt_host: Host) -> None:
        nodes = anyvirt_host.nodes.list()
        assert nodes, "every host has at least one node"
        assert len({n.id for n in nodes}) == len(nodes)
        first = nodes[0]
        assert anyvirt_host.nodes.get(first.id) == first
        assert anyvirt_host.nodes.get(first.name).id == first.id
        with pytest.raises(NotFound):
            anyvirt_host.nodes.get("no-such-node-anyvirt")

    def test_get_with_bad_reference(self, anyvirt_host: Host) -> None:
        with pytest.raises(InvalidSpec):
            anyvirt_host.vms.get("")
        with pytest.raises(NotFound):
            anyvirt_host.vms.get("no-such-vm-anyvirt-3f1c")

    @pytest.mark.anyvirt_requires(Capability.VM_CREATE)
    def test_overcommit_is_refused_before_anything_is_made(
        self, anyvirt_host: Host, anyvirt_vm_spec: object
    ) -> None:
        import attrs

        from anyvirt.testing.plugin import unique_name
        from anyvirt.testing.suite.spy import recording

        info = anyvirt_host.info()
        spec = anyvirt_vm_spec(unique_name("big"))  # type: ignore[operator]
        before = anyvirt_host.overcommit
        anyvirt_host.overcommit = Overcommit(cpu=1.0, memory=1.0, counts="defined")
        too_many = info.cpus + 1  # past the limit whatever is allocated already
        try:
            with recording(anyvirt_host) as calls, pytest.raises(CapacityExceeded):
                anyvirt_host.vms.create(attrs.evolve(spec, cpus=too_many))
            with recording(anyvirt_host) as calls2, pytest.raises(CapacityExceeded):
                anyvirt_host.vms.create(attrs.evolve(spec, memory_mib=info.memory_mib + 1))
        finally:
            anyvirt_host.overcommit = before
        assert calls == [] and calls2 == []
        assert not anyvirt_host.vms.exists(spec.name)
