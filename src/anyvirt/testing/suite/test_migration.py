"""Moving a VM within one platform: to another node, or another host of the same backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyvirt.errors import InvalidState
from anyvirt.host import Host
from anyvirt.model import Capability, MigrationResult, PowerState
from anyvirt.node import Node
from anyvirt.testing.suite.base import ContractTests
from anyvirt.vm import VM


def _target(request: pytest.FixtureRequest) -> Node | Host:
    try:
        target: Node | Host = request.getfixturevalue("anyvirt_migration_target")
    except pytest.FixtureLookupError:
        pytest.fail("the backend declares migration but gives no anyvirt_migration_target fixture")
    return target


def _arrived(vm: VM, target: Node | Host) -> None:
    if isinstance(target, Node):
        assert vm.node in (target.id, target.name)
        assert target.host.vms.get(vm.id).node in (target.id, target.name)
    else:
        assert vm.host is target
        assert target.vms.get(vm.name).id == vm.id


@pytest.mark.anyvirt_requires(Capability.VM_CREATE)
class TestMigration(ContractTests):
    @pytest.mark.anyvirt_requires(Capability.COLD_MIGRATION)
    def test_cold(self, request: pytest.FixtureRequest, anyvirt_host: Host,
                  make_vm: Callable[..., VM]) -> None:
        target = _target(request)
        vm = make_vm()
        if isinstance(target, Node) and vm.node in (target.id, target.name):
            pytest.fail("anyvirt_migration_target must be a node other than where new VMs land")
        result = vm.migrate(to=target, live=False)
        assert isinstance(result, MigrationResult)
        assert result.live is False and result.vm_id == vm.id
        _arrived(vm, target)
        assert vm.state is PowerState.STOPPED
        if isinstance(target, Host):
            assert not anyvirt_host.vms.exists(vm.id), "a moved VM leaves its source"

    @pytest.mark.anyvirt_requires(Capability.LIVE_MIGRATION, Capability.START, Capability.POWER_OFF)
    def test_live(self, request: pytest.FixtureRequest, anyvirt_host: Host,
                  make_vm: Callable[..., VM]) -> None:
        target = _target(request)
        vm = make_vm()
        vm.start()
        result = vm.migrate(to=target)  # live by default for a running VM
        assert result.live is True
        _arrived(vm, target)
        assert vm.refresh().state is PowerState.RUNNING
        if isinstance(target, Host):
            assert not anyvirt_host.vms.exists(vm.id)

    @pytest.mark.anyvirt_requires(Capability.LIVE_MIGRATION, Capability.COLD_MIGRATION)
    def test_wrong_state_is_refused(self, request: pytest.FixtureRequest,
                                    make_vm: Callable[..., VM]) -> None:
        target = _target(request)
        vm = make_vm()
        with pytest.raises(InvalidState):
            vm.migrate(to=target, live=True)  # it is stopped
        assert vm.refresh().state is PowerState.STOPPED
